package tracker

import (
	"fmt"

	"github.com/shardd/shardd/group/quorum"
	"github.com/shardd/shardd/raftpb"
)

// StateType is how the leader is currently replicating to a follower.
type StateType uint8

const (
	// StateProbe: the leader does not know where the follower's log matches
	// its own; it sends one MsgApp and waits for the answer.
	StateProbe StateType = iota
	// StateReplicate: the follower is known to match up to Match; the
	// leader streams entries optimistically, bounded by the inflight window.
	StateReplicate
	// StateSnapshot: the follower needs entries the leader has compacted; a
	// snapshot is on its way and nothing else is sent until it is reported.
	StateSnapshot
)

var stateNames = [...]string{"StateProbe", "StateReplicate", "StateSnapshot"}

func (s StateType) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("StateType(%d)", uint8(s))
}

// Progress is the leader's view of one member's log.
//
// Invariant: Match < Next.
type Progress struct {
	ID    raftpb.NodeID
	Match raftpb.Index
	Next  raftpb.Index

	State StateType
	// PendingSnapshot is the index of the snapshot being sent in
	// StateSnapshot.
	PendingSnapshot raftpb.Index

	// RecentActive is set by any message from the member and cleared by
	// each check-quorum round.
	RecentActive bool

	// MsgAppFlowPaused stops sending in StateProbe after one MsgApp until
	// the follower answers (or a heartbeat response shows it is alive).
	MsgAppFlowPaused bool

	// Inflights bounds the MsgApp sent in StateReplicate.
	Inflights *Inflights

	// IsLearner is set for members that do not vote.
	IsLearner bool

	// Vote is this member's answer in the current election (candidates).
	Vote quorum.Vote

	// ReadAck is the highest read round the member acknowledged in the
	// current term (leaders).
	ReadAck uint64

	// SentCommit is the commit index last sent in a MsgApp, so that a commit
	// advance is announced once per member, not once per acknowledgement.
	SentCommit raftpb.Index

	// AppSinceBeat is set when a MsgApp went to the member since the last
	// periodic heartbeat: that append served as the heartbeat.
	AppSinceBeat bool
}

// ResetState moves to state and forgets flow-control state of the old one.
func (pr *Progress) ResetState(state StateType) {
	pr.MsgAppFlowPaused = false
	pr.SentCommit = 0
	pr.PendingSnapshot = 0
	pr.State = state
	pr.Inflights.Reset()
}

// BecomeProbe starts probing from just after the best known match (or after
// the snapshot being sent, which the follower may well have installed).
func (pr *Progress) BecomeProbe() {
	if pr.State == StateSnapshot {
		pending := pr.PendingSnapshot
		pr.ResetState(StateProbe)
		pr.Next = max(pr.Match+1, pending+1)
	} else {
		pr.ResetState(StateProbe)
		pr.Next = pr.Match + 1
	}
}

// BecomeReplicate starts optimistic streaming after Match.
func (pr *Progress) BecomeReplicate() {
	pr.ResetState(StateReplicate)
	pr.Next = pr.Match + 1
}

// BecomeSnapshot records that a snapshot at snapIndex is being sent.
func (pr *Progress) BecomeSnapshot(snapIndex raftpb.Index) {
	pr.ResetState(StateSnapshot)
	pr.PendingSnapshot = snapIndex
}

// SentEntries updates the progress after a MsgApp carrying entries
// (last index lastIndex, bytes) was sent.
func (pr *Progress) SentEntries(lastIndex raftpb.Index, n int, bytes uint64) {
	switch pr.State {
	case StateReplicate:
		if n > 0 {
			pr.Next = lastIndex + 1
			pr.Inflights.Add(lastIndex, bytes)
		}
	case StateProbe:
		pr.MsgAppFlowPaused = true
	default:
		panic(fmt.Sprintf("tracker: sending entries to %d in %s", pr.ID, pr.State))
	}
}

// MaybeUpdate records that the member matches up to n. It returns false
// for a stale acknowledgement, which changes nothing. Match never decreases
// (S13).
func (pr *Progress) MaybeUpdate(n raftpb.Index) bool {
	if n <= pr.Match {
		return false
	}
	pr.Match = n
	pr.Next = max(pr.Next, n+1)
	pr.MsgAppFlowPaused = false
	return true
}

// MaybeDecrTo handles a rejection of the MsgApp whose previous index was
// rejected; hint is the follower's proposed position to retry after. It
// returns false when the rejection is stale (it answers a message older
// than the current flow) and must be ignored (S13).
func (pr *Progress) MaybeDecrTo(rejected, hint raftpb.Index) bool {
	if pr.State == StateReplicate {
		// Anything at or below Match was already acknowledged: stale.
		if rejected <= pr.Match {
			return false
		}
		pr.Next = pr.Match + 1
		return true
	}
	// In probe only the answer to the last probe counts.
	if pr.Next-1 != rejected {
		return false
	}
	pr.Next = max(min(rejected, hint+1), pr.Match+1)
	pr.MsgAppFlowPaused = false
	return true
}

// IsPaused reports whether the leader must hold back MsgApp to this member.
func (pr *Progress) IsPaused() bool {
	switch pr.State {
	case StateProbe:
		return pr.MsgAppFlowPaused
	case StateReplicate:
		return pr.Inflights.Full()
	default:
		return true
	}
}

func (pr *Progress) String() string {
	s := fmt.Sprintf("%s match=%d next=%d", pr.State, pr.Match, pr.Next)
	if pr.IsLearner {
		s += " learner"
	}
	if pr.State == StateSnapshot {
		s += fmt.Sprintf(" pendingSnap=%d", pr.PendingSnapshot)
	}
	if !pr.RecentActive {
		s += " inactive"
	}
	if n := pr.Inflights.Count(); n > 0 {
		s += fmt.Sprintf(" inflight=%d", n)
		if pr.Inflights.Full() {
			s += "[full]"
		}
	}
	if pr.IsPaused() {
		s += " paused"
	}
	return s
}
