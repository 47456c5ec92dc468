package quorum

import (
	"math"
	"slices"
	"testing"

	"github.com/shardd/shardd/raftpb"
)

// ackMap is an AckedIndexer over a map: an absent key is a voter that has
// not reported. A map is pointer-shaped, so storing one in an AckedIndexer
// does not allocate, which TestCommittedIndexSmallDoesNotAllocate relies on.
type ackMap map[raftpb.NodeID]raftpb.Index

func (m ackMap) AckedIndex(id raftpb.NodeID) (raftpb.Index, bool) {
	idx, ok := m[id]
	return idx, ok
}

// voteMap is a vote function over a map; an absent key is VoteMissing.
func voteMap(m map[raftpb.NodeID]Vote) VoteFunc {
	return func(id raftpb.NodeID) Vote { return m[id] }
}

// refCommitted is the textbook definition CommittedIndex must agree with:
// sort the acknowledged indexes descending (missing = 0) and take the one
// the q-th best voter holds.
func refCommitted(c MajorityConfig, l ackMap) raftpb.Index {
	if len(c) == 0 {
		return math.MaxUint64
	}
	idx := make([]raftpb.Index, 0, len(c))
	for _, id := range c {
		idx = append(idx, l[id])
	}
	slices.Sort(idx)
	slices.Reverse(idx)
	q := len(c)/2 + 1
	return idx[q-1]
}

// refVote is the textbook majority vote: won with q grants, lost when the
// grants plus the votes still missing cannot reach q.
func refVote(c MajorityConfig, votes map[raftpb.NodeID]Vote) VoteResult {
	if len(c) == 0 {
		return VoteWon
	}
	granted, missing := 0, 0
	for _, id := range c {
		switch votes[id] {
		case VoteGranted:
			granted++
		case VoteMissing:
			missing++
		}
	}
	q := len(c)/2 + 1
	switch {
	case granted >= q:
		return VoteWon
	case granted+missing >= q:
		return VotePending
	}
	return VoteLost
}

// refJointVote combines two halves the way joint consensus demands: a
// decision needs both, and either half losing loses the whole.
func refJointVote(c JointConfig, votes map[raftpb.NodeID]Vote) VoteResult {
	r0, r1 := refVote(c[0], votes), refVote(c[1], votes)
	switch {
	case r0 == VoteLost || r1 == VoteLost:
		return VoteLost
	case r0 == VoteWon && r1 == VoteWon:
		return VoteWon
	}
	return VotePending
}

// ids returns 1..n as a configuration.
func ids(n int) MajorityConfig {
	c := make(MajorityConfig, n)
	for i := range c {
		c[i] = raftpb.NodeID(i + 1)
	}
	return c
}

// subset returns the members of 1..n selected by the bits of mask.
func subset(mask, n int) MajorityConfig {
	var c MajorityConfig
	for i := range n {
		if mask&(1<<i) != 0 {
			c = append(c, raftpb.NodeID(i+1))
		}
	}
	return c
}

func TestVoteResultString(t *testing.T) {
	for _, tc := range []struct {
		r    VoteResult
		want string
	}{
		{VotePending, "VotePending"},
		{VoteLost, "VoteLost"},
		{VoteWon, "VoteWon"},
		{0, "VoteResult(?)"},
		{99, "VoteResult(?)"},
	} {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("VoteResult(%d).String() = %q, want %q", tc.r, got, tc.want)
		}
	}
}

// The zero Vote must be VoteMissing: trackers rely on a fresh Progress not
// having voted.
func TestVoteZeroValueIsMissing(t *testing.T) {
	var v Vote
	if v != VoteMissing {
		t.Fatalf("zero Vote = %d, want VoteMissing", v)
	}
}
