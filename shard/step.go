package shard

import (
	"errors"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

// Events receives what an embedding application reacts to; the engine
// forwards them to the user's listener from its own goroutine.
type Events interface {
	LeaderChanged(shard raftpb.ShardID, leader raftpb.NodeID, term raftpb.Term)
	MembershipChanged(shard raftpb.ShardID, cs raftpb.ConfState)
}

// StepResult reports what a Step did besides the Readys.
type StepResult struct {
	// Active is set when the step saw work other than ticks and
	// heartbeats (proposals, reads, transfers, appends): the engine's
	// quiescence counts idle ticks.
	Active bool
	// Ticked is the number of ticks applied.
	Ticked int
	// Pending is set when work waits for a later step (reads or proposals
	// that found no leader, or were dropped by a leader change): the
	// engine must keep ticking the replica even if the core is quiesced,
	// or that work would wait for ever.
	Pending bool
	// Skip: the caller need not tick the replica until something arrives
	// for it (the core is quiesced and nothing waits for a later step).
	Skip bool
}

// Step drains the inbox into the core and appends every Ready the core
// has to out. A leader idle for quiesceTicks ticks (no proposal, read,
// transfer or message other than heartbeats) tries to quiesce the shard;
// quiesceTicks <= 0 disables it. REQUIRES: only one goroutine steps a
// replica at a time.
func (r *Replica) Step(out []group.Ready, ev Events, quiesceTicks int) ([]group.Ready, StepResult) {
	var res StepResult
	in := r.in.take()
	defer r.in.recycle(&in)
	if in.stopped || r.Err() != nil {
		return out, res
	}
	g := r.g
	for _, rd := range in.persisted {
		if err := g.Advance(rd); err != nil {
			r.fail(err)
			return out, res
		}
	}
	for i := 0; i < in.ticks; i++ {
		g.Tick()
	}
	res.Ticked = in.ticks
	if in.ticks > 0 {
		r.ticks += uint64(in.ticks)
		r.expireForwarded()
	}
	for i := range in.msgs {
		m := &in.msgs[i]
		if m.Type != raftpb.MsgHeartbeat && m.Type != raftpb.MsgHeartbeatResp {
			res.Active = true
		}
		if err := g.Step(*m); err != nil && g.Err() == nil {
			r.lg.Debug("message refused", "type", m.Type.String(), "from", uint64(m.From), "err", err)
		}
	}
	for _, n := range in.unreachable {
		g.ReportUnreachable(n)
	}
	for _, s := range in.snapReports {
		g.ReportSnapshot(s.to, s.ok)
	}
	for _, t := range in.transfers {
		res.Active = true
		if err := g.TransferLeader(t); err != nil {
			r.lg.Info("transfer refused", "target", uint64(t), "err", err)
		}
	}
	if in.campaign {
		_ = g.Campaign()
	}
	r.mu.Lock()
	waiting := r.waitingProps
	r.waitingProps = nil
	r.mu.Unlock()
	if len(in.props) > 0 || len(waiting) > 0 {
		res.Active = true
		props := in.props
		if len(waiting) > 0 {
			props = append(waiting, in.props...)
		}
		r.propose(props)
	}
	if len(in.reads) > 0 {
		res.Active = true
		r.startReads(in.reads)
	}
	if err := g.Err(); err != nil {
		r.fail(err)
		return out, res
	}
	if res.Active {
		r.idleTicks = 0
	} else {
		r.idleTicks += in.ticks
	}
	if quiesceTicks > 0 && r.idleTicks >= quiesceTicks {
		r.idleTicks = 0
		r.TryQuiesce()
	}
	for g.HasReady() {
		rd := g.Ready()
		r.handleReadStates(rd.ReadStates)
		if rd.SoftState != nil {
			r.leaderMaybeChanged(ev)
		}
		if len(r.forwarded) > 0 && len(rd.Entries) > 0 {
			r.markAppended(rd.Entries)
		}
		out = append(out, rd)
	}
	r.publishStatus()
	res.Pending = r.hasPending()
	res.Skip = g.Quiesced() && !res.Pending
	return out, res
}

// hasPending reports work retried on a later step.
func (r *Replica) hasPending() bool {
	r.in.mu.Lock()
	n := len(r.in.reads) + len(r.in.props)
	r.in.mu.Unlock()
	r.mu.Lock()
	n += len(r.waitingProps) + len(r.readRounds) + len(r.forwarded)
	r.mu.Unlock()
	return n > 0
}

// propose hands proposals to the core: all normal commands as one batch,
// membership changes one by one. Proposals the core cannot take now (no
// leader known yet, a transfer in progress) wait for the next step.
func (r *Replica) propose(props []*Proposal) {
	g := r.g
	st := g.Brief()
	term := st.HardState.Term
	// Not the leader: the core forwards them, and a lost forward is never
	// answered; they expire (expireForwarded).
	var expires uint64
	if st.Role != group.Leader {
		expires = r.ticks + uint64(r.cfg.ForwardTimeoutTicks)
	}
	// The core copies the entries (and the caller's proposals go to the
	// pending map): both slices serve the next step too.
	ents, normal := r.entBuf[:0], r.normBuf[:0]
	defer func() {
		clear(ents)
		clear(normal)
		r.entBuf, r.normBuf = ents[:0], normal[:0]
	}()
	for _, p := range props {
		if p.cc != nil {
			continue
		}
		ents = append(ents, raftpb.Entry{Key: p.key, Data: p.cmd})
		normal = append(normal, p)
	}
	if len(ents) > 0 {
		switch err := g.Propose(ents); {
		case err == nil:
			r.track(normal, term, expires)
		case errors.Is(err, group.ErrProposalDropped):
			r.wait(normal)
		default:
			for _, p := range normal {
				p.complete(Result{}, err)
			}
		}
	}
	for _, p := range props {
		if p.cc == nil {
			continue
		}
		switch err := g.ProposeConfChange(p.key, *p.cc); {
		case err == nil:
			r.track([]*Proposal{p}, term, expires)
		case errors.Is(err, group.ErrProposalDropped):
			r.wait([]*Proposal{p})
		default:
			p.complete(Result{}, err)
		}
	}
}

// track records proposals handed to Raft. If the replica stopped meanwhile
// they are resolved at once: they may commit without us seeing it.
func (r *Replica) track(props []*Proposal, term raftpb.Term, expires uint64) {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		for _, p := range props {
			p.complete(Result{}, ErrResultUnknown)
		}
		return
	}
	for _, p := range props {
		p.term = term
		p.expires = expires
		r.pending[p.key] = p
		if expires != 0 {
			r.forwarded = append(r.forwarded, p)
		}
	}
	r.mu.Unlock()
}

