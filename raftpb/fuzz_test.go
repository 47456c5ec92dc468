package raftpb

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The fuzz targets decode arbitrary bytes. Decoding must never panic, must
// fail only with one of the package's sentinels, and must leave the value
// zeroed when it fails. When it succeeds, the value's canonical encoding
// must stay within twice the input's length and must decode to the same
// value, whose encoding is in turn identical (the canonical form is a fixed
// point).
//
// Seeds come from fuzzSeeds, both through f.Add and as the committed corpus
// under testdata/fuzz; regenerate that corpus after changing the seeds with
//
//	go test ./raftpb -run '^TestFuzzCorpus$' -update-corpus

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpus under testdata/fuzz")

func FuzzMessageDecode(f *testing.F)      { fuzzDecode[Message](f, "FuzzMessageDecode") }
func FuzzBatchDecode(f *testing.F)        { fuzzDecode[Batch](f, "FuzzBatchDecode") }
func FuzzEntryDecode(f *testing.F)        { fuzzDecode[Entry](f, "FuzzEntryDecode") }
func FuzzConfChangeDecode(f *testing.F)   { fuzzDecode[ConfChange](f, "FuzzConfChangeDecode") }
func FuzzSnapshotMetaDecode(f *testing.F) { fuzzDecode[SnapshotMeta](f, "FuzzSnapshotMetaDecode") }
func FuzzHardStateDecode(f *testing.F)    { fuzzDecode[HardState](f, "FuzzHardStateDecode") }

// ptrCodec is a pointer to T that implements the codec.
type ptrCodec[T any] interface {
	*T
	codecValue
}

func fuzzDecode[T any, P ptrCodec[T]](f *testing.F, target string) {
	for _, s := range fuzzSeeds()[target] {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var x, zero T
		if err := P(&x).Unmarshal(data); err != nil {
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) &&
				!errors.Is(err, ErrWireType) && !errors.Is(err, ErrInvalidField) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			if !reflect.DeepEqual(x, zero) {
				t.Fatalf("value not zeroed after error %v: %+v", err, x)
			}
			return
		}
		enc := P(&x).MarshalAppend(nil)
		if len(enc) != P(&x).Size() {
			t.Fatalf("Size() = %d, encoding has %d bytes", P(&x).Size(), len(enc))
		}
		// The canonical form drops unknown and repeated fields, so it is
		// mostly shorter than the input; but a one-element unpacked list
		// (2 bytes) grows by its packed length prefix (3 bytes), hence 2x.
		if len(enc) > 2*len(data) {
			t.Fatalf("canonical encoding (%d bytes) over twice the input (%d bytes)", len(enc), len(data))
		}
		var y T
		if err := P(&y).Unmarshal(enc); err != nil {
			t.Fatalf("re-encoding %x does not decode: %v", enc, err)
		}
		if !reflect.DeepEqual(x, y) {
			t.Fatalf("round trip changed the value:\nfirst  %+v\nsecond %+v", x, y)
		}
		if enc2 := P(&y).MarshalAppend(nil); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: %x then %x", enc, enc2)
		}
	})
}

type seed struct {
	name string
	data []byte
}

