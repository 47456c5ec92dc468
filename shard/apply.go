package shard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"

	"github.com/shardd/shardd/raftpb"
)

// openStateMachine prepares the state machine at start and returns the
// index it has applied: an on-disk state machine says so itself (it must
// lie within what the log can replay, S41); an in-memory one is restored
// from the latest snapshot, if any.
func (r *Replica) openStateMachine(restoreRef []byte, restoreIndex raftpb.Index) (raftpb.Index, error) {
	log := r.cfg.Core.Log
	first, err := log.FirstIndex()
	if err != nil {
		return 0, err
	}
	st, err := log.InitialState()
	if err != nil {
		return 0, err
	}
	if r.onDisk != nil {
		last, err := r.onDisk.Open()
		if err != nil {
			return 0, fmt.Errorf("shard %d: opening the state machine: %w", r.shard, err)
		}
		applied := raftpb.Index(last)
		if applied > st.HardState.Commit {
			// S41: the state machine holds entries the log does not know
			// are committed.
			return 0, fmt.Errorf("shard %d: state machine applied %d beyond the durable commit %d",
				r.shard, applied, st.HardState.Commit)
		}
		if applied+1 < first {
			// S41: entries the state machine misses are compacted; only the
			// snapshot can bring it forward.
			if restoreRef == nil || restoreIndex < first-1 {
				return 0, fmt.Errorf("shard %d: state machine applied %d but the log starts at %d and no snapshot covers the gap",
					r.shard, applied, first)
			}
			if err := r.recover(restoreRef); err != nil {
				return 0, err
			}
			applied = restoreIndex
		}
		r.appTerm, _ = log.Term(applied)
		return applied, nil
	}
	if restoreRef == nil {
		if first > 1 {
			return 0, fmt.Errorf("shard %d: log compacted to %d and no snapshot to restore", r.shard, first-1)
		}
		return 0, nil
	}
	if err := r.recover(restoreRef); err != nil {
		return 0, err
	}
	r.appTerm, _ = log.Term(restoreIndex)
	return restoreIndex, nil
}

func (r *Replica) recover(ref []byte) error {
	rd, err := r.cfg.Snapshots.Open(ref)
	if err != nil {
		return fmt.Errorf("shard %d: opening snapshot: %w", r.shard, err)
	}
	defer rd.Close()
	h, err := readSnapshotHeader(rd)
	if err != nil {
		return fmt.Errorf("shard %d: %w", r.shard, err)
	}
	r.smMu.Lock()
	defer r.smMu.Unlock()
	if err := r.sm.RecoverFromSnapshot(rd); err != nil {
		return fmt.Errorf("shard %d: recovering from snapshot: %w", r.shard, err)
	}
	r.hash.Store(h)
	return nil
}

// HasWork reports whether Apply has something to do.
func (r *Replica) HasWork() bool {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	return len(r.applyQ) > 0
}

// Apply applies everything queued, in log order. REQUIRES: only one
// goroutine applies a replica at a time.
func (r *Replica) Apply(ev Events) {
	r.applyMu.Lock()
	tasks := r.applyQ
	r.applyQ = r.spareQ[:0]
	r.applyMu.Unlock()
	for i := range tasks {
		if stopped, err := r.isStopped(); stopped {
			// Nothing is applied after Stop: the engine closes the state
			// machine next.
			r.answerSnapshotRequest(tasks[i].snapshotNow, 0, err)
			continue
		}
		r.applyTask(&tasks[i], ev)
	}
	// The queue's array serves the next round (tasks hold no data after).
	clear(tasks)
	r.spareQ = tasks[:0]
}

func (r *Replica) applyTask(t *applyTask, ev Events) {
	if t.snapshotNow != nil {
		idx, err := r.snapshot()
		r.answerSnapshotRequest(t.snapshotNow, idx, err)
		return
	}
	if s := t.snap; s != nil {
		r.installSnapshot(s, ev)
	}
	if len(t.ents) > 0 {
		if err := r.applyEntries(t.ents); err != nil {
			r.fail(err)
			return
		}
	}
	if t.conf != nil {
		r.conf, r.confIdx = t.conf.Clone(), t.confIndex
		if ev != nil {
			ev.MembershipChanged(r.shard, r.conf.Clone())
		}
	}
	r.completeReads()
	if every := r.cfg.SnapshotEvery; every > 0 && r.Applied() >= r.lastSnap+raftpb.Index(every) {
		if _, err := r.snapshot(); err != nil {
			r.lg.Warn("automatic snapshot failed", "err", err)
		}
	}
}

