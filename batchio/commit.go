package batchio

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"

	"github.com/shardd/shardd/raftpb"
)

// pendingShard is a shard's state as the flush being built leaves it.
type pendingShard struct {
	st      *shardState
	exists  bool
	created bool
	removed bool

	first, last raftpb.Index
	hs          raftpb.HardState
	rec         ReplicaRecord
	snap        *SnapshotRecord

	// installed: a snapshot replaced the log in this flush.
	installed bool
	// ents is the run of entries this flush writes at the log's tail.
	ents []raftpb.Entry
}

// commit is the pipeline's commit function: it builds one batch from reqs,
// commits it with one fsync and publishes the result to readers.
func (s *Store) commit(reqs []*Request) error {
	b := s.batch
	clear(s.touch)
	byID := map[raftpb.ShardID]*pendingShard{}
	entries := 0
	for _, r := range reqs {
		if err := s.prepare(r, byID, nil); err != nil {
			r.err = err
			continue
		}
		if err := s.prepare(r, byID, b); err != nil {
			// The dry run accepted it: a failure now is a bug, and the batch
			// may hold part of the request.
			return fmt.Errorf("batchio: request refused after validation: %w", err)
		}
		for i := range r.Updates {
			entries += len(r.Updates[i].Entries)
		}
	}
	if b.Empty() {
		return nil
	}
	s.publishDeletions(byID)
	if err := commitSync(b); err != nil {
		return err
	}
	s.stats.flushes.Add(1)
	s.stats.requests.Add(uint64(len(reqs)))
	s.stats.entries.Add(uint64(entries))
	s.stats.bytes.Add(uint64(b.Len()))
	b.Reset()
	s.publishAdditions(byID)
	s.cache.evict()
	s.stats.cacheBytes.Store(s.cache.bytes)
	return nil
}

// commitSync commits b with an fsync. Pebble reports a failed WAL write or
// sync through Logger.Fatalf, which panics with a fatalError: it is turned
// back into the flush's error here.
func commitSync(b *pebble.Batch) (err error) {
	defer func() {
		if r := recover(); r != nil {
			fe, ok := r.(fatalError)
			if !ok {
				panic(r)
			}
			err = fe
		}
	}()
	return b.Commit(pebble.Sync)
}

// view returns the flush's view of shard id (nil if it is unknown).
func (s *Store) view(id raftpb.ShardID, byID map[raftpb.ShardID]*pendingShard) *pendingShard {
	if ps, ok := byID[id]; ok {
		return ps
	}
	st := s.shard(id)
	if st == nil {
		return &pendingShard{}
	}
	st.mu.RLock()
	defer st.mu.RUnlock()
	return &pendingShard{st: st, exists: !st.removed, first: st.first, last: st.last, hs: st.hs,
		rec: st.rec, snap: st.snap}
}

// prepare applies r's updates to the flush's shard views. With b nil it is
// a dry run on copies that only validates; with b it writes into b and
// updates byID.
func (s *Store) prepare(r *Request, byID map[raftpb.ShardID]*pendingShard, b *pebble.Batch) error {
	local := map[raftpb.ShardID]*pendingShard{}
	for i := range r.Updates {
		u := &r.Updates[i]
		ps, ok := local[u.Shard]
		if !ok {
			ps = s.view(u.Shard, byID)
			if b == nil {
				cp := *ps
				cp.ents = slices.Clip(cp.ents)
				ps = &cp
			}
			local[u.Shard] = ps
		}
		if err := s.apply(u, ps, b); err != nil {
			return err
		}
	}
	if b != nil {
		for id, ps := range local {
			byID[id] = ps
		}
	}
	return nil
}

