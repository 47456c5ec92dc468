package raftpb

import (
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protowire"
)

// Wire format.
//
// Every type is encoded in the protobuf wire format described by
// raftpb.proto. Protobuf gives a compact, well-documented format that any
// protobuf tool can read and that evolves safely: decoders skip fields they
// do not know, so nodes of adjacent versions interoperate.
//
// The codec is written by hand on top of protowire rather than generated.
// Generated (APIv2) message structs carry internal state, so they cannot be
// copied by value, and they allocate for every nested message on decode. The
// Raft hot path wants the plain structs of this package, encoding that
// appends into a buffer the caller owns (MarshalAppend allocates nothing
// beyond growing that buffer) and decoding that allocates only the slices it
// must fill.
//
// Decoding aliases: byte fields (Entry.Data) point into the input instead of
// being copied, so the input must not be modified or reused while the decoded
// value is in use. Slices are preallocated only with counts taken from the
// input actually present, never from a length prefix, so decoding allocates
// at most O(len(data)) whatever the input claims.
//
// Decoders are strict where being lenient would hide corruption: wrong wire
// types for known fields, enum values outside their range, lengths beyond the
// input and groups (which this schema never uses, and which are the only way
// unknown data could nest without bound) are all errors. Errors wrap one of
// the sentinels below and name the field, e.g.
//
//	raftpb: Batch.messages[2]: Message.entries[0]: Entry.type: invalid field value: 7 is out of range [0, 1]

// Sentinel errors returned (wrapped) by the Unmarshal methods; test for them
// with errors.Is.
var (
	// ErrTruncated means the input ended inside a field, or a length prefix
	// claims more bytes than remain.
	ErrTruncated = errors.New("truncated input")
	// ErrMalformed means the input is not valid protobuf wire format: an
	// overlong varint, an invalid field number, a reserved wire type or a
	// group.
	ErrMalformed = errors.New("malformed input")
	// ErrWireType means a known field was encoded with the wrong wire type.
	ErrWireType = errors.New("wrong wire type")
	// ErrInvalidField means a field's value is outside the range its type
	// allows, such as an unknown enum value or a Message without a valid
	// type.
	ErrInvalidField = errors.New("invalid field value")
)

// Field numbers; raftpb.proto is the reference and TestProtoFieldNumbers
// keeps both in step. All are below 16, so every tag is a single byte.
const (
	fieldEntryTerm  protowire.Number = 1
	fieldEntryIndex protowire.Number = 2
	fieldEntryType  protowire.Number = 3
	fieldEntryKey   protowire.Number = 4
	fieldEntryData  protowire.Number = 5

	fieldHardStateTerm   protowire.Number = 1
	fieldHardStateVote   protowire.Number = 2
	fieldHardStateCommit protowire.Number = 3

	fieldConfStateVoters         protowire.Number = 1
	fieldConfStateLearners       protowire.Number = 2
	fieldConfStateVotersOutgoing protowire.Number = 3
	fieldConfStateLearnersNext   protowire.Number = 4
	fieldConfStateAutoLeave      protowire.Number = 5

	fieldSnapshotMetaIndex     protowire.Number = 1
	fieldSnapshotMetaTerm      protowire.Number = 2
	fieldSnapshotMetaConfState protowire.Number = 3

	fieldConfChangeSingleType protowire.Number = 1
	fieldConfChangeSingleNode protowire.Number = 2

	fieldConfChangeTransition protowire.Number = 1
	fieldConfChangeChanges    protowire.Number = 2
)

// Largest valid value of each enum, checked on decode.
const (
	maxEntryType      = uint64(EntryConfChange)
	maxConfChangeType = uint64(RemoveNode)
	maxTransition     = uint64(TransitionJointExplicit)
	maxMessageType    = uint64(numMessageTypes - 1)
)

// ---- encoding helpers -----------------------------------------------------

// tag returns the one-byte tag of a field; every field number is < 16.
func tag(num protowire.Number, typ protowire.Type) byte {
	return byte(uint64(num)<<3 | uint64(typ))
}

// sizeVarintField is the size of a varint field, 0 when v is omitted.
func sizeVarintField(v uint64) int {
	if v == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(v)
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = append(b, tag(num, protowire.VarintType))
	return protowire.AppendVarint(b, v)
}

