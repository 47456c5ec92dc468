package group

import (
	"math"

	"github.com/shardd/shardd/group/tracker"
	"github.com/shardd/shardd/raftpb"
)

// stepLeader handles a message at our term as the leader.
func (g *Group) stepLeader(m *raftpb.Message) error {
	pr := g.trk.Progress(m.From)
	if pr == nil {
		// Not a member (removed, or never added): nothing it says counts.
		return ErrStepPeerNotFound
	}
	switch m.Type {
	case raftpb.MsgProp:
		g.appendForwarded(m.Entries)
	case raftpb.MsgAppResp:
		g.handleAppendResponse(pr, m)
	case raftpb.MsgHeartbeatResp:
		g.handleHeartbeatResponse(pr, m)
	case raftpb.MsgTransferLeader:
		if err := g.handleTransferLeader(raftpb.NodeID(m.Context)); err != nil {
			g.lg.Info("transfer request refused", "shard", g.shard, "target", m.Context, "err", err)
		}
	case raftpb.MsgTimeoutNowResp:
		if m.From == g.leadTransferee {
			g.lg.Info("transfer target not ready: transfer abandoned", "shard", g.shard, "target", m.From)
			g.abortLeaderTransfer()
		}
	case raftpb.MsgReadIndex:
		g.handleReadRequest(m.From, m.Context)
	case raftpb.MsgWake:
		// A learner lost track of us (restarted, or missed the commit
		// index of the quiesce): the append tells it term and commit.
		g.maybeSendAppend(pr, true)
	case raftpb.MsgApp, raftpb.MsgHeartbeat, raftpb.MsgSnap:
		// Two leaders in one term would break election safety; it cannot
		// come from a correct peer.
		g.lg.Error("leader message from another leader in our term", "shard", g.shard,
			"id", g.id, "from", m.From, "term", m.Term)
		return invalidMsg(m, "second leader in term %d", m.Term)
	}
	return nil
}

// appendProposals appends locally proposed entries and starts replicating.
func (g *Group) appendProposals(ents []raftpb.Entry) error {
	if g.leadTransferee != raftpb.None {
		return ErrProposalDropped
	}
	var size uint64
	for i := range ents {
		size += uint64(len(ents[i].Data))
	}
	// Backpressure on the uncommitted tail; a single proposal always fits
	// into an empty budget, so nothing is ever stuck.
	if g.uncommittedSize > 0 && size > 0 && g.uncommittedSize+size > g.cfg.MaxUncommittedEntriesSize {
		return ErrProposalDropped
	}
	for i := range ents {
		if ents[i].Type == raftpb.EntryConfChange {
			g.pendingConfIndex = g.log.lastIndex() + raftpb.Index(i) + 1
		}
	}
	g.uncommittedSize += size
	g.appendEntries(ents)
	g.bcastAppend()
	return nil
}

// appendForwarded appends entries a follower forwarded. A membership change
// that may not be made now is replaced by an empty entry with the same key,
// so the proposer sees its proposal resolved (and refused) when applied.
func (g *Group) appendForwarded(ents []raftpb.Entry) {
	ents = g.dropDuplicateForwards(ents)
	if len(ents) == 0 {
		return
	}
	for i := range ents {
		e := &ents[i]
		if e.Type != raftpb.EntryConfChange {
			continue
		}
		cc, err := raftpb.UnmarshalConfChange(e.Data)
		if err == nil {
			err = g.checkConfChange(&cc)
		}
		if err == nil {
			// One membership change per batch: the rest are refused.
			err = g.checkNoOtherConfChange(ents[:i])
		}
		if err != nil {
			g.lg.Info("forwarded membership change refused", "shard", g.shard, "from", "err", err)
			*e = raftpb.Entry{Key: e.Key}
		}
	}
	if err := g.appendProposals(ents); err != nil {
		g.lg.Debug("forwarded proposal dropped", "shard", g.shard, "err", err)
	}
}

// forwardDedupWindow is how many of its newest entries a leader searches
// for the keys of a forwarded proposal. A network that duplicates messages
// can deliver one MsgProp twice, and appending both copies would apply one
// command twice — a put seen, overwritten, then seen again (simulator, seed
// 257 of TestSimEagerQuiesce). A copy arrives within milliseconds of the
// original, well inside the window; our gRPC transport never duplicates,
// so this is defence in depth, not the common path.
const forwardDedupWindow = 1024

// dropDuplicateForwards removes the forwarded entries whose key is already
// among the newest forwardDedupWindow entries of the log (best effort: a
// compacted window is searched as far as it goes).
func (g *Group) dropDuplicateForwards(ents []raftpb.Entry) []raftpb.Entry {
	last := g.log.lastIndex()
	lo := max(g.log.firstIndex(), last-min(last, forwardDedupWindow)+1)
	if lo > last {
		return ents
	}
	recent, err := g.log.slice(lo, last+1, math.MaxUint64)
	if err != nil {
		return ents
	}
	seen := func(key uint64) bool {
		for i := range recent {
			if recent[i].Key == key {
				return true
			}
		}
		return false
	}
	var out []raftpb.Entry // allocated only when a copy is dropped
	for i := range ents {
		if k := ents[i].Key; k != 0 && seen(k) {
			g.lg.Debug("duplicate forwarded proposal dropped", "shard", g.shard, "key", k)
			if out == nil {
				out = append(make([]raftpb.Entry, 0, len(ents)), ents[:i]...)
			}
			continue
		}
		if out != nil {
			out = append(out, ents[i])
		}
	}
	if out == nil {
		return ents
	}
	return out
}

