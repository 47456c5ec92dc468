package group

import (
	"github.com/shardd/shardd/group/tracker"
	"github.com/shardd/shardd/raftpb"
)

// Quiescence lets an idle shard cost nothing: the leader tells its
// followers to stop their election timers, and the caller stops ticking
// them all. Any proposal, read, transfer or message wakes a replica; a
// follower whose leader's node is reported unreachable wakes and campaigns
// (ReportUnreachable).

// Quiesced reports whether the replica is quiesced (its caller need not tick
// it).
func (g *Group) Quiesced() bool { return g.quiesced }

// Quiesce makes an idle leader quiesce the shard: it sends MsgQuiesce to
// every member and stops ticking. It reports whether it did; it refuses
// unless nothing at all is in flight (S45): no transfer, read, membership
// change, uncommitted or unreleased entry, and every member caught up in
// StateReplicate with nothing unacknowledged. Messages still queued (the
// heartbeats of the tick that found the shard idle) leave before the
// quiesce messages, in the same Ready.
func (g *Group) Quiesce() bool {
	if g.log.err != nil || g.role != Leader || g.quiesced || !g.canQuiesce() {
		return false
	}
	last := g.log.lastIndex()
	for _, pr := range g.trk.Members() {
		if pr.ID == g.id {
			continue
		}
		// The message carries the commit index: followers may not have
		// learned it yet (S45).
		g.send(raftpb.Message{Type: raftpb.MsgQuiesce, To: pr.ID, Index: last,
			LogTerm: g.log.lastTerm(), Commit: g.log.committed})
		pr.SentCommit = g.log.committed
	}
	g.quiesced = true
	return true
}

func (g *Group) canQuiesce() bool {
	l := g.log
	last := l.lastIndex()
	if g.leadTransferee != raftpb.None || g.reads.roundOpen || len(g.reads.pending) > 0 ||
		len(g.reads.waiting) > 0 || g.pendingConfIndex > l.applying || g.trk.Voters.Joint() ||
		l.committed != last || l.applying != last || l.unstable.offset != last+1 {
		return false
	}
	for _, pr := range g.trk.Members() {
		if pr.Match != last {
			return false
		}
		if pr.ID != g.id && (pr.State != tracker.StateReplicate || pr.Inflights.Count() > 0) {
			return false
		}
	}
	return true
}

// handleQuiesce quiesces a follower whose log is exactly the leader's.
func (g *Group) handleQuiesce(m *raftpb.Message) {
	if m.From != g.lead || g.log.lastIndex() != m.Index || !g.log.matchTerm(m.Index, m.LogTerm) {
		// Not in step with the leader: stay awake; our timer will sort it
		// out (and any message we send wakes the leader).
		return
	}
	g.log.commitTo(min(m.Commit, m.Index))
	g.electionElapsed = 0
	g.quiesced = true
}

// benignWhileQuiesced reports whether m carries no new work for a quiesced
// replica, which then stays quiesced: answers to the last heartbeats and
// appends sent before quiescing reach the leader after it quiesced, and a
// heartbeat overtaken by the quiesce message can reach a follower after.
// Waking on them would make an idle shard flap between quiesced and awake.
func (g *Group) benignWhileQuiesced(m *raftpb.Message) bool {
	if m.Term != g.term {
		return false
	}
	switch m.Type {
	case raftpb.MsgQuiesce:
		return true
	case raftpb.MsgWake:
		// Only a member's call wakes the leader: a removed replica that
		// never learned it keeps calling.
		return g.role != Leader || g.trk.Progress(m.From) == nil
	case raftpb.MsgHeartbeatResp:
		return g.role == Leader
	case raftpb.MsgAppResp:
		if g.role != Leader || m.Reject {
			return false
		}
		pr := g.trk.Progress(m.From)
		return pr != nil && m.Index <= pr.Match
	case raftpb.MsgHeartbeat:
		return g.role == Follower && m.From == g.lead && m.Commit <= g.log.committed
	}
	return false
}
