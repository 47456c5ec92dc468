// Package raftpb holds the data that crosses package and process boundaries:
// typed identifiers, log entries, hard state, membership, snapshot metadata,
// Raft messages and the frames that carry them between nodes.
//
// It is the leaf of the import graph: it imports nothing of shardd. Every type
// here has a hand-written encoding in the protobuf wire format (see
// raftpb.proto for the schema and codec.go for the reasons it is
// hand-written).
package raftpb

import "fmt"

// NodeID identifies one process (node) of a cluster. Zero means "none".
type NodeID uint64

// ShardID identifies one Raft group (shard) across the cluster.
type ShardID uint64

// Index is a position in a shard's log. The first entry has index 1; zero
// means "before the first entry".
type Index uint64

// Term is a Raft term. Zero is the term of the empty log.
type Term uint64

// None is the NodeID that names no node (no leader, no vote).
const None NodeID = 0

// EntryType says how an entry's Data is to be read.
type EntryType uint8

const (
	// EntryNormal carries a state-machine command (or nothing, for the
	// entry a new leader appends in its term).
	EntryNormal EntryType = 0
	// EntryConfChange carries an encoded ConfChange.
	EntryConfChange EntryType = 1
)

func (t EntryType) String() string {
	switch t {
	case EntryNormal:
		return "Normal"
	case EntryConfChange:
		return "ConfChange"
	}
	return fmt.Sprintf("EntryType(%d)", uint8(t))
}

// Entry is one record of a shard's replicated log.
type Entry struct {
	Term  Term
	Index Index
	Type  EntryType
	// Key lets the proposer recognise its own entry when it is applied; the
	// Raft core never reads it.
	Key  uint64
	Data []byte
}

// entryOverhead approximates the fixed in-memory cost of an entry beyond its
// data, so byte bounds count empty entries too.
const entryOverhead = 32

// SizeBytes is the approximate memory an entry occupies; byte limits on
// messages, caches and queues are expressed in it.
func (e *Entry) SizeBytes() uint64 { return uint64(len(e.Data)) + entryOverhead }

// EntriesSize is the sum of SizeBytes over ents.
func EntriesSize(ents []Entry) uint64 {
	var n uint64
	for i := range ents {
		n += ents[i].SizeBytes()
	}
	return n
}

// HardState is the part of a replica's Raft state that must be durable
// before the replica acts on it.
type HardState struct {
	Term   Term
	Vote   NodeID
	Commit Index
}

// IsEmpty reports whether hs is the zero HardState.
func (hs HardState) IsEmpty() bool { return hs == HardState{} }

// ConfState is a shard's membership. Outside a joint configuration only
// Voters and Learners are set. In a joint configuration VotersOutgoing holds
// the old voters, and LearnersNext the nodes that are voters in the outgoing
// configuration and become learners when the joint configuration is left.
// Lists are sorted and without duplicates.
type ConfState struct {
	Voters         []NodeID
	Learners       []NodeID
	VotersOutgoing []NodeID
	LearnersNext   []NodeID
	// AutoLeave makes the leader propose leaving the joint configuration as
	// soon as it has applied entering it.
	AutoLeave bool
}

// Joint reports whether cs is a joint configuration.
func (cs *ConfState) Joint() bool { return len(cs.VotersOutgoing) > 0 }

// Equal reports whether two ConfStates describe the same membership.
func (cs *ConfState) Equal(o *ConfState) bool {
	return equalIDs(cs.Voters, o.Voters) && equalIDs(cs.Learners, o.Learners) &&
		equalIDs(cs.VotersOutgoing, o.VotersOutgoing) &&
		equalIDs(cs.LearnersNext, o.LearnersNext) && cs.AutoLeave == o.AutoLeave
}

// Clone returns a deep copy of cs.
func (cs *ConfState) Clone() ConfState {
	return ConfState{
		Voters:         cloneIDs(cs.Voters),
		Learners:       cloneIDs(cs.Learners),
		VotersOutgoing: cloneIDs(cs.VotersOutgoing),
		LearnersNext:   cloneIDs(cs.LearnersNext),
		AutoLeave:      cs.AutoLeave,
	}
}

// IsVoter reports whether id votes in either half of the configuration.
func (cs *ConfState) IsVoter(id NodeID) bool {
	return containsID(cs.Voters, id) || containsID(cs.VotersOutgoing, id)
}

// IsMember reports whether id is a voter or learner in any part of cs.
func (cs *ConfState) IsMember(id NodeID) bool {
	return cs.IsVoter(id) || containsID(cs.Learners, id) || containsID(cs.LearnersNext, id)
}

func (cs ConfState) String() string {
	s := fmt.Sprintf("voters=%v", cs.Voters)
	if len(cs.VotersOutgoing) > 0 {
		s += fmt.Sprintf("&&%v", cs.VotersOutgoing)
	}
	if len(cs.Learners) > 0 {
		s += fmt.Sprintf(" learners=%v", cs.Learners)
	}
	if len(cs.LearnersNext) > 0 {
		s += fmt.Sprintf(" learners_next=%v", cs.LearnersNext)
	}
	if cs.AutoLeave {
		s += " autoleave"
	}
	return s
}

func equalIDs(a, b []NodeID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func cloneIDs(a []NodeID) []NodeID {
	if len(a) == 0 {
		return nil
	}
	return append([]NodeID(nil), a...)
}

func containsID(a []NodeID, id NodeID) bool {
	for _, x := range a {
		if x == id {
			return true
		}
	}
	return false
}

// SnapshotMeta describes a snapshot: the log position it covers and the
// membership in force at that position. The data itself travels and is
// stored separately (it can be large); the core only handles metadata.
type SnapshotMeta struct {
	Index     Index
	Term      Term
	ConfState ConfState
}

// IsEmpty reports whether m describes no snapshot.
func (m *SnapshotMeta) IsEmpty() bool { return m.Index == 0 }

// ConfChangeType is the kind of one membership change.
type ConfChangeType uint8

const (
	// AddVoter adds a voter, or promotes a learner to voter.
	AddVoter ConfChangeType = 0
	// AddLearner adds a learner, or demotes a voter to learner.
	AddLearner ConfChangeType = 1
	// RemoveNode removes a voter or learner.
	RemoveNode ConfChangeType = 2
)

func (t ConfChangeType) String() string {
	switch t {
	case AddVoter:
		return "AddVoter"
	case AddLearner:
		return "AddLearner"
	case RemoveNode:
		return "RemoveNode"
	}
	return fmt.Sprintf("ConfChangeType(%d)", uint8(t))
}

// ConfChangeSingle is one membership change.
type ConfChangeSingle struct {
	Type ConfChangeType
	Node NodeID
}

// ConfChangeTransition says how a ConfChange with several changes is carried
// out.
type ConfChangeTransition uint8

const (
	// TransitionAuto uses the simple protocol when the change alters at most
	// one voter, and otherwise a joint configuration left automatically.
	TransitionAuto ConfChangeTransition = 0
	// TransitionJointImplicit always enters a joint configuration and leaves
	// it automatically.
	TransitionJointImplicit ConfChangeTransition = 1
	// TransitionJointExplicit enters a joint configuration that stays until
	// an empty ConfChange asks to leave it.
	TransitionJointExplicit ConfChangeTransition = 2
)

// ConfChange is a membership change proposal. An empty Changes list asks to
// leave the current joint configuration.
type ConfChange struct {
	Transition ConfChangeTransition
	Changes    []ConfChangeSingle
}

// LeaveJoint reports whether cc asks to leave a joint configuration.
func (cc *ConfChange) LeaveJoint() bool { return len(cc.Changes) == 0 }