func (g *Group) checkNoOtherConfChange(before []raftpb.Entry) error {
	for i := range before {
		if before[i].Type == raftpb.EntryConfChange {
			return ErrMembershipChangeInProgress
		}
	}
	return nil
}

// appendEntries stamps ents with our term and the next indexes and appends
// them. The leader's own acknowledgement comes with Advance, once durable.
func (g *Group) appendEntries(ents []raftpb.Entry) {
	li := g.log.lastIndex()
	for i := range ents {
		ents[i].Term = g.term
		ents[i].Index = li + 1 + raftpb.Index(i)
	}
	g.log.append(ents)
}

// maybeCommit moves the commit index to what the quorum holds, counting
// only entries of our term (S11). It reports whether it moved.
func (g *Group) maybeCommit() bool {
	if !g.log.maybeCommit(g.trk.Committed(), g.term) {
		return false
	}
	g.releaseWaitingReads()
	return true
}

func (g *Group) handleAppendResponse(pr *tracker.Progress, m *raftpb.Message) {
	pr.RecentActive = true
	if m.Reject {
		next := m.RejectHint
		if m.LogTerm > 0 {
			// Skip every entry of ours whose term is above the follower's
			// at the hint: they cannot match (S10).
			next, _ = g.log.findConflictByTerm(m.RejectHint, m.LogTerm)
		}
		if pr.MaybeDecrTo(m.Index, next) {
			if pr.State == tracker.StateReplicate {
				pr.BecomeProbe()
			}
			g.maybeSendAppend(pr, true)
		}
		return
	}
	if m.Index > g.log.lastIndex() {
		g.lg.Warn("append response beyond our log ignored", "shard", g.shard, "from", m.From, "index", m.Index)
		return
	}
	// A probe answered at the match we know already (an empty probe of a
	// caught-up follower) confirms the follower's log all the same:
	// without this, a follower put back to probing while nothing new was
	// proposed stayed there, and its shard could never quiesce.
	caughtUpProbe := pr.State == tracker.StateProbe && m.Index == pr.Match
	if !pr.MaybeUpdate(m.Index) && !caughtUpProbe {
		// Stale or duplicate (S13): match never moves back.
		return
	}
	switch pr.State {
	case tracker.StateProbe:
		pr.BecomeReplicate()
	case tracker.StateSnapshot:
		if pr.Match+1 >= g.log.firstIndex() {
			pr.BecomeProbe()
			pr.BecomeReplicate()
		}
	case tracker.StateReplicate:
		pr.Inflights.FreeLE(m.Index)
	}
	if g.maybeCommit() {
		g.bcastAppend()
	} else {
		for g.maybeSendAppend(pr, false) {
		}
	}
	if m.From == g.leadTransferee && pr.Match == g.log.lastIndex() {
		g.sendTimeoutNow(m.From)
	}
}

func (g *Group) handleHeartbeatResponse(pr *tracker.Progress, m *raftpb.Message) {
	pr.RecentActive = true
	pr.MsgAppFlowPaused = false
	if pr.State == tracker.StateReplicate && pr.Inflights.Full() {
		pr.Inflights.FreeFirstOne()
	}
	if m.Context != 0 && m.Context <= g.reads.seq && m.Context > pr.ReadAck {
		pr.ReadAck = m.Context
		g.confirmRounds()
	}
	// A probing follower is probed even when it holds everything: the
	// answer puts it back to replicating (see handleAppendResponse).
	if pr.Match < g.log.lastIndex() || pr.SentCommit < g.log.committed || pr.State == tracker.StateProbe {
		g.maybeSendAppend(pr, true)
	}
}

// handleTransferLeader starts handing leadership to target: first it is
// brought up to date, then told to campaign at once (MsgTimeoutNow).
func (g *Group) handleTransferLeader(target raftpb.NodeID) error {
	if target == g.id {
		g.abortLeaderTransfer()
		return nil
	}
	pr := g.trk.Progress(target)
	if pr == nil || pr.IsLearner || !g.trk.IsVoter(target) {
		return ErrTransferTarget
	}
	if g.leadTransferee == target {
		return nil
	}
	g.abortLeaderTransfer()
	g.leadTransferee = target
	// The transfer gets one election timeout to finish.
	g.electionElapsed = 0
	if pr.Match == g.log.lastIndex() {
		g.sendTimeoutNow(target)
	} else {
		g.maybeSendAppend(pr, true)
	}
	return nil
}

func (g *Group) abortLeaderTransfer() { g.leadTransferee = raftpb.None }

// sendTimeoutNow tells the transfer target to campaign. Its campaign may
// win whenever the message arrives, so the lease is void from here to the
// end of the term (S34).
func (g *Group) sendTimeoutNow(to raftpb.NodeID) {
	g.reads.leaseVoid = true
	g.send(raftpb.Message{Type: raftpb.MsgTimeoutNow, To: to})
}
