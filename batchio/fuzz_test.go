package batchio

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/shardd/shardd/raftpb"
)

// Fuzz targets for every decoder of what batchio reads back from Pebble:
// the stored log entry, hard state, replica record and snapshot record
// values (crc32c | payload), and the keys.
//
// A record target takes (payload, framed): with framed, the value decoded
// is frame(payload), so the fuzzer explores the payload decoder behind a
// valid checksum; without, the raw bytes are decoded, checksum included.
// Decoding never panics; it fails only with a checksum mismatch, a
// too-short value or a wire-format error (nothing else); a value that
// decodes re-encodes within twice its size (+16) to bytes that decode to
// the same record and re-encode identically (the canonical form is a fixed
// point); and flipping any one bit of a value that decodes makes it fail
// with a checksum mismatch (crc32c detects every single-bit error).
//
// The seed corpus under testdata/fuzz is generated from recordSeeds;
// regenerate it after changing them with
//
//	go test ./batchio -run '^TestRecordFuzzCorpus$' -update-corpus

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpus of the record fuzz targets under testdata/fuzz")

// recordCodec is one stored record type's decoder and encoder.
type recordCodec[T any] struct {
	decode func(v []byte) (T, error)
	encode func(x T) []byte
}

var (
	entryCodec = recordCodec[raftpb.Entry]{
		decode: func(v []byte) (raftpb.Entry, error) {
			var e raftpb.Entry
			err := decodeEntry(v, &e)
			return e, err
		},
		encode: func(e raftpb.Entry) []byte {
			v := make([]byte, entryValueLen(&e))
			putEntryValue(v, &e)
			return v
		},
	}
	hardStateCodec = recordCodec[raftpb.HardState]{decode: decodeHardState, encode: encodeHardState}
	replicaCodec   = recordCodec[ReplicaRecord]{
		decode: decodeReplicaRecord,
		encode: func(r ReplicaRecord) []byte { return r.encode() },
	}
	snapshotCodec = recordCodec[SnapshotRecord]{
		decode: decodeSnapshotRecord,
		encode: func(r SnapshotRecord) []byte { return r.encode() },
	}
)

func FuzzDecodeEntryRecord(f *testing.F) { fuzzRecord(f, "FuzzDecodeEntryRecord", entryCodec) }
func FuzzDecodeHardStateRecord(f *testing.F) {
	fuzzRecord(f, "FuzzDecodeHardStateRecord", hardStateCodec)
}
func FuzzDecodeReplicaRecord(f *testing.F)  { fuzzRecord(f, "FuzzDecodeReplicaRecord", replicaCodec) }
func FuzzDecodeSnapshotRecord(f *testing.F) { fuzzRecord(f, "FuzzDecodeSnapshotRecord", snapshotCodec) }

func fuzzRecord[T any](f *testing.F, target string, c recordCodec[T]) {
	for _, s := range recordSeeds()[target] {
		f.Add(s.payload, s.framed)
	}
	f.Fuzz(func(t *testing.T, payload []byte, framed bool) {
		v := payload
		if framed {
			v = frame(payload)
		}
		x, err := c.decode(v)
		if err != nil {
			checkDecodeError(t, v, err)
			return
		}
		enc := c.encode(x)
		if len(enc) > 2*len(v)+16 {
			t.Fatalf("canonical encoding (%d bytes) over twice the value (%d bytes)", len(enc), len(v))
		}
		y, err := c.decode(enc)
		if err != nil {
			t.Fatalf("re-encoding %x does not decode: %v", enc, err)
		}
		if !reflect.DeepEqual(x, y) {
			t.Fatalf("round trip changed the record:\nfirst  %+v\nsecond %+v", x, y)
		}
		if enc2 := c.encode(y); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: %x then %x", enc, enc2)
		}
		// Every single-bit error is caught by the checksum (at most 64
		// positions, spread over the value).
		step := max(1, len(v)/64)
		for i := 0; i < len(v); i += step {
			bad := bytes.Clone(v)
			bad[i] ^= 1 << (i % 8)
			if _, err := c.decode(bad); !errors.Is(err, errChecksum) {
				t.Fatalf("bit %d of byte %d flipped: decoded with %v, want a checksum mismatch", i%8, i, err)
			}
		}
	})
}

