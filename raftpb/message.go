package raftpb

import "fmt"

// MessageType is the kind of a Raft message. Only the types listed here
// travel between replicas; requests that originate locally (ticks,
// proposals, reports) enter the core through its methods instead.
type MessageType uint8

const (
	// MsgInvalid is the zero value; it is never sent and always rejected.
	MsgInvalid MessageType = iota
	// MsgProp forwards proposed entries from a follower to the leader.
	MsgProp
	// MsgApp carries log entries (possibly none) after (LogTerm, Index) and
	// the leader's commit index.
	MsgApp
	// MsgAppResp acknowledges a MsgApp or a snapshot. On success Index is the
	// highest index known to match the leader. On rejection Index is the
	// rejected MsgApp's Index and (RejectHint, LogTerm) names the follower's
	// best guess of a matching position.
	MsgAppResp
	// MsgVote asks for a vote for (Term); (LogTerm, Index) is the candidate's
	// last log position.
	MsgVote
	// MsgVoteResp answers MsgVote.
	MsgVoteResp
	// MsgPreVote asks whether a vote would be granted at Term, without
	// anybody changing state.
	MsgPreVote
	// MsgPreVoteResp answers MsgPreVote.
	MsgPreVoteResp
	// MsgSnap tells a follower to install the snapshot described by
	// Snapshot; the data travels out of band.
	MsgSnap
	// MsgHeartbeat asserts leadership, carries a commit index the follower
	// can use (never above its known match) and, in Context, a read round.
	MsgHeartbeat
	// MsgHeartbeatResp answers MsgHeartbeat and echoes Context.
	MsgHeartbeatResp
	// MsgTransferLeader asks the leader to hand leadership to From.
	MsgTransferLeader
	// MsgTimeoutNow tells the transfer target to campaign at once, skipping
	// pre-vote.
	MsgTimeoutNow
	// MsgTimeoutNowResp is a refusal of MsgTimeoutNow: the target is not
	// ready (not a voter in its own configuration).
	MsgTimeoutNowResp
	// MsgReadIndex forwards a read request (id in Context) to the leader.
	MsgReadIndex
	// MsgReadIndexResp answers MsgReadIndex with the read index in Index,
	// or Reject when the leader cannot serve it.
	MsgReadIndexResp
	// MsgQuiesce tells a follower that the shard is idle: it stops its
	// election timer until any activity wakes it. (LogTerm, Index) is the
	// leader's last entry, Commit its commit index.
	MsgQuiesce
	// MsgWake is sent, without a term, by a learner that has not heard
	// from a leader for an election timeout (it cannot campaign to find
	// one): to its leader, or to every voter when it knows none. The
	// leader wakes if quiesced and sends it an append with its term and
	// commit index.
	MsgWake

	numMessageTypes
)

var messageTypeNames = [...]string{
	MsgInvalid:        "MsgInvalid",
	MsgProp:           "MsgProp",
	MsgApp:            "MsgApp",
	MsgAppResp:        "MsgAppResp",
	MsgVote:           "MsgVote",
	MsgVoteResp:       "MsgVoteResp",
	MsgPreVote:        "MsgPreVote",
	MsgPreVoteResp:    "MsgPreVoteResp",
	MsgSnap:           "MsgSnap",
	MsgHeartbeat:      "MsgHeartbeat",
	MsgHeartbeatResp:  "MsgHeartbeatResp",
	MsgTransferLeader: "MsgTransferLeader",
	MsgTimeoutNow:     "MsgTimeoutNow",
	MsgTimeoutNowResp: "MsgTimeoutNowResp",
	MsgReadIndex:      "MsgReadIndex",
	MsgReadIndexResp:  "MsgReadIndexResp",
	MsgQuiesce:        "MsgQuiesce",
	MsgWake:           "MsgWake",
}

func (t MessageType) String() string {
	if t < numMessageTypes {
		return messageTypeNames[t]
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// Valid reports whether t is a known message type other than MsgInvalid.
func (t MessageType) Valid() bool { return t > MsgInvalid && t < numMessageTypes }

// IsResponse reports whether t answers a request.
func (t MessageType) IsResponse() bool {
	switch t {
	case MsgAppResp, MsgVoteResp, MsgPreVoteResp, MsgHeartbeatResp,
		MsgReadIndexResp, MsgTimeoutNowResp:
		return true
	}
	return false
}

// Message is one Raft message of one shard. Which fields are meaningful
// depends on Type (see the MessageType constants).
type Message struct {
	Type       MessageType
	Shard      ShardID
	From       NodeID
	To         NodeID
	Term       Term
	LogTerm    Term
	Index      Index
	Commit     Index
	Reject     bool
	RejectHint Index
	// Context identifies a read: the requester's id in MsgReadIndex and its
	// response, the leader's read round in heartbeats.
	Context  uint64
	Entries  []Entry
	Snapshot *SnapshotMeta
}

func (m Message) String() string {
	s := fmt.Sprintf("%s %d->%d t%d", m.Type, m.From, m.To, m.Term)
	switch m.Type {
	case MsgApp, MsgVote, MsgPreVote, MsgQuiesce:
		s += fmt.Sprintf(" log=%d/%d", m.LogTerm, m.Index)
	case MsgAppResp:
		s += fmt.Sprintf(" idx=%d", m.Index)
	}
	if m.Commit != 0 {
		s += fmt.Sprintf(" commit=%d", m.Commit)
	}
	if m.Reject {
		s += fmt.Sprintf(" reject hint=%d/%d", m.LogTerm, m.RejectHint)
	}
	if m.Context != 0 {
		s += fmt.Sprintf(" ctx=%d", m.Context)
	}
	if len(m.Entries) > 0 {
		s += fmt.Sprintf(" ents=[%d..%d]", m.Entries[0].Index, m.Entries[len(m.Entries)-1].Index)
	}
	if m.Snapshot != nil {
		s += fmt.Sprintf(" snap=%d/%d", m.Snapshot.Term, m.Snapshot.Index)
	}
	return s
}
