package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Closing the node that leads most shards: new leaders are elected, writes
// go on, and the node reopens and catches up with nothing acknowledged
// lost.
func TestCloseLeaderNodeAndReopen(t *testing.T) {
	const shards = 60
	c := newTestCluster(t, 3, nil)
	c.startShards(1, shards, []uint64{1, 2, 3})
	c.waitLeaders(1, shards, 30*time.Second, 1, 2, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for s := uint64(1); s <= shards; s++ {
		proposeRetry(t, ctx, c.node(1), s, "a=1")
	}
	count := map[uint64]int{}
	for s := uint64(1); s <= shards; s++ {
		l, _, _ := c.node(1).Leader(s)
		count[l]++
	}
	var most uint64
	for id, n := range count {
		if most == 0 || n > count[most] {
			most = id
		}
	}
	t.Logf("leaders per node %v; closing node %d", count, most)
	c.close(most)
	var alive []uint64
	for id := uint64(1); id <= 3; id++ {
		if id != most {
			alive = append(alive, id)
		}
	}
	for s := uint64(1); s <= shards; s++ {
		proposeRetry(t, ctx, c.node(alive[s%2]), s, "b=2")
	}
	for s := uint64(1); s <= shards; s++ {
		if l, _, _ := c.node(alive[0]).Leader(s); l == most {
			t.Fatalf("shard %d still led by the closed node", s)
		}
	}
	n := c.reopen(most)
	for s := uint64(1); s <= shards; s++ {
		v, err := n.Read(ctx, s, []byte("b"))
		if err != nil || string(v) != "2" {
			t.Fatalf("shard %d on the reopened node: %q %v", s, v, err)
		}
	}
}

// A 4th node is added to a shard as a learner, promoted, then an old voter
// is removed; then leadership moves to the new voter, and a joint change
// swaps two members at once.
func TestMembershipLearnerPromoteRemoveTransfer(t *testing.T) {
	c := newTestCluster(t, 4, nil)
	c.startShards(5, 5, []uint64{1, 2, 3})
	c.waitLeaders(5, 5, 20*time.Second, 1, 2, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; i < 20; i++ {
		proposeRetry(t, ctx, c.node(uint64(1+i%3)), 5, fmt.Sprintf("k%d=%d", i, i))
	}
	n4 := c.node(4)
	if err := n4.StartShard(ShardConfig{ShardID: 5, Join: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.node(1).AddLearner(ctx, 5, 4); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the learner catches up", func() bool {
		st, _ := n4.ShardStatus(5)
		s1, _ := c.node(1).ShardStatus(5)
		return st.Applied >= s1.Applied && st.Applied > 20 && st.Hash == s1.Hash
	})
	if st, _ := n4.ShardStatus(5); len(st.Learners) != 1 || st.Learners[0] != 4 {
		t.Fatalf("node 4 not a learner: %+v", st)
	}
	if err := c.node(2).AddReplica(ctx, 5, 4); err != nil {
		t.Fatal(err)
	}
	if err := c.node(3).RemoveReplica(ctx, 5, 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "voters {2,3,4}", func() bool {
		st, _ := n4.ShardStatus(5)
		return fmt.Sprint(st.Voters) == "[2 3 4]" && len(st.Learners) == 0
	})
	proposeRetry(t, ctx, n4, 5, "after=yes")
	if v, err := c.node(2).Read(ctx, 5, []byte("after")); err != nil || string(v) != "yes" {
		t.Fatalf("read after the change: %q %v", v, err)
	}
	if err := c.node(2).TransferLeader(ctx, 5, 4); err != nil {
		t.Fatal(err)
	}
	// Repeating the same target is a no-op (S20); a joint change swaps two
	// voters at once.
	if err := n4.ChangeMembership(ctx, 5, []uint64{2, 3, 4}, nil); err != nil {
		t.Fatal(err)
	}
	if err := n4.ChangeMembership(ctx, 5, []uint64{1, 2, 4}, []uint64{3}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the joint change completes", func() bool {
		st, _ := c.node(2).ShardStatus(5)
		return !st.Joint && fmt.Sprint(st.Voters) == "[1 2 4]" && fmt.Sprint(st.Learners) == "[3]"
	})
}

// A node down while 20000 entries are written and compacted catches up by
// snapshot when it comes back.
func TestSnapshotCatchUp(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	const s = 9
	for _, id := range []uint64{1, 2, 3} {
		if err := c.node(id).StartShard(ShardConfig{ShardID: s, Members: []uint64{1, 2, 3},
			SnapshotEvery: 2000, CompactionLag: 500}); err != nil {
			t.Fatal(err)
		}
	}
	c.waitLeaders(s, s, 20*time.Second, 1, 2, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	proposeRetry(t, ctx, c.node(1), s, "first=1")
	c.close(3)
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > 20000 {
					return
				}
				proposeRetry(t, ctx, c.node(uint64(1+i%2)), s, fmt.Sprintf("k%d=%d", i%100, i))
			}
		}()
	}
	wg.Wait()
	s1, _ := c.node(1).ShardStatus(s)
	n3 := c.reopen(3)
	waitFor(t, 60*time.Second, "node 3 catches up", func() bool {
		st, err := n3.ShardStatus(s)
		return err == nil && st.Applied >= s1.Applied
	})
	st3, _ := n3.ShardStatus(s)
	l1 := c.node(1).m.snapshotsSent.Get() + c.node(2).m.snapshotsSent.Get()
	if l1 == 0 {
		t.Fatalf("caught up without a snapshot: %+v", st3)
	}
	v, err := n3.Read(ctx, s, []byte("k0"))
	if err != nil || v == nil {
		t.Fatalf("read on the caught-up node: %q %v", v, err)
	}
}