// markAppended notes the forwarded proposals that reached this replica's
// log: the leader got them, so they commit or are overwritten by a newer
// term (failPendingUpTo) — nothing is lost that a timeout must cover.
func (r *Replica) markAppended(ents []raftpb.Entry) {
	r.mu.Lock()
	for i := range ents {
		if k := ents[i].Key; k != 0 {
			if p := r.pending[k]; p != nil && p.expires != 0 {
				p.appended = true
			}
		}
	}
	r.mu.Unlock()
}

// expireForwarded resolves as ErrResultUnknown the forwarded proposals
// neither applied nor seen in the log within ForwardTimeoutTicks: the
// forward may have been lost or dropped by the leader, or may still
// commit — unknown either way.
func (r *Replica) expireForwarded() {
	var done []*Proposal
	r.mu.Lock()
	k := 0
	for ; k < len(r.forwarded); k++ {
		p := r.forwarded[k]
		if r.pending[p.key] != p || p.appended {
			continue // resolved otherwise, or safely in the log
		}
		if p.expires > r.ticks {
			break
		}
		delete(r.pending, p.key)
		done = append(done, p)
	}
	if k > 0 {
		clear(r.forwarded[:k])
		r.forwarded = r.forwarded[k:]
		if len(r.forwarded) == 0 {
			r.forwarded = nil
		}
	}
	r.mu.Unlock()
	if len(done) > 0 {
		r.lg.Warn("forwarded proposals expired unanswered", "count", len(done), "after_ticks", r.cfg.ForwardTimeoutTicks)
	}
	for _, p := range done {
		p.complete(Result{}, ErrResultUnknown)
	}
}

