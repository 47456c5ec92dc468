package batchio

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/shardd/shardd/raftpb"
)

// load reads every replica record and rebuilds the shards' in-memory state,
// validating what it reads.
func (s *Store) load() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kindReplica}, UpperBound: []byte{kindReplica + 1}})
	if err != nil {
		return fmt.Errorf("batchio: listing replicas: %w", err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		id, ok := parseShardKey(it.Key(), kindReplica)
		if !ok {
			return fmt.Errorf("%w: unexpected key %x among replica records", ErrCorrupt, it.Key())
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("batchio: shard %d: reading replica record: %w", id, err)
		}
		rec, err := decodeReplicaRecord(v)
		if err != nil {
			return corrupt(id, 0, "replica record", err)
		}
		st, err := s.loadShard(id, rec)
		if err != nil {
			return err
		}
		s.shards[id] = st
	}
	return it.Error()
}

func (s *Store) loadShard(id raftpb.ShardID, rec ReplicaRecord) (*shardState, error) {
	st := &shardState{id: id, rec: rec, first: rec.TruncIndex + 1, last: rec.TruncIndex}
	if v, closer, err := s.db.Get(shardKey(kindHardState, id)); err == nil {
		hs, derr := decodeHardState(v)
		closer.Close()
		if derr != nil {
			return nil, corrupt(id, 0, "hard state", derr)
		}
		st.hs = hs
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return nil, fmt.Errorf("batchio: shard %d: reading hard state: %w", id, err)
	}
	if v, closer, err := s.db.Get(shardKey(kindSnapshot, id)); err == nil {
		snap, derr := decodeSnapshotRecord(v)
		closer.Close()
		if derr != nil {
			return nil, corrupt(id, 0, "snapshot record", derr)
		}
		st.snap = &snap
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return nil, fmt.Errorf("batchio: shard %d: reading snapshot record: %w", id, err)
	}
	// The log's bounds: its first key must follow the truncation point.
	start, end := logSpan(id)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: end})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	if it.First() {
		_, first, _ := parseLogKey(it.Key())
		if first != st.first {
			return nil, corrupt(id, first, "log entry",
				fmt.Errorf("log starts at %d, expected %d after truncation point %d", first, st.first, rec.TruncIndex))
		}
		it.Last()
		_, st.last, _ = parseLogKey(it.Key())
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("batchio: shard %d: reading log bounds: %w", id, err)
	}
	if st.hs.Commit > st.last {
		return nil, corrupt(id, st.hs.Commit, "hard state",
			fmt.Errorf("commit %d beyond the log's last index %d", st.hs.Commit, st.last))
	}
	return st, nil
}

// ShardLog reads one replica's durable log; it satisfies the Raft core's
// LogReader. It is safe for concurrent use with the store's writer.
type ShardLog struct {
	s  *Store
	st *shardState
}

// Shard returns the reader of shard id's log.
func (s *Store) Shard(id raftpb.ShardID) (*ShardLog, error) {
	st := s.shard(id)
	if st == nil {
		return nil, fmt.Errorf("%w: %d", ErrUnknownShard, id)
	}
	return &ShardLog{s: s, st: st}, nil
}

// InitialState returns the hard state and the membership in force.
func (l *ShardLog) InitialState() (raftpb.DurableState, error) {
	st := l.st
	st.mu.RLock()
	defer st.mu.RUnlock()
	return raftpb.DurableState{HardState: st.hs, ConfState: st.rec.ConfState.Clone(), ConfIndex: st.rec.ConfIndex}, nil
}

// FirstIndex is the index of the first entry held.
func (l *ShardLog) FirstIndex() (raftpb.Index, error) {
	l.st.mu.RLock()
	defer l.st.mu.RUnlock()
	return l.st.first, nil
}

// LastIndex is the index of the last durable entry.
func (l *ShardLog) LastIndex() (raftpb.Index, error) {
	l.st.mu.RLock()
	defer l.st.mu.RUnlock()
	return l.st.last, nil
}

// Snapshot returns the metadata of the latest snapshot.
func (l *ShardLog) Snapshot() (raftpb.SnapshotMeta, error) {
	l.st.mu.RLock()
	defer l.st.mu.RUnlock()
	if l.st.snap == nil {
		return raftpb.SnapshotMeta{}, raftpb.ErrSnapshotTemporarilyUnavailable
	}
	m := l.st.snap.Meta
	m.ConfState = m.ConfState.Clone()
	return m, nil
}

// SnapshotRecord returns the latest snapshot record, if any.
func (l *ShardLog) SnapshotRecord() (SnapshotRecord, bool) {
	l.st.mu.RLock()
	defer l.st.mu.RUnlock()
	if l.st.snap == nil {
		return SnapshotRecord{}, false
	}
	return *cloneSnapshot(l.st.snap), true
}