func sizeBoolField(v bool) int {
	if !v {
		return 0
	}
	return 2
}

func appendBoolField(b []byte, num protowire.Number, v bool) []byte {
	if !v {
		return b
	}
	return append(b, tag(num, protowire.VarintType), 1)
}

// sizeLenField is the size of a length-delimited field with n bytes of
// payload; callers decide whether the field is omitted.
func sizeLenField(n int) int { return 1 + protowire.SizeBytes(n) }

// appendLenPrefix appends the tag and length of a length-delimited field;
// the caller appends the n bytes of payload.
func appendLenPrefix(b []byte, num protowire.Number, n int) []byte {
	b = append(b, tag(num, protowire.BytesType))
	return protowire.AppendVarint(b, uint64(n))
}

// packedIDsLen is the payload size of a packed list of IDs.
func packedIDsLen(ids []NodeID) int {
	n := 0
	for _, id := range ids {
		n += protowire.SizeVarint(uint64(id))
	}
	return n
}

func sizePackedIDs(ids []NodeID) int {
	if len(ids) == 0 {
		return 0
	}
	return sizeLenField(packedIDsLen(ids))
}

func appendPackedIDs(b []byte, num protowire.Number, ids []NodeID) []byte {
	if len(ids) == 0 {
		return b
	}
	b = appendLenPrefix(b, num, packedIDsLen(ids))
	for _, id := range ids {
		b = protowire.AppendVarint(b, uint64(id))
	}
	return b
}

// ---- decoding helpers -----------------------------------------------------

// decoder walks the fields of one encoded message. It lives on the stack;
// nothing in it escapes on the success path, so it costs no allocation.
type decoder struct {
	b   []byte // input not yet consumed
	msg string // message name, for errors
	num protowire.Number
	typ protowire.Type
}

// next reads the next tag. It returns false, nil at the end of the input.
func (d *decoder) next() (bool, error) {
	if len(d.b) == 0 {
		return false, nil
	}
	num, typ, n := protowire.ConsumeTag(d.b)
	if n < 0 {
		return false, d.parseErr("<tag>", n)
	}
	if num > protowire.MaxValidNumber {
		return false, fmt.Errorf("%s: %w: field number %d above maximum", d.msg, ErrMalformed, num)
	}
	d.b = d.b[n:]
	d.num, d.typ = num, typ
	return true, nil
}

// parseErr turns a protowire error code into one of our sentinels.
func (d *decoder) parseErr(field string, n int) error {
	err := protowire.ParseError(n)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%s.%s: %w", d.msg, field, ErrTruncated)
	}
	return fmt.Errorf("%s.%s: %w: %v", d.msg, field, ErrMalformed, err)
}

func (d *decoder) wireTypeErr(field string, want protowire.Type) error {
	return fmt.Errorf("%s.%s: %w: got %s, want %s", d.msg, field, ErrWireType,
		wireTypeName(d.typ), wireTypeName(want))
}

func wireTypeName(t protowire.Type) string {
	switch t {
	case protowire.VarintType:
		return "varint"
	case protowire.Fixed32Type:
		return "fixed32"
	case protowire.Fixed64Type:
		return "fixed64"
	case protowire.BytesType:
		return "bytes"
	case protowire.StartGroupType:
		return "start-group"
	case protowire.EndGroupType:
		return "end-group"
	}
	return fmt.Sprintf("wire type %d", int(t))
}

// rawVarint consumes a varint value whose tag has been checked.
func (d *decoder) rawVarint(field string) (uint64, error) {
	v, n := protowire.ConsumeVarint(d.b)
	if n < 0 {
		return 0, d.parseErr(field, n)
	}
	d.b = d.b[n:]
	return v, nil
}

// varint consumes the value of a varint field.
func (d *decoder) varint(field string) (uint64, error) {
	if d.typ != protowire.VarintType {
		return 0, d.wireTypeErr(field, protowire.VarintType)
	}
	return d.rawVarint(field)
}

// boolean consumes a bool field; as in protobuf, any non-zero value is true.
func (d *decoder) boolean(field string) (bool, error) {
	v, err := d.varint(field)
	return v != 0, err
}

