package group

import (
	"fmt"

	"github.com/shardd/shardd/group/tracker"
	"github.com/shardd/shardd/raftpb"
)

// Membership changes take effect when their entry is released for applying
// (committed and durable here), on every replica in log order, so all
// replicas pass through the same configurations. One change at a time: the
// leader refuses a new one until the last is applied, which is what makes
// applying at commit time safe.

// Bootstrap returns the persisted state of a new shard's initial member:
// the log starts with one membership entry (index 1, term 1, committed)
// that adds every initial member, so that a replica joining later, which
// replays the log from its beginning, learns the membership from the log
// itself. Every initial member writes the same entry.
func Bootstrap(cs raftpb.ConfState) (InitialState, raftpb.Entry, error) {
	if cs.Joint() || len(cs.Voters) == 0 {
		return InitialState{}, raftpb.Entry{}, fmt.Errorf("%w: bootstrap needs voters and no joint configuration: %v",
			ErrInvalidConfig, cs)
	}
	var cc raftpb.ConfChange
	for _, id := range cs.Voters {
		cc.Changes = append(cc.Changes, raftpb.ConfChangeSingle{Type: raftpb.AddVoter, Node: id})
	}
	for _, id := range cs.Learners {
		cc.Changes = append(cc.Changes, raftpb.ConfChangeSingle{Type: raftpb.AddLearner, Node: id})
	}
	e := raftpb.Entry{Term: 1, Index: 1, Type: raftpb.EntryConfChange, Data: cc.Marshal()}
	st := InitialState{
		HardState: raftpb.HardState{Term: 1, Commit: 1},
		ConfState: cs.Clone(),
		ConfIndex: 1,
	}
	return st, e, nil
}

// changerFor returns the configuration cc leads to from the current one.
func (g *Group) changerFor(cc *raftpb.ConfChange) (tracker.Result, error) {
	c := tracker.Changer{Tracker: g.trk, LastIndex: g.log.lastIndex()}
	if len(g.trk.Voters[0]) == 0 && !g.trk.Voters.Joint() {
		return c.Bootstrap(cc.Changes)
	}
	if cc.LeaveJoint() {
		return c.LeaveJoint()
	}
	if cc.Transition == raftpb.TransitionAuto && len(cc.Changes) <= 1 {
		return c.Simple(cc.Changes)
	}
	return c.EnterJoint(cc.Transition != raftpb.TransitionJointExplicit, cc.Changes)
}

// checkConfChange reports whether the leader may append cc now.
func (g *Group) checkConfChange(cc *raftpb.ConfChange) error {
	if g.pendingConfIndex > g.log.applying {
		return fmt.Errorf("%w: change at %d not applied yet (applying %d)",
			ErrMembershipChangeInProgress, g.pendingConfIndex, g.log.applying)
	}
	if !cc.LeaveJoint() && g.trk.Voters.Joint() {
		return fmt.Errorf("%w: leave the joint configuration first", ErrMembershipChangeInProgress)
	}
	_, err := g.changerFor(cc)
	return err
}

// applyConfChangeEntry applies a released membership change entry. A change
// that cannot apply (it would also fail on every other replica, which holds
// the same configuration at this index) is skipped.
func (g *Group) applyConfChangeEntry(e *raftpb.Entry) {
	if e.Index <= g.confIndex {
		// Already part of the persisted membership (replay after restart).
		return
	}
	cc, err := raftpb.UnmarshalConfChange(e.Data)
	if err != nil {
		g.lg.Error("undecodable membership change skipped", "shard", g.shard, "index", e.Index, "err", err)
		return
	}
	res, err := g.changerFor(&cc)
	if err != nil {
		g.lg.Warn("membership change skipped", "shard", g.shard, "index", e.Index, "err", err)
		return
	}
	old := g.trk.Members()
	g.trk.Install(res)
	g.configChanged()
	g.confIndex = e.Index
	g.confChanged = true
	g.lg.Info("membership changed", "shard", g.shard, "id", g.id, "index", e.Index,
		"config", g.trk.Config.String())
	if g.role == Leader {
		g.tellRemoved(old)
		g.leaderConfigChanged()
	}
}

// tellRemoved sends each member that the change removed one last append
// carrying the commit index, so it learns that its removal is committed:
// otherwise it would restart as a voter of its old configuration and
// campaign, in vain, for ever (S21).
func (g *Group) tellRemoved(old []*tracker.Progress) {
	for _, pr := range old {
		if pr.ID == g.id || g.trk.IsMember(pr.ID) {
			continue
		}
		// pr is no longer tracked: reset its flow to send from the match.
		pr.BecomeProbe()
		g.maybeSendAppend(pr, true)
	}
}

func (g *Group) leaderConfigChanged() {
	if !g.trk.IsVoter(g.id) {
		// S22/S47: removed or demoted. Tell everyone the commit index, then
		// hand leadership to a voter (handOff).
		g.sendCommit()
		g.handOff()
		return
	}
	if g.leadTransferee != raftpb.None && !g.trk.IsVoter(g.leadTransferee) {
		g.abortLeaderTransfer()
	}
	// The quorum changed: the commit may move; new members need the log.
	g.maybeCommit()
	g.bcastAppend()
}

// maybeAutoLeave proposes leaving a joint configuration entered with
// AutoLeave once it is applied; a new leader does the same for a joint
// configuration it inherits (S20).
func (g *Group) maybeAutoLeave() {
	if g.role != Leader || !g.trk.Voters.Joint() || !g.trk.AutoLeave ||
		g.pendingConfIndex > g.log.applying || g.leadTransferee != raftpb.None {
		return
	}
	cc := raftpb.ConfChange{}
	e := raftpb.Entry{Type: raftpb.EntryConfChange, Data: cc.Marshal()}
	if err := g.appendProposals([]raftpb.Entry{e}); err != nil {
		g.lg.Warn("auto-leave not proposed", "shard", g.shard, "err", err)
	}
}

// handOff passes leadership on once the leader is no longer a voter. It
// does not simply step down: a follower that has not learned that the
// configuration without us committed still counts our vote, and we would
// refuse it for having a shorter log while never campaigning ourselves —
// a shard with no leader for ever (simulator seed 174). So we stay leader,
// replicating and announcing the commit index without counting ourselves,
// and transfer leadership to the most caught-up voter, preferring one
// recently heard from; a transfer that does not finish within an election
// timeout is retried with the next choice (tickHeartbeat). With no voter
// to hand to, we step down.
func (g *Group) handOff() {
	var best *tracker.Progress
	for _, pr := range g.trk.Members() {
		if pr.ID == g.id || !g.trk.IsVoter(pr.ID) || pr.ID == g.lastTransferee {
			continue
		}
		if best == nil || pr.RecentActive && !best.RecentActive ||
			pr.RecentActive == best.RecentActive && pr.Match > best.Match {
			best = pr
		}
	}
	if best == nil && g.lastTransferee != raftpb.None && g.trk.IsVoter(g.lastTransferee) {
		best = g.trk.Progress(g.lastTransferee)
	}
	if best == nil {
		g.lg.Info("leader steps down: no longer a voter", "shard", g.shard, "id", g.id, "term", g.term)
		g.becomeFollower(g.term, raftpb.None)
		return
	}
	g.lg.Info("leader hands off: no longer a voter", "shard", g.shard, "id", g.id, "term", g.term, "to", best.ID)
	g.lastTransferee = best.ID
	_ = g.handleTransferLeader(best.ID)
}