// apply applies one update to ps (and writes it into b unless b is nil).
func (s *Store) apply(u *Update, ps *pendingShard, b *pebble.Batch) error {
	id := u.Shard
	recDirty := false
	if u.Create != nil {
		if ps.exists {
			return fmt.Errorf("%w: %d", ErrShardExists, id)
		}
		*ps = pendingShard{st: &shardState{id: id}, exists: true, created: true, first: 1,
			rec: *u.Create}
		ps.rec.TruncIndex, ps.rec.TruncTerm = 0, 0
		recDirty = true
	}
	if !ps.exists {
		return fmt.Errorf("%w: %d", ErrUnknownShard, id)
	}
	if snap := u.InstallSnapshot; snap != nil {
		m := &snap.Meta
		if m.Index == 0 || (ps.snap != nil && m.Index <= ps.snap.Meta.Index) {
			return invalidUpdate(id, "installing snapshot %d over snapshot %d", m.Index, snapIndex(ps.snap))
		}
		if b != nil {
			start, end := logSpan(id)
			if err := b.DeleteRange(start, end, nil); err != nil {
				return err
			}
			if err := b.Set(shardKey(kindSnapshot, id), snap.encode(), nil); err != nil {
				return err
			}
		}
		ps.first, ps.last = m.Index+1, m.Index
		ps.rec.TruncIndex, ps.rec.TruncTerm = m.Index, m.Term
		ps.rec.ConfState, ps.rec.ConfIndex = m.ConfState.Clone(), m.Index
		ps.snap = cloneSnapshot(snap)
		ps.installed = true
		ps.ents = nil
		recDirty = true
	}
	if len(u.Entries) > 0 {
		if err := s.appendEntries(id, ps, u.Entries, b); err != nil {
			return err
		}
	}
	if !u.HardState.IsEmpty() {
		if u.HardState.Commit > ps.last {
			return invalidUpdate(id, "commit %d beyond the log's last index %d", u.HardState.Commit, ps.last)
		}
		if b != nil {
			if err := b.Set(shardKey(kindHardState, id), encodeHardState(u.HardState), nil); err != nil {
				return err
			}
		}
		ps.hs = u.HardState
	}
	if u.ConfState != nil {
		ps.rec.ConfState, ps.rec.ConfIndex = u.ConfState.Clone(), u.ConfIndex
		recDirty = true
	}
	if snap := u.SaveSnapshot; snap != nil {
		m := &snap.Meta
		if ps.snap != nil && m.Index <= ps.snap.Meta.Index {
			return invalidUpdate(id, "snapshot %d not newer than %d", m.Index, ps.snap.Meta.Index)
		}
		if m.Index > ps.last || m.Index < ps.first-1 {
			return invalidUpdate(id, "snapshot %d outside the log [%d, %d]", m.Index, ps.first, ps.last)
		}
		if b != nil {
			if err := b.Set(shardKey(kindSnapshot, id), snap.encode(), nil); err != nil {
				return err
			}
		}
		ps.snap = cloneSnapshot(snap)
	}
	if c := u.CompactTo; c > 0 {
		if ps.snap == nil || c > ps.snap.Meta.Index {
			return invalidUpdate(id, "compaction to %d not covered by snapshot %d", c, snapIndex(ps.snap))
		}
		if c > ps.last {
			return invalidUpdate(id, "compaction to %d beyond the log's last index %d", c, ps.last)
		}
		if c >= ps.first {
			t, err := s.termAt(ps, c)
			if err != nil {
				return err
			}
			if b != nil {
				if err := b.DeleteRange(logKey(id, ps.first), logKey(id, c+1), nil); err != nil {
					return err
				}
			}
			ps.first = c + 1
			ps.rec.TruncIndex, ps.rec.TruncTerm = c, t
			recDirty = true
		}
	}
	if u.Remove {
		if b != nil {
			start, end := logSpan(id)
			if err := b.DeleteRange(start, end, nil); err != nil {
				return err
			}
			for _, k := range []byte{kindHardState, kindSnapshot, kindReplica} {
				if err := b.Delete(shardKey(k, id), nil); err != nil {
					return err
				}
			}
		}
		ps.removed, ps.exists = true, false
		return nil
	}
	if recDirty && b != nil {
		if err := b.Set(shardKey(kindReplica, id), ps.rec.encode(), nil); err != nil {
			return err
		}
	}
	return nil
}