// enum consumes an enum field and checks that it is at most max.
func (d *decoder) enum(field string, max uint64) (uint64, error) {
	v, err := d.varint(field)
	if err != nil {
		return 0, err
	}
	if v > max {
		return 0, fmt.Errorf("%s.%s: %w: %d is out of range [0, %d]", d.msg, field, ErrInvalidField, v, max)
	}
	return v, nil
}

// rawBytes consumes a length-prefixed payload whose tag has been checked.
// The result aliases the input.
func (d *decoder) rawBytes(field string) ([]byte, error) {
	l, n := protowire.ConsumeVarint(d.b)
	if n < 0 {
		return nil, d.parseErr(field, n)
	}
	rest := d.b[n:]
	if l > uint64(len(rest)) {
		return nil, fmt.Errorf("%s.%s: %w: length %d exceeds the %d bytes left",
			d.msg, field, ErrTruncated, l, len(rest))
	}
	d.b = rest[l:]
	return rest[:l:l], nil
}

// bytes consumes the payload of a length-delimited field. The result
// aliases the input; it is nil when empty, so that decoding is
// canonical (an absent and an empty field are the same in proto3).
func (d *decoder) bytes(field string) ([]byte, error) {
	if d.typ != protowire.BytesType {
		return nil, d.wireTypeErr(field, protowire.BytesType)
	}
	v, err := d.rawBytes(field)
	if len(v) == 0 {
		v = nil
	}
	return v, err
}

// skip consumes the value of an unknown field.
func (d *decoder) skip() error {
	if d.typ == protowire.StartGroupType || d.typ == protowire.EndGroupType {
		return fmt.Errorf("%s: field %d: %w: groups are not part of the schema", d.msg, d.num, ErrMalformed)
	}
	n := protowire.ConsumeFieldValue(d.num, d.typ, d.b)
	if n < 0 {
		return d.parseErr(fmt.Sprintf("<unknown %d>", d.num), n)
	}
	d.b = d.b[n:]
	return nil
}

// nestedErr places an error of a nested message under its field.
func (d *decoder) nestedErr(field string, err error) error {
	return fmt.Errorf("%s.%s: %w", d.msg, field, err)
}

// nestedElemErr places an error of a repeated nested message under its
// field and element index.
func (d *decoder) nestedElemErr(field string, i int, err error) error {
	return fmt.Errorf("%s.%s[%d]: %w", d.msg, field, i, err)
}

// ids decodes one occurrence of a repeated ID field, packed or not, and
// appends to ids. The packed form is sized exactly: the number of varints in
// a payload is the number of its bytes without the continuation bit, which
// bounds the allocation by the payload length.
func (d *decoder) ids(field string, ids []NodeID) ([]NodeID, error) {
	switch d.typ {
	case protowire.VarintType:
		v, err := d.rawVarint(field)
		if err != nil {
			return ids, err
		}
		return append(ids, NodeID(v)), nil
	case protowire.BytesType:
		p, err := d.rawBytes(field)
		if err != nil {
			return ids, err
		}
		count := 0
		for _, c := range p {
			if c < 0x80 {
				count++
			}
		}
		if len(p) == 0 {
			return ids, nil
		}
		if free := cap(ids) - len(ids); free < count {
			grown := make([]NodeID, len(ids), len(ids)+count)
			copy(grown, ids)
			ids = grown
		}
		for len(p) > 0 {
			v, n := protowire.ConsumeVarint(p)
			if n < 0 {
				return ids, d.parseErr(field, n)
			}
			ids = append(ids, NodeID(v))
			p = p[n:]
		}
		return ids, nil
	}
	return ids, d.wireTypeErr(field, protowire.BytesType)
}

// countFields counts the length-delimited occurrences of fields a and b at
// the top level of data, so repeated nested messages can be allocated once.
// It stops quietly at the first malformed field: the decoding pass that
// follows reports the error, and a short count only costs a reallocation.
func countFields(data []byte, a, b protowire.Number) (na, nb int) {
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 || typ == protowire.StartGroupType || typ == protowire.EndGroupType {
			return
		}
		data = data[n:]
		n = protowire.ConsumeFieldValue(num, typ, data)
		if n < 0 {
			return
		}
		data = data[n:]
		if typ == protowire.BytesType {
			switch num {
			case a:
				na++
			case b:
				nb++
			}
		}
	}
	return
}

