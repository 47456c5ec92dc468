package batchio

// The write pipeline
//
// Many step workers persist the Readys of many shards at once. A flush — one
// Pebble batch committed with one fsync — costs about the same whether it
// carries one entry or thousands (PERF.md: ≈ 0.3 ms per fsync on this
// machine, ≈ 4k synced single-entry commits/s against ≈ 1.1M entries/s in
// batches of 256), so the pipeline's whole job is to make flushes big.
//
// Stages, all on one writer goroutine:
//
//  1. Gather: take every request queued since the previous flush (up to
//     maxFlushBytes). Requests queue without blocking their submitter; a
//     worker hands over its pass's request and goes on stepping shards.
//  2. Commit: turn them into one Pebble batch (validating each request; an
//     invalid one is refused alone) and commit it with Sync. While this
//     runs — most of it waiting for the fsync — new requests queue up for
//     the next flush, so the batch size follows the load by itself: no
//     timer, no added latency when idle.
//  3. Complete: publish what was written to readers (shard bounds, cache)
//     and call each request's Done, in the order requests were accepted.
//
// Invariants:
//   - Done(nil) is called only after the fsync covering that request
//     returned (a Lazy request: after its write); requests complete in acceptance order, and a request's
//     writes are never split across flushes.
//   - After a failed commit (the fsync's outcome is unknown) every request
//     of that flush, and every request after it, gets an error wrapping
//     ErrFailed; the pipeline never acknowledges a write that may not be
//     durable, and never retries an fsync.
//   - Readers see deletions (compaction, snapshot install, removal) before
//     the flush commits and additions after it, so a concurrent read never
//     mistakes a deleted key for a missing one.
//
// Alternatives measured (BenchmarkFlush, 1000 shards, one 16-byte entry and
// a hard state per request, 2/8/64 writers; see the closing figures in
// docs/ARCHITECTURE.md):
//   - One Pebble commit with Sync per request, from the submitting goroutine
//     (the baseline). Pebble's own commit pipeline already merges the syncs
//     of concurrent committers, but each committer blocks for its fsync, so
//     a flush holds at most one request per blocked goroutine.
//   - Letting workers commit with pebble.NoSyncWait and wait on the sync
//     themselves was not pursued: it still costs a goroutine blocked per
//     outstanding request and a Pebble batch per request, where this
//     pipeline reuses one batch and one goroutine for everything.
//
// The pipeline itself knows nothing of Pebble: commit is a function field,
// so its ordering and failure rules are tested without a database.

import (
	"fmt"
	"sync"

	"github.com/shardd/shardd/raftpb"
)

// Request is one persist request: updates to any number of shards, written
// atomically in one flush, and a completion.
type Request struct {
	Updates []Update
	// Done is called once, from the writer goroutine, after the request is
	// durable (err nil) or has failed. It must not block for long: it delays
	// the next flush. It may be nil.
	Done func(err error)
	// Lazy: the request need not be durable when Done(nil) is called, only
	// written. A flush of lazy requests alone commits without an fsync; a
	// crash may then lose them, but never a later request without them
	// (Pebble's log keeps commit order, so the next synced flush makes
	// every earlier write durable). For what Raft never needs durable, such
	// as a commit index alone.
	Lazy bool

	// err is set while committing when the request is refused alone.
	err error
	// size approximates the bytes the request writes.
	size int
}

// Update is one shard's part of a Request. Its fields are applied in the
// order they are declared.
type Update struct {
	Shard raftpb.ShardID
	// Create makes a new replica with this record. The shard must not
	// exist. The bootstrap entry, hard state and membership of an initial
	// member come in the same Update.
	Create *ReplicaRecord
	// InstallSnapshot replaces the whole log with a received snapshot: every
	// entry is deleted, and the log restarts after the snapshot.
	InstallSnapshot *SnapshotRecord
	// Entries are appended; they replace any stored entries from
	// Entries[0].Index on. They must follow the log without a gap. Their
	// data must not be modified after Submit (the entry cache shares it).
	Entries []raftpb.Entry
	// HardState is written unless zero.
	HardState raftpb.HardState
	// ConfState, when set, is the membership in force since ConfIndex.
	ConfState *raftpb.ConfState
	ConfIndex raftpb.Index
	// SaveSnapshot records a snapshot taken locally (the log is kept).
	SaveSnapshot *SnapshotRecord
	// CompactTo deletes the log up to and including this index, which a
	// recorded snapshot must cover.
	CompactTo raftpb.Index
	// Remove deletes every key of the replica (applied last).
	Remove bool
}