// wireErrors are the errors a payload decoder may return: raftpb's
// sentinels and protowire's parse errors.
var wireErrors = []error{raftpb.ErrTruncated, raftpb.ErrMalformed, raftpb.ErrWireType, raftpb.ErrInvalidField}

func init() {
	for code := -1; code >= -8; code-- {
		wireErrors = append(wireErrors, protowire.ParseError(code))
	}
}

// checkDecodeError checks that decoding v failed for a reason the value
// shows: too short for a checksum, a checksum that does not match, or (the
// checksum matching) a payload that is not valid wire format.
func checkDecodeError(t *testing.T, v []byte, err error) {
	t.Helper()
	if len(v) < crcLen {
		return
	}
	if _, uerr := unframe(v); uerr != nil {
		if !errors.Is(err, errChecksum) {
			t.Fatalf("checksum mismatch reported as %v", err)
		}
		return
	}
	for _, w := range wireErrors {
		if errors.Is(err, w) {
			return
		}
	}
	t.Fatalf("payload %x: error %v (%T) is no wire-format error", v[crcLen:], err, err)
}

// FuzzParseKeys: parsing never panics, and a key that parses is the key
// the encoder makes for what it parses to (one encoding per key).
func FuzzParseKeys(f *testing.F) {
	for _, s := range keySeeds() {
		f.Add(s.payload)
	}
	f.Fuzz(func(t *testing.T, k []byte) {
		if id, idx, ok := parseLogKey(k); ok {
			if !bytes.Equal(logKey(id, idx), k) {
				t.Fatalf("log key %x parses to shard %d index %d, which encode as %x", k, id, idx, logKey(id, idx))
			}
			if start, end := logSpan(id); bytes.Compare(k, start) < 0 || bytes.Compare(k, end) >= 0 {
				t.Fatalf("log key %x outside its shard's span [%x, %x)", k, start, end)
			}
		}
		for _, kind := range []byte{kindHardState, kindSnapshot, kindReplica} {
			if id, ok := parseShardKey(k, kind); ok && !bytes.Equal(shardKey(kind, id), k) {
				t.Fatalf("%q key %x parses to shard %d, which encodes as %x", kind, k, id, shardKey(kind, id))
			}
		}
	})
}

type recordSeed struct {
	name    string
	payload []byte
	framed  bool
}