// unmarshalErr gives a decoding error the package prefix once, at the top.
func unmarshalErr(err error) error { return fmt.Errorf("raftpb: %w", err) }

// ---- Entry ----------------------------------------------------------------

// Size returns the exact length of x's encoding.
func (x *Entry) Size() int {
	n := sizeVarintField(uint64(x.Term)) + sizeVarintField(uint64(x.Index)) +
		sizeVarintField(uint64(x.Type)) + sizeVarintField(x.Key)
	if len(x.Data) > 0 {
		n += sizeLenField(len(x.Data))
	}
	return n
}

// MarshalAppend appends the encoding of x to b and returns the result.
func (x *Entry) MarshalAppend(b []byte) []byte {
	b = appendVarintField(b, fieldEntryTerm, uint64(x.Term))
	b = appendVarintField(b, fieldEntryIndex, uint64(x.Index))
	b = appendVarintField(b, fieldEntryType, uint64(x.Type))
	b = appendVarintField(b, fieldEntryKey, x.Key)
	if len(x.Data) > 0 {
		b = appendLenPrefix(b, fieldEntryData, len(x.Data))
		b = append(b, x.Data...)
	}
	return b
}

// Unmarshal replaces x with the Entry encoded in data. On error x is zeroed.
// x.Data aliases data: the caller must not modify or reuse data while x is
// in use.
func (x *Entry) Unmarshal(data []byte) error {
	*x = Entry{}
	if err := x.merge(data); err != nil {
		*x = Entry{}
		return unmarshalErr(err)
	}
	return nil
}

func (x *Entry) merge(data []byte) error {
	d := decoder{b: data, msg: "Entry"}
	for {
		ok, err := d.next()
		if !ok {
			return err
		}
		var v uint64
		switch d.num {
		case fieldEntryTerm:
			v, err = d.varint("term")
			x.Term = Term(v)
		case fieldEntryIndex:
			v, err = d.varint("index")
			x.Index = Index(v)
		case fieldEntryType:
			v, err = d.enum("type", maxEntryType)
			x.Type = EntryType(v)
		case fieldEntryKey:
			x.Key, err = d.varint("key")
		case fieldEntryData:
			x.Data, err = d.bytes("data")
		default:
			err = d.skip()
		}
		if err != nil {
			return err
		}
	}
}

// ---- HardState ------------------------------------------------------------

// Size returns the exact length of x's encoding.
func (x *HardState) Size() int {
	return sizeVarintField(uint64(x.Term)) + sizeVarintField(uint64(x.Vote)) +
		sizeVarintField(uint64(x.Commit))
}

// MarshalAppend appends the encoding of x to b and returns the result.
func (x *HardState) MarshalAppend(b []byte) []byte {
	b = appendVarintField(b, fieldHardStateTerm, uint64(x.Term))
	b = appendVarintField(b, fieldHardStateVote, uint64(x.Vote))
	return appendVarintField(b, fieldHardStateCommit, uint64(x.Commit))
}

// Unmarshal replaces x with the HardState encoded in data. On error x is
// zeroed.
func (x *HardState) Unmarshal(data []byte) error {
	*x = HardState{}
	d := decoder{b: data, msg: "HardState"}
	for {
		ok, err := d.next()
		if !ok {
			if err != nil {
				*x = HardState{}
				return unmarshalErr(err)
			}
			return nil
		}
		var v uint64
		switch d.num {
		case fieldHardStateTerm:
			v, err = d.varint("term")
			x.Term = Term(v)
		case fieldHardStateVote:
			v, err = d.varint("vote")
			x.Vote = NodeID(v)
		case fieldHardStateCommit:
			v, err = d.varint("commit")
			x.Commit = Index(v)
		default:
			err = d.skip()
		}
		if err != nil {
			*x = HardState{}
			return unmarshalErr(err)
		}
	}
}

// ---- ConfState ------------------------------------------------------------

