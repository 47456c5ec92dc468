package engine

import (
	"io"
	"sync"
	"time"

	"github.com/shardd/shardd/batchio"
	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

// maxStepBatch bounds the replicas one step pass takes: big enough for one
// fsync to serve many shards, small enough that a pass stays short.
const maxStepBatch = 256

// pass is what one step pass hands the store: the request and the Readys
// waiting for it. Passes are pooled: the store calls Done exactly once and
// keeps nothing of the request afterwards.
type pass struct {
	req   batchio.Request
	items []persisted
}

var passPool = sync.Pool{New: func() any { return new(pass) }}

func (p *pass) release() {
	clear(p.req.Updates)
	clear(p.items)
	p.req = batchio.Request{Updates: p.req.Updates[:0]}
	p.items = p.items[:0]
	passPool.Put(p)
}

// persisted is one Ready waiting for its flush.
type persisted struct {
	r  *replica
	rd group.Ready
	// barrier: this Ready's apply waits for its flush (see stepWorker).
	barrier bool
}

// stepWorker takes batches of ready replicas, steps each, sends what may
// leave at once and persists the whole pass with one store request.
func (n *Node) stepWorker() {
	defer n.workers.Done()
	var (
		batch []*replica
		rds   []group.Ready
		msgs  []raftpb.Message
		early []*replica
	)
	for {
		batch = n.stepSched.next(batch[:0], maxStepBatch)
		if batch == nil {
			return
		}
		start := time.Now()
		ps := passPool.Get().(*pass)
		req := &ps.req
		msgs = msgs[:0]
		n.m.replicaSteps.Add(len(batch))
		for _, r := range batch {
			var res stepRes
			rds, res = n.stepReplica(r, rds[:0])
			if res.quiesced != r.quiesced {
				r.quiesced = res.quiesced
				n.awake.set(r, !res.quiesced)
				if res.quiesced {
					n.m.quiesces.Inc()
				}
			}
			for i := range rds {
				rd := &rds[i]
				msgs = n.routeMessages(r, rd.Messages, msgs)
				// A barrier Ready's apply waits for its flush, and so does
				// every later Ready's until then (apply order). The rest
				// are durable and committed: applied now, not after the
				// flush that records the commit index — except for a
				// state machine of its own durable state, which could
				// record an applied index beyond the durable commit and
				// refuse to open after a crash (S41).
				barrier := rd.Snapshot != nil || rd.ConfState != nil || r.applyBarrier.Load() > 0
				if len(rd.CommittedEntries) > 0 && !barrier && !r.onDisk {
					r.ApplyEarly(rd.CommittedEntries)
					rd.CommittedEntries = nil
					early = append(early, r)
				}
				if !rd.NeedsAdvance() && !barrier && !r.onDisk {
					// It moves at most the commit index, which Raft never
					// needs durable: written with this pass but waited
					// for by nothing. Saves a flush round trip and a step
					// per commit. Persisted hands the message slices back.
					if rd.MustPersist() {
						req.Updates = append(req.Updates, n.toUpdate(r.id, rd))
					}
					r.Persisted(*rd)
					continue
				}
				req.Updates = append(req.Updates, n.toUpdate(r.id, rd))
				if barrier {
					r.applyBarrier.Add(1)
				}
				ps.items = append(ps.items, persisted{r: r, rd: *rd, barrier: barrier})
			}
		}
		if len(early) > 0 {
			n.applySched.enqueueMany(early)
			early = early[:0]
		}
		if len(msgs) > 0 {
			n.tr.Send(msgs)
			n.m.messagesSent.Add(len(msgs))
		}
		if len(req.Updates) > 0 {
			n.m.stepBatch.Update(float64(len(batch)))
			// Nothing waits for a pass of commit indexes alone: it needs
			// no fsync of its own.
			req.Lazy = len(ps.items) == 0
			req.Done = func(err error) {
				n.flushed(ps.items, err)
				ps.release()
			}
			if err := n.store.Submit(req); err != nil {
				n.failNode(err)
				ps.release()
			}
		} else {
			ps.release()
		}
		n.stepSched.done(batch)
		n.m.stepPass.UpdateDuration(start)
	}
}

type stepRes struct {
	quiesced bool
}

func (n *Node) stepReplica(r *replica, out []group.Ready) ([]group.Ready, stepRes) {
	out, res := r.Step(out, n.events, n.cfg.QuiesceTicks)
	return out, stepRes{quiesced: res.Skip}
}

// routeMessages appends msgs for the transport; snapshots go through their
// own stream.
func (n *Node) routeMessages(r *replica, msgs, out []raftpb.Message) []raftpb.Message {
	for i := range msgs {
		m := &msgs[i]
		if m.Type == raftpb.MsgSnap {
			n.sendSnapshot(r, *m)
			continue
		}
		out = append(out, *m)
	}
	return out
}

// sendSnapshot streams the leader's latest snapshot to m.To.
func (n *Node) sendSnapshot(r *replica, m raftpb.Message) {
	log, err := n.store.Shard(r.id)
	if err != nil {
		r.ReportSnapshot(m.To, false)
		return
	}
	rec, ok := log.SnapshotRecord()
	if !ok || rec.Meta.Index != m.Snapshot.Index {
		r.ReportSnapshot(m.To, false)
		n.stepSched.enqueue(r)
		return
	}
	ref := rec.Data
	open := func() (io.ReadCloser, int64, error) { return n.snaps.OpenWithSize(ref) }
	n.m.snapshotsSent.Inc()
	n.tr.SendSnapshot(m, open, func(err error) {
		if err != nil {
			n.lg.Info("snapshot transfer failed", "shard", uint64(r.id), "to", uint64(m.To), "err", err)
		}
		r.ReportSnapshot(m.To, err == nil)
		n.stepSched.enqueue(r)
	})
}

// toUpdate is what the store must write for rd.
func (n *Node) toUpdate(id raftpb.ShardID, rd *group.Ready) batchio.Update {
	u := batchio.Update{Shard: id, Entries: rd.Entries, HardState: rd.HardState, CompactTo: rd.CompactTo}
	if rd.Snapshot != nil {
		u.InstallSnapshot = &batchio.SnapshotRecord{Meta: *rd.Snapshot,
			Data: n.snaps.ReceivedRef(id, rd.Snapshot.Index)}
	}
	if rd.ConfState != nil {
		u.ConfState, u.ConfIndex = rd.ConfState, rd.ConfIndex
	}
	return u
}

// flushed runs on the store's writer goroutine once a pass is durable:
// acknowledgements leave, committed entries go to the apply pool and the
// replicas are stepped again for their Advance.
func (n *Node) flushed(items []persisted, err error) {
	if err != nil {
		n.failNode(err)
		return
	}
	var acks []raftpb.Message
	var toApply, toStep []*replica
	for i := range items {
		it := &items[i]
		acks = append(acks, it.rd.AfterPersist...)
		if it.r.Persisted(it.rd) {
			toApply = append(toApply, it.r)
		}
		if it.barrier {
			it.r.applyBarrier.Add(-1)
		}
		toStep = append(toStep, it.r)
	}
	if len(acks) > 0 {
		n.tr.Send(acks)
		n.m.messagesSent.Add(len(acks))
	}
	n.applySched.enqueueMany(toApply)
	n.stepSched.enqueueMany(toStep)
}

// applyWorker applies committed entries, replica by replica.
func (n *Node) applyWorker() {
	defer n.workers.Done()
	var batch []*replica
	for {
		batch = n.applySched.next(batch[:0], 16)
		if batch == nil {
			return
		}
		for _, r := range batch {
			before := r.Applied()
			r.Apply(n.events)
			n.m.applied.Add(int(r.Applied() - before))
			if err := r.Err(); err != nil && !r.reportedStop.Swap(true) {
				n.events.shardStopped(uint64(r.id), err)
			}
		}
		n.applySched.done(batch)
	}
}

// ticker enqueues ticks for the replicas that are not quiesced. It never
// steps a replica itself.
func (n *Node) ticker() {
	defer n.workers.Done()
	t := time.NewTicker(n.cfg.TickInterval)
	defer t.Stop()
	var active []*replica
	chunk := n.cfg.tickChunk()
	for tick := 0; ; tick++ {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		// Each awake replica gets its ticks in chunks, one chunk every
		// chunk intervals, the replicas spread evenly over the intervals:
		// stepping a replica costs far more than a tick, and nothing in
		// the core needs finer time than a heartbeat period. A tick visits
		// only its phase's awake replicas; quiesced ones cost nothing.
		var awake int
		active, awake = n.awake.phase(tick%chunk, active[:0])
		for _, r := range active {
			r.TickN(chunk)
		}
		n.mu.RLock()
		hosted := len(n.list)
		n.mu.RUnlock()
		n.m.quiescedShards.Store(int64(max(0, hosted-awake)))
		n.stepSched.enqueueMany(active)
		clear(active)
	}
}
