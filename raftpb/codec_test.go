package raftpb

import (
	"bufio"
	"bytes"
	"errors"
	"math"
	"os"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// codecValue is what every encoded type implements.
type codecValue interface {
	Size() int
	MarshalAppend([]byte) []byte
	Unmarshal([]byte) error
}

// fresh returns a new zero value of v's type.
func fresh(v codecValue) codecValue {
	return reflect.New(reflect.TypeOf(v).Elem()).Interface().(codecValue)
}

const max64 = math.MaxUint64

func jointConfState() ConfState {
	return ConfState{
		Voters:         []NodeID{1, 2, 3},
		Learners:       []NodeID{7},
		VotersOutgoing: []NodeID{1, 2, 4},
		LearnersNext:   []NodeID{4},
		AutoLeave:      true,
	}
}

func maxConfState() ConfState {
	return ConfState{
		Voters: []NodeID{1, 127, 128, 16383, 16384, max64}, Learners: []NodeID{max64},
		VotersOutgoing: []NodeID{max64 - 1, max64}, LearnersNext: []NodeID{max64}, AutoLeave: true,
	}
}

func fourEntries() []Entry {
	return []Entry{
		{Term: 5, Index: 10, Data: []byte("put a=1")},
		{Term: 5, Index: 11, Key: 42, Data: []byte{0, 1, 2, 0xff}},
		{Term: 6, Index: 12},
		{Term: 6, Index: 13, Type: EntryConfChange, Data: (&ConfChange{
			Changes: []ConfChangeSingle{{Type: AddLearner, Node: 9}},
		}).Marshal()},
	}
}

func appMessage() Message {
	return Message{Type: MsgApp, Shard: 3, From: 1, To: 2, Term: 6, LogTerm: 5,
		Index: 9, Commit: 11, Entries: fourEntries()}
}

func snapMessage() Message {
	return Message{Type: MsgSnap, Shard: 3, From: 1, To: 2, Term: 6,
		Snapshot: &SnapshotMeta{Index: 100, Term: 5, ConfState: jointConfState()}}
}

func maxMessage() Message {
	return Message{Type: MsgQuiesce, Shard: max64, From: max64, To: max64, Term: max64,
		LogTerm: max64, Index: max64, Commit: max64, Reject: true, RejectHint: max64,
		Context: max64,
		Entries: []Entry{{Term: max64, Index: max64, Type: EntryConfChange, Key: max64,
			Data: bytes.Repeat([]byte{0xff}, 200)}},
		Snapshot: &SnapshotMeta{Index: max64, Term: max64, ConfState: maxConfState()}}
}

func sampleBatch() Batch {
	return Batch{ClusterID: 0xdeadbeef, From: 1, To: 2,
		Messages: []Message{appMessage(), snapMessage(),
			{Type: MsgAppResp, Shard: 4, From: 1, To: 2, Term: 3, Index: 7, Reject: true, RejectHint: 5},
			{Type: MsgSnap, Shard: 5, Snapshot: &SnapshotMeta{}}},
		Heartbeats: []Heartbeat{{Shard: 1, Term: 2, Commit: 3, Context: 4},
			{Shard: 2, Term: 2, Response: true}, {}},
	}
}

type sample struct {
	name string
	v    codecValue
}

// samples are canonical values: decoding their encoding gives them back
// exactly (nil, not empty, slices).
func samples() []sample {
	e4 := fourEntries()
	m1, m2, mm := appMessage(), snapMessage(), maxMessage()
	b := sampleBatch()
	return []sample{
		{"Entry/empty", &Entry{}},
		{"Entry/data", &e4[0]},
		{"Entry/confchange", &e4[3]},
		{"Entry/max", &mm.Entries[0]},
		{"HardState/empty", &HardState{}},
		{"HardState/set", &HardState{Term: 4, Vote: 2, Commit: 9}},
		{"HardState/max", &HardState{Term: max64, Vote: max64, Commit: max64}},
		{"ConfState/empty", &ConfState{}},
		{"ConfState/simple", &ConfState{Voters: []NodeID{1, 2, 3}}},
		{"ConfState/joint", &ConfState{Voters: jointConfState().Voters, VotersOutgoing: jointConfState().VotersOutgoing}},
		{"ConfState/jointfull", ptr(jointConfState())},
		{"ConfState/max", ptr(maxConfState())},
		{"SnapshotMeta/empty", &SnapshotMeta{}},
		{"SnapshotMeta/joint", m2.Snapshot},
		{"SnapshotMeta/max", mm.Snapshot},
		{"ConfChangeSingle/empty", &ConfChangeSingle{}},
		{"ConfChangeSingle/max", &ConfChangeSingle{Type: RemoveNode, Node: max64}},
		{"ConfChange/empty", &ConfChange{}},
		{"ConfChange/joint", &ConfChange{Transition: TransitionJointExplicit, Changes: []ConfChangeSingle{
			{Type: AddVoter, Node: 4}, {Type: RemoveNode, Node: 3}, {Type: AddLearner, Node: 3}, {}}}},
		{"ConfChange/max", &ConfChange{Transition: TransitionJointExplicit,
			Changes: []ConfChangeSingle{{Type: RemoveNode, Node: max64}}}},
		{"Message/type-only", &Message{Type: MsgProp}},
		{"Message/app", &m1},
		{"Message/snap", &m2},
		{"Message/empty-snap", &Message{Type: MsgSnap, Snapshot: &SnapshotMeta{}}},
		{"Message/max", &mm},
		{"Heartbeat/empty", &Heartbeat{}},
		{"Heartbeat/max", &Heartbeat{Shard: max64, Term: max64, Commit: max64, Context: max64, Response: true}},
		{"Batch/empty", &Batch{}},
		{"Batch/full", &b},
		{"Batch/max", &Batch{ClusterID: max64, From: max64, To: max64, Messages: []Message{mm},
			Heartbeats: []Heartbeat{{Shard: max64, Term: max64, Commit: max64, Context: max64, Response: true}}}},
	}
}

func ptr[T any](v T) *T { return &v }

func TestRoundTrip(t *testing.T) {
	for _, s := range samples() {
		t.Run(s.name, func(t *testing.T) {
			enc := s.v.MarshalAppend(nil)
			if len(enc) != s.v.Size() {
				t.Fatalf("Size() = %d, encoding has %d bytes", s.v.Size(), len(enc))
			}
			prefix := []byte("prefix")
			if got := s.v.MarshalAppend(prefix); !bytes.Equal(got, append([]byte("prefix"), enc...)) {
				t.Fatalf("MarshalAppend does not append: %x", got)
			}
			got := fresh(s.v)
			if err := got.Unmarshal(enc); err != nil {
				t.Fatalf("Unmarshal(%x): %v", enc, err)
			}
			if !reflect.DeepEqual(got, s.v) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, s.v)
			}
			if strings.HasSuffix(s.name, "/empty") && len(enc) != 0 {
				t.Fatalf("empty value encodes to %x, want nothing", enc)
			}
		})
	}
}

