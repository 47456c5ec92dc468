package shard

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

func TestClusterElectionAndForwarding(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{})
	c.elect(1)
	for _, id := range c.ids {
		evs := c.node(id).ev.leaderEvents()
		if len(evs) == 0 || evs[len(evs)-1].leader != 1 {
			t.Fatalf("node %d: LeaderChanged %v", id, evs)
		}
		st := c.node(id).r.Status()
		if !slices.Equal(st.Members.Voters, []raftpb.NodeID{1, 2, 3}) {
			t.Fatalf("node %d: members %v", id, st.Members)
		}
	}
	// Proposals on every replica; each completes on the replica it was
	// made on, with its own result.
	var props []*Proposal
	for i, id := range c.ids {
		props = append(props, c.node(id).propose(uint64(100+i), fmt.Sprintf("from%d=%d", id, id)))
	}
	c.deliver()
	seen := map[uint64]bool{}
	for i, p := range props {
		res := mustSucceed(t, p)
		if string(res.Data) != fmt.Sprintf("from%d", c.ids[i]) || seen[res.Index] {
			t.Fatalf("proposal on node %d: %+v", c.ids[i], res)
		}
		seen[res.Index] = true
	}
	// Every replica applied the same prefix: same state, same hash.
	want, wantHash := c.node(1).kv.state(), c.node(1).r.Status().Hash
	for _, id := range c.ids {
		n := c.node(id)
		if st := n.r.Status(); st.Hash != wantHash || st.Applied != c.node(1).r.Applied() {
			t.Fatalf("node %d: applied %d hash %x", id, st.Applied, st.Hash)
		}
		if !maps.Equal(n.kv.state(), want) {
			t.Fatalf("node %d: state %v", id, n.kv.state())
		}
	}
}

func TestFollowerReadsShareOneReadIndex(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{})
	c.elect(1)
	f := c.node(2)
	reads := []*ReadRequest{f.read(), f.read(), f.read()}
	c.delivered = nil
	c.deliver()
	if got := countMsgs(c.delivered, raftpb.MsgReadIndex); got != 1 {
		t.Fatalf("MsgReadIndex sent: %d, want 1", got)
	}
	for i, rr := range reads {
		if !isDone(rr.Done()) || rr.Err() != nil {
			t.Fatalf("read %d: done=%v err=%v", i, isDone(rr.Done()), rr.Err())
		}
	}
}

func TestLeaderReadsShareOneRound(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{})
	c.elect(1)
	l := c.node(1)
	reads := []*ReadRequest{l.read(), l.read(), l.read(), l.read()}
	c.delivered = nil
	l.settle()
	if len(l.r.readRounds) != 1 {
		t.Fatalf("read rounds in flight: %d, want 1", len(l.r.readRounds))
	}
	if l.r.TryQuiesce() {
		t.Fatal("TryQuiesce with a read round in flight")
	}
	c.deliver()
	if got := countMsgs(c.delivered, raftpb.MsgHeartbeat); got != 2 {
		t.Fatalf("heartbeats for the read round: %d, want 2", got)
	}
	for i, rr := range reads {
		if !isDone(rr.Done()) || rr.Err() != nil {
			t.Fatalf("read %d not completed", i)
		}
	}
}

func TestFollowerReadWaitsForApply(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{})
	c.elect(1)
	f := c.node(2)
	f.holdApply = true
	p := c.node(1).propose(1, "a=1")
	c.deliver()
	mustSucceed(t, p)
	rr := f.read()
	c.deliver()
	if f.r.Applied() >= c.node(1).r.Applied() {
		t.Fatal("setup: follower applied everything")
	}
	if isDone(rr.Done()) {
		t.Fatal("follower read completed before the read index was applied")
	}
	f.holdApply = false
	f.apply()
	if !isDone(rr.Done()) || rr.Err() != nil {
		t.Fatal("follower read not completed after apply")
	}
	if v, _ := f.r.Lookup([]byte("a")); string(v) != "1" {
		t.Fatalf("follower Lookup = %q", v)
	}
}

func TestFollowerReadWithoutLeaderWaits(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{})
	f := c.node(2)
	rr := f.read()
	p := f.propose(7, "q=1")
	c.deliver()
	if isDone(rr.Done()) {
		t.Fatal("read completed without a leader")
	}
	mustPending(t, p)
	c.elect(1)
	// The waiting proposal and read go once a leader is known.
	c.deliver()
	if !isDone(rr.Done()) || rr.Err() != nil {
		t.Fatalf("read after election: done=%v err=%v", isDone(rr.Done()), rr.Err())
	}
	if res := mustSucceed(t, p); string(res.Data) != "q" {
		t.Fatalf("result %+v", res)
	}
}

