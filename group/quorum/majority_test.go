package quorum

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/shardd/shardd/raftpb"
)

func TestNewMajorityConfig(t *testing.T) {
	for _, tc := range []struct {
		in   []raftpb.NodeID
		want MajorityConfig
	}{
		{nil, nil},
		{[]raftpb.NodeID{}, MajorityConfig{}},
		{[]raftpb.NodeID{3, 1, 2}, MajorityConfig{1, 2, 3}},
		{[]raftpb.NodeID{2, 2, 1, 2, 1}, MajorityConfig{1, 2}},
		{[]raftpb.NodeID{math.MaxUint64, 0, 7}, MajorityConfig{0, 7, math.MaxUint64}},
	} {
		got := NewMajorityConfig(tc.in...)
		if len(got) != len(tc.want) {
			t.Errorf("NewMajorityConfig(%v) = %v, want %v", tc.in, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("NewMajorityConfig(%v) = %v, want %v", tc.in, got, tc.want)
				break
			}
		}
	}
}

// NewMajorityConfig must not sort its caller's slice in place: callers pass
// persisted ConfState fields.
func TestNewMajorityConfigDoesNotAliasInput(t *testing.T) {
	in := []raftpb.NodeID{3, 1, 2, 1}
	c := NewMajorityConfig(in...)
	if in[0] != 3 || in[1] != 1 || in[2] != 2 || in[3] != 1 {
		t.Fatalf("input modified: %v", in)
	}
	c[0] = 99
	if in[0] != 3 {
		t.Fatalf("result aliases input: %v", in)
	}
}

func TestMajorityConfigContainsSizeString(t *testing.T) {
	c := NewMajorityConfig(5, 1, 3)
	for id, want := range map[raftpb.NodeID]bool{0: false, 1: true, 2: false, 3: true, 4: false, 5: true, 6: false} {
		if got := c.Contains(id); got != want {
			t.Errorf("%v.Contains(%d) = %v, want %v", c, id, got, want)
		}
	}
	if c.Size() != 3 {
		t.Errorf("Size() = %d, want 3", c.Size())
	}
	for _, tc := range []struct {
		c    MajorityConfig
		want string
	}{
		{nil, "()"},
		{MajorityConfig{7}, "(7)"},
		{c, "(1 3 5)"},
		{MajorityConfig{math.MaxUint64}, "(18446744073709551615)"},
	} {
		if got := tc.c.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
	var empty MajorityConfig
	if empty.Contains(0) || empty.Size() != 0 {
		t.Errorf("empty config: Contains(0)=%v Size()=%d", empty.Contains(0), empty.Size())
	}
}

func TestMajorityCommittedIndex(t *testing.T) {
	for _, tc := range []struct {
		name  string
		c     MajorityConfig
		acked ackMap
		want  raftpb.Index
	}{
		// An empty configuration must never hold back the other half of a
		// joint configuration.
		{"empty", nil, ackMap{1: 5}, math.MaxUint64},

		{"1", ids(1), ackMap{1: 5}, 5},
		{"1 missing", ids(1), ackMap{}, 0},
		{"1 non-member acked", ids(1), ackMap{2: 9}, 0},

		{"2", ids(2), ackMap{1: 5, 2: 3}, 3},
		{"2 one missing", ids(2), ackMap{1: 5}, 0},

		{"3", ids(3), ackMap{1: 5, 2: 3, 3: 4}, 4},
		{"3 one missing", ids(3), ackMap{1: 5, 3: 4}, 4},
		{"3 two missing", ids(3), ackMap{1: 5}, 0},
		{"3 equal", ids(3), ackMap{1: 7, 2: 7, 3: 7}, 7},

		{"4", ids(4), ackMap{1: 10, 2: 20, 3: 30, 4: 40}, 20},
		{"4 one missing", ids(4), ackMap{1: 10, 2: 20, 3: 30}, 10},
		{"4 two missing", ids(4), ackMap{3: 30, 4: 40}, 0},

		{"5", ids(5), ackMap{1: 5, 2: 4, 3: 3, 4: 2, 5: 1}, 3},
		{"5 two missing", ids(5), ackMap{1: 5, 2: 4, 3: 3}, 3},
		{"5 three missing", ids(5), ackMap{1: 5, 2: 4}, 0},

		{"6", ids(6), ackMap{1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6}, 3},
		{"6 two missing", ids(6), ackMap{1: 1, 2: 2, 3: 3, 4: 4}, 1},

		{"7", ids(7), ackMap{1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7}, 4},
		{"7 reversed", ids(7), ackMap{1: 7, 2: 6, 3: 5, 4: 4, 5: 3, 6: 2, 7: 1}, 4},
		{"7 three missing", ids(7), ackMap{1: 9, 2: 9, 3: 9, 4: 9}, 9},
		{"7 four missing", ids(7), ackMap{1: 9, 2: 9, 3: 9}, 0},

		// Beyond smallConfig the scratch space comes from the heap.
		{"8", ids(8), ackMap{1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, 8: 8}, 4},
		{"9", ids(9), ackMap{1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, 8: 8, 9: 9}, 5},
		{"9 four missing", ids(9), ackMap{1: 3, 2: 3, 3: 3, 4: 3, 5: 3}, 3},
		{"9 five missing", ids(9), ackMap{1: 3, 2: 3, 3: 3, 4: 3}, 0},
		{"11 max", ids(11), ackMap{1: math.MaxUint64, 2: math.MaxUint64, 3: math.MaxUint64,
			4: math.MaxUint64, 5: math.MaxUint64, 6: math.MaxUint64, 7: 1}, math.MaxUint64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.c.CommittedIndex(tc.acked); got != tc.want {
				t.Errorf("%v.CommittedIndex(%v) = %d, want %d", tc.c, tc.acked, got, tc.want)
			}
			if ref := refCommitted(tc.c, tc.acked); ref != tc.want {
				t.Fatalf("test table disagrees with the reference: %d vs %d", tc.want, ref)
			}
		})
	}
}