// TestUnmarshalResets checks that Unmarshal replaces rather than merges.
func TestUnmarshalResets(t *testing.T) {
	for _, s := range samples() {
		got := fresh(s.v)
		if err := got.Unmarshal(s.v.MarshalAppend(nil)); err != nil {
			t.Fatal(err)
		}
		empty := fresh(s.v)
		var enc []byte
		if _, ok := empty.(*Message); ok {
			enc = []byte{tag(fieldMessageType, protowire.VarintType), byte(MsgProp)}
			empty.(*Message).Type = MsgProp
		}
		if err := got.Unmarshal(enc); err != nil || !reflect.DeepEqual(got, empty) {
			t.Fatalf("%s: Unmarshal did not reset: %+v, %v", s.name, got, err)
		}
	}
}

// TestGolden pins the wire format: these bytes are what other versions of
// shardd read and write, so a change here breaks compatibility.
func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		v    codecValue
		want string
	}{
		{&Entry{Term: 1, Index: 2, Type: EntryConfChange, Key: 3, Data: []byte("x")}, "08011002180120032a0178"},
		{&HardState{Term: 300, Vote: 2, Commit: 1}, "08ac02100218 01"},
		{&ConfState{Voters: []NodeID{1, 300}, Learners: []NodeID{5}, VotersOutgoing: []NodeID{1},
			LearnersNext: []NodeID{2}, AutoLeave: true}, "0a0301ac02 120105 1a0101 220102 2801"},
		{&SnapshotMeta{Index: 7, Term: 2, ConfState: ConfState{Voters: []NodeID{1}}}, "0807 1002 1a03 0a0101"},
		{&ConfChange{Transition: TransitionJointImplicit, Changes: []ConfChangeSingle{{Type: RemoveNode, Node: 3}}},
			"0801 1204 08021003"},
		{&Message{Type: MsgApp, Shard: 1, From: 2, To: 3, Term: 4, LogTerm: 5, Index: 6, Commit: 7,
			Reject: true, RejectHint: 8, Context: 9, Entries: []Entry{{Index: 1}},
			Snapshot: &SnapshotMeta{}},
			"0802 1001 1802 2003 2804 3005 3806 4007 4801 5008 5809 62021001 6a00"},
		{&Heartbeat{Shard: 1, Term: 2, Commit: 3, Context: 4, Response: true}, "0801 1002 1803 2004 2801"},
		{&Batch{ClusterID: 1, From: 2, To: 3, Messages: []Message{{Type: MsgProp}},
			Heartbeats: []Heartbeat{{Shard: 1}}}, "0801 1002 1803 22020801 2a020801"},
	} {
		got := tc.v.MarshalAppend(nil)
		want, _ := hexDecode(tc.want)
		if !bytes.Equal(got, want) {
			t.Errorf("%T: got %x, want %x", tc.v, got, want)
		}
	}
}

