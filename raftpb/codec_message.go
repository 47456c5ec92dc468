package raftpb

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// This file holds the codec of the transport types: Message, Heartbeat and
// Batch. See codec.go for the format, the error sentinels and the aliasing
// rules.

// Field numbers; raftpb.proto is the reference.
const (
	fieldMessageType       protowire.Number = 1
	fieldMessageShard      protowire.Number = 2
	fieldMessageFrom       protowire.Number = 3
	fieldMessageTo         protowire.Number = 4
	fieldMessageTerm       protowire.Number = 5
	fieldMessageLogTerm    protowire.Number = 6
	fieldMessageIndex      protowire.Number = 7
	fieldMessageCommit     protowire.Number = 8
	fieldMessageReject     protowire.Number = 9
	fieldMessageRejectHint protowire.Number = 10
	fieldMessageContext    protowire.Number = 11
	fieldMessageEntries    protowire.Number = 12
	fieldMessageSnapshot   protowire.Number = 13

	fieldHeartbeatShard    protowire.Number = 1
	fieldHeartbeatTerm     protowire.Number = 2
	fieldHeartbeatCommit   protowire.Number = 3
	fieldHeartbeatContext  protowire.Number = 4
	fieldHeartbeatResponse protowire.Number = 5

	fieldBatchClusterID  protowire.Number = 1
	fieldBatchFrom       protowire.Number = 2
	fieldBatchTo         protowire.Number = 3
	fieldBatchMessages   protowire.Number = 4
	fieldBatchHeartbeats protowire.Number = 5
)

// ---- Message --------------------------------------------------------------

// Size returns the exact length of x's encoding.
func (x *Message) Size() int {
	n := sizeVarintField(uint64(x.Type)) + sizeVarintField(uint64(x.Shard)) +
		sizeVarintField(uint64(x.From)) + sizeVarintField(uint64(x.To)) +
		sizeVarintField(uint64(x.Term)) + sizeVarintField(uint64(x.LogTerm)) +
		sizeVarintField(uint64(x.Index)) + sizeVarintField(uint64(x.Commit)) +
		sizeBoolField(x.Reject) + sizeVarintField(uint64(x.RejectHint)) +
		sizeVarintField(x.Context)
	for i := range x.Entries {
		n += sizeLenField(x.Entries[i].Size())
	}
	if x.Snapshot != nil {
		n += sizeLenField(x.Snapshot.Size())
	}
	return n
}

// MarshalAppend appends the encoding of x to b and returns the result. A
// non-nil Snapshot is always written, even when empty, so that its presence
// survives the round trip.
func (x *Message) MarshalAppend(b []byte) []byte {
	b = appendVarintField(b, fieldMessageType, uint64(x.Type))
	b = appendVarintField(b, fieldMessageShard, uint64(x.Shard))
	b = appendVarintField(b, fieldMessageFrom, uint64(x.From))
	b = appendVarintField(b, fieldMessageTo, uint64(x.To))
	b = appendVarintField(b, fieldMessageTerm, uint64(x.Term))
	b = appendVarintField(b, fieldMessageLogTerm, uint64(x.LogTerm))
	b = appendVarintField(b, fieldMessageIndex, uint64(x.Index))
	b = appendVarintField(b, fieldMessageCommit, uint64(x.Commit))
	b = appendBoolField(b, fieldMessageReject, x.Reject)
	b = appendVarintField(b, fieldMessageRejectHint, uint64(x.RejectHint))
	b = appendVarintField(b, fieldMessageContext, x.Context)
	for i := range x.Entries {
		e := &x.Entries[i]
		b = appendLenPrefix(b, fieldMessageEntries, e.Size())
		b = e.MarshalAppend(b)
	}
	if x.Snapshot != nil {
		b = appendLenPrefix(b, fieldMessageSnapshot, x.Snapshot.Size())
		b = x.Snapshot.MarshalAppend(b)
	}
	return b
}

