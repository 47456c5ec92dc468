package group

import (
	"errors"

	"github.com/shardd/shardd/raftpb"
)

// The LogReader errors are raftpb's, so storage packages return them
// without importing the core.
var (
	// ErrCompacted is returned by a LogReader for an index below its first
	// available entry: the entry exists only inside a snapshot.
	ErrCompacted = raftpb.ErrCompacted
	// ErrUnavailable is returned by a LogReader for an index beyond its last
	// entry.
	ErrUnavailable = raftpb.ErrUnavailable
	// ErrSnapshotTemporarilyUnavailable is returned by a LogReader that has
	// no snapshot to offer yet; the leader retries later.
	ErrSnapshotTemporarilyUnavailable = raftpb.ErrSnapshotTemporarilyUnavailable
)

var (

	// ErrProposalDropped is returned when a proposal cannot be accepted now:
	// no leader is known, forwarding is off on a follower, a leadership
	// transfer is in progress, or the uncommitted log is over its bound.
	// The caller may retry; nothing was appended.
	ErrProposalDropped = errors.New("group: proposal dropped")
	// ErrReadDropped is returned when a read cannot be started now (no
	// leader known).
	ErrReadDropped = errors.New("group: read dropped")
	// ErrMembershipChangeInProgress is returned for a membership change
	// proposed while an earlier one is not yet applied.
	ErrMembershipChangeInProgress = errors.New("group: membership change in progress")
	// ErrNotLeader is returned by operations only the leader can start when
	// forwarding is impossible.
	ErrNotLeader = errors.New("group: not leader")
	// ErrTransferTarget is returned for a leadership transfer to a node that
	// is not a voter (a learner, a non-member) or to the leader itself.
	ErrTransferTarget = errors.New("group: invalid leadership transfer target")
	// ErrInvalidMessage is returned by Step for a message that can never be
	// valid (unknown type, missing term, wrong shard or recipient, entries
	// out of order, commit beyond what it proves). Nothing changes.
	ErrInvalidMessage = errors.New("group: invalid message")
	// ErrStepPeerNotFound is returned for a response from a node that is not
	// a member.
	ErrStepPeerNotFound = errors.New("group: message from unknown peer")
	// ErrAdvanceOutOfOrder is returned when Advance is not called with the
	// oldest outstanding Ready.
	ErrAdvanceOutOfOrder = errors.New("group: Advance out of order")
	// ErrCompactBeyondApplied is returned by Compact for an index that is not
	// yet released for applying, or not covered by a snapshot.
	ErrCompactBeyondApplied = errors.New("group: compaction index not applied or not covered by a snapshot")
	// ErrStorage wraps a failure of the LogReader. The group stops: every
	// later call returns it, and nothing decided on the failed read leaves.
	ErrStorage = errors.New("group: log storage failed")
)
