package batchio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/shardd/shardd/raftpb"
)

// Every value batchio writes is framed as
//
//	crc32c(payload) (4 bytes, big-endian) | payload
//
// Pebble checksums its blocks on disk, but not what sits in memtables or
// what a bug writes; our own checksum lets every read prove the record is
// the one written, and name the shard and index when it is not.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const crcLen = 4

func frame(payload []byte) []byte {
	out := make([]byte, crcLen, crcLen+len(payload))
	binary.BigEndian.PutUint32(out, crc32.Checksum(payload, castagnoli))
	return append(out, payload...)
}

// putFrame writes the checksum of dst[crcLen:] into dst[:crcLen].
func putFrame(dst []byte) {
	binary.BigEndian.PutUint32(dst, crc32.Checksum(dst[crcLen:], castagnoli))
}

var errChecksum = errors.New("checksum mismatch")

// unframe verifies and strips the checksum.
func unframe(v []byte) ([]byte, error) {
	if len(v) < crcLen {
		return nil, fmt.Errorf("record of %d bytes is shorter than its checksum", len(v))
	}
	if crc32.Checksum(v[crcLen:], castagnoli) != binary.BigEndian.Uint32(v) {
		return nil, errChecksum
	}
	return v[crcLen:], nil
}

// SnapshotRecord is the latest snapshot of a replica: its metadata and an
// opaque reference to its data (for the engine, the snapshot file's name
// and checksum).
type SnapshotRecord struct {
	Meta raftpb.SnapshotMeta
	Data []byte
}

func (r *SnapshotRecord) encode() []byte {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, r.Meta.MarshalAppend(nil))
	if len(r.Data) > 0 {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, r.Data)
	}
	return frame(b)
}

func decodeSnapshotRecord(v []byte) (SnapshotRecord, error) {
	var r SnapshotRecord
	p, err := unframe(v)
	if err != nil {
		return r, err
	}
	err = eachField(p, func(num protowire.Number, typ protowire.Type, val []byte, _ uint64) error {
		switch num {
		case 1:
			return r.Meta.Unmarshal(val)
		case 2:
			r.Data = append([]byte(nil), val...)
		}
		return nil
	})
	return r, err
}

// ReplicaRecord is what batchio keeps about a replica besides its log,
// hard state and snapshot.
type ReplicaRecord struct {
	// Initial is the membership the replica was created with (empty for a
	// replica that joined a running shard).
	Initial raftpb.ConfState
	// Join is set for a replica created to join a running shard.
	Join bool
	// ConfState is the membership in force since ConfIndex.
	ConfState raftpb.ConfState
	ConfIndex raftpb.Index
	// TruncIndex and TruncTerm name the entry just before the first one
	// kept: the log was compacted (or replaced by a snapshot) up to it.
	TruncIndex raftpb.Index
	TruncTerm  raftpb.Term
	// AppData is opaque to batchio (the engine keeps its per-replica
	// settings here).
	AppData []byte
}

func (r *ReplicaRecord) encode() []byte {
	var b []byte
	appendMsg := func(num protowire.Number, enc []byte) {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendBytes(b, enc)
	}
	appendVarint := func(num protowire.Number, v uint64) {
		if v != 0 {
			b = protowire.AppendTag(b, num, protowire.VarintType)
			b = protowire.AppendVarint(b, v)
		}
	}
	appendMsg(1, r.Initial.MarshalAppend(nil))
	if r.Join {
		appendVarint(2, 1)
	}
	appendMsg(3, r.ConfState.MarshalAppend(nil))
	appendVarint(4, uint64(r.ConfIndex))
	appendVarint(5, uint64(r.TruncIndex))
	appendVarint(6, uint64(r.TruncTerm))
	if len(r.AppData) > 0 {
		appendMsg(7, r.AppData)
	}
	return frame(b)
}

func decodeReplicaRecord(v []byte) (ReplicaRecord, error) {
	var r ReplicaRecord
	p, err := unframe(v)
	if err != nil {
		return r, err
	}
	err = eachField(p, func(num protowire.Number, typ protowire.Type, val []byte, n uint64) error {
		switch num {
		case 1:
			return r.Initial.Unmarshal(val)
		case 2:
			r.Join = n != 0
		case 3:
			return r.ConfState.Unmarshal(val)
		case 4:
			r.ConfIndex = raftpb.Index(n)
		case 5:
			r.TruncIndex = raftpb.Index(n)
		case 6:
			r.TruncTerm = raftpb.Term(n)
		case 7:
			r.AppData = append([]byte(nil), val...)
		}
		return nil
	})
	// Unmarshal aliases; the record outlives the value buffer.
	r.Initial = r.Initial.Clone()
	r.ConfState = r.ConfState.Clone()
	return r, err
}

// eachField walks the fields of a protobuf-wire message, calling f with the
// bytes of length-delimited fields or the value of varint fields.
func eachField(p []byte, f func(num protowire.Number, typ protowire.Type, val []byte, n uint64) error) error {
	for len(p) > 0 {
		num, typ, k := protowire.ConsumeTag(p)
		if k < 0 {
			return protowire.ParseError(k)
		}
		p = p[k:]
		switch typ {
		case protowire.VarintType:
			v, k := protowire.ConsumeVarint(p)
			if k < 0 {
				return protowire.ParseError(k)
			}
			p = p[k:]
			if err := f(num, typ, nil, v); err != nil {
				return err
			}
		case protowire.BytesType:
			v, k := protowire.ConsumeBytes(p)
			if k < 0 {
				return protowire.ParseError(k)
			}
			p = p[k:]
			if err := f(num, typ, v, 0); err != nil {
				return err
			}
		default:
			k := protowire.ConsumeFieldValue(num, typ, p)
			if k < 0 {
				return protowire.ParseError(k)
			}
			p = p[k:]
		}
	}
	return nil
}

func encodeHardState(hs raftpb.HardState) []byte {
	return frame(hs.MarshalAppend(nil))
}

func decodeHardState(v []byte) (raftpb.HardState, error) {
	var hs raftpb.HardState
	p, err := unframe(v)
	if err != nil {
		return hs, err
	}
	return hs, hs.Unmarshal(p)
}

// entryValueLen is the stored size of e.
func entryValueLen(e *raftpb.Entry) int { return crcLen + e.Size() }

// putEntryValue encodes e into dst, which is exactly entryValueLen(e) long.
func putEntryValue(dst []byte, e *raftpb.Entry) {
	e.MarshalAppend(dst[crcLen:crcLen])
	putFrame(dst)
}

// decodeEntry verifies and decodes a stored entry. The entry's Data
// aliases v.
func decodeEntry(v []byte, e *raftpb.Entry) error {
	p, err := unframe(v)
	if err != nil {
		return err
	}
	return e.Unmarshal(p)
}
