package engine

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/shardd/shardd/raftpb"
	"github.com/shardd/shardd/shard"
)

// Propose replicates cmd in the shard through any replica (a follower
// forwards it to the leader) and returns once this node's replica applied
// it. A proposal whose outcome became unknown returns ErrResultUnknown; a
// full queue ErrBusy; the context's error on cancel or timeout.
func (n *Node) Propose(ctx context.Context, shardID uint64, cmd []byte) (Result, error) {
	r, err := n.get(shardID)
	if err != nil {
		return Result{}, err
	}
	start := time.Now()
	n.m.proposals.Inc()
	p, err := r.Propose(n.nextKey(), cmd)
	if err != nil {
		n.m.proposalErrors.Inc()
		return Result{}, mapError(err)
	}
	n.stepSched.enqueue(r)
	if err := wait(ctx, p.Done()); err != nil {
		n.m.proposalErrors.Inc()
		return Result{}, err
	}
	res, err := p.Result()
	if err != nil {
		n.m.proposalErrors.Inc()
		return res, mapError(err)
	}
	n.m.proposalTime.UpdateDuration(start)
	return res, nil
}

// Read runs query against the shard's state once it reflects everything
// committed before Read was called (ReadIndex), on any replica. Concurrent
// reads of one shard share one ReadIndex round.
func (n *Node) Read(ctx context.Context, shardID uint64, query []byte) ([]byte, error) {
	r, err := n.get(shardID)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	n.m.reads.Inc()
	rr, err := r.Read()
	if err != nil {
		n.m.readErrors.Inc()
		return nil, mapError(err)
	}
	n.stepSched.enqueue(r)
	if err := wait(ctx, rr.Done()); err != nil {
		n.m.readErrors.Inc()
		return nil, err
	}
	if err := rr.Err(); err != nil {
		n.m.readErrors.Inc()
		return nil, mapError(err)
	}
	v, err := r.Lookup(query)
	n.m.readTime.UpdateDuration(start)
	return v, err
}

// StaleRead runs query against this replica's state as it is.
func (n *Node) StaleRead(shardID uint64, query []byte) ([]byte, error) {
	r, err := n.get(shardID)
	if err != nil {
		return nil, err
	}
	n.m.staleReads.Inc()
	return r.Lookup(query)
}

// AddReplica adds nodeID to the shard as a voter (or promotes a learner).
func (n *Node) AddReplica(ctx context.Context, shardID, nodeID uint64) error {
	return n.confChange(ctx, shardID, raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{
		{Type: raftpb.AddVoter, Node: raftpb.NodeID(nodeID)}}})
}

// AddLearner adds nodeID to the shard as a learner.
func (n *Node) AddLearner(ctx context.Context, shardID, nodeID uint64) error {
	return n.confChange(ctx, shardID, raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{
		{Type: raftpb.AddLearner, Node: raftpb.NodeID(nodeID)}}})
}

// RemoveReplica removes nodeID from the shard.
func (n *Node) RemoveReplica(ctx context.Context, shardID, nodeID uint64) error {
	return n.confChange(ctx, shardID, raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{
		{Type: raftpb.RemoveNode, Node: raftpb.NodeID(nodeID)}}})
}

// ChangeMembership moves the shard to exactly these voters and learners,
// through a joint configuration when more than one voter changes. A shard
// already in that configuration returns nil at once (so a retried request
// does not enter a second joint configuration, S20).
func (n *Node) ChangeMembership(ctx context.Context, shardID uint64, voters, learners []uint64) error {
	r, err := n.get(shardID)
	if err != nil {
		return err
	}
	want := normalize(raftpb.ConfState{Voters: toNodeIDs(voters), Learners: toNodeIDs(learners)})
	if len(want.Voters) == 0 {
		return fmt.Errorf("%w: ChangeMembership needs voters", ErrInvalidConfig)
	}
	cur := r.Status().Members
	if cur.Joint() {
		// Finish the change in progress first (auto-leave usually does).
		return ErrMembershipChangeInProgress
	}
	cc := diffConf(cur, want)
	if len(cc.Changes) == 0 {
		return nil
	}
	return n.confChange(ctx, shardID, cc)
}

// diffConf is the change from cur to want.
func diffConf(cur, want raftpb.ConfState) raftpb.ConfChange {
	var cc raftpb.ConfChange
	for _, id := range want.Voters {
		if !slices.Contains(cur.Voters, id) {
			cc.Changes = append(cc.Changes, raftpb.ConfChangeSingle{Type: raftpb.AddVoter, Node: id})
		}
	}
	for _, id := range want.Learners {
		if !slices.Contains(cur.Learners, id) {
			cc.Changes = append(cc.Changes, raftpb.ConfChangeSingle{Type: raftpb.AddLearner, Node: id})
		}
	}
	for _, id := range append(append([]raftpb.NodeID(nil), cur.Voters...), cur.Learners...) {
		if !slices.Contains(want.Voters, id) && !slices.Contains(want.Learners, id) {
			cc.Changes = append(cc.Changes, raftpb.ConfChangeSingle{Type: raftpb.RemoveNode, Node: id})
		}
	}
	return cc
}