// Size returns the exact length of x's encoding.
func (x *ConfState) Size() int {
	return sizePackedIDs(x.Voters) + sizePackedIDs(x.Learners) +
		sizePackedIDs(x.VotersOutgoing) + sizePackedIDs(x.LearnersNext) +
		sizeBoolField(x.AutoLeave)
}

// MarshalAppend appends the encoding of x to b and returns the result. The
// ID lists are written packed.
func (x *ConfState) MarshalAppend(b []byte) []byte {
	b = appendPackedIDs(b, fieldConfStateVoters, x.Voters)
	b = appendPackedIDs(b, fieldConfStateLearners, x.Learners)
	b = appendPackedIDs(b, fieldConfStateVotersOutgoing, x.VotersOutgoing)
	b = appendPackedIDs(b, fieldConfStateLearnersNext, x.LearnersNext)
	return appendBoolField(b, fieldConfStateAutoLeave, x.AutoLeave)
}

// Unmarshal replaces x with the ConfState encoded in data. On error x is
// zeroed. The ID lists are decoded as encoded: the codec does not check
// that they are sorted and free of duplicates.
func (x *ConfState) Unmarshal(data []byte) error {
	*x = ConfState{}
	if err := x.merge(data); err != nil {
		*x = ConfState{}
		return unmarshalErr(err)
	}
	return nil
}

func (x *ConfState) merge(data []byte) error {
	d := decoder{b: data, msg: "ConfState"}
	for {
		ok, err := d.next()
		if !ok {
			return err
		}
		switch d.num {
		case fieldConfStateVoters:
			x.Voters, err = d.ids("voters", x.Voters)
		case fieldConfStateLearners:
			x.Learners, err = d.ids("learners", x.Learners)
		case fieldConfStateVotersOutgoing:
			x.VotersOutgoing, err = d.ids("voters_outgoing", x.VotersOutgoing)
		case fieldConfStateLearnersNext:
			x.LearnersNext, err = d.ids("learners_next", x.LearnersNext)
		case fieldConfStateAutoLeave:
			x.AutoLeave, err = d.boolean("auto_leave")
		default:
			err = d.skip()
		}
		if err != nil {
			return err
		}
	}
}

// ---- SnapshotMeta ---------------------------------------------------------

// Size returns the exact length of x's encoding.
func (x *SnapshotMeta) Size() int {
	n := sizeVarintField(uint64(x.Index)) + sizeVarintField(uint64(x.Term))
	if cs := x.ConfState.Size(); cs > 0 {
		n += sizeLenField(cs)
	}
	return n
}

// MarshalAppend appends the encoding of x to b and returns the result.
func (x *SnapshotMeta) MarshalAppend(b []byte) []byte {
	b = appendVarintField(b, fieldSnapshotMetaIndex, uint64(x.Index))
	b = appendVarintField(b, fieldSnapshotMetaTerm, uint64(x.Term))
	if cs := x.ConfState.Size(); cs > 0 {
		b = appendLenPrefix(b, fieldSnapshotMetaConfState, cs)
		b = x.ConfState.MarshalAppend(b)
	}
	return b
}

// Unmarshal replaces x with the SnapshotMeta encoded in data. On error x is
// zeroed.
func (x *SnapshotMeta) Unmarshal(data []byte) error {
	*x = SnapshotMeta{}
	if err := x.merge(data); err != nil {
		*x = SnapshotMeta{}
		return unmarshalErr(err)
	}
	return nil
}

// merge decodes data into x. A field that occurs twice is merged as
// protobuf specifies: the last scalar wins, nested messages merge.
func (x *SnapshotMeta) merge(data []byte) error {
	d := decoder{b: data, msg: "SnapshotMeta"}
	for {
		ok, err := d.next()
		if !ok {
			return err
		}
		var v uint64
		switch d.num {
		case fieldSnapshotMetaIndex:
			v, err = d.varint("index")
			x.Index = Index(v)
		case fieldSnapshotMetaTerm:
			v, err = d.varint("term")
			x.Term = Term(v)
		case fieldSnapshotMetaConfState:
			var p []byte
			if p, err = d.bytes("conf_state"); err == nil {
				if err = x.ConfState.merge(p); err != nil {
					err = d.nestedErr("conf_state", err)
				}
			}
		default:
			err = d.skip()
		}
		if err != nil {
			return err
		}
	}
}