// recordSeeds returns, per record target, values worth mutating: real
// encodings (as payload to frame and as a whole raw value), non-canonical
// payloads a decoder must accept, and a few it must refuse.
func recordSeeds() map[string][]recordSeed {
	// payload strips the checksum of an encoded value.
	payload := func(v []byte) []byte { return v[crcLen:] }
	both := func(name string, v []byte) []recordSeed {
		return []recordSeed{{name, payload(v), true}, {name + "-raw", v, false}}
	}
	unk := protowire.AppendVarint(protowire.AppendTag(nil, 15, protowire.VarintType), 3)
	unk = protowire.AppendString(protowire.AppendTag(unk, 14, protowire.BytesType), "future")
	joint := raftpb.ConfState{Voters: []raftpb.NodeID{1, 2, 4}, VotersOutgoing: []raftpb.NodeID{1, 2, 3},
		Learners: []raftpb.NodeID{5}, LearnersNext: []raftpb.NodeID{3}, AutoLeave: true}

	seeds := map[string][]recordSeed{}
	add := func(target string, ss ...recordSeed) { seeds[target] = append(seeds[target], ss...) }

	e := raftpb.Entry{Term: 3, Index: 42, Key: 7, Data: []byte("put k v")}
	big := raftpb.Entry{Term: 1<<64 - 1, Index: 1<<64 - 1, Type: raftpb.EntryConfChange, Data: bytes.Repeat([]byte{0xab}, 100)}
	add("FuzzDecodeEntryRecord", both("normal", entryCodec.encode(e))...)
	add("FuzzDecodeEntryRecord", both("max", entryCodec.encode(big))...)
	add("FuzzDecodeEntryRecord", recordSeed{"empty", nil, true},
		recordSeed{"unknown-fields", append(payload(entryCodec.encode(e)), unk...), true},
		recordSeed{"bad-checksum", append([]byte{0, 0, 0, 0}, payload(entryCodec.encode(e))...), false},
		recordSeed{"short", []byte{1, 2}, false})

	hs := raftpb.HardState{Term: 9, Vote: 2, Commit: 40}
	add("FuzzDecodeHardStateRecord", both("normal", encodeHardState(hs))...)
	add("FuzzDecodeHardStateRecord", recordSeed{"empty", nil, true},
		recordSeed{"unknown-fields", append(payload(encodeHardState(hs)), unk...), true},
		recordSeed{"repeated-term", []byte{0x08, 0x01, 0x08, 0x02}, true},
		recordSeed{"truncated", payload(encodeHardState(hs))[:3], true})

	rec := ReplicaRecord{Initial: voters3, ConfState: joint, ConfIndex: 12, TruncIndex: 10, TruncTerm: 2,
		AppData: []byte{0, 0, 0, 0, 0, 0, 0x27, 0x10, 0, 0, 0, 0, 0, 0, 0x13, 0x88}}
	joiner := ReplicaRecord{Join: true, ConfState: raftpb.ConfState{Voters: []raftpb.NodeID{1, 2, 3, 4}}, ConfIndex: 30}
	add("FuzzDecodeReplicaRecord", both("full", rec.encode())...)
	add("FuzzDecodeReplicaRecord", both("joiner", joiner.encode())...)
	add("FuzzDecodeReplicaRecord", recordSeed{"empty", nil, true},
		recordSeed{"unknown-fields", append(payload(rec.encode()), unk...), true},
		// Field 1 (a message) sent as a varint; field 4 (a varint) as bytes.
		recordSeed{"wrong-wire-types", []byte{0x08, 0x05, 0x22, 0x01, 0x07}, true},
		recordSeed{"truncated", payload(rec.encode())[:9], true})

	snap := SnapshotRecord{Meta: raftpb.SnapshotMeta{Index: 100, Term: 4, ConfState: joint}, Data: []byte("7/00000000000000000100.snap")}
	add("FuzzDecodeSnapshotRecord", both("full", snap.encode())...)
	add("FuzzDecodeSnapshotRecord", both("no-data", (&SnapshotRecord{Meta: raftpb.SnapshotMeta{Index: 1, Term: 1}}).encode())...)
	add("FuzzDecodeSnapshotRecord", recordSeed{"empty", nil, true},
		recordSeed{"unknown-fields", append(payload(snap.encode()), unk...), true},
		recordSeed{"meta-twice", append(payload(snap.encode()), payload(snap.encode())...), true},
		recordSeed{"truncated", payload(snap.encode())[:12], true})
	return seeds
}

// keySeeds are FuzzParseKeys' seeds (payload is the key).
func keySeeds() []recordSeed {
	return []recordSeed{
		{name: "log", payload: logKey(7, 42)},
		{name: "log-last-shard", payload: logKey(1<<64-1, 1)},
		{name: "hardstate", payload: shardKey(kindHardState, 7)},
		{name: "replica", payload: shardKey(kindReplica, 1<<63)},
		{name: "snapshot", payload: shardKey(kindSnapshot, 300)},
		{name: "kind-only", payload: []byte{kindLog}},
		{name: "state-machine", payload: []byte{StateMachinePrefix, 0, 0, 0, 0, 0, 0, 0, 1, 'k'}},
	}
}

// recordCorpusFile renders a seed in the format of Go's fuzzing corpus.
func recordCorpusFile(s recordSeed) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\nbool(%v)\n", s.payload, s.framed)
}

// TestRecordFuzzCorpus checks that the committed seed corpus matches
// recordSeeds, or rewrites it with -update-corpus. Files the fuzzer adds
// (reproducers of failures) are left alone.
func TestRecordFuzzCorpus(t *testing.T) {
	targets := recordSeeds()
	targets["FuzzParseKeys"] = keySeeds()
	for target, ss := range targets {
		dir := filepath.Join("testdata", "fuzz", target)
		if len(ss) < 5 {
			t.Errorf("%s: only %d seeds", target, len(ss))
		}
		for i, s := range ss {
			path := filepath.Join(dir, fmt.Sprintf("seed-%02d-%s", i, s.name))
			want := recordCorpusFile(s)
			if target == "FuzzParseKeys" {
				want = fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", s.payload)
			}
			if *updateCorpus {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s is missing or stale (%v); run go test ./batchio -run '^TestRecordFuzzCorpus$' -update-corpus", path, err)
			}
		}
	}
}