// TestMajorityCommittedIndexRandom compares CommittedIndex with the naive
// reference on random configurations of both the stack and the heap path.
func TestMajorityCommittedIndexRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 10000 {
		n := rng.IntN(12)
		c := make([]raftpb.NodeID, 0, n)
		for range n {
			c = append(c, raftpb.NodeID(1+rng.IntN(20)))
		}
		cfg := NewMajorityConfig(c...)
		acked := ackMap{}
		for _, id := range cfg {
			if rng.IntN(4) == 0 {
				continue // missing voter
			}
			// A narrow range makes ties common; ties are where an
			// off-by-one in the selection shows.
			acked[id] = raftpb.Index(rng.IntN(6))
		}
		// Reports from non-voters must not count.
		acked[raftpb.NodeID(100+rng.IntN(5))] = raftpb.Index(rng.IntN(1000))
		got, want := cfg.CommittedIndex(acked), refCommitted(cfg, acked)
		if got != want {
			t.Fatalf("case %d: %v.CommittedIndex(%v) = %d, want %d", i, cfg, acked, got, want)
		}
	}
}

// CommittedIndex runs on every acknowledgement of every shard; for usual
// configuration sizes it must not allocate.
func TestCommittedIndexSmallDoesNotAllocate(t *testing.T) {
	for n := 0; n <= smallConfig; n++ {
		c := ids(n)
		acked := ackMap{}
		for _, id := range c {
			acked[id] = raftpb.Index(100 - id)
		}
		var l AckedIndexer = acked
		allocs := testing.AllocsPerRun(100, func() {
			_ = c.CommittedIndex(l)
		})
		if allocs != 0 {
			t.Errorf("n=%d: CommittedIndex allocated %v times per run, want 0", n, allocs)
		}
	}
}

func TestMajorityVoteResultEmptyWins(t *testing.T) {
	var c MajorityConfig
	if got := c.VoteResult(voteMap(nil)); got != VoteWon {
		t.Fatalf("empty VoteResult = %v, want VoteWon", got)
	}
}

func TestMajorityVoteResultTable(t *testing.T) {
	const (
		m = VoteMissing
		g = VoteGranted
		r = VoteRejected
	)
	for _, tc := range []struct {
		votes []Vote // votes of 1..len(votes)
		want  VoteResult
	}{
		{[]Vote{m}, VotePending},
		{[]Vote{g}, VoteWon},
		{[]Vote{r}, VoteLost},
		{[]Vote{g, m}, VotePending},
		{[]Vote{g, r}, VoteLost},
		{[]Vote{g, g}, VoteWon},
		{[]Vote{g, m, m}, VotePending},
		{[]Vote{g, r, m}, VotePending},
		{[]Vote{g, r, r}, VoteLost},
		{[]Vote{g, g, r}, VoteWon},
		{[]Vote{g, g, m, m}, VotePending},
		{[]Vote{g, g, r, m}, VotePending},
		{[]Vote{g, g, r, r}, VoteLost},
		{[]Vote{g, g, g, r}, VoteWon},
		{[]Vote{r, r, m, m, m}, VotePending},
		{[]Vote{r, r, r, m, m}, VoteLost},
	} {
		votes := map[raftpb.NodeID]Vote{}
		for i, v := range tc.votes {
			votes[raftpb.NodeID(i+1)] = v
		}
		c := ids(len(tc.votes))
		if got := c.VoteResult(voteMap(votes)); got != tc.want {
			t.Errorf("%v with votes %v: %v, want %v", c, tc.votes, got, tc.want)
		}
	}
}

// TestMajorityVoteResultExhaustive checks every assignment of {missing,
// granted, rejected} to configurations of 1..5 voters.
func TestMajorityVoteResultExhaustive(t *testing.T) {
	for n := 1; n <= 5; n++ {
		c := ids(n)
		total := 1
		for range n {
			total *= 3
		}
		for a := range total {
			votes := map[raftpb.NodeID]Vote{}
			x := a
			for _, id := range c {
				votes[id] = Vote(x % 3)
				x /= 3
			}
			// Votes of non-voters must not count.
			votes[raftpb.NodeID(n+1)] = VoteGranted
			if got, want := c.VoteResult(voteMap(votes)), refVote(c, votes); got != want {
				t.Fatalf("%v with votes %v: %v, want %v", c, votes, got, want)
			}
		}
	}
}
