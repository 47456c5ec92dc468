package quorum

import (
	"fmt"
	"slices"
	"strings"

	"github.com/shardd/shardd/raftpb"
)

// MajorityConfig is a set of voters, sorted ascending without duplicates,
// decided by simple majority.
type MajorityConfig []raftpb.NodeID

// NewMajorityConfig returns the sorted, deduplicated configuration of ids.
func NewMajorityConfig(ids ...raftpb.NodeID) MajorityConfig {
	c := slices.Clone(ids)
	slices.Sort(c)
	return MajorityConfig(slices.Compact(c))
}

// Contains reports whether id is a voter of c.
func (c MajorityConfig) Contains(id raftpb.NodeID) bool {
	_, ok := slices.BinarySearch(c, id)
	return ok
}

// Size is the number of voters.
func (c MajorityConfig) Size() int { return len(c) }

func (c MajorityConfig) String() string {
	var b strings.Builder
	b.WriteByte('(')
	for i, id := range c {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprint(&b, uint64(id))
	}
	b.WriteByte(')')
	return b.String()
}

// smallConfig bounds the voter count handled without allocating.
const smallConfig = 7

// CommittedIndex returns the highest index held by a majority of c. A voter
// that has not reported counts as holding index 0. An empty configuration
// returns math.MaxUint64 so that it never limits a joint configuration.
func (c MajorityConfig) CommittedIndex(l AckedIndexer) raftpb.Index {
	n := len(c)
	if n == 0 {
		return noQuorumIndex
	}
	var stack [smallConfig]raftpb.Index
	var srt []raftpb.Index
	if n <= smallConfig {
		srt = stack[:n]
	} else {
		srt = make([]raftpb.Index, n)
	}
	for i, id := range c {
		idx, ok := l.AckedIndex(id)
		if !ok {
			idx = 0
		}
		srt[i] = idx
	}
	// Insertion sort: configurations are tiny and this keeps the call free of
	// allocations and interface dispatch.
	for i := 1; i < n; i++ {
		for j := i; j > 0 && srt[j-1] > srt[j]; j-- {
			srt[j-1], srt[j] = srt[j], srt[j-1]
		}
	}
	// With srt ascending, the element at n-(n/2+1) is held by n/2+1 voters.
	return srt[n-(n/2+1)]
}

// VoteResult counts the votes of c's voters. An empty configuration wins,
// for the same reason CommittedIndex is unbounded for it.
func (c MajorityConfig) VoteResult(vote VoteFunc) VoteResult {
	if len(c) == 0 {
		return VoteWon
	}
	granted, missing := 0, 0
	for _, id := range c {
		switch vote(id) {
		case VoteGranted:
			granted++
		case VoteMissing:
			missing++
		}
	}
	q := len(c)/2 + 1
	if granted >= q {
		return VoteWon
	}
	if granted+missing >= q {
		return VotePending
	}
	return VoteLost
}