// newLeaderElsewhere isolates old and lets the others elect a new leader.
func (c *cluster) newLeaderElsewhere(old raftpb.NodeID) raftpb.NodeID {
	c.t.Helper()
	var others []raftpb.NodeID
	for _, id := range c.ids {
		if id != old {
			others = append(others, id)
		}
	}
	c.drop = isolate(old)
	for range 10 * electionTicks {
		c.tick(others...)
		for _, id := range others {
			if st := c.node(id).r.Status(); st.Role == group.Leader {
				return id
			}
		}
	}
	c.t.Fatal("no new leader")
	return raftpb.None
}

func TestProposalLostOnLeaderChangeIsResultUnknown(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{})
	c.elect(1)
	old := c.node(1)
	// Accepted by the leader, which is cut off before anybody gets it.
	c.drop = isolate(1)
	lost := old.propose(42, "lost=1")
	c.deliver()
	if _, ok := old.r.pending[42]; !ok {
		t.Fatal("setup: proposal not handed to Raft")
	}
	oldTerm := old.r.Status().Term
	nl := c.newLeaderElsewhere(1)
	mustPending(t, lost)
	// A proposal on the new leader, made before the old one heals.
	fresh := c.node(nl).propose(43, "fresh=1")
	c.deliver()
	mustSucceed(t, fresh)

	c.drop = nil
	for range 3 {
		c.tick()
	}
	if st := old.r.Status(); st.Role != group.Follower || st.Leader != nl || st.Term <= oldTerm {
		t.Fatalf("old leader: %+v", st)
	}
	if _, err := mustResult(t, lost); !errors.Is(err, ErrResultUnknown) {
		t.Fatalf("lost proposal: %v, want ErrResultUnknown", err)
	}
	if v, _ := old.r.Lookup([]byte("lost")); v != nil {
		t.Fatalf("lost proposal applied: %q", v)
	}
	if v, _ := old.r.Lookup([]byte("fresh")); string(v) != "1" {
		t.Fatalf("fresh = %q on the old leader", v)
	}
	for _, id := range c.ids {
		if h := c.node(id).r.Status().Hash; h != c.node(nl).r.Status().Hash {
			t.Fatalf("node %d: hash differs", id)
		}
	}
	if got := old.r.outstanding.Load(); got != 0 {
		t.Fatalf("outstanding = %d", got)
	}
}

func TestForwardedMembershipChange(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{})
	c.elect(1)
	l, f := c.node(1), c.node(2)
	learner := func(n raftpb.NodeID) raftpb.ConfChange {
		return raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.AddLearner, Node: n}}}
	}
	accepted, err := l.r.ProposeConfChange(1, learner(4))
	if err != nil {
		t.Fatal(err)
	}
	l.settle() // appended: the leader has a change pending
	refused, err := f.r.ProposeConfChange(2, learner(5))
	if err != nil {
		t.Fatal(err)
	}
	f.settle()
	if countMsgs(f.outbox, raftpb.MsgProp) != 1 {
		t.Fatalf("follower did not forward: %v", f.outbox)
	}
	c.deliver()
	if _, err := mustResult(t, accepted); err != nil {
		t.Fatalf("accepted change: %v", err)
	}
	if _, err := mustResult(t, refused); !errors.Is(err, ErrRejected) {
		t.Fatalf("refused change: %v, want ErrRejected", err)
	}
	for _, id := range c.ids {
		n := c.node(id)
		ms := n.ev.memberships()
		if len(ms) == 0 || !slices.Equal(ms[len(ms)-1].Learners, []raftpb.NodeID{4}) {
			t.Fatalf("node %d: MembershipChanged %v", id, ms)
		}
		if st := n.r.Status(); !slices.Equal(st.Members.Learners, []raftpb.NodeID{4}) {
			t.Fatalf("node %d: members %v", id, st.Members)
		}
	}
	// A forwarded change that can be made is applied and completes with nil.
	ok, err := f.r.ProposeConfChange(3, raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.RemoveNode, Node: 4}}})
	if err != nil {
		t.Fatal(err)
	}
	c.deliver()
	if _, err := mustResult(t, ok); err != nil {
		t.Fatalf("forwarded change: %v", err)
	}
	if st := f.r.Status(); len(st.Members.Learners) != 0 {
		t.Fatalf("members after removal: %v", st.Members)
	}
}