func normalize(cs raftpb.ConfState) raftpb.ConfState {
	sortIDs := func(ids []raftpb.NodeID) []raftpb.NodeID {
		c := slices.Clone(ids)
		slices.Sort(c)
		return slices.Compact(c)
	}
	cs.Voters, cs.Learners = sortIDs(cs.Voters), sortIDs(cs.Learners)
	return cs
}

func (n *Node) confChange(ctx context.Context, shardID uint64, cc raftpb.ConfChange) error {
	r, err := n.get(shardID)
	if err != nil {
		return err
	}
	n.m.membershipChanges.Inc()
	p, err := r.ProposeConfChange(n.nextKey(), cc)
	if err != nil {
		return mapError(err)
	}
	n.stepSched.enqueue(r)
	if err := wait(ctx, p.Done()); err != nil {
		return err
	}
	_, err = p.Result()
	return mapError(err)
}

// TransferLeader moves the shard's leadership to target (once it has
// caught up) and returns when target leads.
func (n *Node) TransferLeader(ctx context.Context, shardID, target uint64) error {
	r, err := n.get(shardID)
	if err != nil {
		return err
	}
	n.m.transfers.Inc()
	t := time.NewTicker(n.cfg.TickInterval)
	defer t.Stop()
	asked := time.Time{}
	for {
		st := r.Status()
		if st.Leader == raftpb.NodeID(target) {
			return nil
		}
		// Ask again every election timeout: a transfer that timed out (or a
		// leader that changed meanwhile) forgets the request.
		if time.Since(asked) > n.cfg.TickInterval*time.Duration(n.cfg.ElectionTicks) {
			r.TransferLeader(raftpb.NodeID(target))
			n.stepSched.enqueue(r)
			asked = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stop:
			return ErrClosed
		case <-t.C:
		}
	}
}

// RequestSnapshot makes this replica snapshot its state machine now (and
// compact its log behind it); it returns the snapshot's index.
func (n *Node) RequestSnapshot(ctx context.Context, shardID uint64) (uint64, error) {
	r, err := n.get(shardID)
	if err != nil {
		return 0, err
	}
	ch := r.RequestSnapshot()
	n.applySched.enqueue(r)
	select {
	case v := <-ch:
		idx, err := shard.SnapshotResult(v)
		return uint64(idx), err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Leader returns the shard's leader as this replica knows it.
func (n *Node) Leader(shardID uint64) (leaderID, term uint64, ok bool) {
	r, err := n.get(shardID)
	if err != nil {
		return 0, 0, false
	}
	st := r.Status()
	return uint64(st.Leader), uint64(st.Term), st.Leader != 0
}

// ShardStatus describes this node's replica of a shard.
type ShardStatus struct {
	ShardID   uint64
	NodeID    uint64
	Role      string
	Term      uint64
	Leader    uint64
	Commit    uint64
	Applied   uint64
	LastIndex uint64
	Voters    []uint64
	Learners  []uint64
	Joint     bool
	Quiesced  bool
	// Hash is the running hash of the applied entries: replicas at the
	// same Applied have the same Hash.
	Hash uint64
	// Err is set when the replica stopped on an error.
	Err error
}

// ShardStatus returns this node's replica's status.
func (n *Node) ShardStatus(shardID uint64) (ShardStatus, error) {
	r, err := n.get(shardID)
	if err != nil {
		return ShardStatus{}, err
	}
	st := r.Status()
	return ShardStatus{
		ShardID:   uint64(st.Shard),
		NodeID:    uint64(st.Node),
		Role:      st.Role.String(),
		Term:      uint64(st.Term),
		Leader:    uint64(st.Leader),
		Commit:    uint64(st.Commit),
		Applied:   uint64(st.Applied),
		LastIndex: uint64(st.LastIndex),
		Voters:    fromNodeIDs(st.Members.Voters),
		Learners:  fromNodeIDs(st.Members.Learners),
		Joint:     st.Members.Joint(),
		Quiesced:  st.Quiesced,
		Hash:      st.Hash,
		Err:       st.Err,
	}, nil
}

// Shards lists the shards this node hosts.
func (n *Node) Shards() []uint64 {
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make([]uint64, 0, len(n.replicas))
	for id := range n.replicas {
		out = append(out, uint64(id))
	}
	slices.Sort(out)
	return out
}

// PeerStatus is what the transport knows of another node.
type PeerStatus struct {
	NodeID                         uint64
	Reachable                      bool
	MessagesSent, MessagesReceived uint64
	BytesSent, BytesReceived       uint64
	Dropped                        uint64
}

// Peers reports the transport's view of every other node.
func (n *Node) Peers() []PeerStatus {
	var out []PeerStatus
	for _, p := range n.tr.PeerStats() {
		out = append(out, PeerStatus{NodeID: uint64(p.Node), Reachable: p.Reachable,
			MessagesSent: p.MessagesSent, MessagesReceived: p.MessagesReceived,
			BytesSent: p.BytesSent, BytesReceived: p.BytesReceived, Dropped: p.Dropped})
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return int(a.NodeID) - int(b.NodeID) })
	return out
}