// Unmarshal replaces x with the Message encoded in data. On error x is
// zeroed.
//
// A message whose type is missing or not Valid is rejected with
// ErrInvalidField: MsgInvalid is never sent.
//
// The Data of each entry aliases data: the caller must not modify or reuse
// data while x is in use. The Entries slice is allocated once, sized by a
// first pass over data; a Snapshot costs one more allocation.
func (x *Message) Unmarshal(data []byte) error {
	*x = Message{}
	if err := x.decode(data); err != nil {
		*x = Message{}
		return unmarshalErr(err)
	}
	return nil
}

// decode decodes data into the zero Message x and checks its type.
func (x *Message) decode(data []byte) error {
	if n, _ := countFields(data, fieldMessageEntries, 0); n > 0 {
		x.Entries = make([]Entry, 0, n)
	}
	d := decoder{b: data, msg: "Message"}
	for {
		ok, err := d.next()
		if !ok {
			if err == nil && !x.Type.Valid() {
				err = fmt.Errorf("Message.type: %w: %v is not a valid message type", ErrInvalidField, x.Type)
			}
			return err
		}
		var v uint64
		switch d.num {
		case fieldMessageType:
			v, err = d.enum("type", maxMessageType)
			x.Type = MessageType(v)
		case fieldMessageShard:
			v, err = d.varint("shard")
			x.Shard = ShardID(v)
		case fieldMessageFrom:
			v, err = d.varint("from")
			x.From = NodeID(v)
		case fieldMessageTo:
			v, err = d.varint("to")
			x.To = NodeID(v)
		case fieldMessageTerm:
			v, err = d.varint("term")
			x.Term = Term(v)
		case fieldMessageLogTerm:
			v, err = d.varint("log_term")
			x.LogTerm = Term(v)
		case fieldMessageIndex:
			v, err = d.varint("index")
			x.Index = Index(v)
		case fieldMessageCommit:
			v, err = d.varint("commit")
			x.Commit = Index(v)
		case fieldMessageReject:
			x.Reject, err = d.boolean("reject")
		case fieldMessageRejectHint:
			v, err = d.varint("reject_hint")
			x.RejectHint = Index(v)
		case fieldMessageContext:
			x.Context, err = d.varint("context")
		case fieldMessageEntries:
			var p []byte
			if p, err = d.bytes("entries"); err == nil {
				x.Entries = append(x.Entries, Entry{})
				i := len(x.Entries) - 1
				if err = x.Entries[i].merge(p); err != nil {
					err = d.nestedElemErr("entries", i, err)
				}
			}
		case fieldMessageSnapshot:
			var p []byte
			if p, err = d.bytes("snapshot"); err == nil {
				// A repeated singular message merges into the first,
				// as protobuf specifies.
				if x.Snapshot == nil {
					x.Snapshot = new(SnapshotMeta)
				}
				if err = x.Snapshot.merge(p); err != nil {
					err = d.nestedErr("snapshot", err)
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

// ---- Heartbeat ------------------------------------------------------------

// Size returns the exact length of x's encoding.
func (x *Heartbeat) Size() int {
	return sizeVarintField(uint64(x.Shard)) + sizeVarintField(uint64(x.Term)) +
		sizeVarintField(uint64(x.Commit)) + sizeVarintField(x.Context) +
		sizeBoolField(x.Response)
}

// MarshalAppend appends the encoding of x to b and returns the result.
func (x *Heartbeat) MarshalAppend(b []byte) []byte {
	b = appendVarintField(b, fieldHeartbeatShard, uint64(x.Shard))
	b = appendVarintField(b, fieldHeartbeatTerm, uint64(x.Term))
	b = appendVarintField(b, fieldHeartbeatCommit, uint64(x.Commit))
	b = appendVarintField(b, fieldHeartbeatContext, x.Context)
	return appendBoolField(b, fieldHeartbeatResponse, x.Response)
}

// Unmarshal replaces x with the Heartbeat encoded in data. On error x is
// zeroed.
func (x *Heartbeat) Unmarshal(data []byte) error {
	*x = Heartbeat{}
	if err := x.merge(data); err != nil {
		*x = Heartbeat{}
		return unmarshalErr(err)
	}
	return nil
}

func (x *Heartbeat) merge(data []byte) error {
	d := decoder{b: data, msg: "Heartbeat"}
	for {
		ok, err := d.next()
		if !ok {
			return err
		}
		var v uint64
		switch d.num {
		case fieldHeartbeatShard:
			v, err = d.varint("shard")
			x.Shard = ShardID(v)
		case fieldHeartbeatTerm:
			v, err = d.varint("term")
			x.Term = Term(v)
		case fieldHeartbeatCommit:
			v, err = d.varint("commit")
			x.Commit = Index(v)
		case fieldHeartbeatContext:
			x.Context, err = d.varint("context")
		case fieldHeartbeatResponse:
			x.Response, err = d.boolean("response")
		default:
			err = d.skip()
		}
		if err != nil {
			return err
		}
	}
}

// ---- Batch ----------------------------------------------------------------

// Size returns the exact length of x's encoding.
func (x *Batch) Size() int {
	n := sizeVarintField(x.ClusterID) + sizeVarintField(uint64(x.From)) +
		sizeVarintField(uint64(x.To))
	for i := range x.Messages {
		n += sizeLenField(x.Messages[i].Size())
	}
	for i := range x.Heartbeats {
		n += sizeLenField(x.Heartbeats[i].Size())
	}
	return n
}

// MarshalAppend appends the encoding of x to b and returns the result.
// Presize b with Size to encode without allocating.
func (x *Batch) MarshalAppend(b []byte) []byte {
	b = appendVarintField(b, fieldBatchClusterID, x.ClusterID)
	b = appendVarintField(b, fieldBatchFrom, uint64(x.From))
	b = appendVarintField(b, fieldBatchTo, uint64(x.To))
	for i := range x.Messages {
		m := &x.Messages[i]
		b = appendLenPrefix(b, fieldBatchMessages, m.Size())
		b = m.MarshalAppend(b)
	}
	for i := range x.Heartbeats {
		h := &x.Heartbeats[i]
		b = appendLenPrefix(b, fieldBatchHeartbeats, h.Size())
		b = h.MarshalAppend(b)
	}
	return b
}

// Unmarshal replaces x with the Batch encoded in data. On error x is zeroed.
//
// Entry data in the messages aliases data: the caller must not modify or
// reuse data while x, or any message taken from it, is in use. Messages and
// Heartbeats are each allocated once, sized by a first pass over data; each
// message then allocates as Message.Unmarshal does.
func (x *Batch) Unmarshal(data []byte) error {
	*x = Batch{}
	if err := x.decode(data); err != nil {
		*x = Batch{}
		return unmarshalErr(err)
	}
	return nil
}

func (x *Batch) decode(data []byte) error {
	nm, nh := countFields(data, fieldBatchMessages, fieldBatchHeartbeats)
	if nm > 0 {
		x.Messages = make([]Message, 0, nm)
	}
	if nh > 0 {
		x.Heartbeats = make([]Heartbeat, 0, nh)
	}
	d := decoder{b: data, msg: "Batch"}
	for {
		ok, err := d.next()
		if !ok {
			return err
		}
		var v uint64
		switch d.num {
		case fieldBatchClusterID:
			x.ClusterID, err = d.varint("cluster_id")
		case fieldBatchFrom:
			v, err = d.varint("from")
			x.From = NodeID(v)
		case fieldBatchTo:
			v, err = d.varint("to")
			x.To = NodeID(v)
		case fieldBatchMessages:
			var p []byte
			if p, err = d.bytes("messages"); err == nil {
				x.Messages = append(x.Messages, Message{})
				i := len(x.Messages) - 1
				if err = x.Messages[i].decode(p); err != nil {
					err = d.nestedElemErr("messages", i, err)
				}
			}
		case fieldBatchHeartbeats:
			var p []byte
			if p, err = d.bytes("heartbeats"); err == nil {
				x.Heartbeats = append(x.Heartbeats, Heartbeat{})
				i := len(x.Heartbeats) - 1
				if err = x.Heartbeats[i].merge(p); err != nil {
					err = d.nestedElemErr("heartbeats", i, err)
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