func TestQuiesceIdleLeader(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{})
	c.elect(1)
	p := c.node(1).propose(1, "a=1")
	c.deliver()
	mustSucceed(t, p)
	const quiesceTicks = 3
	stepAll := func() {
		for _, id := range c.ids {
			c.node(id).r.Tick()
		}
		for range 20 {
			moved := false
			for _, id := range c.ids {
				if k, _ := c.node(id).step(quiesceTicks); k > 0 {
					moved = true
				}
			}
			var msgs []raftpb.Message
			for _, id := range c.ids {
				msgs = append(msgs, c.node(id).outbox...)
				c.node(id).outbox = nil
			}
			for _, m := range msgs {
				c.route(m)
			}
			if !moved && len(msgs) == 0 {
				return
			}
		}
	}
	for i := 0; i < quiesceTicks+3 && !c.node(1).r.Quiesced(); i++ {
		stepAll()
	}
	for _, id := range c.ids {
		n := c.node(id)
		if !n.r.Quiesced() || !n.r.Status().Quiesced {
			t.Fatalf("node %d not quiesced: %+v", id, n.r.Status())
		}
	}
	// Quiesced replicas ignore ticks and stay quiesced.
	stepAll()
	if !c.node(1).r.Quiesced() {
		t.Fatal("leader woke up without activity")
	}
	// A proposal wakes the shard.
	p2 := c.node(2).propose(2, "b=1")
	c.deliver()
	mustSucceed(t, p2)
	if c.node(1).r.Quiesced() || c.node(1).r.Status().Quiesced {
		t.Fatal("leader still quiesced after a proposal")
	}
}

func TestQuiesceDisabled(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{})
	c.elect(1)
	for range 20 {
		c.tick()
	}
	if c.node(1).r.Quiesced() {
		t.Fatal("quiesced with quiesceTicks 0")
	}
	if !c.node(1).r.TryQuiesce() {
		t.Fatal("TryQuiesce refused on an idle leader")
	}
}

func TestLeaderTransfer(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{})
	c.elect(1)
	// Proposals made during the transfer wait and go to the new leader.
	c.node(1).r.TransferLeader(2)
	p := c.node(1).propose(9, "t=1")
	c.deliver()
	c.checkLeader(2)
	c.deliver()
	if res := mustSucceed(t, p); string(res.Data) != "t" {
		t.Fatalf("result: %+v", res)
	}
	// A transfer asked of a follower is forwarded.
	c.node(3).r.TransferLeader(3)
	c.deliver()
	c.checkLeader(3)
	for _, id := range c.ids {
		evs := c.node(id).ev.leaderEvents()
		if evs[len(evs)-1].leader != 3 {
			t.Fatalf("node %d: events %v", id, evs)
		}
	}
}

