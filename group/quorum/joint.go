package quorum

import "github.com/shardd/shardd/raftpb"

// JointConfig is the incoming configuration (index 0) and, during a joint
// change, the outgoing one (index 1). Outside a change the outgoing half is
// empty and the joint configuration behaves as the incoming majority.
type JointConfig [2]MajorityConfig

// Incoming is the configuration being moved to (or the only one).
func (c JointConfig) Incoming() MajorityConfig { return c[0] }

// Outgoing is the configuration being left; empty outside a joint change.
func (c JointConfig) Outgoing() MajorityConfig { return c[1] }

// Joint reports whether c has an outgoing half.
func (c JointConfig) Joint() bool { return len(c[1]) > 0 }

// Contains reports whether id votes in either half.
func (c JointConfig) Contains(id raftpb.NodeID) bool {
	return c[0].Contains(id) || c[1].Contains(id)
}

// IDs returns the union of both halves, sorted.
func (c JointConfig) IDs() []raftpb.NodeID {
	if !c.Joint() {
		return append([]raftpb.NodeID(nil), c[0]...)
	}
	return NewMajorityConfig(append(append([]raftpb.NodeID(nil), c[0]...), c[1]...)...)
}

// IsSingleVoter reports whether one node forms every quorum of c: only then
// may that node commit by its own durable append alone (S18).
func (c JointConfig) IsSingleVoter(id raftpb.NodeID) bool {
	for _, half := range c {
		if len(half) == 0 {
			continue
		}
		if len(half) != 1 || half[0] != id {
			return false
		}
	}
	return len(c[0]) > 0 || len(c[1]) > 0
}

func (c JointConfig) String() string {
	if c.Joint() {
		return c[0].String() + "&&" + c[1].String()
	}
	return c[0].String()
}

// CommittedIndex is the highest index committed in both halves.
func (c JointConfig) CommittedIndex(l AckedIndexer) raftpb.Index {
	return min(c[0].CommittedIndex(l), c[1].CommittedIndex(l))
}

// VoteResult wins only when both halves win and is lost as soon as either
// half is lost.
func (c JointConfig) VoteResult(vote VoteFunc) VoteResult {
	r0 := c[0].VoteResult(vote)
	r1 := c[1].VoteResult(vote)
	if r0 == r1 {
		return r0
	}
	if r0 == VoteLost || r1 == VoteLost {
		return VoteLost
	}
	return VotePending
}
