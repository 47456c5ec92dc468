package kv

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/cockroachdb/pebble/v2"
)

// Snapshot stream: the bytes SaveSnapshot writes and RecoverFromSnapshot
// reads (the engine wraps them in its own header). Integers are
// big-endian.
//
//	header   'k' 'v' 's' 1                              magic, format version
//	record   u32 len(key) | key | u32 len(value) | value   len(key) >= 1
//	...                                                 in key order
//	end      u32 0                                      keys are never empty
//	trailer  u64 applied index | u64 record count | u32 CRC-32C
//
// Keys are user keys (without the shard prefix), so a snapshot restores
// into any shard id. The CRC (Castagnoli) covers every byte before it,
// header included; nothing may follow it. The stream has no count up
// front, so SaveSnapshot writes as it iterates and never holds the state.
var snapshotMagic = [4]byte{'k', 'v', 's', 1}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// snapshotBufBytes is the buffer between Pebble and the engine's writer
// (and reader).
const snapshotBufBytes = 64 << 10

// SaveSnapshot implements shard.StateMachine. It reads a Pebble snapshot
// of the shard's range, so concurrent Lookups are unaffected and memory
// stays bounded by the iterator and one buffer.
func (m *stateMachine) SaveSnapshot(w io.Writer) error {
	if err := m.usable(); err != nil {
		return err
	}
	snap := m.db.NewSnapshot()
	defer snap.Close()
	if _, closer, err := snap.Get(m.keys.recovery); err == nil {
		closer.Close()
		return fmt.Errorf("%w: shard %d", ErrRecoveryIncomplete, m.shard)
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return fmt.Errorf("kv: shard %d: %w", m.shard, err)
	}
	applied, err := readApplied(snap, m.keys, m.shard)
	if err != nil {
		return err
	}
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: m.keys.dataStart, UpperBound: m.keys.dataEnd})
	if err != nil {
		return fmt.Errorf("kv: shard %d: snapshot iterator: %w", m.shard, err)
	}
	sw := &snapWriter{w: bufio.NewWriterSize(w, snapshotBufBytes)}
	sw.write(snapshotMagic[:])
	var count uint64
	for ok := it.First(); ok && sw.err == nil; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return fmt.Errorf("kv: shard %d: snapshot value: %w", m.shard, err)
		}
		key := userKey(it.Key())
		sw.u32(uint32(len(key)))
		sw.write(key)
		sw.u32(uint32(len(v)))
		sw.write(v)
		count++
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("kv: shard %d: snapshot iterator: %w", m.shard, err)
	}
	sw.u32(0)
	sw.u64(applied)
	sw.u64(count)
	sw.u32(sw.crc)
	if sw.err == nil {
		sw.err = sw.w.Flush()
	}
	if sw.err != nil {
		return fmt.Errorf("kv: shard %d: writing snapshot: %w", m.shard, sw.err)
	}
	return nil
}

// snapWriter writes through a buffer, keeping the CRC of what it wrote and
// the first error.
type snapWriter struct {
	w   *bufio.Writer
	crc uint32
	err error
	tmp [8]byte
}

func (s *snapWriter) write(p []byte) {
	if s.err != nil {
		return
	}
	s.crc = crc32.Update(s.crc, castagnoli, p)
	_, s.err = s.w.Write(p)
}

func (s *snapWriter) u32(v uint32) {
	binary.BigEndian.PutUint32(s.tmp[:4], v)
	s.write(s.tmp[:4])
}

func (s *snapWriter) u64(v uint64) {
	binary.BigEndian.PutUint64(s.tmp[:], v)
	s.write(s.tmp[:])
}

// snapReader reads through a buffer, keeping the CRC of what it read.
type snapReader struct {
	r   *bufio.Reader
	crc uint32
	tmp [8]byte
}

func (s *snapReader) full(p []byte) error {
	if _, err := io.ReadFull(s.r, p); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: truncated", ErrBadSnapshot)
		}
		return err
	}
	s.crc = crc32.Update(s.crc, castagnoli, p)
	return nil
}