// installSnapshot restores the state machine from a received snapshot.
// Entries released before it and still queued are at or below its index:
// applyEntries skips them, so applied never goes back (S25).
func (r *Replica) installSnapshot(s *raftpb.SnapshotMeta, ev Events) {
	if s.Index <= r.Applied() {
		return
	}
	if err := r.recover(r.cfg.Snapshots.ReceivedRef(r.shard, s.Index)); err != nil {
		r.fail(fmt.Errorf("installing snapshot %d: %w", s.Index, err))
		return
	}
	r.applied.Store(uint64(s.Index))
	r.appTerm = s.Term
	r.lastSnap = s.Index
	r.conf, r.confIdx = s.ConfState.Clone(), s.Index
	// Proposals covered by the snapshot were applied without us seeing
	// their results. Which pending ones it covers is unknown (their
	// indexes are the leader's), so every one of its term or before is
	// resolved as unknown — always a valid answer, if conservative for those
	// applied just after the snapshot. (The membership event comes with the
	// task's ConfState.)
	r.failPendingUpTo(s.Term+1, ErrResultUnknown)
}

// applyEntries applies committed entries: commands go to the state machine
// in one Update; proposals waiting on them complete.
func (r *Replica) applyEntries(ents []raftpb.Entry) error {
	applied := r.Applied()
	h := r.hash.Load()
	batch := r.updateBuf[:0]
	defer func() {
		// Update does not keep the slice (StateMachine): reuse it.
		clear(batch)
		r.updateBuf = batch[:0]
	}()
	for i := range ents {
		e := &ents[i]
		if e.Index <= applied {
			continue // covered by a snapshot installed meanwhile (S25)
		}
		if e.Index != applied+1 {
			return fmt.Errorf("apply: entry %d after %d", e.Index, applied)
		}
		applied = e.Index
		h = ChainHash(h, e)
		if e.Type == raftpb.EntryNormal && len(e.Data) > 0 {
			batch = append(batch, Entry{Index: uint64(e.Index), Cmd: e.Data})
		}
	}
	if len(batch) > 0 {
		r.smMu.Lock()
		if stopped, serr := r.isStopped(); stopped {
			r.smMu.Unlock()
			return serr
		}
		err := r.sm.Update(batch)
		r.smMu.Unlock()
		if err != nil {
			return fmt.Errorf("state machine update at %d..%d: %w", batch[0].Index, batch[len(batch)-1].Index, err)
		}
	}
	r.hash.Store(h)
	last := &ents[len(ents)-1]
	if last.Index > r.Applied() {
		r.applied.Store(uint64(last.Index))
		r.appTerm = last.Term
	}
	r.completeProposals(ents, batch)
	return nil
}

// completeProposals completes the proposals ents carried, and decides
// those a new term has left behind.
func (r *Replica) completeProposals(ents []raftpb.Entry, batch []Entry) {
	b := 0
	r.mu.Lock()
	done, results, errs := r.doneBuf[:0], r.resultBuf[:0], r.errBuf[:0]
	for i := range ents {
		e := &ents[i]
		var res Result
		if e.Type == raftpb.EntryNormal && len(e.Data) > 0 {
			for b < len(batch) && batch[b].Index < uint64(e.Index) {
				b++
			}
			if b < len(batch) && batch[b].Index == uint64(e.Index) {
				res = batch[b].Result
			}
		}
		res.Index = uint64(e.Index)
		if e.Key == 0 {
			continue
		}
		p, ok := r.pending[e.Key]
		if !ok {
			continue
		}
		delete(r.pending, e.Key)
		var err error
		if p.cc != nil && e.Type != raftpb.EntryConfChange {
			// The leader refused the change and appended an empty entry.
			err = ErrRejected
		}
		done, results, errs = append(done, p), append(results, res), append(errs, err)
	}
	r.mu.Unlock()
	for i, p := range done {
		p.complete(results[i], errs[i])
	}
	clear(done)
	clear(results)
	clear(errs)
	r.doneBuf, r.resultBuf, r.errBuf = done[:0], results[:0], errs[:0]
	if t := ents[len(ents)-1].Term; t > r.maxTerm {
		r.maxTerm = t
		// An entry of a newer term is applied: a proposal of an older term
		// not applied by now is not in the log; it may only come back if a
		// delayed forward of it still arrives, so its fate is unknown.
		r.failPendingUpTo(t, ErrResultUnknown)
	}
}

// failPendingUpTo completes every pending proposal that entered Raft in a
// term below term.
func (r *Replica) failPendingUpTo(term raftpb.Term, err error) {
	r.mu.Lock()
	var done []*Proposal
	for k, p := range r.pending {
		if p.term < term {
			done = append(done, p)
			delete(r.pending, k)
		}
	}
	r.mu.Unlock()
	if len(done) > 0 {
		r.lg.Info("proposals of an older term resolved as unknown", "count", len(done), "term", uint64(term))
	}
	for _, p := range done {
		p.complete(Result{}, err)
	}
}

