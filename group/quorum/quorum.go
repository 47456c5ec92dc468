// Package quorum does the arithmetic of majority and joint quorums: which
// log index a configuration has committed, and whether an election is won.
//
// It is plain data and pure functions over raftpb identifiers, so it can be
// tested exhaustively. A configuration is a sorted list of voter ids; a
// joint configuration is two of them, and a decision needs both.
package quorum

import (
	"math"

	"github.com/shardd/shardd/raftpb"
)

// AckedIndexer reports the highest log index a voter is known to hold.
// ok is false when the voter has not reported anything yet.
type AckedIndexer interface {
	AckedIndex(id raftpb.NodeID) (idx raftpb.Index, ok bool)
}

// VoteResult is the outcome of counting votes.
type VoteResult uint8

const (
	// VotePending means neither side has a quorum yet.
	VotePending VoteResult = 1 + iota
	// VoteLost means a quorum can no longer be reached.
	VoteLost
	// VoteWon means a quorum granted.
	VoteWon
)

func (r VoteResult) String() string {
	switch r {
	case VotePending:
		return "VotePending"
	case VoteLost:
		return "VoteLost"
	case VoteWon:
		return "VoteWon"
	}
	return "VoteResult(?)"
}

// Vote is one voter's answer as VoteResult counts it.
type Vote uint8

const (
	// VoteMissing means the voter has not answered.
	VoteMissing Vote = iota
	// VoteGranted means the voter said yes.
	VoteGranted
	// VoteRejected means the voter said no.
	VoteRejected
)

// VoteFunc reports how a voter voted.
type VoteFunc func(id raftpb.NodeID) Vote

// noQuorumIndex is what an empty configuration commits: anything, so that
// it never holds back the other half of a joint configuration.
const noQuorumIndex = raftpb.Index(math.MaxUint64)