func (s *snapReader) u32() (uint32, error) {
	if err := s.full(s.tmp[:4]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(s.tmp[:4]), nil
}

func (s *snapReader) u64() (uint64, error) {
	if err := s.full(s.tmp[:]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(s.tmp[:]), nil
}

// RecoverFromSnapshot implements shard.StateMachine: it replaces the
// shard's data with the snapshot's.
//
// The first batch deletes the shard's data range and the applied index and
// sets the recovery marker; the pairs follow in batches of about
// batchBytes, committed without fsync; the last batch, written only after
// the trailer's count and CRC check out and the stream ends, sets the
// snapshot's applied index and removes the marker, with fsync. A snapshot
// small enough for one batch is thus applied atomically. A stream that
// fails before the first commit leaves the state as it was; one that fails
// later leaves the marker, and the state machine refuses to serve
// (ErrRecoveryIncomplete) until a recovery succeeds or Open clears the
// range, never a silently half-applied state.
func (m *stateMachine) RecoverFromSnapshot(r io.Reader) error {
	if err := m.openable(); err != nil {
		return err
	}
	committed := false
	err := m.recover(r, &committed)
	if err == nil {
		m.recoverFail.Store(nil)
		return nil
	}
	err = fmt.Errorf("kv: shard %d: recovering from snapshot: %w", m.shard, err)
	if committed {
		fail := fmt.Errorf("%w: shard %d: %w", ErrRecoveryIncomplete, m.shard, err)
		m.recoverFail.Store(&fail)
		return fail
	}
	return err
}

func (m *stateMachine) recover(r io.Reader, committed *bool) error {
	sr := &snapReader{r: bufio.NewReaderSize(r, snapshotBufBytes)}
	var magic [4]byte
	if err := sr.full(magic[:]); err != nil {
		return err
	}
	if magic != snapshotMagic {
		return fmt.Errorf("%w: unknown format %q", ErrBadSnapshot, magic[:])
	}
	b := m.db.NewBatch()
	defer func() { b.Close() }()
	_ = b.DeleteRange(m.keys.dataStart, m.keys.dataEnd, nil)
	_ = b.Delete(m.keys.applied, nil)
	_ = b.Set(m.keys.recovery, nil, nil)
	var key, value []byte
	var count uint64
	for {
		kl, err := sr.u32()
		if err != nil {
			return err
		}
		if kl == 0 {
			break
		}
		if kl > MaxKeyBytes {
			return fmt.Errorf("%w: record %d: key of %d bytes", ErrBadSnapshot, count, kl)
		}
		key = grow(key, int(kl))
		if err := sr.full(key); err != nil {
			return err
		}
		vl, err := sr.u32()
		if err != nil {
			return err
		}
		if vl > MaxValueBytes {
			return fmt.Errorf("%w: record %d: value of %d bytes", ErrBadSnapshot, count, vl)
		}
		value = grow(value, int(vl))
		if err := sr.full(value); err != nil {
			return err
		}
		m.keyBuf = m.keys.appendDataKey(m.keyBuf[:0], key)
		if err := b.Set(m.keyBuf, value, nil); err != nil {
			return err
		}
		count++
		if b.Len() >= m.batchBytes {
			if err := b.Commit(pebble.NoSync); err != nil {
				return err
			}
			*committed = true
			b.Close()
			b = m.db.NewBatch()
		}
	}
	applied, err := sr.u64()
	if err != nil {
		return err
	}
	n, err := sr.u64()
	if err != nil {
		return err
	}
	want := sr.crc
	sum, err := sr.u32()
	if err != nil {
		return err
	}
	switch {
	case sum != want:
		return fmt.Errorf("%w: checksum %08x, computed %08x", ErrBadSnapshot, sum, want)
	case n != count:
		return fmt.Errorf("%w: trailer counts %d records, read %d", ErrBadSnapshot, n, count)
	}
	if _, err := sr.r.ReadByte(); err != io.EOF {
		if err == nil {
			return fmt.Errorf("%w: bytes after the trailer", ErrBadSnapshot)
		}
		return err
	}
	var idx [8]byte
	binary.BigEndian.PutUint64(idx[:], applied)
	_ = b.Set(m.keys.applied, idx[:], nil)
	_ = b.Delete(m.keys.recovery, nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	m.applied = applied
	return nil
}

// grow returns b resized to n bytes, reusing its array when it can.
func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}
