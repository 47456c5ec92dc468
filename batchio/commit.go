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
	// Which records the flush must write for this shard.
	hsDirty, recDirty, snapDirty bool
}

// commit is the pipeline's commit function: it builds one batch from reqs,
// commits it with one fsync and publishes the result to readers.
func (s *Store) commit(reqs []*Request) error {
	b := s.batch
	clear(s.byID)
	s.views = s.views[:0]
	entries, sync := 0, false
	for _, r := range reqs {
		sync = sync || !r.Lazy
		if err := s.validate(r); err != nil {
			r.err = err
			continue
		}
		for i := range r.Updates {
			u := &r.Updates[i]
			if err := s.apply(u, s.viewFor(u.Shard), b); err != nil {
				// validate accepted it: a failure now is a bug, and the
				// batch may hold part of the request.
				return fmt.Errorf("batchio: request refused after validation: %w", err)
			}
			entries += len(u.Entries)
		}
	}
	if err := s.emit(b); err != nil {
		return err
	}
	if b.Empty() {
		return nil
	}
	s.publishDeletions()
	if err := commitBatch(b, sync); err != nil {
		return err
	}
	if sync {
		s.stats.flushes.Add(1)
	}
	s.stats.requests.Add(uint64(len(reqs)))
	s.stats.entries.Add(uint64(entries))
	s.stats.bytes.Add(uint64(b.Len()))
	b.Reset()
	s.publishAdditions()
	s.cache.evict()
	s.stats.cacheBytes.Store(s.cache.bytes)
	return nil
}

// commitBatch commits b, with an fsync when sync is set. Pebble reports a failed WAL write or
// sync through Logger.Fatalf, which panics with a fatalError: it is turned
// back into the flush's error here.
func commitBatch(b *pebble.Batch, sync bool) (err error) {
	defer func() {
		if r := recover(); r != nil {
			fe, ok := r.(fatalError)
			if !ok {
				panic(r)
			}
			err = fe
		}
	}()
	if !sync {
		return b.Commit(pebble.NoSync)
	}
	return b.Commit(pebble.Sync)
}

// viewFor returns the flush's view of shard id, loading it from the shard's
// published state the first time the flush touches it. Views are pooled
// across flushes.
func (s *Store) viewFor(id raftpb.ShardID) *pendingShard {
	if ps, ok := s.byID[id]; ok {
		return ps
	}
	var ps *pendingShard
	if n := len(s.views); n < cap(s.views) {
		s.views = s.views[:n+1]
		ps = s.views[n]
	} else {
		s.views = append(s.views, nil)
	}
	if ps == nil {
		// Not pooled yet: spare capacity from a growing append holds nil.
		ps = &pendingShard{}
		s.views[len(s.views)-1] = ps
	}
	*ps = pendingShard{}
	if st := s.shard(id); st != nil {
		st.mu.RLock()
		*ps = pendingShard{st: st, exists: !st.removed, first: st.first, last: st.last, hs: st.hs,
			rec: st.rec, snap: st.snap}
		st.mu.RUnlock()
	}
	s.byID[id] = ps
	return ps
}

// peek returns the flush's view of id without adding it to the flush.
func (s *Store) peek(id raftpb.ShardID) pendingShard {
	if ps, ok := s.byID[id]; ok {
		return *ps
	}
	st := s.shard(id)
	if st == nil {
		return pendingShard{}
	}
	st.mu.RLock()
	defer st.mu.RUnlock()
	return pendingShard{st: st, exists: !st.removed, first: st.first, last: st.last, hs: st.hs,
		rec: st.rec, snap: st.snap}
}

// validate checks every update of r against the flush so far, changing
// nothing: a request is written whole or not at all. Updates to the same
// shard within r are checked against the state the earlier ones leave.
func (s *Store) validate(r *Request) error {
	s.scratch = s.scratch[:0]
	for i := range r.Updates {
		u := &r.Updates[i]
		k := -1
		for j := range s.scratch {
			if s.scratch[j].Shard == u.Shard {
				k = j
				break
			}
		}
		if k < 0 {
			s.scratch = append(s.scratch, scratchView{Shard: u.Shard, ps: s.peek(u.Shard)})
			k = len(s.scratch) - 1
		}
		if err := s.check(u, &s.scratch[k].ps); err != nil {
			return err
		}
	}
	return nil
}

