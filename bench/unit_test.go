package main

import (
	"bytes"
	"math"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/shardd/shardd/engine"
)

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 129, 1000, 1 << 20, 1<<40 + 12345, math.MaxUint64} {
		b := bucketOf(v)
		if b < prev || b >= numBuckets {
			t.Fatalf("bucket of %d = %d, previous %d", v, b, prev)
		}
		prev = b
		lo, hi := bucketRange(b)
		if v < lo || v > hi {
			t.Fatalf("%d not in its bucket %d [%d, %d]", v, b, lo, hi)
		}
		if v >= 64 && float64(hi-lo) > float64(lo)/64 {
			t.Fatalf("bucket %d [%d, %d] wider than 1/64", b, lo, hi)
		}
	}
	var h hist
	rnd := rand.New(rand.NewPCG(1, 2))
	var vals []time.Duration
	for i := range 100000 {
		d := time.Duration(rnd.ExpFloat64() * float64(time.Millisecond))
		vals = append(vals, d)
		h.record(i, d)
	}
	slices.Sort(vals)
	s := h.snapshot()
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := vals[int(q*float64(len(vals)))]
		got := s.quantile(q)
		if math.Abs(float64(got-want)) > 0.02*float64(want) {
			t.Errorf("q%v = %v, want %v ±2%%", q, got, want)
		}
	}
	if s.quantile(1) != vals[len(vals)-1] || s.total != uint64(len(vals)) {
		t.Errorf("max %v (want %v), total %d", s.quantile(1), vals[len(vals)-1], s.total)
	}
}

func TestPlacement(t *testing.T) {
	if p := placement(3, 3, 3); !slices.Equal(p[2], []uint64{1, 2, 3}) {
		t.Fatalf("nodes == replicas: %v", p[2])
	}
	p := placement(3000, 7, 3)
	again := placement(3000, 7, 3)
	perNode := map[uint64]int{}
	for s := 1; s <= 3000; s++ {
		if !slices.Equal(p[s], again[s]) || len(p[s]) != 3 || !slices.IsSorted(p[s]) ||
			p[s][0] == p[s][1] || p[s][1] == p[s][2] {
			t.Fatalf("shard %d placed on %v (then %v)", s, p[s], again[s])
		}
		for _, id := range p[s] {
			perNode[id]++
		}
	}
	for id, n := range perNode {
		if want := 3000 * 3 / 7; n < want*8/10 || n > want*12/10 {
			t.Errorf("node %d hosts %d replicas, want about %d", id, n, want)
		}
	}
	// Adding a node moves only replicas to it.
	p8 := placement(3000, 8, 3)
	for s := 1; s <= 3000; s++ {
		for _, id := range p[s] {
			if !slices.Contains(p8[s], id) && !slices.Contains(p8[s], 8) {
				t.Fatalf("shard %d moved from %v to %v", s, p[s], p8[s])
			}
		}
	}
}

func TestParseProm(t *testing.T) {
	m := parseProm([]byte(`# HELP x
shardd_fsyncs_total 12
shardd_peer_bytes_sent_total{peer="2"} 100
shardd_peer_bytes_sent_total{peer="3"} 50
shardd_step_pass_seconds_bucket{vmrange="1.000e-03...1.136e-03"} 3
shardd_entries_per_fsync 2.5e+00
garbage
`))
	if m[famFsyncs] != 12 || m[famPeerBytes] != 150 || m["shardd_entries_per_fsync"] != 2.5 ||
		m["shardd_step_pass_seconds_bucket"] != 3 || len(m) != 4 {
		t.Fatalf("%v", m)
	}
}