func hexDecode(s string) ([]byte, error) {
	s = strings.ReplaceAll(s, " ", "")
	out := make([]byte, len(s)/2)
	for i := range out {
		v, err := strconv.ParseUint(s[2*i:2*i+2], 16, 8)
		if err != nil {
			return nil, err
		}
		out[i] = byte(v)
	}
	return out, nil
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hexDecode(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTruncation decodes every proper prefix of every sample. A prefix that
// ends inside a field must fail; one that ends between fields must decode to
// the value whose canonical encoding is that prefix. Either way x must hold
// nothing of a failed decode.
func TestTruncation(t *testing.T) {
	for _, s := range samples() {
		enc := s.v.MarshalAppend(nil)
		for n := 0; n < len(enc); n++ {
			prefix := enc[:n:n]
			got := fresh(s.v)
			err := got.Unmarshal(prefix)
			if err != nil {
				if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrInvalidField) {
					t.Fatalf("%s[:%d]: unexpected error kind: %v", s.name, n, err)
				}
				if !reflect.DeepEqual(got, fresh(s.v)) {
					t.Fatalf("%s[:%d]: value not zeroed after error: %+v", s.name, n, got)
				}
				continue
			}
			if re := got.MarshalAppend(nil); !bytes.Equal(re, prefix) {
				t.Fatalf("%s[:%d]: decoded %+v re-encodes to %x, want %x", s.name, n, got, re, prefix)
			}
		}
	}
}

// unknownFields has one unknown field of every skippable wire type,
// including the largest valid field number.
func unknownFields() []byte {
	var b []byte
	b = protowire.AppendTag(b, 15, protowire.VarintType)
	b = protowire.AppendVarint(b, max64)
	b = protowire.AppendTag(b, 100, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, 7)
	b = protowire.AppendTag(b, 1000, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 7)
	b = protowire.AppendTag(b, protowire.MaxValidNumber, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("from the future"))
	return b
}

func TestUnknownFieldsSkipped(t *testing.T) {
	unk := unknownFields()
	for _, s := range samples() {
		enc := s.v.MarshalAppend(nil)
		in := append(append(append([]byte(nil), unk...), enc...), unk...)
		got := fresh(s.v)
		if err := got.Unmarshal(in); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !reflect.DeepEqual(got, s.v) {
			t.Fatalf("%s: got %+v, want %+v", s.name, got, s.v)
		}
	}
	// Unknown fields inside nested messages, at every level of a Batch.
	entry := append(mustHex(t, "0801 1002"), unk...)
	cs := append(mustHex(t, "0a0101"), unk...)
	snap := append(append(mustHex(t, "0807 1a"), byte(len(cs))), cs...)
	snap = append(snap, unk...)
	var msg []byte
	msg = append(msg, mustHex(t, "0808")...) // type MsgSnap
	msg = protowire.AppendBytes(append(msg, 0x62), entry)
	msg = protowire.AppendBytes(append(msg, 0x6a), snap)
	msg = append(msg, unk...)
	hb := append(mustHex(t, "0805"), unk...)
	var batch []byte
	batch = protowire.AppendBytes(append(batch, 0x22), msg)
	batch = protowire.AppendBytes(append(batch, 0x2a), hb)
	batch = append(batch, unk...)
	var got Batch
	if err := got.Unmarshal(batch); err != nil {
		t.Fatal(err)
	}
	want := Batch{
		Messages: []Message{{Type: MsgSnap, Entries: []Entry{{Term: 1, Index: 2}},
			Snapshot: &SnapshotMeta{Index: 7, ConfState: ConfState{Voters: []NodeID{1}}}}},
		Heartbeats: []Heartbeat{{Shard: 5}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

// TestProtoSemantics covers what protobuf parsers must accept beyond the
// canonical encoding: unpacked repeated scalars, repeated fields split in
// several runs, last-one-wins scalars and merged nested messages.
func TestProtoSemantics(t *testing.T) {
	var cs ConfState
	// voters 1, 2 unpacked, then packed [3, 4]; auto_leave = 2 (non-zero is true).
	if err := cs.Unmarshal(mustHex(t, "0801 0802 0a020304 2802 1000 0a00")); err != nil {
		t.Fatal(err)
	}
	if want := (ConfState{Voters: []NodeID{1, 2, 3, 4}, Learners: []NodeID{0}, AutoLeave: true}); !reflect.DeepEqual(cs, want) {
		t.Fatalf("got %+v, want %+v", cs, want)
	}
	var m Message
	// type twice (last wins), snapshot twice (merged), entries with empty data.
	if err := m.Unmarshal(mustHex(t, "0801 0808 6a020805 6a041002 1a00 62022a00")); err != nil {
		t.Fatal(err)
	}
	want := Message{Type: MsgSnap, Entries: []Entry{{}}, Snapshot: &SnapshotMeta{Index: 5, Term: 2}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got %+v, want %+v", m, want)
	}
	var sm SnapshotMeta
	if err := sm.Unmarshal(mustHex(t, "1a030a0101 1a051201022801")); err != nil {
		t.Fatal(err)
	}
	if want := (ConfState{Voters: []NodeID{1}, Learners: []NodeID{2}, AutoLeave: true}); !reflect.DeepEqual(sm.ConfState, want) {
		t.Fatalf("got %+v, want %+v", sm.ConfState, want)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    codecValue
		in   string
		want error
		text string // must appear in the error message
	}{
		{"entry type 2", &Entry{}, "1801 1802", ErrInvalidField, "Entry.type: invalid field value: 2 is out of range [0, 1]"},
		{"entry type huge", &Entry{}, "18ffffffffffffffffff01", ErrInvalidField, "Entry.type"},
		{"cc single type 3", &ConfChangeSingle{}, "0803", ErrInvalidField, "ConfChangeSingle.type"},
		{"cc transition 3", &ConfChange{}, "0803", ErrInvalidField, "ConfChange.transition"},
		{"cc nested type", &ConfChange{}, "1200 12020804", ErrInvalidField, "ConfChange.changes[1]: ConfChangeSingle.type"},
		{"msg no type", &Message{}, "1001", ErrInvalidField, "Message.type"},
		{"msg type 0", &Message{}, "0800", ErrInvalidField, "MsgInvalid"},
		{"msg type 18", &Message{}, "0812", ErrInvalidField, "18 is out of range [0, 17]"},
		{"msg type 256", &Message{}, "088002", ErrInvalidField, "Message.type"},
		{"msg entry type", &Message{}, "0802 62021802", ErrInvalidField, "Message.entries[0]: Entry.type"},
		{"msg snap cs", &Message{}, "0808 6a041a022a00", ErrWireType, "Message.snapshot: SnapshotMeta.conf_state: ConfState.auto_leave"},
		{"batch nested path", &Batch{}, "22020801 22060802 62021807", ErrInvalidField,
			"raftpb: Batch.messages[1]: Message.entries[0]: Entry.type: invalid field value: 7 is out of range [0, 1]"},
		{"batch hb wire", &Batch{}, "2a020a00", ErrWireType, "Batch.heartbeats[0]: Heartbeat.shard: wrong wire type: got bytes, want varint"},
		{"batch msgs varint", &Batch{}, "2001", ErrWireType, "Batch.messages"},
		{"batch msg no type", &Batch{}, "2200", ErrInvalidField, "Batch.messages[0]: Message.type"},
		{"entry term bytes", &Entry{}, "0a00", ErrWireType, "Entry.term"},
		{"entry data varint", &Entry{}, "2801", ErrWireType, "Entry.data: wrong wire type: got varint, want bytes"},
		{"entry term fixed64", &Entry{}, "090000000000000000", ErrWireType, "fixed64"},
		{"hs vote fixed32", &HardState{}, "1500000000", ErrWireType, "HardState.vote"},
		{"hb bool bytes", &Heartbeat{}, "2a00", ErrWireType, "Heartbeat.response"},
		{"cs voters fixed32", &ConfState{}, "0d00000000", ErrWireType, "ConfState.voters"},
		{"cs bool bytes", &ConfState{}, "2a00", ErrWireType, "ConfState.auto_leave"},
		{"entry data too long", &Entry{}, "2a0578", ErrTruncated, "Entry.data: truncated input: length 5 exceeds the 1 bytes left"},
		{"entry data huge length", &Entry{}, "2affffffffffffffffff01", ErrTruncated, "length 18446744073709551615"},
		{"entry term truncated", &Entry{}, "08ff", ErrTruncated, "Entry.term"},
		{"tag truncated", &HardState{}, "80", ErrTruncated, "HardState.<tag>"},
		{"varint overflow", &HardState{}, "08ffffffffffffffffff7f", ErrMalformed, "HardState.term"},
		{"varint 11 bytes", &HardState{}, "08ffffffffffffffffffff01", ErrMalformed, "overflow"},
		{"field number 0", &HardState{}, "0001", ErrMalformed, "invalid field number"},
		{"field number too big", &HardState{}, "808080801001", ErrMalformed, "above maximum"},
		{"field number above int32", &HardState{}, "808080804001", ErrMalformed, "invalid field number"},
		{"reserved wire type 6", &HardState{}, "7e", ErrMalformed, "reserved wire type"},
		{"reserved wire type 7", &Entry{}, "7f", ErrMalformed, "reserved wire type"},
		{"known field as group", &Entry{}, "0b", ErrWireType, "got start-group, want varint"},
		{"known field as end group", &Entry{}, "2c", ErrWireType, "got end-group, want bytes"},
		{"known field reserved type", &Entry{}, "0e", ErrWireType, "got wire type 6"},
		{"cc tag truncated", &ConfChange{}, "0801 80", ErrTruncated, "ConfChange.<tag>"},
		{"group", &HardState{}, "7b7c", ErrMalformed, "groups"},
		{"end group", &Message{}, "0801 7c", ErrMalformed, "groups"},
		{"unknown truncated", &SnapshotMeta{}, "7a05", ErrTruncated, "SnapshotMeta.<unknown 15>"},
		{"unknown fixed32 truncated", &Heartbeat{}, "7d0000", ErrTruncated, "Heartbeat"},
		{"packed varint truncated", &ConfState{}, "0a0201ff", ErrTruncated, "ConfState.voters"},
		{"packed length lies", &ConfState{}, "12ffffffff0f01", ErrTruncated, "ConfState.learners"},
		{"unpacked truncated", &ConfState{}, "20ff", ErrTruncated, "ConfState.learners_next"},
		{"packed overflow", &ConfState{}, "1a0bffffffffffffffffffff01", ErrMalformed, "ConfState.voters_outgoing"},
		{"snapshot cs truncated", &SnapshotMeta{}, "1a050a01", ErrTruncated, "SnapshotMeta.conf_state"},
		{"snapshot index bytes", &Message{}, "0808 6a020a00", ErrWireType, "Message.snapshot: SnapshotMeta.index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.v.Unmarshal(mustHex(t, tc.in))
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "raftpb: ") || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("error %q does not contain %q", err, tc.text)
			}
			if !reflect.DeepEqual(tc.v, fresh(tc.v)) {
				t.Fatalf("value not zeroed after error: %+v", tc.v)
			}
		})
	}
}

func TestEmptyMessageRejected(t *testing.T) {
	var m Message
	if enc := m.MarshalAppend(nil); len(enc) != 0 {
		t.Fatalf("empty message encodes to %x", enc)
	}
	if err := m.Unmarshal(nil); !errors.Is(err, ErrInvalidField) {
		t.Fatalf("decoding the empty message: %v, want ErrInvalidField", err)
	}
}

func TestDecodeAliasesInput(t *testing.T) {
	m := appMessage()
	enc := m.MarshalAppend(nil)
	var got Message
	if err := got.Unmarshal(enc); err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(enc, []byte("put a=1"))
	enc[i] = 'P'
	if string(got.Entries[0].Data) != "Put a=1" {
		t.Fatalf("Entry.Data does not alias the input: %q", got.Entries[0].Data)
	}
	if cap(got.Entries[0].Data) != len(got.Entries[0].Data) {
		t.Fatal("Entry.Data capacity reaches past the field: appending would clobber the input")
	}
}

func TestConfChangeMarshal(t *testing.T) {
	cc := ConfChange{Transition: TransitionJointImplicit, Changes: []ConfChangeSingle{{AddVoter, 4}, {RemoveNode, 1}}}
	data := cc.Marshal()
	if len(data) != cap(data) || len(data) != cc.Size() {
		t.Fatalf("Marshal: len %d cap %d size %d", len(data), cap(data), cc.Size())
	}
	got, err := UnmarshalConfChange(data)
	if err != nil || !reflect.DeepEqual(got, cc) {
		t.Fatalf("got %+v, %v", got, err)
	}
	if _, err := UnmarshalConfChange([]byte{0x08, 0x09}); !errors.Is(err, ErrInvalidField) {
		t.Fatalf("bad transition: %v", err)
	}
	var single ConfChangeSingle
	if err := single.Unmarshal([]byte{0x10}); !errors.Is(err, ErrTruncated) {
		t.Fatalf("truncated single: %v", err)
	}
}

func TestMarshalAllocs(t *testing.T) {
	for _, s := range samples() {
		buf := make([]byte, 0, s.v.Size())
		if n := testing.AllocsPerRun(100, func() { buf = s.v.MarshalAppend(buf[:0]) }); n != 0 {
			t.Errorf("%s: MarshalAppend allocates %v times", s.name, n)
		}
	}
}

func TestUnmarshalAllocs(t *testing.T) {
	m := appMessage()
	if len(m.Entries) != 4 {
		t.Fatal("want 4 entries")
	}
	enc := m.MarshalAppend(nil)
	var got Message
	if n := testing.AllocsPerRun(100, func() {
		if err := got.Unmarshal(enc); err != nil {
			t.Fatal(err)
		}
	}); n > 1 {
		t.Errorf("Message with 4 entries: %v allocations, want at most 1", n)
	}
	for _, v := range []codecValue{&Entry{}, &HardState{}, &Heartbeat{}, &ConfChangeSingle{}} {
		s := samples()
		for _, x := range s {
			if reflect.TypeOf(x.v) == reflect.TypeOf(v) {
				enc := x.v.MarshalAppend(nil)
				if n := testing.AllocsPerRun(100, func() { _ = v.Unmarshal(enc) }); n != 0 {
					t.Errorf("%s: %v allocations, want 0", x.name, n)
				}
			}
		}
	}
}

// TestDecodeMemoryBound feeds inputs built to make a decoder allocate much
// more than it reads, and checks the allocation stays proportional to the
// input.
func TestDecodeMemoryBound(t *testing.T) {
	const n = 1 << 16
	var many []byte // a Batch of n minimal messages, each with one empty entry
	for i := 0; i < n; i++ {
		many = append(many, 0x22, 4, 0x08, 0x02, 0x62, 0x00)
	}
	var cs []byte // a ConfState whose packed length claims far more than is there
	cs = protowire.AppendTag(cs, fieldConfStateVoters, protowire.BytesType)
	cs = protowire.AppendVarint(cs, 1<<40)
	cs = append(cs, bytes.Repeat([]byte{1}, 100)...)
	for _, tc := range []struct {
		v  codecValue
		in []byte
	}{{&Batch{}, many}, {&ConfState{}, cs}, {&Message{}, bytes.Repeat([]byte{0x62, 0x00}, n)}} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_ = tc.v.Unmarshal(tc.in)
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > 200*uint64(len(tc.in))+4096 {
			t.Errorf("%T: decoding %d bytes allocated %d bytes", tc.v, len(tc.in), got)
		}
	}
}