func TestSnapshotInstalledOnLaggingFollower(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{snapEvery: 10, lag: 3})
	c.elect(1)
	l, f := c.node(1), c.node(3)
	c.drop = isolate(3)
	for k := uint64(1); l.r.Applied() < 25; k++ {
		p := l.propose(k, fmt.Sprintf("k%d=v%d", k, k))
		c.deliver()
		mustSucceed(t, p)
	}
	if first, _ := l.log.FirstIndex(); first != 18 {
		t.Fatalf("leader log first index %d, want 18 (snapshot 20, lag 3)", first)
	}
	fApplied := f.r.Applied()
	if fApplied >= 17 {
		t.Fatalf("setup: follower not behind: %d", fApplied)
	}
	c.drop = nil
	c.delivered = nil
	for range 3 {
		c.tick()
	}
	if got := countMsgs(c.delivered, raftpb.MsgSnap); got != 1 {
		t.Fatalf("MsgSnap sent: %d", got)
	}
	// The follower installed snapshot 20: its hash there is the leader's.
	if f.hashAt[20] == 0 || f.hashAt[20] != l.hashAt[20] {
		t.Fatalf("hash at 20: follower %x leader %x", f.hashAt[20], l.hashAt[20])
	}
	for idx, h := range f.hashAt {
		if lh, ok := l.hashAt[idx]; ok && idx > 0 && lh != h {
			t.Fatalf("hash at %d differs: %x vs %x", idx, h, lh)
		}
	}
	for _, i := range f.kv.appliedIndexes() {
		if i > uint64(fApplied) && i <= 20 {
			t.Fatalf("entry %d, covered by the snapshot, given to the state machine", i)
		}
	}
	st, lst := f.r.Status(), l.r.Status()
	if st.Applied != lst.Applied || st.Hash != lst.Hash || !maps.Equal(f.kv.state(), l.kv.state()) {
		t.Fatalf("follower %d/%x, leader %d/%x", st.Applied, st.Hash, lst.Applied, lst.Hash)
	}
	if f.r.lastSnap != 20 || f.r.confIdx != 20 {
		t.Fatalf("follower lastSnap %d confIdx %d", f.r.lastSnap, f.r.confIdx)
	}
	ms := f.ev.memberships()
	if len(ms) == 0 || !slices.Equal(ms[len(ms)-1].Voters, []raftpb.NodeID{1, 2, 3}) {
		t.Fatalf("MembershipChanged on install: %v", ms)
	}
	// The follower goes on, and snapshots itself from there.
	for k := uint64(100); l.r.Applied() < 32; k++ {
		p := f.propose(k, fmt.Sprintf("f%d=1", k))
		c.deliver()
		mustSucceed(t, p)
	}
	if s := f.pers.saves(); len(s) == 0 || s[len(s)-1].meta.Index != 30 {
		t.Fatalf("follower snapshots: %+v", s)
	}
	if f.r.Status().Hash != l.r.Status().Hash {
		t.Fatal("hashes diverged after the install")
	}
}

func TestSnapshotInstallFailsWithoutData(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{snapEvery: 10, lag: 3})
	c.elect(1)
	l, f := c.node(1), c.node(3)
	c.drop = isolate(3)
	for k := uint64(1); l.r.Applied() < 22; k++ {
		l.propose(k, "k=v")
		c.deliver()
	}
	fp := f.propose(500, "never=1")
	c.noSnapData = true
	c.drop = nil
	for range 3 {
		c.tick()
	}
	if err := f.r.Err(); err == nil {
		t.Fatal("installing a snapshot without data did not stop the replica")
	}
	if _, err := mustResult(t, fp); err == nil {
		t.Fatal("proposal on the failed replica succeeded")
	}
}

func TestProposalsResolvedByInstalledSnapshot(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{snapEvery: 10, lag: 3})
	c.elect(1)
	l, f := c.node(1), c.node(3)
	// The follower forwards a proposal; it is committed while the follower
	// hears nothing more, and covered by the snapshot it later installs.
	p := f.propose(77, "fw=1")
	f.settle()
	c.drop = isolate(3)
	for _, m := range f.outbox {
		if m.Type == raftpb.MsgProp {
			l.r.AddMessages(m)
		}
	}
	f.outbox = nil
	for k := uint64(1); l.r.Applied() < 22; k++ {
		l.propose(k, "k=v")
		c.deliver()
	}
	if v, _ := l.r.Lookup([]byte("fw")); string(v) != "1" {
		t.Fatal("setup: forwarded proposal not applied on the leader")
	}
	mustPending(t, p)
	c.drop = nil
	for range 3 {
		c.tick()
	}
	if f.r.lastSnap != 20 {
		t.Fatalf("follower did not install the snapshot: lastSnap %d", f.r.lastSnap)
	}
	// Its result was applied inside the snapshot: unknown to this replica.
	if _, err := mustResult(t, p); !errors.Is(err, ErrResultUnknown) {
		t.Fatalf("proposal covered by a snapshot: %v, want ErrResultUnknown", err)
	}
}

func TestUnreachableAndSnapshotReports(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{})
	c.elect(1)
	l := c.node(1)
	l.r.ReportUnreachable(2)
	l.r.ReportSnapshot(2, false)
	p := l.propose(1, "a=1")
	c.deliver()
	c.tick()
	mustSucceed(t, p)
	for _, id := range c.ids {
		if c.node(id).r.Status().Applied != l.r.Status().Applied {
			t.Fatalf("node %d behind", id)
		}
	}
}