// ---- ConfChangeSingle and ConfChange -------------------------------------

// Size returns the exact length of x's encoding.
func (x *ConfChangeSingle) Size() int {
	return sizeVarintField(uint64(x.Type)) + sizeVarintField(uint64(x.Node))
}

// MarshalAppend appends the encoding of x to b and returns the result.
func (x *ConfChangeSingle) MarshalAppend(b []byte) []byte {
	b = appendVarintField(b, fieldConfChangeSingleType, uint64(x.Type))
	return appendVarintField(b, fieldConfChangeSingleNode, uint64(x.Node))
}

// Unmarshal replaces x with the ConfChangeSingle encoded in data. On error
// x is zeroed.
func (x *ConfChangeSingle) Unmarshal(data []byte) error {
	*x = ConfChangeSingle{}
	if err := x.merge(data); err != nil {
		*x = ConfChangeSingle{}
		return unmarshalErr(err)
	}
	return nil
}

func (x *ConfChangeSingle) merge(data []byte) error {
	d := decoder{b: data, msg: "ConfChangeSingle"}
	for {
		ok, err := d.next()
		if !ok {
			return err
		}
		var v uint64
		switch d.num {
		case fieldConfChangeSingleType:
			v, err = d.enum("type", maxConfChangeType)
			x.Type = ConfChangeType(v)
		case fieldConfChangeSingleNode:
			v, err = d.varint("node")
			x.Node = NodeID(v)
		default:
			err = d.skip()
		}
		if err != nil {
			return err
		}
	}
}

// Size returns the exact length of x's encoding.
func (x *ConfChange) Size() int {
	n := sizeVarintField(uint64(x.Transition))
	for i := range x.Changes {
		n += sizeLenField(x.Changes[i].Size())
	}
	return n
}

// MarshalAppend appends the encoding of x to b and returns the result.
func (x *ConfChange) MarshalAppend(b []byte) []byte {
	b = appendVarintField(b, fieldConfChangeTransition, uint64(x.Transition))
	for i := range x.Changes {
		c := &x.Changes[i]
		b = appendLenPrefix(b, fieldConfChangeChanges, c.Size())
		b = c.MarshalAppend(b)
	}
	return b
}

// Marshal returns the encoding of x in a new slice of exactly the right
// size, ready to be the Data of an EntryConfChange entry.
func (x *ConfChange) Marshal() []byte {
	return x.MarshalAppend(make([]byte, 0, x.Size()))
}

// UnmarshalConfChange decodes the ConfChange encoded in data, typically the
// Data of an EntryConfChange entry.
func UnmarshalConfChange(data []byte) (ConfChange, error) {
	var cc ConfChange
	err := cc.Unmarshal(data)
	return cc, err
}

// Unmarshal replaces x with the ConfChange encoded in data. On error x is
// zeroed. The Changes slice is allocated once, sized by the input.
func (x *ConfChange) Unmarshal(data []byte) error {
	*x = ConfChange{}
	if n, _ := countFields(data, fieldConfChangeChanges, 0); n > 0 {
		x.Changes = make([]ConfChangeSingle, 0, n)
	}
	d := decoder{b: data, msg: "ConfChange"}
	for {
		ok, err := d.next()
		if !ok {
			if err != nil {
				*x = ConfChange{}
				return unmarshalErr(err)
			}
			return nil
		}
		var v uint64
		switch d.num {
		case fieldConfChangeTransition:
			v, err = d.enum("transition", maxTransition)
			x.Transition = ConfChangeTransition(v)
		case fieldConfChangeChanges:
			var p []byte
			if p, err = d.bytes("changes"); err == nil {
				x.Changes = append(x.Changes, ConfChangeSingle{})
				i := len(x.Changes) - 1
				if err = x.Changes[i].merge(p); err != nil {
					err = d.nestedElemErr("changes", i, err)
				}
			}
		default:
			err = d.skip()
		}
		if err != nil {
			*x = ConfChange{}
			return unmarshalErr(err)
		}
	}
}
