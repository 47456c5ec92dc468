package engine

import (
	"fmt"

	"github.com/shardd/shardd/raftpb"
	"github.com/shardd/shardd/transport"
)

// handler is the node's transport.Handler. It only queues work: messages go
// to their replicas' inboxes and the replicas are marked ready.
type handler struct{ n *Node }

func (n *Node) startTransport() error {
	h := &handler{n: n}
	if n.cfg.NewTransport != nil {
		tr, err := n.cfg.NewTransport(h)
		if err != nil {
			return fmt.Errorf("engine: transport: %w", err)
		}
		n.tr = tr
		return nil
	}
	peers := map[raftpb.NodeID]string{}
	for id, addr := range n.cfg.Peers {
		peers[raftpb.NodeID(id)] = addr
	}
	tr, err := transport.New(transport.Config{
		NodeID:       n.id,
		ClusterID:    n.cfg.ClusterID,
		ListenAddr:   n.cfg.ListenAddr,
		Listener:     n.cfg.Listener,
		Peers:        peers,
		TLS:          n.cfg.TLS,
		Handler:      h,
		Logger:       n.lg,
		PingInterval: n.cfg.LivenessInterval,
		MissedPings:  n.cfg.LivenessMisses,
	})
	if err != nil {
		return fmt.Errorf("engine: transport: %w", err)
	}
	n.tr = tr
	return nil
}

// HandleMessages hands each message to its shard's replica; messages for a
// shard this node does not host are dropped (never auto-created).
func (h *handler) HandleMessages(from raftpb.NodeID, msgs []raftpb.Message) {
	n := h.n
	n.m.messagesReceived.Add(len(msgs))
	var ready []*replica
	n.mu.RLock()
	for i := 0; i < len(msgs); {
		j := i + 1
		for j < len(msgs) && msgs[j].Shard == msgs[i].Shard {
			j++
		}
		if r, ok := n.replicas[msgs[i].Shard]; ok {
			r.AddMessages(msgs[i:j]...)
			ready = append(ready, r)
		} else {
			n.m.unknownShard.Add(j - i)
		}
		i = j
	}
	n.mu.RUnlock()
	n.stepSched.enqueueMany(ready)
}

// NodeUnreachable tells every replica: a leader's followers there drop to
// probing, and quiesced followers whose leader is there wake and campaign.
func (h *handler) NodeUnreachable(node raftpb.NodeID) {
	n := h.n
	n.lg.Info("node unreachable", "peer", uint64(node))
	n.mu.RLock()
	list := n.list
	n.mu.RUnlock()
	for _, r := range list {
		r.ReportUnreachable(node)
	}
	n.stepSched.enqueueMany(list)
}

// NodeReachable is logged; Raft needs nothing more.
func (h *handler) NodeReachable(node raftpb.NodeID) {
	h.n.lg.Info("node reachable", "peer", uint64(node))
}

// SnapshotSink stores an incoming snapshot where the replica will look for
// it once the core installs it.
func (h *handler) SnapshotSink(m raftpb.Message, size int64) (transport.SnapshotSink, error) {
	n := h.n
	if _, err := n.get(uint64(m.Shard)); err != nil {
		return nil, err
	}
	return n.snaps.Receive(m.Shard, m.Snapshot.Index)
}