// Term returns the term of entry i.
func (l *ShardLog) Term(i raftpb.Index) (raftpb.Term, error) {
	st := l.st
	st.mu.RLock()
	switch {
	case i+1 < st.first:
		st.mu.RUnlock()
		return 0, raftpb.ErrCompacted
	case i+1 == st.first:
		t := st.rec.TruncTerm
		st.mu.RUnlock()
		return t, nil
	case i > st.last:
		st.mu.RUnlock()
		return 0, raftpb.ErrUnavailable
	}
	if t, ok := l.s.cache.term(st, i); ok {
		st.mu.RUnlock()
		return t, nil
	}
	st.mu.RUnlock()
	v, closer, err := l.s.db.Get(logKey(st.id, i))
	if err != nil {
		if errors.Is(err, pebble.ErrNotFound) {
			return 0, l.missing(i)
		}
		return 0, fmt.Errorf("batchio: shard %d index %d: %w", st.id, i, err)
	}
	defer closer.Close()
	var e raftpb.Entry
	if err := decodeEntry(v, &e); err != nil {
		return 0, corrupt(st.id, i, "log entry", err)
	}
	if e.Index != i {
		return 0, corrupt(st.id, i, "log entry", fmt.Errorf("holds index %d", e.Index))
	}
	return e.Term, nil
}

// missing explains an entry absent from Pebble: compacted meanwhile (the
// deletion was published before it happened), or lost.
func (l *ShardLog) missing(i raftpb.Index) error {
	l.st.mu.RLock()
	first := l.st.first
	l.st.mu.RUnlock()
	if i < first {
		return raftpb.ErrCompacted
	}
	return corrupt(l.st.id, i, "log entry", errMissingEntry)
}

// Entries returns the entries [lo, hi), stopping once they pass maxBytes
// (but returning at least one).
func (l *ShardLog) Entries(lo, hi raftpb.Index, maxBytes uint64) ([]raftpb.Entry, error) {
	st := l.st
	st.mu.RLock()
	switch {
	case lo < st.first:
		st.mu.RUnlock()
		return nil, raftpb.ErrCompacted
	case hi > st.last+1:
		last := st.last
		st.mu.RUnlock()
		return nil, fmt.Errorf("%w: entries [%d,%d) beyond last index %d", raftpb.ErrUnavailable, lo, hi, last)
	case lo >= hi:
		st.mu.RUnlock()
		return nil, nil
	}
	if ents, ok := l.s.cache.get(st, lo, hi, maxBytes); ok {
		st.mu.RUnlock()
		return ents, nil
	}
	st.mu.RUnlock()
	return l.readEntries(lo, hi, maxBytes)
}

// readEntries reads [lo, hi) from Pebble, checking every record and that
// the indexes follow each other.
func (l *ShardLog) readEntries(lo, hi raftpb.Index, maxBytes uint64) ([]raftpb.Entry, error) {
	id := l.st.id
	it, err := l.s.db.NewIter(&pebble.IterOptions{LowerBound: logKey(id, lo), UpperBound: logKey(id, hi)})
	if err != nil {
		return nil, fmt.Errorf("batchio: shard %d: %w", id, err)
	}
	defer it.Close()
	var (
		ents  []raftpb.Entry
		arena []byte
		size  uint64
	)
	next := lo
	for it.First(); it.Valid(); it.Next() {
		_, idx, ok := parseLogKey(it.Key())
		if !ok || idx != next {
			if ok && idx > next {
				return nil, l.missing(next)
			}
			return nil, corrupt(id, next, "log entry", fmt.Errorf("unexpected key %x", it.Key()))
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("batchio: shard %d index %d: %w", id, idx, err)
		}
		// Copy out of Pebble's buffer; one arena for the whole read.
		off := len(arena)
		arena = append(arena, v...)
		var e raftpb.Entry
		if err := decodeEntry(arena[off:], &e); err != nil {
			return nil, corrupt(id, idx, "log entry", err)
		}
		if e.Index != idx {
			return nil, corrupt(id, idx, "log entry", fmt.Errorf("holds index %d", e.Index))
		}
		size += e.SizeBytes()
		if len(ents) > 0 && size > maxBytes {
			break
		}
		ents = append(ents, e)
		next++
		if next == hi {
			break
		}
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("batchio: shard %d: reading log: %w", id, err)
	}
	if len(ents) == 0 || (next < hi && size <= maxBytes) {
		return nil, l.missing(next)
	}
	return ents, nil
}