// wait keeps proposals the core could not take for the next step.
func (r *Replica) wait(props []*Proposal) {
	r.mu.Lock()
	if r.stopped {
		err := r.stopErr
		r.mu.Unlock()
		for _, p := range props {
			p.complete(Result{}, err)
		}
		return
	}
	r.waitingProps = append(r.waitingProps, props...)
	r.mu.Unlock()
}

// startReads starts one ReadIndex round for reads; if no leader is known
// they wait for the next step.
func (r *Replica) startReads(reads []*ReadRequest) {
	r.readSeq++
	if err := r.g.ReadIndex(r.readSeq); err != nil {
		r.requeueReads(reads)
		return
	}
	r.mu.Lock()
	if !r.stopped {
		r.readRounds = append(r.readRounds, &readBatch{id: r.readSeq, reads: reads})
		r.mu.Unlock()
		return
	}
	err := r.stopErr
	r.mu.Unlock()
	for _, rr := range reads {
		rr.complete(err)
	}
}

// requeueReads puts reads back in the inbox for the next step (or fails
// them if the replica stopped).
func (r *Replica) requeueReads(reads []*ReadRequest) {
	r.in.mu.Lock()
	if !r.in.stopped {
		r.in.reads = append(reads, r.in.reads...)
		r.in.mu.Unlock()
		return
	}
	r.in.mu.Unlock()
	for _, rr := range reads {
		rr.complete(ErrStopped)
	}
}

// handleReadStates matches read indexes to their rounds: those already
// applied complete now, the others wait for the apply worker.
func (r *Replica) handleReadStates(states []group.ReadState) {
	for _, rs := range states {
		r.mu.Lock()
		k := -1
		for i, b := range r.readRounds {
			if b.id == rs.ID {
				k = i
				break
			}
		}
		if k < 0 {
			r.mu.Unlock()
			continue
		}
		b := r.readRounds[k]
		r.readRounds = append(r.readRounds[:k], r.readRounds[k+1:]...)
		if rs.Dropped {
			r.mu.Unlock()
			r.requeueReads(b.reads)
			continue
		}
		b.index = rs.Index
		if b.index > r.Applied() {
			r.readWait = append(r.readWait, b)
			r.mu.Unlock()
			continue
		}
		r.mu.Unlock()
		for _, rr := range b.reads {
			rr.complete(nil)
		}
	}
}

// leaderMaybeChanged reports a change of leader. Read rounds in flight
// with the old leader are retried: their answers may never come.
func (r *Replica) leaderMaybeChanged(ev Events) {
	st := r.g.Brief()
	if st.Lead == r.lastLead && st.HardState.Term == r.lastTerm {
		return
	}
	leadChanged := st.Lead != r.lastLead
	r.lastLead, r.lastTerm = st.Lead, st.HardState.Term
	if leadChanged {
		r.mu.Lock()
		rounds := r.readRounds
		r.readRounds = nil
		r.mu.Unlock()
		for _, b := range rounds {
			r.requeueReads(b.reads)
		}
		if ev != nil {
			ev.LeaderChanged(r.shard, st.Lead, st.HardState.Term)
		}
	}
}

// TryQuiesce asks the core to quiesce the shard (leaders only; refused
// unless fully idle).
func (r *Replica) TryQuiesce() bool {
	r.mu.Lock()
	busy := len(r.waitingProps) > 0 || len(r.readRounds) > 0
	r.mu.Unlock()
	if r.Err() != nil || busy {
		return false
	}
	ok := r.g.Quiesce()
	return ok
}

// Quiesced reports whether the core is quiesced (the engine does not tick
// it). REQUIRES: called by the goroutine stepping the replica.
func (r *Replica) Quiesced() bool { return r.g.Quiesced() }

// Leader returns the leader the core knows and its term.
// REQUIRES: called by the goroutine stepping the replica.
func (r *Replica) Leader() (raftpb.NodeID, raftpb.Term) {
	st := r.g.Brief()
	return st.Lead, st.HardState.Term
}