// fuzzSeeds returns, for each fuzz target, valid encodings worth mutating:
// the canonical samples of the round-trip tests plus non-canonical forms a
// decoder must accept (unknown fields, unpacked lists, repeated fields).
func fuzzSeeds() map[string][]seed {
	seeds := map[string][]seed{}
	targets := map[string]string{
		"Message": "FuzzMessageDecode", "Batch": "FuzzBatchDecode", "Entry": "FuzzEntryDecode",
		"ConfChange": "FuzzConfChangeDecode", "SnapshotMeta": "FuzzSnapshotMetaDecode",
		"HardState": "FuzzHardStateDecode",
	}
	for _, s := range samples() {
		typ, name, _ := strings.Cut(s.name, "/")
		if target, ok := targets[typ]; ok {
			seeds[target] = append(seeds[target], seed{name, s.v.MarshalAppend(nil)})
		}
	}
	unk := unknownFields()
	withUnknown := func(v codecValue) []byte {
		return append(v.MarshalAppend(append([]byte(nil), unk...)), unk...)
	}
	hex := func(s string) []byte {
		b, err := hexDecode(s)
		if err != nil {
			panic(err)
		}
		return b
	}
	hb := Message{Type: MsgHeartbeat, Shard: 9, From: 1, To: 2, Term: 4, Commit: 3, Context: 77}
	vote := Message{Type: MsgPreVote, Shard: 9, From: 1, To: 2, Term: 5, LogTerm: 4, Index: 20}
	app := appMessage()
	batch := sampleBatch()
	cc := ConfChange{Changes: []ConfChangeSingle{{Type: AddVoter, Node: 4}}}
	sm := SnapshotMeta{Index: 9, Term: 2, ConfState: ConfState{Voters: []NodeID{1, 2, 3}}}
	more := map[string][]seed{
		"FuzzMessageDecode": {
			{"heartbeat", hb.MarshalAppend(nil)}, {"prevote", vote.MarshalAppend(nil)},
			{"app-unknown", withUnknown(&app)},
			{"snap-merged", hex("0808 6a020805 6a06100b1a020801")},
		},
		"FuzzBatchDecode": {
			{"heartbeats-only", (&Batch{ClusterID: 1, From: 1, To: 2,
				Heartbeats: []Heartbeat{Coalesce(&hb), {Shard: 10, Term: 4, Response: true}}}).MarshalAppend(nil)},
			{"votes", (&Batch{ClusterID: 1, From: 1, To: 2, Messages: []Message{vote, hb}}).MarshalAppend(nil)},
			{"full-unknown", withUnknown(&batch)},
		},
		"FuzzEntryDecode": {
			{"unknown", withUnknown(&app.Entries[1])},
			{"empty-data-field", hex("0801 1002 2a00")},
		},
		"FuzzConfChangeDecode": {
			{"add-voter", cc.MarshalAppend(nil)},
			{"implicit", (&ConfChange{Transition: TransitionJointImplicit, Changes: []ConfChangeSingle{
				{Type: AddVoter, Node: 5}, {Type: AddLearner, Node: 1}}}).MarshalAppend(nil)},
			{"unknown", withUnknown(&cc)},
		},
		"FuzzSnapshotMetaDecode": {
			{"simple", sm.MarshalAppend(nil)},
			{"unpacked-voters", hex("0809 1002 1a06 0801 0802 0803")},
			{"unknown", withUnknown(&sm)},
		},
		"FuzzHardStateDecode": {
			{"unknown", withUnknown(&HardState{Term: 4, Vote: 2, Commit: 9})},
			{"non-minimal-varint", hex("088480808000 1002 1800")},
			{"repeated-term", hex("0801 0802 0803")},
		},
	}
	for target, ss := range more {
		seeds[target] = append(seeds[target], ss...)
	}
	return seeds
}

// corpusFile renders data in the format of Go's fuzzing corpus files.
func corpusFile(data []byte) []byte {
	return []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data))
}

// TestFuzzCorpus checks that the committed seed corpus matches fuzzSeeds,
// or rewrites it with -update-corpus. Files the fuzzer adds beside the seeds
// (reproducers of failures) are left alone.
func TestFuzzCorpus(t *testing.T) {
	for target, ss := range fuzzSeeds() {
		dir := filepath.Join("testdata", "fuzz", target)
		if len(ss) < 5 {
			t.Errorf("%s: only %d seeds", target, len(ss))
		}
		for i, s := range ss {
			path := filepath.Join(dir, fmt.Sprintf("seed-%02d-%s", i, s.name))
			want := corpusFile(s.data)
			if *updateCorpus {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s is missing or stale (%v); run go test -run '^TestFuzzCorpus$' -update-corpus", path, err)
			}
		}
	}
}
