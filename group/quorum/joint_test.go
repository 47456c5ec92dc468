package quorum

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/shardd/shardd/raftpb"
)

func TestJointAccessors(t *testing.T) {
	in, out := NewMajorityConfig(1, 2, 3), NewMajorityConfig(1, 2, 4)
	j := JointConfig{in, out}
	if !slices.Equal(j.Incoming(), in) || !slices.Equal(j.Outgoing(), out) {
		t.Fatalf("Incoming/Outgoing = %v/%v, want %v/%v", j.Incoming(), j.Outgoing(), in, out)
	}
	if !j.Joint() {
		t.Errorf("%v.Joint() = false", j)
	}
	if (JointConfig{in, nil}).Joint() {
		t.Errorf("(%v, nil).Joint() = true", in)
	}
	if (JointConfig{in, MajorityConfig{}}).Joint() {
		t.Errorf("(%v, empty).Joint() = true", in)
	}
	// Only the outgoing half makes a configuration joint.
	if !(JointConfig{nil, out}).Joint() {
		t.Errorf("(nil, %v).Joint() = false", out)
	}
}

func TestJointContains(t *testing.T) {
	j := JointConfig{NewMajorityConfig(1, 2), NewMajorityConfig(2, 3)}
	for id, want := range map[raftpb.NodeID]bool{0: false, 1: true, 2: true, 3: true, 4: false} {
		if got := j.Contains(id); got != want {
			t.Errorf("%v.Contains(%d) = %v, want %v", j, id, got, want)
		}
	}
	if (JointConfig{}).Contains(0) {
		t.Errorf("empty joint config contains 0")
	}
}

func TestJointIDs(t *testing.T) {
	for _, tc := range []struct {
		j    JointConfig
		want []raftpb.NodeID
	}{
		{JointConfig{}, nil},
		{JointConfig{NewMajorityConfig(3, 1)}, []raftpb.NodeID{1, 3}},
		{JointConfig{NewMajorityConfig(1, 5), NewMajorityConfig(2, 5, 7)}, []raftpb.NodeID{1, 2, 5, 7}},
		{JointConfig{NewMajorityConfig(1, 2), NewMajorityConfig(1, 2)}, []raftpb.NodeID{1, 2}},
		{JointConfig{nil, NewMajorityConfig(4)}, []raftpb.NodeID{4}},
	} {
		got := tc.j.IDs()
		if !slices.Equal(got, tc.want) {
			t.Errorf("%v.IDs() = %v, want %v", tc.j, got, tc.want)
		}
		if len(got) > 0 {
			// The result is the caller's: writing it must not change c.
			before := tc.j.String()
			got[0] = 99
			if after := tc.j.String(); after != before {
				t.Errorf("IDs() aliases the configuration: %s became %s", before, after)
			}
		}
	}
}

func TestJointString(t *testing.T) {
	for _, tc := range []struct {
		j    JointConfig
		want string
	}{
		{JointConfig{}, "()"},
		{JointConfig{NewMajorityConfig(1, 2, 3)}, "(1 2 3)"},
		{JointConfig{NewMajorityConfig(1, 2, 3), NewMajorityConfig(1)}, "(1 2 3)&&(1)"},
		{JointConfig{nil, NewMajorityConfig(4, 5)}, "()&&(4 5)"},
	} {
		if got := tc.j.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}

func TestJointIsSingleVoter(t *testing.T) {
	c := NewMajorityConfig
	for _, tc := range []struct {
		j    JointConfig
		id   raftpb.NodeID
		want bool
	}{
		{JointConfig{c(1), c(1)}, 1, true},
		{JointConfig{c(1), c(1)}, 2, false},
		{JointConfig{c(1), c(1, 2)}, 1, false},
		{JointConfig{c(1, 2), c(1)}, 1, false},
		{JointConfig{c(1), nil}, 1, true},
		{JointConfig{c(1), nil}, 2, false},
		{JointConfig{c(2), c(1)}, 1, false},
		{JointConfig{c(1, 2), nil}, 1, false},
		{JointConfig{nil, nil}, 1, false},
		{JointConfig{nil, nil}, 0, false},
		// With no incoming voters only the outgoing half can decide; see
		// CommittedIndex of an empty configuration.
		{JointConfig{nil, c(1)}, 1, true},
	} {
		if got := tc.j.IsSingleVoter(tc.id); got != tc.want {
			t.Errorf("%v.IsSingleVoter(%d) = %v, want %v", tc.j, tc.id, got, tc.want)
		}
	}
}

// IsSingleVoter must be exactly "every quorum of c contains id": check it
// against that definition over all small joint configurations.
func TestJointIsSingleVoterDefinition(t *testing.T) {
	const n = 3
	for m0 := range 1 << n {
		for m1 := range 1 << n {
			j := JointConfig{subset(m0, n), subset(m1, n)}
			for id := raftpb.NodeID(1); id <= n; id++ {
				// id alone wins an election iff it is a single voter.
				alone := j.VoteResult(func(v raftpb.NodeID) Vote {
					if v == id {
						return VoteGranted
					}
					return VoteRejected
				}) == VoteWon
				nonEmpty := len(j[0]) > 0 || len(j[1]) > 0
				if got, want := j.IsSingleVoter(id), alone && nonEmpty; got != want {
					t.Errorf("%v.IsSingleVoter(%d) = %v, want %v", j, id, got, want)
				}
			}
		}
	}
}

func TestJointCommittedIndex(t *testing.T) {
	c := NewMajorityConfig
	acked := ackMap{1: 10, 2: 20, 3: 30, 4: 40, 5: 5}
	for _, tc := range []struct {
		j    JointConfig
		want raftpb.Index
	}{
		{JointConfig{}, math.MaxUint64},
		{JointConfig{c(1, 2, 3)}, 20},
		{JointConfig{c(1, 2, 3), c(2, 3, 4)}, 20},
		{JointConfig{c(2, 3, 4), c(1, 2, 3)}, 20},
		{JointConfig{c(3, 4), c(1, 5)}, 5},
		{JointConfig{nil, c(3, 4)}, 30},
		{JointConfig{c(4), c(9)}, 0}, // 9 never reported
	} {
		if got := tc.j.CommittedIndex(acked); got != tc.want {
			t.Errorf("%v.CommittedIndex = %d, want %d", tc.j, got, tc.want)
		}
	}
}

// TestJointCommittedIndexRandom checks that a joint configuration commits
// the minimum of its halves, against the naive reference.
func TestJointCommittedIndexRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const maxID = 10
	for i := range 10000 {
		j := JointConfig{subset(rng.IntN(1<<maxID), maxID), subset(rng.IntN(1<<maxID), maxID)}
		if rng.IntN(3) == 0 {
			j[1] = nil
		}
		acked := ackMap{}
		for id := raftpb.NodeID(1); id <= maxID; id++ {
			if rng.IntN(5) != 0 {
				acked[id] = raftpb.Index(rng.IntN(8))
			}
		}
		want := min(refCommitted(j[0], acked), refCommitted(j[1], acked))
		if got := j.CommittedIndex(acked); got != want {
			t.Fatalf("case %d: %v.CommittedIndex(%v) = %d, want %d", i, j, acked, got, want)
		}
	}
}