// S43: proposals pending at a leader that loses its quorum all get an
// outcome in bounded time once the shard heals: success, or
// ErrResultUnknown, never a hang and never a failure that is later applied.
func TestPendingProposalsResolveOnLeaderLoss(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.startShards(1, 1, []uint64{1, 2, 3})
	c.waitLeaders(1, 1, 20*time.Second, 1, 2, 3)
	lead, _, _ := c.node(1).Leader(1)
	f1, f2 := nextID(lead), nextID(nextID(lead))
	c.close(f1)
	c.close(f2) // the leader can no longer commit anything
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var ok, unknown atomic.Int64
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := c.node(lead).Propose(ctx, 1, []byte(fmt.Sprintf("p%d=%d", i, i)))
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrResultUnknown):
				unknown.Add(1)
			default:
				t.Errorf("proposal %d: %v", i, err)
			}
		}(i)
	}
	time.Sleep(100 * time.Millisecond)
	c.reopen(f1)
	c.reopen(f2)
	wg.Wait()
	t.Logf("ok=%d unknown=%d", ok.Load(), unknown.Load())
	if ctx.Err() != nil {
		t.Fatal("proposals hung until the deadline")
	}
	if ok.Load()+unknown.Load() != 200 {
		t.Fatalf("outcomes: ok=%d unknown=%d", ok.Load(), unknown.Load())
	}
}

func nextID(id uint64) uint64 { return id%3 + 1 }

// S49: when the proposal queue is full Propose says ErrBusy; once the load
// stops, proposals are accepted again.
func TestBackpressureReleases(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.MaxPendingProposals = 8 })
	c.startShards(1, 1, []uint64{1, 2, 3})
	c.waitLeaders(1, 1, 20*time.Second, 1, 2, 3)
	c.close(2)
	c.close(3) // no quorum: nothing commits, the queue fills
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var busy atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, err := c.node(1).Propose(ctx, 1, []byte(fmt.Sprintf("x%d=1", i))); errors.Is(err, ErrBusy) {
				busy.Add(1)
			}
		}(i)
	}
	wg.Wait()
	if busy.Load() == 0 {
		t.Fatal("no proposal was refused with ErrBusy")
	}
	c.reopen(2)
	c.reopen(3)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	proposeRetry(t, ctx2, c.node(1), 1, "after=1")
	if _, err := c.node(1).Propose(ctx2, 1, []byte("again=1")); err != nil {
		t.Fatalf("still refused after the load stopped: %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	_, err := Open(Config{ElectionTicks: 1, StepWorkers: -1, Peers: map[uint64]string{2: ""}})
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("invalid config: %v", err)
	}
	for _, field := range []string{"NodeID", "DataDir", "ListenAddr", "Peers", "ElectionTicks", "StepWorkers"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("%s not named in %v", field, err)
		}
	}
	c := newTestCluster(t, 1, nil)
	n := c.node(1)
	for name, sc := range map[string]ShardConfig{
		"ShardID":   {Members: []uint64{1}},
		"Members":   {ShardID: 3},
		"node id 0": {ShardID: 3, Members: []uint64{0}},
	} {
		if err := n.StartShard(sc); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := n.StartShard(ShardConfig{ShardID: 3, Members: []uint64{1}}); err != nil {
		t.Fatal(err)
	}
	if err := n.StartShard(ShardConfig{ShardID: 3, Members: []uint64{1}}); !errors.Is(err, ErrShardExists) {
		t.Fatalf("starting twice: %v", err)
	}
	if _, err := n.Propose(context.Background(), 99, nil); !errors.Is(err, ErrShardNotFound) {
		t.Fatalf("unknown shard: %v", err)
	}
	// The data dir belongs to cluster 77 node 1.
	cfg := c.config(1)
	c.close(1)
	cfg.NodeID = 2
	cfg.Listener = nil
	cfg.Peers = map[uint64]string{2: cfg.ListenAddr}
	if _, err := Open(cfg); !errors.Is(err, ErrIdentity) {
		t.Fatalf("opening another node's data dir: %v", err)
	}
	if _, err := n.Propose(context.Background(), 3, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("propose after close: %v", err)
	}
}