func (r *Request) approxSize() int {
	n := 64
	for i := range r.Updates {
		u := &r.Updates[i]
		n += 64
		for j := range u.Entries {
			n += 32 + len(u.Entries[j].Data)
		}
	}
	return n
}

// pipeline queues requests and flushes them, one flush at a time.
type pipeline struct {
	// commit writes reqs durably as one flush. It may refuse individual
	// requests by setting their err; an error return fails them all.
	commit        func(reqs []*Request) error
	maxFlushBytes int

	mu      sync.Mutex
	cond    sync.Cond
	queue   []*Request // accepted, not yet flushing
	spare   []*Request
	closing bool
	failed  error // latched: the first commit failure

	done chan struct{}
}

func newPipeline(commit func([]*Request) error, maxFlushBytes int) *pipeline {
	p := &pipeline{commit: commit, maxFlushBytes: maxFlushBytes, done: make(chan struct{})}
	p.cond.L = &p.mu
	go p.run()
	return p
}

// submit queues r. It never blocks on I/O. It fails at once if the store
// is closed or has failed.
func (p *pipeline) submit(r *Request) error {
	r.size = r.approxSize()
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.failed != nil:
		return fmt.Errorf("%w: %w", ErrFailed, p.failed)
	case p.closing:
		return ErrClosed
	}
	p.queue = append(p.queue, r)
	if len(p.queue) == 1 {
		p.cond.Signal()
	}
	return nil
}

// close stops accepting requests, flushes what is queued and waits for
// the writer to exit.
func (p *pipeline) close() {
	p.mu.Lock()
	p.closing = true
	p.cond.Signal()
	p.mu.Unlock()
	<-p.done
}

func (p *pipeline) run() {
	defer close(p.done)
	for {
		p.mu.Lock()
		for len(p.queue) == 0 && !p.closing {
			p.cond.Wait()
		}
		if len(p.queue) == 0 {
			p.mu.Unlock()
			return
		}
		// Swap the queue out under the lock; flush outside it.
		batch := p.take()
		failed := p.failed
		p.mu.Unlock()

		var err error
		if failed != nil {
			err = fmt.Errorf("%w: %w", ErrFailed, failed)
		} else if err = p.commit(batch); err != nil {
			p.mu.Lock()
			p.failed = err
			p.mu.Unlock()
			err = fmt.Errorf("%w: %w", ErrFailed, err)
		}
		for _, r := range batch {
			rerr := err
			if rerr == nil {
				rerr = r.err
			}
			if r.Done != nil {
				r.Done(rerr)
			}
		}
		p.recycle(batch)
	}
}

// take removes the longest prefix of the queue within maxFlushBytes (at
// least one request). REQUIRES: p.mu held, queue not empty.
func (p *pipeline) take() []*Request {
	n, size := 0, 0
	for n < len(p.queue) && (n == 0 || size+p.queue[n].size <= p.maxFlushBytes) {
		size += p.queue[n].size
		n++
	}
	batch := p.queue[:n:n]
	if n == len(p.queue) {
		// The common case: hand the whole queue over and queue into the
		// spare slice from the previous flush.
		p.queue = p.spare[:0]
		p.spare = nil
	} else {
		p.queue = append([]*Request(nil), p.queue[n:]...)
	}
	return batch
}

func (p *pipeline) recycle(batch []*Request) {
	clear(batch)
	p.mu.Lock()
	if p.spare == nil {
		p.spare = batch[:0]
	}
	p.mu.Unlock()
}