// scratchView is a shard's state as validation advances it.
type scratchView struct {
	Shard raftpb.ShardID
	ps    pendingShard
}

// check validates u against a copy of the shard's view, advancing the copy
// through u's steps (each field is checked against the state the previous
// ones leave).
func (s *Store) check(u *Update, ps *pendingShard) error {
	id := u.Shard
	if u.Create != nil {
		if ps.exists {
			return fmt.Errorf("%w: %d", ErrShardExists, id)
		}
		*ps = pendingShard{exists: true, created: true, first: 1}
	}
	if !ps.exists {
		return fmt.Errorf("%w: %d", ErrUnknownShard, id)
	}
	if snap := u.InstallSnapshot; snap != nil {
		if snap.Meta.Index == 0 || (ps.snap != nil && snap.Meta.Index <= ps.snap.Meta.Index) {
			return invalidUpdate(id, "installing snapshot %d over snapshot %d", snap.Meta.Index, snapIndex(ps.snap))
		}
		ps.first, ps.last, ps.snap = snap.Meta.Index+1, snap.Meta.Index, snap
		ps.ents = nil
	}
	if n := len(u.Entries); n > 0 {
		from := u.Entries[0].Index
		for i := 1; i < n; i++ {
			if u.Entries[i].Index != u.Entries[i-1].Index+1 {
				return invalidUpdate(id, "entries not contiguous at %d", u.Entries[i].Index)
			}
		}
		if from < ps.first {
			return invalidUpdate(id, "append at %d below the log's first index %d", from, ps.first)
		}
		if from > ps.last+1 {
			return invalidUpdate(id, "append at %d leaves a gap after %d", from, ps.last)
		}
		ps.last = u.Entries[n-1].Index
	}
	if !u.HardState.IsEmpty() && u.HardState.Commit > ps.last {
		return invalidUpdate(id, "commit %d beyond the log's last index %d", u.HardState.Commit, ps.last)
	}
	if snap := u.SaveSnapshot; snap != nil {
		m := &snap.Meta
		if ps.snap != nil && m.Index <= ps.snap.Meta.Index {
			return invalidUpdate(id, "snapshot %d not newer than %d", m.Index, ps.snap.Meta.Index)
		}
		if m.Index > ps.last || m.Index < ps.first-1 {
			return invalidUpdate(id, "snapshot %d outside the log [%d, %d]", m.Index, ps.first, ps.last)
		}
		ps.snap = snap
	}
	if c := u.CompactTo; c > 0 {
		if ps.snap == nil || c > ps.snap.Meta.Index {
			return invalidUpdate(id, "compaction to %d not covered by snapshot %d", c, snapIndex(ps.snap))
		}
		if c > ps.last {
			return invalidUpdate(id, "compaction to %d beyond the log's last index %d", c, ps.last)
		}
		if c >= ps.first {
			ps.first = c + 1
		}
	}
	if u.Remove {
		*ps = pendingShard{}
	}
	return nil
}

