package sim

import (
	"bytes"
	"errors"
	"testing"

	"github.com/shardd/shardd/raftpb"
	"github.com/shardd/shardd/shard"
)

func TestDrawFaultsIsAFunctionOfTheSeed(t *testing.T) {
	for seed := uint64(1); seed < 200; seed++ {
		a, b := DrawFaults(seed), DrawFaults(seed)
		if a != b {
			t.Fatalf("seed %d drew %v then %v", seed, a, b)
		}
		if err := a.validate(); err != nil {
			t.Fatalf("seed %d drew invalid faults %v: %v", seed, a, err)
		}
	}
	if DrawFaults(1) == DrawFaults(2) {
		t.Fatal("seeds 1 and 2 drew the same faults")
	}
}

func TestOptionsValidate(t *testing.T) {
	o := Options{Nodes: 3, Replicas: 4, Step: -1}
	o.EnsureDefaults()
	err := o.Validate()
	if !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("got %v", err)
	}
	for _, field := range []string{"Replicas", "Step"} {
		if !bytes.Contains([]byte(err.Error()), []byte(field)) {
			t.Errorf("%v does not name %s", err, field)
		}
	}
	ok := Options{}
	ok.EnsureDefaults()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestKVSnapshotRoundTrip(t *testing.T) {
	a := newKVSM()
	ents := []shard.Entry{{Index: 1, Cmd: putCmd("x", []byte("1"))}, {Index: 2, Cmd: putCmd("y", nil)},
		{Index: 3, Cmd: putCmd("x", []byte("3"))}}
	if err := a.Update(ents); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := a.SaveSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	b := newKVSM()
	if err := b.RecoverFromSnapshot(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"x", "y", "z"} {
		va, _ := a.Lookup([]byte(k))
		vb, _ := b.Lookup([]byte(k))
		if !bytes.Equal(va, vb) {
			t.Errorf("key %s: %q before, %q after the snapshot", k, va, vb)
		}
	}
	if err := b.RecoverFromSnapshot(bytes.NewReader(buf.Bytes()[:buf.Len()-1])); err == nil {
		t.Error("a truncated snapshot was accepted")
	}
}

// TestMirror checks the oracle's log mirror: suffix replacement keeps the
// prefix hashes, trimming keeps the hashes it still holds.
func TestMirror(t *testing.T) {
	ents := func(from raftpb.Index, terms ...raftpb.Term) []raftpb.Entry {
		var out []raftpb.Entry
		for i, tm := range terms {
			out = append(out, raftpb.Entry{Index: from + raftpb.Index(i), Term: tm, Data: []byte{byte(i)}})
		}
		return out
	}
	m := mirror{baseOK: true}
	m.append(ents(1, 1, 1, 1, 1))
	h2, _ := m.hash(2)
	h4, _ := m.hash(4)
	m.append(ents(3, 2, 2))
	if g, _ := m.hash(2); g != h2 {
		t.Fatal("replacing a suffix changed the prefix")
	}
	if g, _ := m.hash(4); g == h4 {
		t.Fatal("a replaced entry kept its hash")
	}
	if tm, _ := m.term(4); tm != 2 || m.last() != 4 {
		t.Fatalf("term %d last %d", tm, m.last())
	}
	want, _ := m.hash(4)
	m.trimTo(2)
	if g, ok := m.hash(4); !ok || g != want || m.base != 2 {
		t.Fatalf("after trim: hash %x ok %v base %d", g, ok, m.base)
	}
	if _, ok := m.hash(1); ok {
		t.Fatal("a trimmed position still answers")
	}
}