// TestProtoFieldNumbers cross-checks the codec's field numbers against
// raftpb.proto, in both directions.
func TestProtoFieldNumbers(t *testing.T) {
	codec := map[string]protowire.Number{
		"Entry.term": fieldEntryTerm, "Entry.index": fieldEntryIndex, "Entry.type": fieldEntryType,
		"Entry.key": fieldEntryKey, "Entry.data": fieldEntryData,
		"HardState.term": fieldHardStateTerm, "HardState.vote": fieldHardStateVote,
		"HardState.commit": fieldHardStateCommit,
		"ConfState.voters": fieldConfStateVoters, "ConfState.learners": fieldConfStateLearners,
		"ConfState.voters_outgoing": fieldConfStateVotersOutgoing,
		"ConfState.learners_next":   fieldConfStateLearnersNext, "ConfState.auto_leave": fieldConfStateAutoLeave,
		"SnapshotMeta.index": fieldSnapshotMetaIndex, "SnapshotMeta.term": fieldSnapshotMetaTerm,
		"SnapshotMeta.conf_state": fieldSnapshotMetaConfState,
		"ConfChangeSingle.type":   fieldConfChangeSingleType, "ConfChangeSingle.node": fieldConfChangeSingleNode,
		"ConfChange.transition": fieldConfChangeTransition, "ConfChange.changes": fieldConfChangeChanges,
		"Message.type": fieldMessageType, "Message.shard": fieldMessageShard, "Message.from": fieldMessageFrom,
		"Message.to": fieldMessageTo, "Message.term": fieldMessageTerm, "Message.log_term": fieldMessageLogTerm,
		"Message.index": fieldMessageIndex, "Message.commit": fieldMessageCommit,
		"Message.reject": fieldMessageReject, "Message.reject_hint": fieldMessageRejectHint,
		"Message.context": fieldMessageContext, "Message.entries": fieldMessageEntries,
		"Message.snapshot": fieldMessageSnapshot,
		"Heartbeat.shard":  fieldHeartbeatShard, "Heartbeat.term": fieldHeartbeatTerm,
		"Heartbeat.commit": fieldHeartbeatCommit, "Heartbeat.context": fieldHeartbeatContext,
		"Heartbeat.response": fieldHeartbeatResponse,
		"Batch.cluster_id":   fieldBatchClusterID, "Batch.from": fieldBatchFrom, "Batch.to": fieldBatchTo,
		"Batch.messages": fieldBatchMessages, "Batch.heartbeats": fieldBatchHeartbeats,
	}
	f, err := os.Open("raftpb.proto")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	msgRE := regexp.MustCompile(`^message (\w+) \{`)
	fieldRE := regexp.MustCompile(`^\s+(?:repeated )?[\w.]+ (\w+) = (\d+);`)
	proto := map[string]protowire.Number{}
	var cur string
	for sc := bufio.NewScanner(f); sc.Scan(); {
		line := sc.Text()
		if m := msgRE.FindStringSubmatch(line); m != nil {
			cur = m[1]
		} else if line == "}" {
			cur = ""
		} else if m := fieldRE.FindStringSubmatch(line); m != nil && cur != "" {
			n, _ := strconv.Atoi(m[2])
			proto[cur+"."+m[1]] = protowire.Number(n)
		}
	}
	if !reflect.DeepEqual(proto, codec) {
		t.Fatalf("raftpb.proto and the codec disagree:\nproto %v\ncodec %v", proto, codec)
	}
	for name, n := range codec {
		if n >= 16 {
			t.Errorf("%s = %d: the codec assumes one-byte tags (field numbers < 16)", name, n)
		}
	}
}