func TestFollowerReadRetriedAfterLeaderChange(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{})
	c.elect(1)
	f := c.node(2)
	// The read index request to the old leader is lost.
	c.drop = isolate(1)
	rr := f.read()
	c.deliver()
	if len(f.r.readRounds) != 1 || isDone(rr.Done()) {
		t.Fatal("setup: read not in flight")
	}
	nl := c.newLeaderElsewhere(1)
	c.deliver()
	if !isDone(rr.Done()) || rr.Err() != nil {
		t.Fatalf("read not retried with the new leader %d: done=%v err=%v", nl, isDone(rr.Done()), rr.Err())
	}
	if len(f.r.readRounds) != 0 {
		t.Fatalf("read rounds left: %d", len(f.r.readRounds))
	}
}

func TestLeaderReadDroppedOnStepDown(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{})
	c.elect(1)
	l := c.node(1)
	c.drop = isolate(1)
	rr := l.read()
	c.deliver()
	if isDone(rr.Done()) {
		t.Fatal("read completed without a quorum")
	}
	// Check-quorum: the isolated leader steps down; its read round is
	// dropped and the read waits for the next leader.
	for range 2 * electionTicks {
		c.tick(1)
		if l.r.Status().Role != group.Leader {
			break
		}
	}
	if l.r.Status().Role == group.Leader {
		t.Fatal("isolated leader did not step down")
	}
	if isDone(rr.Done()) {
		t.Fatal("dropped read completed")
	}
	c.drop = nil
	for range 4 * electionTicks {
		c.tick()
		if isDone(rr.Done()) {
			break
		}
	}
	if !isDone(rr.Done()) || rr.Err() != nil {
		t.Fatalf("read after a new leader: done=%v err=%v", isDone(rr.Done()), rr.Err())
	}
}

// A proposal forwarded in a MsgProp that is lost resolves as
// ErrResultUnknown after ForwardTimeoutTicks, although the shard stays
// stable (simulator seed 1); one applied in time is not touched.
func TestLostForwardExpires(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{})
	c.elect(1)
	f := c.node(2)
	c.drop = func(m raftpb.Message) bool { return m.Type == raftpb.MsgProp }
	lost := f.propose(42, "lost=1")
	c.deliver()
	if _, ok := f.r.pending[42]; !ok {
		t.Fatal("setup: proposal not handed to Raft")
	}
	c.drop = nil
	ok := f.propose(43, "ok=1")
	c.deliver()
	mustSucceed(t, ok)
	timeout := f.r.cfg.ForwardTimeoutTicks
	if timeout != 3*f.r.cfg.Core.ElectionTicks {
		t.Fatalf("default ForwardTimeoutTicks = %d", timeout)
	}
	for i := 0; i < timeout-1; i++ {
		c.tick()
	}
	mustPending(t, lost)
	if !f.r.hasPending() {
		t.Fatal("a replica waiting on a forward must keep ticking")
	}
	c.tick()
	if _, err := mustResult(t, lost); !errors.Is(err, ErrResultUnknown) {
		t.Fatalf("lost forward: %v, want ErrResultUnknown", err)
	}
	if got := f.r.outstanding.Load(); got != 0 {
		t.Fatalf("outstanding = %d", got)
	}
	if len(f.r.pending) != 0 || len(f.r.forwarded) != 0 {
		t.Fatalf("pending %d forwarded %d", len(f.r.pending), len(f.r.forwarded))
	}
	if st := c.node(1).r.Status(); st.Leader != 1 {
		t.Fatalf("leader changed: %+v", st)
	}
}

// A forwarded proposal seen in the replica's log does not expire, however
// long its commit takes: the leader has it, so it commits or a newer term
// overwrites it (and failPendingUpTo decides it).
func TestAppendedForwardDoesNotExpire(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{})
	c.elect(1)
	f := c.node(2)
	// The leader appends and replicates, but hears no acknowledgement.
	c.drop = func(m raftpb.Message) bool { return m.Type == raftpb.MsgAppResp }
	p := f.propose(42, "slow=1")
	c.deliver()
	if pp := f.r.pending[42]; pp == nil || !pp.appended {
		t.Fatal("setup: forwarded proposal not seen in the follower's log")
	}
	timeout := f.r.cfg.ForwardTimeoutTicks
	for i := 0; i < 2*timeout && !isDone(p.Done()); i++ {
		c.tick()
	}
	mustPending(t, p)
	c.drop = nil
	for i := 0; i < 3 && !isDone(p.Done()); i++ {
		c.tick()
	}
	mustSucceed(t, p)
}