// apply applies one validated update to the flush's view ps. Range
// deletions go into b at once; point writes are emitted at the end of the
// flush from the final views (emit), so each record is written once.
func (s *Store) apply(u *Update, ps *pendingShard, b *pebble.Batch) error {
	id := u.Shard
	if u.Create != nil {
		*ps = pendingShard{st: &shardState{id: id}, exists: true, created: true, first: 1,
			rec: *u.Create, recDirty: true}
		ps.rec.TruncIndex, ps.rec.TruncTerm = 0, 0
	}
	if snap := u.InstallSnapshot; snap != nil {
		m := &snap.Meta
		start, end := logSpan(id)
		if err := b.DeleteRange(start, end, nil); err != nil {
			return err
		}
		ps.first, ps.last = m.Index+1, m.Index
		ps.rec.TruncIndex, ps.rec.TruncTerm = m.Index, m.Term
		ps.rec.ConfState, ps.rec.ConfIndex = m.ConfState.Clone(), m.Index
		ps.snap = cloneSnapshot(snap)
		ps.installed = true
		ps.ents = nil
		ps.recDirty, ps.snapDirty = true, true
	}
	if len(u.Entries) > 0 {
		if err := s.appendEntries(id, ps, u.Entries, b); err != nil {
			return err
		}
	}
	if !u.HardState.IsEmpty() {
		ps.hs, ps.hsDirty = u.HardState, true
	}
	if u.ConfState != nil {
		ps.rec.ConfState, ps.rec.ConfIndex = u.ConfState.Clone(), u.ConfIndex
		ps.recDirty = true
	}
	if snap := u.SaveSnapshot; snap != nil {
		ps.snap, ps.snapDirty = cloneSnapshot(snap), true
	}
	if c := u.CompactTo; c > 0 && c >= ps.first {
		t, err := s.termAt(ps, c)
		if err != nil {
			return err
		}
		if err := b.DeleteRange(logKey(id, ps.first), logKey(id, c+1), nil); err != nil {
			return err
		}
		ps.first = c + 1
		ps.rec.TruncIndex, ps.rec.TruncTerm = c, t
		ps.recDirty = true
	}
	if u.Remove {
		start, end := logSpan(id)
		if err := b.DeleteRange(start, end, nil); err != nil {
			return err
		}
		for _, k := range []byte{kindHardState, kindSnapshot, kindReplica} {
			if err := b.Delete(shardKey(k, id), nil); err != nil {
				return err
			}
		}
		ps.removed, ps.exists = true, false
		ps.ents, ps.hsDirty, ps.recDirty, ps.snapDirty = nil, false, false, false
	}
	return nil
}

// emit writes the point records of every shard the flush touched, from the
// final views: in key order (hard states, log entries, replica records,
// snapshot records; each by shard), which is the order Pebble's memtable
// inserts fastest, and once per record however many requests touched it.
// Range deletions were written before, so these writes win over them.
func (s *Store) emit(b *pebble.Batch) error {
	slices.SortFunc(s.views, func(x, y *pendingShard) int {
		switch {
		case x.st.id < y.st.id:
			return -1
		case x.st.id > y.st.id:
			return 1
		}
		return 0
	})
	for _, ps := range s.views {
		if !ps.hsDirty {
			continue
		}
		op := b.SetDeferred(shardKeyLen, crcLen+ps.hs.Size())
		putShardKey(op.Key, kindHardState, ps.st.id)
		ps.hs.MarshalAppend(op.Value[crcLen:crcLen])
		putFrame(op.Value)
		if err := op.Finish(); err != nil {
			return err
		}
	}
	for _, ps := range s.views {
		for i := range ps.ents {
			e := &ps.ents[i]
			if e.Index < ps.first {
				continue // compacted in this flush
			}
			op := b.SetDeferred(logKeyLen, entryValueLen(e))
			putLogKey(op.Key, ps.st.id, e.Index)
			putEntryValue(op.Value, e)
			if err := op.Finish(); err != nil {
				return err
			}
		}
	}
	for _, ps := range s.views {
		if ps.recDirty {
			if err := b.Set(shardKey(kindReplica, ps.st.id), ps.rec.encode(), nil); err != nil {
				return err
			}
		}
	}
	for _, ps := range s.views {
		if ps.snapDirty {
			if err := b.Set(shardKey(kindSnapshot, ps.st.id), ps.snap.encode(), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// appendEntries adds ents to the flush's tail run of the shard (emit
// writes them), deleting the stored suffix they replace in the same batch
// (never delete-then-append across two writes).
func (s *Store) appendEntries(id raftpb.ShardID, ps *pendingShard, ents []raftpb.Entry, b *pebble.Batch) error {
	from := ents[0].Index
	end := ents[len(ents)-1].Index
	if end < ps.last {
		if err := b.DeleteRange(logKey(id, end+1), logKey(id, ps.last+1), nil); err != nil {
			return err
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
		// Entries are immutable once submitted: share them (clipped, so a
		// later append in this flush copies).
		ps.ents = slices.Clip(ents)
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
func (s *Store) publishDeletions() {
	for _, ps := range s.byID {
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
func (s *Store) publishAdditions() {
	for id, ps := range s.byID {
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
		// Only what the flush left in the log: not entries it compacted.
		ents := ps.ents
		for len(ents) > 0 && ents[0].Index < ps.first {
			ents = ents[1:]
		}
		if len(ents) > 0 {
			s.cache.add(st, ents)
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