// ---- the small methods of types.go, message.go and frame.go ---------------

func TestEnumStrings(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{EntryNormal.String(), "Normal"}, {EntryConfChange.String(), "ConfChange"},
		{EntryType(9).String(), "EntryType(9)"},
		{AddVoter.String(), "AddVoter"}, {AddLearner.String(), "AddLearner"},
		{RemoveNode.String(), "RemoveNode"}, {ConfChangeType(7).String(), "ConfChangeType(7)"},
		{MsgInvalid.String(), "MsgInvalid"}, {MsgQuiesce.String(), "MsgQuiesce"},
		{numMessageTypes.String(), "MessageType(18)"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	for mt := MessageType(0); mt < numMessageTypes; mt++ {
		if strings.HasPrefix(mt.String(), "MessageType(") {
			t.Errorf("%d has no name", mt)
		}
	}
}

func TestMessageTypePredicates(t *testing.T) {
	if MsgInvalid.Valid() || numMessageTypes.Valid() || MessageType(255).Valid() {
		t.Error("invalid types reported valid")
	}
	responses := map[MessageType]bool{MsgAppResp: true, MsgVoteResp: true, MsgPreVoteResp: true,
		MsgHeartbeatResp: true, MsgReadIndexResp: true, MsgTimeoutNowResp: true}
	for mt := MsgProp; mt < numMessageTypes; mt++ {
		if !mt.Valid() {
			t.Errorf("%v not valid", mt)
		}
		if mt.IsResponse() != responses[mt] {
			t.Errorf("%v.IsResponse() = %v", mt, mt.IsResponse())
		}
	}
}

func TestEntrySizes(t *testing.T) {
	ents := []Entry{{Data: []byte("abc")}, {}}
	if got := ents[0].SizeBytes(); got != 3+entryOverhead {
		t.Errorf("SizeBytes = %d", got)
	}
	if got := EntriesSize(ents); got != 3+2*entryOverhead {
		t.Errorf("EntriesSize = %d", got)
	}
	if EntriesSize(nil) != 0 {
		t.Error("EntriesSize(nil) != 0")
	}
}

func TestStateHelpers(t *testing.T) {
	if !(HardState{}).IsEmpty() || (HardState{Commit: 1}).IsEmpty() {
		t.Error("HardState.IsEmpty")
	}
	if !(&SnapshotMeta{Term: 1}).IsEmpty() || (&SnapshotMeta{Index: 1}).IsEmpty() {
		t.Error("SnapshotMeta.IsEmpty")
	}
	if !(&ConfChange{}).LeaveJoint() || (&ConfChange{Changes: []ConfChangeSingle{{}}}).LeaveJoint() {
		t.Error("ConfChange.LeaveJoint")
	}
}

func TestConfStateHelpers(t *testing.T) {
	cs := jointConfState()
	simple := ConfState{Voters: []NodeID{1, 2}}
	if !cs.Joint() || simple.Joint() {
		t.Error("Joint")
	}
	c := cs.Clone()
	if !c.Equal(&cs) || !reflect.DeepEqual(c, cs) {
		t.Fatalf("Clone = %+v", c)
	}
	c.Voters[0] = 99
	if cs.Voters[0] == 99 {
		t.Error("Clone shares memory")
	}
	if c.Equal(&cs) {
		t.Error("Equal ignores a changed voter")
	}
	if e := (&ConfState{}).Clone(); e.Voters != nil || !e.Equal(&ConfState{}) {
		t.Error("Clone of empty")
	}
	for _, o := range []ConfState{simple, {Voters: []NodeID{1, 3}}, {Voters: []NodeID{1, 2}, AutoLeave: true},
		{Voters: []NodeID{1, 2}, Learners: []NodeID{3}}} {
		if o.Equal(&simple) != reflect.DeepEqual(o, simple) {
			t.Errorf("Equal(%v, %v)", o, simple)
		}
	}
	for _, tc := range []struct {
		id            NodeID
		voter, member bool
	}{{1, true, true}, {4, true, true}, {7, false, true}, {9, false, false}} {
		if cs.IsVoter(tc.id) != tc.voter || cs.IsMember(tc.id) != tc.member {
			t.Errorf("node %d: IsVoter %v IsMember %v", tc.id, cs.IsVoter(tc.id), cs.IsMember(tc.id))
		}
	}
	if !(&ConfState{LearnersNext: []NodeID{4}}).IsMember(4) {
		t.Error("learner-next not a member")
	}
	if got, want := cs.String(), "voters=[1 2 3]&&[1 2 4] learners=[7] learners_next=[4] autoleave"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	if got := simple.String(); got != "voters=[1 2]" {
		t.Errorf("String = %q", got)
	}
}

func TestMessageString(t *testing.T) {
	for _, tc := range []struct {
		m    Message
		want string
	}{
		{appMessage(), "MsgApp 1->2 t6 log=5/9 commit=11 ents=[10..13]"},
		{snapMessage(), "MsgSnap 1->2 t6 snap=5/100"},
		{Message{Type: MsgAppResp, From: 2, To: 1, Term: 3, Index: 7, Reject: true, LogTerm: 2, RejectHint: 5},
			"MsgAppResp 2->1 t3 idx=7 reject hint=2/5"},
		{Message{Type: MsgReadIndex, From: 2, To: 1, Context: 8}, "MsgReadIndex 2->1 t0 ctx=8"},
	} {
		if got := tc.m.String(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

func TestHeartbeatCoalesce(t *testing.T) {
	for _, m := range []Message{
		{Type: MsgHeartbeat, Shard: 7, From: 1, To: 2, Term: 3, Commit: 4, Context: 5},
		{Type: MsgHeartbeatResp, Shard: 8, From: 2, To: 1, Term: 3, Context: 5},
		{Type: MsgHeartbeat, Shard: max64, From: 1, To: 2, Term: max64, Commit: max64, Context: max64},
	} {
		if !CanCoalesce(&m) {
			t.Fatalf("cannot coalesce %v", m)
		}
		hb := Coalesce(&m)
		// The compact record must survive the wire too.
		var dec Heartbeat
		if err := dec.Unmarshal(hb.MarshalAppend(nil)); err != nil || dec != hb {
			t.Fatalf("heartbeat round trip: %+v, %v", dec, err)
		}
		if got := dec.Expand(m.From, m.To); !reflect.DeepEqual(got, m) {
			t.Fatalf("Expand(Coalesce(m)) = %+v, want %+v", got, m)
		}
	}
	for _, m := range []Message{
		{Type: MsgApp}, {Type: MsgHeartbeat, LogTerm: 1}, {Type: MsgHeartbeat, Index: 1},
		{Type: MsgHeartbeatResp, Reject: true}, {Type: MsgHeartbeatResp, RejectHint: 1},
		{Type: MsgHeartbeat, Entries: []Entry{{}}}, {Type: MsgHeartbeat, Snapshot: &SnapshotMeta{}},
	} {
		if CanCoalesce(&m) {
			t.Errorf("CanCoalesce(%+v) = true", m)
		}
	}
}

// TestProtoEnumValues pins the Go enum constants to raftpb.proto. The Go
// constants use iota, so inserting one in the middle would silently change
// the wire; this test catches that.
func TestProtoEnumValues(t *testing.T) {
	src, err := os.ReadFile("raftpb.proto")
	if err != nil {
		t.Fatal(err)
	}
	proto := map[string]uint64{}
	for _, m := range regexp.MustCompile(`(?m)^  ([A-Z_]+) = (\d+);`).FindAllStringSubmatch(string(src), -1) {
		proto[m[1]], _ = strconv.ParseUint(m[2], 10, 64)
	}
	upper := regexp.MustCompile(`([a-z])([A-Z])`)
	snake := func(s string) string { return strings.ToUpper(upper.ReplaceAllString(s, "${1}_$2")) }
	want := map[string]uint64{
		"TRANSITION_AUTO": uint64(TransitionAuto), "TRANSITION_JOINT_IMPLICIT": uint64(TransitionJointImplicit),
		"TRANSITION_JOINT_EXPLICIT": uint64(TransitionJointExplicit),
	}
	for v := EntryType(0); v <= EntryType(maxEntryType); v++ {
		want["ENTRY_"+snake(v.String())] = uint64(v)
	}
	for v := ConfChangeType(0); v <= ConfChangeType(maxConfChangeType); v++ {
		want["CONF_CHANGE_"+snake(v.String())] = uint64(v)
	}
	for v := MessageType(0); v < numMessageTypes; v++ {
		want[snake(v.String())] = uint64(v)
	}
	if !reflect.DeepEqual(proto, want) {
		t.Fatalf("raftpb.proto enums and Go constants disagree:\nproto %v\ngo    %v", proto, want)
	}
}