func TestKVStateMachine(t *testing.T) {
	sm := newKV(1, 1)
	ents := []engine.Entry{{Index: 1, Cmd: encodePut([]byte("a"), []byte("1"), 16)},
		{Index: 2, Cmd: encodePut([]byte("b"), []byte("22"), 0)}}
	if err := sm.Update(ents); err != nil {
		t.Fatal(err)
	}
	if len(ents[0].Cmd) != 16 || len(ents[1].Cmd) != 4 {
		t.Fatalf("command sizes %d %d", len(ents[0].Cmd), len(ents[1].Cmd))
	}
	var buf bytes.Buffer
	if err := sm.SaveSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	sm2 := newKV(1, 2)
	if err := sm2.RecoverFromSnapshot(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if v, _ := sm2.Lookup([]byte("b")); string(v) != "22" {
		t.Fatalf("b = %q", v)
	}
	if v, _ := sm2.Lookup([]byte("a")); len(v) != 14 || v[0] != '1' {
		t.Fatalf("a = %q", v)
	}
	if v, _ := sm2.Lookup([]byte("zz")); v != nil {
		t.Fatalf("zz = %q", v)
	}
	if err := sm2.RecoverFromSnapshot(bytes.NewReader(buf.Bytes()[:buf.Len()-1])); err == nil {
		t.Fatal("truncated snapshot accepted")
	}
	if err := sm.Update([]engine.Entry{{Cmd: []byte{9, 'x'}}}); err == nil {
		t.Fatal("bad command accepted")
	}
}

// The checker itself: ambiguous writes may or may not apply; a stale or
// invented read is caught and the visualization written.
func TestCheckerModel(t *testing.T) {
	put := func(c int, k, v string, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: c, Input: checkInput{Put: true, Key: k, Value: v},
			Output: checkOutput{}, Call: call, Return: ret}
	}
	get := func(c int, k, v string, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: c, Input: checkInput{Key: k}, Output: checkOutput{Value: v}, Call: call, Return: ret}
	}
	inf := int64(math.MaxInt64)
	cases := []struct {
		name string
		ops  []porcupine.Operation
		ok   bool
	}{
		{"sequential", []porcupine.Operation{put(0, "x", "a", 0, 10), get(1, "x", "a", 20, 30)}, true},
		{"stale read", []porcupine.Operation{put(0, "x", "a", 0, 10), put(0, "x", "b", 20, 30), get(1, "x", "a", 40, 50)}, false},
		{"invented value", []porcupine.Operation{put(0, "x", "a", 0, 10), get(1, "x", "zz", 20, 30)}, false},
		{"keys independent", []porcupine.Operation{put(0, "x", "a", 0, 10), get(1, "y", "", 20, 30)}, true},
		{"ambiguous applied", []porcupine.Operation{put(0, "x", "a", 0, inf), get(1, "x", "", 5, 6), get(1, "x", "a", 10, 11)}, true},
		{"ambiguous not applied", []porcupine.Operation{put(0, "x", "a", 0, inf), get(1, "x", "", 10, 11)}, true},
		{"ambiguous applied then lost", []porcupine.Operation{put(0, "x", "a", 0, inf), get(1, "x", "a", 10, 11), get(1, "x", "", 20, 21)}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			html := t.TempDir() + "/viz.html"
			h := &history{ops: c.ops}
			h.note(0, 10, "node 1 killed")
			ok, res, path, err := checkHistory(h, 10*time.Second, html)
			if err != nil {
				t.Fatal(err)
			}
			if ok != c.ok {
				t.Fatalf("linearizable = %v (%s), want %v", ok, res, c.ok)
			}
			if !ok {
				b, err := os.ReadFile(path)
				if err != nil || !bytes.Contains(b, []byte("node 1 killed")) {
					t.Fatalf("visualization %s: %v", path, err)
				}
			}
		})
	}
}

func TestKeyGen(t *testing.T) {
	for _, z := range []float64{0, 1.2} {
		g := newKeyGen(10, 100, z, 1)
		counts := map[uint64]int{}
		names := map[string]uint64{}
		for range 20000 {
			k := g.next()
			if k.shard < 1 || k.shard > 10 {
				t.Fatalf("shard %d", k.shard)
			}
			if s, ok := names[string(k.name)]; ok && s != k.shard {
				t.Fatalf("key %s on shards %d and %d", k.name, s, k.shard)
			}
			names[string(k.name)] = k.shard
			counts[k.shard]++
		}
		hot := counts[1] > 4*counts[10]
		if hot != (z > 0) {
			t.Errorf("zipf %v: shard counts %v", z, counts)
		}
		if z == 0 && len(names) < 900 {
			t.Errorf("uniform: only %d distinct keys", len(names))
		}
	}
}
