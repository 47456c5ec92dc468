package group

import (
	"fmt"
	"math/rand/v2"

	"github.com/shardd/shardd/group/tracker"
	"github.com/shardd/shardd/raftpb"
)

// Role is what a replica currently is in its shard.
type Role uint8

const (
	// Follower follows a leader (or waits for one).
	Follower Role = iota
	// PreCandidate asks whether it could win before disturbing anybody.
	PreCandidate
	// Candidate campaigns in a new term.
	Candidate
	// Leader replicates the log.
	Leader
)

var roleNames = [...]string{"Follower", "PreCandidate", "Candidate", "Leader"}

func (r Role) String() string {
	if int(r) < len(roleNames) {
		return roleNames[r]
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// campaignType says why a replica campaigns.
type campaignType uint8

const (
	campaignPreElection campaignType = iota
	campaignElection
	// campaignTransfer is a campaign started by MsgTimeoutNow: it skips
	// pre-vote and is not refused by voters that heard from the leader.
	campaignTransfer
)

// voteCtxTransfer marks a MsgVote of a leadership transfer (in Context).
const voteCtxTransfer = 1

// maxSaneValue bounds terms and indexes accepted from the network: real ones
// grow by one per election or entry and never get near it, and rejecting
// larger ones keeps every +1 in the core free of overflow.
const maxSaneValue = 1 << 62

// Group is the Raft core of one replica of one shard. It is a deterministic
// state machine: it has no goroutines, clock or I/O, and is driven by Tick,
// Step and the request methods. Everything it decides leaves through Ready
// and is acknowledged with Advance. It is not safe for concurrent use.
type Group struct {
	id    raftpb.NodeID
	shard raftpb.ShardID
	cfg   Config
	log   *raftLog
	trk   *tracker.ProgressTracker
	rand  *rand.Rand
	lg    Logger

	term raftpb.Term
	vote raftpb.NodeID
	role Role
	lead raftpb.NodeID

	// leadTransferee is the target of a leadership transfer in progress.
	leadTransferee raftpb.NodeID
	// lastTransferee is the voter a leader that left the voters last
	// tried to hand off to (handOff tries another next).
	lastTransferee raftpb.NodeID
	// pendingConfIndex is the index of the latest membership change the
	// leader appended; no other may be proposed until it is applied.
	pendingConfIndex raftpb.Index
	// confIndex is the index of the latest membership change applied.
	confIndex raftpb.Index
	// voter caches whether this replica votes in the configuration
	// (configChanged): Tick asks on every call.
	voter bool
	// uncommittedSize is the payload of the leader's uncommitted tail.
	uncommittedSize uint64
	// commitPending: the commit index moved and members that got no entries
	// since are still to be told (sendCommit, at Ready).
	commitPending bool

	// ticks counts every Tick: the replica's logical clock (leases).
	ticks            int64
	electionElapsed  int
	heartbeatElapsed int
	// startLease: freshly started, the replica may have acknowledged a
	// leader just before it stopped, so it refuses votes for an election
	// timeout as if it had heard from that leader (check-quorum).
	startLease                bool
	randomizedElectionTimeout int
	quiesced                  bool

	reads readTracker

	msgs        []raftpb.Message
	msgsPersist []raftpb.Message
	readStates  []ReadState

	prevHard    raftpb.HardState
	prevSoft    SoftState
	confChanged bool
	compactTo   raftpb.Index

	// Ready sequence numbers: readySeq counts Readys handed out that must be
	// advanced, advanceSeq the ones advanced.
	readySeq   uint64
	advanceSeq uint64
}

// New creates the core of a replica from its persisted state.
func New(cfg Config) (*Group, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l, err := newLog(cfg.Log, cfg.MaxCommittedSizePerReady)
	if err != nil {
		return nil, err
	}
	st, err := cfg.Log.InitialState()
	if err != nil {
		return nil, fmt.Errorf("%w: initial state: %w", ErrStorage, err)
	}
	g := &Group{
		id:    cfg.ID,
		shard: cfg.Shard,
		cfg:   cfg,
		log:   l,
		trk:   tracker.New(cfg.MaxInflightMsgs, cfg.MaxInflightBytes),
		rand:  cfg.Rand,
		lg:    cfg.Logger,
	}
	cs, confIndex := st.ConfState, st.ConfIndex
	// S31: the membership in force is the newer of the one recorded with
	// the hard state and the one inside the snapshot.
	if snap, err := cfg.Log.Snapshot(); err == nil && snap.Index > confIndex {
		cs, confIndex = snap.ConfState, snap.Index
	}
	if err := g.trk.Restore(cs, l.lastIndex()); err != nil {
		return nil, fmt.Errorf("%w: persisted membership %v: %w", ErrStorage, cs, err)
	}
	g.configChanged()
	g.confIndex = confIndex
	hs := st.HardState
	if hs.Commit < l.committed || hs.Commit > l.lastIndex() {
		if hs.Commit > l.lastIndex() {
			return nil, fmt.Errorf("%w: persisted commit %d beyond last index %d", ErrStorage, hs.Commit, l.lastIndex())
		}
		// A snapshot is committed by definition.
		hs.Commit = l.committed
	}
	g.term, g.vote = hs.Term, hs.Vote
	l.commitTo(hs.Commit)
	if cfg.Applied > 0 {
		if cfg.Applied > l.committed {
			return nil, fmt.Errorf("%w: Applied %d beyond commit %d", ErrInvalidConfig, cfg.Applied, l.committed)
		}
		if cfg.Applied+1 < l.firstIndex() {
			return nil, fmt.Errorf("%w: Applied %d below the log's first index %d: install the snapshot first",
				ErrInvalidConfig, cfg.Applied, l.firstIndex())
		}
		l.applying = max(l.applying, cfg.Applied)
	}
	g.becomeFollower(g.term, raftpb.None)
	g.startLease = true
	g.prevHard = g.hardState()
	g.prevSoft = g.softState()
	g.lg.Debug("group started", "shard", g.shard, "id", g.id, "term", g.term,
		"commit", l.committed, "applying", l.applying, "last", l.lastIndex(), "config", g.trk.Config.String())
	return g, nil
}

// ID is this replica's node id.
func (g *Group) ID() raftpb.NodeID { return g.id }

// Err is the storage failure that stopped the group, or nil.
func (g *Group) Err() error { return g.log.err }

func (g *Group) hardState() raftpb.HardState {
	return raftpb.HardState{Term: g.term, Vote: g.vote, Commit: g.log.committed}
}

func (g *Group) softState() SoftState { return SoftState{Lead: g.lead, Role: g.role} }

// promotable reports whether this replica may campaign: it is a voter and
// is not installing a snapshot.
func (g *Group) promotable() bool {
	return g.voter && g.log.unstable.snapshot == nil
}

// configChanged refreshes what the core derives from the membership; call
// it after every change of g.trk's configuration.
func (g *Group) configChanged() {
	pr := g.trk.Progress(g.id)
	g.voter = pr != nil && !pr.IsLearner && g.trk.IsVoter(g.id)
}

// Tick advances the replica's logical clock by one tick. A quiesced
// replica ignores ticks.
func (g *Group) Tick() {
	if g.log.err != nil || g.quiesced {
		return
	}
	g.ticks++
	if g.role == Leader {
		g.tickHeartbeat()
	} else {
		g.tickElection()
	}
}

func (g *Group) tickElection() {
	g.electionElapsed++
	if g.electionElapsed < g.randomizedElectionTimeout {
		return
	}
	switch {
	case g.promotable():
		g.electionElapsed = 0
		g.resetRandomizedElectionTimeout()
		g.hup(g.defaultCampaign())
	case g.isLearner():
		// Every election timeout from then on. The timer keeps running:
		// a learner long without a leader does not protect one from votes.
		if (g.electionElapsed-g.randomizedElectionTimeout)%g.cfg.ElectionTicks == 0 {
			g.callLeader()
		}
	}
}

// isLearner reports whether this replica is a learner of its configuration.
func (g *Group) isLearner() bool {
	pr := g.trk.Progress(g.id)
	return pr != nil && pr.IsLearner
}

// callLeader is a learner's substitute for campaigning: having heard
// nothing for an election timeout, it asks its leader — or every voter,
// knowing none — to tell it the term and commit index (MsgWake). Without
// it a learner restarted while its shard is quiesced, or one that missed
// the quiesce message's commit index, would wait for ever.
func (g *Group) callLeader() {
	if g.lead != raftpb.None {
		g.send(raftpb.Message{Type: raftpb.MsgWake, To: g.lead})
		return
	}
	for _, pr := range g.trk.Members() {
		if pr.ID != g.id && g.trk.IsVoter(pr.ID) {
			g.send(raftpb.Message{Type: raftpb.MsgWake, To: pr.ID})
		}
	}
}

func (g *Group) tickHeartbeat() {
	g.heartbeatElapsed++
	g.electionElapsed++
	if g.electionElapsed >= g.cfg.ElectionTicks {
		g.electionElapsed = 0
		if !g.cfg.DisableCheckQuorum {
			if pr := g.trk.Progress(g.id); pr != nil {
				pr.RecentActive = true
			}
			if !g.trk.QuorumActive() {
				g.lg.Info("leader steps down: quorum not active", "shard", g.shard, "id", g.id, "term", g.term)
				g.becomeFollower(g.term, raftpb.None)
				return
			}
			for _, pr := range g.trk.Members() {
				if pr.ID != g.id {
					pr.RecentActive = false
				}
			}
		}
		// A transfer that did not finish within an election timeout is
		// abandoned so the leader takes proposals again (S24).
		if g.leadTransferee != raftpb.None {
			g.abortLeaderTransfer()
		}
		if !g.trk.IsVoter(g.id) {
			g.handOff()
			if g.role != Leader {
				return
			}
		}
	}
	if g.heartbeatElapsed >= g.cfg.HeartbeatTicks {
		g.heartbeatElapsed = 0
		g.heartbeat(true)
	}
}

func (g *Group) defaultCampaign() campaignType {
	if g.cfg.DisablePreVote {
		return campaignElection
	}
	return campaignPreElection
}

// Campaign makes the replica start an election now (as its timer would).
func (g *Group) Campaign() error {
	if g.log.err != nil {
		return g.log.err
	}
	g.wake()
	g.hup(g.defaultCampaign())
	return nil
}

// Propose appends entries (Type EntryNormal; Data and Key set by the caller)
// on the leader, or forwards them to it. Index and Term are assigned by the
// leader. It returns ErrProposalDropped when they cannot be accepted now.
func (g *Group) Propose(ents []raftpb.Entry) error {
	if g.log.err != nil {
		return g.log.err
	}
	for i := range ents {
		if ents[i].Type != raftpb.EntryNormal {
			return fmt.Errorf("%w: Propose takes normal entries; use ProposeConfChange", ErrInvalidMessage)
		}
	}
	g.wake()
	return g.propose(ents)
}

func (g *Group) propose(ents []raftpb.Entry) error {
	switch g.role {
	case Leader:
		return g.appendProposals(ents)
	case Follower:
		if g.lead == raftpb.None || g.cfg.DisableProposalForwarding {
			return ErrProposalDropped
		}
		g.send(raftpb.Message{Type: raftpb.MsgProp, To: g.lead, Entries: cloneEntries(ents)})
		return nil
	default:
		return ErrProposalDropped
	}
}

// cloneEntries copies the entry headers (not the data) so the caller may
// reuse its slice.
func cloneEntries(ents []raftpb.Entry) []raftpb.Entry {
	return append([]raftpb.Entry(nil), ents...)
}

// ProposeConfChange proposes a membership change; key is carried in the
// entry like a proposal's. Only one change may be pending at a time
// (ErrMembershipChangeInProgress); an empty change leaves a joint
// configuration.
func (g *Group) ProposeConfChange(key uint64, cc raftpb.ConfChange) error {
	if g.log.err != nil {
		return g.log.err
	}
	g.wake()
	e := raftpb.Entry{Type: raftpb.EntryConfChange, Key: key, Data: cc.Marshal()}
	if g.role == Leader {
		if err := g.checkConfChange(&cc); err != nil {
			return err
		}
	}
	return g.propose([]raftpb.Entry{e})
}

// TransferLeader asks the leader to hand leadership to target, once target
// has caught up. On a follower the request is forwarded.
func (g *Group) TransferLeader(target raftpb.NodeID) error {
	if g.log.err != nil {
		return g.log.err
	}
	g.wake()
	if g.role == Leader {
		return g.handleTransferLeader(target)
	}
	if g.lead == raftpb.None {
		return ErrNotLeader
	}
	g.send(raftpb.Message{Type: raftpb.MsgTransferLeader, To: g.lead, Context: uint64(target)})
	return nil
}

// ReportUnreachable tells the core that messages to id could not be
// delivered (or that id's node stopped answering).
//
// On the leader the follower drops back to probing. On a follower whose
// leader it is, a quiesced replica wakes and campaigns at once: nothing else
// would ever wake it (S44). A quiesced leader ignores the report; its
// followers are caught up and the state change waits for activity (S45).
func (g *Group) ReportUnreachable(id raftpb.NodeID) {
	if g.log.err != nil {
		return
	}
	switch g.role {
	case Leader:
		if g.quiesced {
			return
		}
		if pr := g.trk.Progress(id); pr != nil && pr.State == tracker.StateReplicate {
			pr.BecomeProbe()
		}
	case Follower:
		if id == g.lead && g.quiesced {
			g.wake()
			g.electionElapsed = g.cfg.ElectionTicks
			g.hup(g.defaultCampaign())
		}
	}
}

// ReportSnapshot tells the leader whether sending a snapshot to id
// succeeded. Either way the follower is probed again once it answers.
func (g *Group) ReportSnapshot(id raftpb.NodeID, ok bool) {
	if g.log.err != nil || g.role != Leader {
		return
	}
	pr := g.trk.Progress(id)
	if pr == nil || pr.State != tracker.StateSnapshot {
		return
	}
	if !ok {
		pr.PendingSnapshot = 0
	}
	pr.BecomeProbe()
	// Wait for a heartbeat response (or the snapshot's MsgAppResp) before
	// probing, so a failed transfer does not turn into a busy loop.
	pr.MsgAppFlowPaused = true
}

// Compact asks for the log to be compacted up to and including index. The
// index must be released for applying and covered by the latest snapshot;
// the request leaves as Ready.CompactTo.
func (g *Group) Compact(index raftpb.Index) error {
	if g.log.err != nil {
		return g.log.err
	}
	if index > g.log.applying {
		return fmt.Errorf("%w: %d > applying %d", ErrCompactBeyondApplied, index, g.log.applying)
	}
	snap, err := g.cfg.Log.Snapshot()
	if err != nil || snap.Index < index {
		return fmt.Errorf("%w: %d not covered by a snapshot (%d)", ErrCompactBeyondApplied, index, snap.Index)
	}
	if index < g.log.firstIndex() {
		return nil
	}
	g.compactTo = max(g.compactTo, index)
	return nil
}

func (g *Group) resetRandomizedElectionTimeout() {
	g.randomizedElectionTimeout = g.cfg.ElectionTicks + g.rand.IntN(g.cfg.ElectionTicks)
}

// reset moves to term (forgetting the vote if the term changes) and clears
// every per-term state.
func (g *Group) reset(term raftpb.Term) {
	if g.term != term {
		g.term = term
		g.vote = raftpb.None
	}
	if g.role == Leader {
		g.dropPendingReads()
	}
	g.lead = raftpb.None
	g.electionElapsed = 0
	g.heartbeatElapsed = 0
	g.resetRandomizedElectionTimeout()
	g.abortLeaderTransfer()
	g.lastTransferee = raftpb.None
	g.trk.ResetVotes()
	durable := g.log.unstable.offset - 1
	last := g.log.lastIndex()
	for _, pr := range g.trk.Members() {
		pr.ResetState(tracker.StateProbe)
		pr.Match, pr.Next = 0, last+1
		pr.ReadAck = 0
		pr.RecentActive = true
		if pr.ID == g.id {
			pr.Match = min(durable, last)
		}
	}
	g.pendingConfIndex = 0
	g.uncommittedSize = 0
	g.commitPending = false
	g.reads.reset()
	g.quiesced = false
}

func (g *Group) becomeFollower(term raftpb.Term, lead raftpb.NodeID) {
	g.reset(term)
	g.role = Follower
	g.lead = lead
}

func (g *Group) becomePreCandidate() {
	// Pre-vote changes neither term nor vote.
	g.trk.ResetVotes()
	g.role = PreCandidate
	g.lead = raftpb.None
	g.lg.Debug("became pre-candidate", "shard", g.shard, "id", g.id, "term", g.term)
}

func (g *Group) becomeCandidate() {
	g.reset(g.term + 1)
	g.vote = g.id
	g.role = Candidate
	g.lg.Debug("became candidate", "shard", g.shard, "id", g.id, "term", g.term)
}

func (g *Group) becomeLeader() {
	g.reset(g.term)
	g.role = Leader
	g.lead = g.id
	if pr := g.trk.Progress(g.id); pr != nil {
		pr.BecomeReplicate()
		pr.Next = g.log.lastIndex() + 1
	}
	// Any membership change in the uncommitted tail may still apply; no new
	// one until it has (and the auto-leave check waits for it too, S20).
	g.pendingConfIndex = g.log.lastIndex()
	// The empty entry of the new term: committing it commits everything
	// before it (S11) and lets reads proceed (S32).
	g.appendEntries([]raftpb.Entry{{}})
	g.lg.Info("became leader", "shard", g.shard, "id", g.id, "term", g.term)
}

// hup starts a campaign if this replica may.
func (g *Group) hup(t campaignType) {
	if g.role == Leader {
		return
	}
	if !g.promotable() {
		return
	}
	if g.log.hasUnreleasedConfChange(g.confIndex) {
		g.lg.Info("not campaigning: a committed membership change is not applied yet",
			"shard", g.shard, "id", g.id)
		return
	}
	g.campaign(t)
}

func (g *Group) campaign(t campaignType) {
	g.startLease = false
	var voteMsg raftpb.MessageType
	var term raftpb.Term
	if t == campaignPreElection {
		g.becomePreCandidate()
		voteMsg = raftpb.MsgPreVote
		term = g.term + 1
		// A pre-vote for oneself needs no persisting.
		g.trk.RecordVote(g.id, true)
	} else {
		g.becomeCandidate()
		voteMsg = raftpb.MsgVote
		term = g.term
		// The vote for oneself counts once it is durable (Advance).
	}
	if _, _, res := g.trk.TallyVotes(); res == quorumWon {
		// Single voter pre-vote: go on to the real election.
		g.campaign(campaignElection)
		return
	}
	var ctx uint64
	if t == campaignTransfer {
		ctx = voteCtxTransfer
	}
	lastIndex, lastTerm := g.log.lastIndex(), g.log.lastTerm()
	for _, id := range g.trk.Voters.IDs() {
		if id == g.id {
			continue
		}
		g.send(raftpb.Message{Type: voteMsg, To: id, Term: term, LogTerm: lastTerm, Index: lastIndex, Context: ctx})
	}
}

// wake ends quiescence: the replica's timers run again from a fresh start.
func (g *Group) wake() {
	if !g.quiesced {
		return
	}
	g.quiesced = false
	g.electionElapsed = 0
	g.heartbeatElapsed = 0
	// The clock stood still while quiesced: no lease survives it.
	g.reads.leaseUntil = 0
	if g.role == Leader {
		// The activity flags are stale after a quiet period; give the
		// quorum a full round to show itself (S46).
		for _, pr := range g.trk.Members() {
			pr.RecentActive = true
		}
	}
}

// send queues m, stamping shard, sender and (unless the type is term-less or
// the term is set) the current term. Acknowledgements that assert durable
// state wait for the persist of the Ready that carries them.
func (g *Group) send(m raftpb.Message) {
	m.Shard = g.shard
	m.From = g.id
	switch m.Type {
	case raftpb.MsgProp, raftpb.MsgReadIndex, raftpb.MsgWake:
		m.Term = 0
	case raftpb.MsgVote, raftpb.MsgPreVote, raftpb.MsgVoteResp, raftpb.MsgPreVoteResp:
		// Set by the caller: a pre-vote names the future term.
	default:
		m.Term = g.term
	}
	switch m.Type {
	case raftpb.MsgAppResp, raftpb.MsgVoteResp:
		g.msgsPersist = append(g.msgsPersist, m)
	default:
		g.msgs = append(g.msgs, m)
	}
}