// completeReads completes the reads whose index is applied.
func (r *Replica) completeReads() {
	applied := r.Applied()
	r.mu.Lock()
	var ready []*readBatch
	kept := r.readWait[:0]
	for _, b := range r.readWait {
		if b.index <= applied {
			ready = append(ready, b)
		} else {
			kept = append(kept, b)
		}
	}
	r.readWait = kept
	r.mu.Unlock()
	for _, b := range ready {
		for _, rr := range b.reads {
			rr.complete(nil)
		}
	}
}

// Lookup runs a query against the state machine (after a read completed,
// or as a stale read).
func (r *Replica) Lookup(query []byte) ([]byte, error) {
	r.smMu.RLock()
	defer r.smMu.RUnlock()
	// Checked under the lock: once stopped, the state machine may be closed.
	if stopped, err := r.isStopped(); stopped {
		return nil, err
	}
	return r.sm.Lookup(query)
}

// snapshot saves the state machine at the applied index, records it and
// compacts the log behind it, keeping CompactionLag entries.
func (r *Replica) snapshot() (raftpb.Index, error) {
	applied := r.Applied()
	if applied == 0 || r.confIdx > applied {
		return 0, errors.New("no applied state to snapshot yet")
	}
	if applied <= r.lastSnap {
		return r.lastSnap, nil
	}
	if r.onDisk != nil {
		// Entries are compacted below: they must be durable in the state
		// machine first.
		if err := r.onDisk.Sync(); err != nil {
			r.fail(fmt.Errorf("state machine sync: %w", err))
			return 0, err
		}
	}
	w, err := r.cfg.Snapshots.Create(r.shard, applied)
	if err != nil {
		return 0, err
	}
	r.smMu.RLock()
	err = writeSnapshotHeader(w, r.hash.Load())
	if err == nil {
		err = r.sm.SaveSnapshot(w)
	}
	r.smMu.RUnlock()
	if err != nil {
		w.Abort()
		return 0, fmt.Errorf("saving snapshot: %w", err)
	}
	ref, err := w.Commit()
	if err != nil {
		return 0, err
	}
	meta := raftpb.SnapshotMeta{Index: applied, Term: r.appTerm, ConfState: r.conf.Clone()}
	var compactTo raftpb.Index
	if lag := raftpb.Index(r.cfg.CompactionLag); applied > lag {
		compactTo = applied - lag
	}
	if err := r.cfg.Persister.SaveSnapshot(r.shard, meta, ref, compactTo); err != nil {
		return 0, err
	}
	r.lastSnap = applied
	return applied, nil
}

func (r *Replica) answerSnapshotRequest(ch chan<- snapResult, idx raftpb.Index, err error) {
	if ch != nil {
		ch <- snapResult{index: idx, err: err}
	}
}

// ChainHash extends the running hash of applied entries by e (TESTING.md:
// h[i] = H(h[i-1], term, index, data)); Status().Hash is its value at
// Applied. Exported so checkers compute the very same chain.
func ChainHash(h uint64, e *raftpb.Entry) uint64 {
	f := fnv.New64a()
	var b [24]byte
	binary.BigEndian.PutUint64(b[0:], h)
	binary.BigEndian.PutUint64(b[8:], uint64(e.Term))
	binary.BigEndian.PutUint64(b[16:], uint64(e.Index))
	f.Write(b[:])
	f.Write(e.Data)
	return f.Sum64()
}

// Snapshot data starts with a header the replica writes and reads around
// the state machine's own bytes: a magic number (format version) and the
// running hash of the entries applied up to the snapshot, so replicas that
// installed it stay comparable with those that applied the entries.
var snapshotMagic = [4]byte{'s', 'h', 'd', '1'}

const snapshotHeaderLen = 12

func writeSnapshotHeader(w io.Writer, hash uint64) error {
	var b [snapshotHeaderLen]byte
	copy(b[:4], snapshotMagic[:])
	binary.BigEndian.PutUint64(b[4:], hash)
	_, err := w.Write(b[:])
	return err
}

func readSnapshotHeader(r io.Reader) (uint64, error) {
	var b [snapshotHeaderLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, fmt.Errorf("snapshot header: %w", err)
	}
	if [4]byte(b[:4]) != snapshotMagic {
		return 0, fmt.Errorf("snapshot header: unknown format %q", b[:4])
	}
	return binary.BigEndian.Uint64(b[4:]), nil
}
