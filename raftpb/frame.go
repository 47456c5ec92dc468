package raftpb

// A replica is named by the node that hosts it: a shard has at most one
// replica per node, so the NodeID in a Message is both the replica and the
// node it lives on. That is what lets heartbeats of many shards between two
// nodes share one frame without naming replicas.

// Batch is one frame on the stream between two nodes: the Raft messages of
// any number of shards plus their coalesced heartbeats. Every frame names the
// cluster and both nodes so that a misrouted or foreign frame is recognised
// and refused before anything in it is used.
type Batch struct {
	ClusterID uint64
	From      NodeID
	To        NodeID
	Messages  []Message
	// Heartbeats carries MsgHeartbeat and MsgHeartbeatResp of many shards,
	// one compact record each; the receiver expands them with Expand.
	Heartbeats []Heartbeat
}

// Heartbeat is the compact form of one MsgHeartbeat or MsgHeartbeatResp
// between the two nodes named by the enclosing Batch.
type Heartbeat struct {
	Shard    ShardID
	Term     Term
	Commit   Index
	Context  uint64
	Response bool
}

// CanCoalesce reports whether m can travel as a Heartbeat record.
func CanCoalesce(m *Message) bool {
	return (m.Type == MsgHeartbeat || m.Type == MsgHeartbeatResp) &&
		m.LogTerm == 0 && m.Index == 0 && !m.Reject && m.RejectHint == 0 &&
		len(m.Entries) == 0 && m.Snapshot == nil
}

// Coalesce returns the compact form of a heartbeat message.
// REQUIRES: CanCoalesce(m).
func Coalesce(m *Message) Heartbeat {
	return Heartbeat{
		Shard:    m.Shard,
		Term:     m.Term,
		Commit:   m.Commit,
		Context:  m.Context,
		Response: m.Type == MsgHeartbeatResp,
	}
}

// Expand turns a Heartbeat record of a batch from -> to back into a message.
func (h Heartbeat) Expand(from, to NodeID) Message {
	t := MsgHeartbeat
	if h.Response {
		t = MsgHeartbeatResp
	}
	return Message{
		Type:    t,
		Shard:   h.Shard,
		From:    from,
		To:      to,
		Term:    h.Term,
		Commit:  h.Commit,
		Context: h.Context,
	}
}
