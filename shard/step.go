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
}

// Step drains the inbox into the core and appends every Ready the core
// has to out. A leader idle for quiesceTicks ticks (no proposal, read,
// transfer or message other than heartbeats) tries to quiesce the shard;
// quiesceTicks <= 0 disables it. REQUIRES: only one goroutine steps a
// replica at a time.
func (r *Replica) Step(out []group.Ready, ev Events, quiesceTicks int) ([]group.Ready, StepResult) {
	var res StepResult
	in := r.in.take()
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
	if len(in.props) > 0 || len(r.waitingProps) > 0 {
		res.Active = true
		r.propose(append(r.waitingProps, in.props...))
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
		out = append(out, rd)
	}
	r.publishStatus()
	return out, res
}

// propose hands proposals to the core: all normal commands as one batch,
// membership changes one by one. Proposals the core cannot take now (no
// leader known yet, a transfer in progress) wait for the next step.
func (r *Replica) propose(props []*Proposal) {
	r.waitingProps = nil
	g := r.g
	term := g.BasicStatus().HardState.Term
	ents := make([]raftpb.Entry, 0, len(props))
	var normal []*Proposal
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
			r.track(normal, term)
		case errors.Is(err, group.ErrProposalDropped):
			r.waitingProps = append(r.waitingProps, normal...)
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
			r.track([]*Proposal{p}, term)
		case errors.Is(err, group.ErrProposalDropped):
			r.waitingProps = append(r.waitingProps, p)
		default:
			p.complete(Result{}, err)
		}
	}
}

func (r *Replica) track(props []*Proposal, term raftpb.Term) {
	r.mu.Lock()
	for _, p := range props {
		p.term = term
		r.pending[p.key] = p
	}
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
	r.readRounds = append(r.readRounds, &readBatch{id: r.readSeq, reads: reads})
}

func (r *Replica) requeueReads(reads []*ReadRequest) {
	r.in.mu.Lock()
	r.in.reads = append(reads, r.in.reads...)
	r.in.mu.Unlock()
}

// handleReadStates matches read indexes to their rounds: those already
// applied complete now, the others wait for the apply worker.
func (r *Replica) handleReadStates(states []group.ReadState) {
	for _, rs := range states {
		k := -1
		for i, b := range r.readRounds {
			if b.id == rs.ID {
				k = i
				break
			}
		}
		if k < 0 {
			continue
		}
		b := r.readRounds[k]
		r.readRounds = append(r.readRounds[:k], r.readRounds[k+1:]...)
		if rs.Dropped {
			r.requeueReads(b.reads)
			continue
		}
		b.index = rs.Index
		r.mu.Lock()
		if b.index <= r.Applied() {
			r.mu.Unlock()
			for _, rr := range b.reads {
				rr.complete(nil)
			}
			continue
		}
		r.readWait = append(r.readWait, b)
		r.mu.Unlock()
	}
}

// leaderMaybeChanged reports a change of leader. Read rounds in flight
// with the old leader are retried: their answers may never come.
func (r *Replica) leaderMaybeChanged(ev Events) {
	st := r.g.BasicStatus()
	if st.Lead == r.lastLead && st.HardState.Term == r.lastTerm {
		return
	}
	leadChanged := st.Lead != r.lastLead
	r.lastLead, r.lastTerm = st.Lead, st.HardState.Term
	if leadChanged {
		for _, b := range r.readRounds {
			r.requeueReads(b.reads)
		}
		r.readRounds = nil
		if ev != nil {
			ev.LeaderChanged(r.shard, st.Lead, st.HardState.Term)
		}
	}
}

// TryQuiesce asks the core to quiesce the shard (leaders only; refused
// unless fully idle).
func (r *Replica) TryQuiesce() bool {
	if r.Err() != nil || len(r.waitingProps) > 0 || len(r.readRounds) > 0 {
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
	st := r.g.BasicStatus()
	return st.Lead, st.HardState.Term
}