// appendEntries writes ents at the log's tail, replacing any suffix from
// ents[0].Index in the same batch (never delete-then-append across two
// writes).
func (s *Store) appendEntries(id raftpb.ShardID, ps *pendingShard, ents []raftpb.Entry, b *pebble.Batch) error {
	from := ents[0].Index
	for i := 1; i < len(ents); i++ {
		if ents[i].Index != ents[i-1].Index+1 {
			return invalidUpdate(id, "entries not contiguous at %d", ents[i].Index)
		}
	}
	if from < ps.first {
		return invalidUpdate(id, "append at %d below the log's first index %d", from, ps.first)
	}
	if from > ps.last+1 {
		return invalidUpdate(id, "append at %d leaves a gap after %d", from, ps.last)
	}
	end := ents[len(ents)-1].Index
	if b != nil {
		var key [logKeyLen]byte
		for i := range ents {
			e := &ents[i]
			putLogKey(key[:], id, e.Index)
			op := b.SetDeferred(logKeyLen, entryValueLen(e))
			copy(op.Key, key[:])
			putEntryValue(op.Value, e)
			if err := op.Finish(); err != nil {
				return err
			}
		}
		if end < ps.last {
			if err := b.DeleteRange(logKey(id, end+1), logKey(id, ps.last+1), nil); err != nil {
				return err
			}
		}
	}
	// Keep the flush's tail run for the cache and for term lookups.
	switch n := len(ps.ents); {
	case n > 0 && from == ps.ents[n-1].Index+1:
		ps.ents = append(ps.ents, ents...)
	case n > 0 && from > ps.ents[0].Index && from <= ps.ents[n-1].Index:
		keep := ps.ents[:from-ps.ents[0].Index]
		ps.ents = append(slices.Clip(keep), ents...)
	default:
		ps.ents = slices.Clone(ents)
	}
	ps.last = end
	return nil
}

// termAt returns the term of entry i of the flush's view of a shard.
func (s *Store) termAt(ps *pendingShard, i raftpb.Index) (raftpb.Term, error) {
	if i == ps.first-1 {
		return ps.rec.TruncTerm, nil
	}
	if n := len(ps.ents); n > 0 && i >= ps.ents[0].Index && i <= ps.ents[n-1].Index {
		return ps.ents[i-ps.ents[0].Index].Term, nil
	}
	if ps.st == nil || ps.created {
		return 0, invalidUpdate(0, "term of %d unknown", i)
	}
	return (&ShardLog{s: s, st: ps.st}).Term(i)
}

// publishDeletions makes this flush's deletions visible to readers before
// it commits (see the pipeline's invariants).
func (s *Store) publishDeletions(byID map[raftpb.ShardID]*pendingShard) {
	for _, ps := range byID {
		st := ps.st
		if ps.created || st == nil {
			continue
		}
		st.mu.Lock()
		switch {
		case ps.removed:
			st.removed = true
			s.cache.clear(st)
		case ps.installed:
			st.first, st.last = ps.first, ps.rec.TruncIndex
			s.cache.clear(st)
		case ps.first > st.first:
			st.first = ps.first
			s.cache.trimTo(st, ps.first-1)
		}
		st.mu.Unlock()
	}
}

// publishAdditions makes what the flush wrote visible to readers.
func (s *Store) publishAdditions(byID map[raftpb.ShardID]*pendingShard) {
	for id, ps := range byID {
		st := ps.st
		if ps.removed {
			s.mu.Lock()
			if s.shards[id] == st {
				delete(s.shards, id)
			}
			s.mu.Unlock()
			continue
		}
		st.mu.Lock()
		st.removed = false
		st.first, st.last = ps.first, ps.last
		st.hs = ps.hs
		st.rec = ps.rec
		st.snap = ps.snap
		if len(ps.ents) > 0 {
			s.cache.add(st, ps.ents)
		}
		st.mu.Unlock()
		if ps.created {
			s.mu.Lock()
			s.shards[id] = st
			s.mu.Unlock()
		}
	}
}

func snapIndex(r *SnapshotRecord) raftpb.Index {
	if r == nil {
		return 0
	}
	return r.Meta.Index
}

func cloneSnapshot(r *SnapshotRecord) *SnapshotRecord {
	c := *r
	c.Meta.ConfState = r.Meta.ConfState.Clone()
	c.Data = slices.Clone(r.Data)
	return &c
}

var errMissingEntry = errors.New("entry missing inside the log")