func TestJointVoteResultTable(t *testing.T) {
	c := NewMajorityConfig
	const (
		g = VoteGranted
		r = VoteRejected
	)
	for _, tc := range []struct {
		j     JointConfig
		votes map[raftpb.NodeID]Vote
		want  VoteResult
	}{
		{JointConfig{}, nil, VoteWon},
		{JointConfig{c(1, 2, 3), c(1, 2, 3)}, map[raftpb.NodeID]Vote{1: g, 2: g}, VoteWon},
		// Incoming won, outgoing pending.
		{JointConfig{c(1, 2, 3), c(3, 4, 5)}, map[raftpb.NodeID]Vote{1: g, 2: g, 3: g}, VotePending},
		// Incoming won, outgoing lost.
		{JointConfig{c(1, 2, 3), c(3, 4, 5)}, map[raftpb.NodeID]Vote{1: g, 2: g, 4: r, 5: r}, VoteLost},
		// Incoming lost, outgoing won.
		{JointConfig{c(1, 2, 3), c(3, 4, 5)}, map[raftpb.NodeID]Vote{1: r, 2: r, 4: g, 5: g}, VoteLost},
		// Incoming pending, outgoing lost.
		{JointConfig{c(1, 2, 3), c(3, 4, 5)}, map[raftpb.NodeID]Vote{4: r, 5: r}, VoteLost},
		{JointConfig{c(1, 2, 3), c(3, 4, 5)}, map[raftpb.NodeID]Vote{1: g, 3: g, 4: g}, VoteWon},
		{JointConfig{c(1), nil}, map[raftpb.NodeID]Vote{1: g}, VoteWon},
		{JointConfig{nil, c(1)}, map[raftpb.NodeID]Vote{1: r}, VoteLost},
	} {
		if got := tc.j.VoteResult(voteMap(tc.votes)); got != tc.want {
			t.Errorf("%v with %v: %v, want %v", tc.j, tc.votes, got, tc.want)
		}
	}
}

// TestJointVoteResultExhaustive tries every pair of halves drawn from
// {1..4} (empty, disjoint and overlapping) with every assignment of votes.
func TestJointVoteResultExhaustive(t *testing.T) {
	const n = 4
	total := 1
	for range n {
		total *= 3
	}
	for m0 := range 1 << n {
		for m1 := range 1 << n {
			j := JointConfig{subset(m0, n), subset(m1, n)}
			for a := range total {
				votes := map[raftpb.NodeID]Vote{}
				x := a
				for id := raftpb.NodeID(1); id <= n; id++ {
					votes[id] = Vote(x % 3)
					x /= 3
				}
				if got, want := j.VoteResult(voteMap(votes)), refJointVote(j, votes); got != want {
					t.Fatalf("%v with votes %v: %v, want %v", j, votes, got, want)
				}
			}
		}
	}
}
