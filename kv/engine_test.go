package kv

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/shardd/shardd/engine"
	"github.com/shardd/shardd/raftpb"
	"github.com/shardd/shardd/shard"
	"github.com/shardd/shardd/transport"
	"github.com/shardd/shardd/transport/transporttest"
)

// kvCluster runs engine nodes in this process over the in-memory network,
// each with its own in-memory file system (kept across restarts) and its
// own Store, wired as cmd/shardd wires them.
type kvCluster struct {
	t   *testing.T
	net *transporttest.Network

	mu     sync.Mutex
	fs     map[uint64]vfs.FS
	stores map[uint64]*Store
	nodes  map[uint64]*engine.Node
	// recovered counts RecoverFromSnapshot calls per node; opened is the
	// largest lastApplied an Open returned per node.
	recovered map[uint64]*atomic.Int64
	opened    map[uint64]*atomic.Uint64
}

// observed wraps the kv state machine to see what the engine calls.
type observed struct {
	shard.OnDiskStateMachine
	recovered *atomic.Int64
	opened    *atomic.Uint64
}

func (o *observed) Open() (uint64, error) {
	last, err := o.OnDiskStateMachine.Open()
	for {
		cur := o.opened.Load()
		if last <= cur || o.opened.CompareAndSwap(cur, last) {
			break
		}
	}
	return last, err
}

func (o *observed) RecoverFromSnapshot(r io.Reader) error {
	o.recovered.Add(1)
	return o.OnDiskStateMachine.RecoverFromSnapshot(r)
}

func newKVCluster(t *testing.T, n int) *kvCluster {
	c := &kvCluster{
		t: t, net: transporttest.New(transporttest.Config{}),
		fs: map[uint64]vfs.FS{}, stores: map[uint64]*Store{}, nodes: map[uint64]*engine.Node{},
		recovered: map[uint64]*atomic.Int64{}, opened: map[uint64]*atomic.Uint64{},
	}
	t.Cleanup(c.net.Close) // runs last
	for id := uint64(1); id <= uint64(n); id++ {
		c.fs[id] = vfs.NewMem()
		c.stores[id] = NewStore()
		c.recovered[id] = new(atomic.Int64)
		c.opened[id] = new(atomic.Uint64)
		c.open(id)
	}
	t.Cleanup(c.closeAll)
	return c
}

func (c *kvCluster) open(id uint64) *engine.Node {
	c.t.Helper()
	st := c.stores[id]
	n, err := engine.Open(engine.Config{
		NodeID:    id,
		ClusterID: 7,
		DataDir:   "/data",
		FS:        c.fs[id],
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		NewTransport: func(h transport.Handler) (transport.Transport, error) {
			return c.net.Transport(raftpb.NodeID(id), h), nil
		},
		OnStoreOpen: st.OnStoreOpen,
		NewStateMachine: func(shardID, nodeID uint64) engine.StateMachine {
			return &observed{OnDiskStateMachine: st.NewStateMachine(shardID, nodeID).(shard.OnDiskStateMachine),
				recovered: c.recovered[id], opened: c.opened[id]}
		},
	})
	if err != nil {
		c.t.Fatalf("open node %d: %v", id, err)
	}
	c.mu.Lock()
	c.nodes[id] = n
	c.mu.Unlock()
	return n
}

func (c *kvCluster) node(id uint64) *engine.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

func (c *kvCluster) close(id uint64) {
	c.mu.Lock()
	n := c.nodes[id]
	delete(c.nodes, id)
	c.mu.Unlock()
	if n != nil {
		if err := n.Close(); err != nil {
			c.t.Errorf("close node %d: %v", id, err)
		}
	}
}

func (c *kvCluster) closeAll() {
	for id := range c.stores {
		c.close(id)
	}
}

func (c *kvCluster) startShard(sc engine.ShardConfig, on ...uint64) {
	c.t.Helper()
	for _, id := range on {
		if err := c.node(id).StartShard(sc); err != nil {
			c.t.Fatal(err)
		}
	}
}

func (c *kvCluster) waitLeader(shardID uint64, on ...uint64) {
	c.t.Helper()
	waitUntil(c.t, 20*time.Second, fmt.Sprintf("a leader of shard %d", shardID), func() bool {
		for _, id := range on {
			if _, _, ok := c.node(id).Leader(shardID); !ok {
				return false
			}
		}
		return true
	})
}

func waitUntil(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// propose proposes cmd until the engine takes it (transient errors while
// leadership settles are retried; the cluster is healthy, so no outcome is
// unknown).
func propose(t *testing.T, ctx context.Context, n *engine.Node, shardID uint64, cmd []byte) engine.Result {
	t.Helper()
	for {
		res, err := n.Propose(ctx, shardID, cmd)
		if err == nil {
			return res
		}
		if ctx.Err() != nil {
			t.Fatalf("shard %d: propose: %v", shardID, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// read is a linearizable Get.
func read(t *testing.T, ctx context.Context, n *engine.Node, shardID uint64, key string) (string, bool) {
	t.Helper()
	for {
		out, err := n.Read(ctx, shardID, EncodeGet([]byte(key)))
		if err == nil {
			v, found, err := DecodeLookup(out)
			if err != nil {
				t.Fatal(err)
			}
			return string(v), found
		}
		if ctx.Err() != nil {
			t.Fatalf("shard %d: read %q: %v", shardID, key, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Put, Get (linearizable and stale), CAS and Delete through the engine on
// three nodes; then every node restarts (the on-disk path: Open's
// lastApplied, replay after it) and reads everything back.
func TestEngineKVAndRestart(t *testing.T) {
	c := newKVCluster(t, 3)
	members := []uint64{1, 2, 3}
	const shards = 3
	for s := uint64(1); s <= shards; s++ {
		c.startShard(engine.ShardConfig{ShardID: s, Members: members}, members...)
	}
	for s := uint64(1); s <= shards; s++ {
		c.waitLeader(s, members...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	for s := uint64(1); s <= shards; s++ {
		w, r := c.node(1+s%3), c.node(1+(s+1)%3)
		if res := propose(t, ctx, w, s, EncodePut([]byte("k"), []byte("v1"))); !Applied(res) || res.Index == 0 {
			t.Fatalf("put: %+v", res)
		}
		if v, found := read(t, ctx, r, s, "k"); !found || v != "v1" {
			t.Fatalf("shard %d: read %q %v", s, v, found)
		}
		// The proposer's replica applied it before Propose returned.
		out, err := w.StaleRead(s, EncodeGet([]byte("k")))
		if v, found, derr := DecodeLookup(out); err != nil || derr != nil || !found || string(v) != "v1" {
			t.Fatalf("stale read %q %v %v", v, err, derr)
		}
		if res := propose(t, ctx, r, s, EncodeCAS([]byte("k"), []byte("v1"), true, []byte("v2"))); !Applied(res) {
			t.Fatalf("cas: %+v", res)
		}
		res := propose(t, ctx, w, s, EncodeCAS([]byte("k"), []byte("v1"), true, []byte("v3")))
		if cur, found, err := CASCurrent(res); Applied(res) || err != nil || !found || string(cur) != "v2" {
			t.Fatalf("failed cas: %+v %q %v", res, cur, err)
		}
		if res := propose(t, ctx, w, s, EncodeCAS([]byte("fresh"), nil, false, []byte("f"))); !Applied(res) {
			t.Fatalf("cas on an absent key: %+v", res)
		}
		if res := propose(t, ctx, w, s, []byte("not a command")); res.Value != CodeInvalid {
			t.Fatalf("invalid command: %+v", res)
		}
		propose(t, ctx, r, s, EncodePut([]byte("gone"), []byte("x")))
		propose(t, ctx, w, s, EncodeDelete([]byte("gone")))
		if _, found := read(t, ctx, r, s, "gone"); found {
			t.Fatal("deleted key found")
		}
		propose(t, ctx, r, s, EncodePut([]byte("empty"), nil))
		if v, found := read(t, ctx, w, s, "empty"); !found || v != "" {
			t.Fatalf("empty value: %q %v", v, found)
		}
	}
	// More keys, from every node at once.
	var wg sync.WaitGroup
	for id := uint64(1); id <= 3; id++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				key := fmt.Sprintf("n%d-%d", id, i)
				if _, err := c.node(id).Propose(ctx, 1+uint64(i)%shards, EncodePut([]byte(key), []byte(key))); err != nil {
					t.Errorf("put %s: %v", key, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	want := func(s uint64) map[string]string {
		m := map[string]string{"k": "v2", "fresh": "f", "empty": ""}
		for id := 1; id <= 3; id++ {
			for i := 0; i < 20; i++ {
				if 1+uint64(i)%shards == s {
					m[fmt.Sprintf("n%d-%d", id, i)] = fmt.Sprintf("n%d-%d", id, i)
				}
			}
		}
		return m
	}
	c.closeAll()
	for id := uint64(1); id <= 3; id++ {
		c.opened[id].Store(0)
		c.open(id)
	}
	for id := uint64(1); id <= 3; id++ {
		if last := c.opened[id].Load(); last == 0 {
			t.Errorf("node %d: the state machines reopened empty", id)
		}
	}
	for s := uint64(1); s <= shards; s++ {
		c.waitLeader(s, members...)
		for id := uint64(1); id <= 3; id++ {
			for k, v := range want(s) {
				if got, found := read(t, ctx, c.node(id), s, k); !found || got != v {
					t.Fatalf("after restart, shard %d node %d: %q = %q %v, want %q", s, id, k, got, found, v)
				}
			}
			if _, found := read(t, ctx, c.node(id), s, "gone"); found {
				t.Fatal("deleted key back after restart")
			}
		}
		if res := propose(t, ctx, c.node(2), s, EncodeCAS([]byte("k"), []byte("v2"), true, []byte("v4"))); !Applied(res) {
			t.Fatalf("cas after restart: %+v", res)
		}
	}
}

// A node down while many writes are applied and the log is compacted
// catches up by installing a snapshot of the kv state, and then holds
// exactly the leader's data.
func TestEngineSnapshotCatchUp(t *testing.T) {
	c := newKVCluster(t, 3)
	const s = 9
	members := []uint64{1, 2, 3}
	c.startShard(engine.ShardConfig{ShardID: s, Members: members, SnapshotEvery: 40, CompactionLag: 10}, members...)
	c.waitLeader(s, members...)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	propose(t, ctx, c.node(1), s, EncodePut([]byte("first"), []byte("1")))
	c.close(3)

	const writes = 400
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > writes {
					return
				}
				n := c.node(uint64(1 + i%2))
				key := []byte(fmt.Sprintf("k%02d", i%50))
				var cmd []byte
				switch i % 5 {
				case 0:
					cmd = EncodeDelete(key)
				case 1:
					cmd = EncodeCAS(key, nil, false, []byte("cas"))
				default:
					cmd = EncodePut(key, []byte(fmt.Sprint(i)))
				}
				for {
					if _, err := n.Propose(ctx, s, cmd); err == nil || ctx.Err() != nil {
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatal(ctx.Err())
	}
	st1, err := c.node(1).ShardStatus(s)
	if err != nil {
		t.Fatal(err)
	}
	n3 := c.open(3)
	waitUntil(t, 30*time.Second, "node 3 catches up", func() bool {
		st, err := n3.ShardStatus(s)
		return err == nil && st.Applied >= st1.Applied
	})
	if c.recovered[3].Load() == 0 {
		t.Fatal("node 3 caught up without installing a snapshot")
	}
	if v, found := read(t, ctx, n3, s, "first"); !found || v != "1" {
		t.Fatalf("first = %q %v", v, found)
	}
	// Quiet now: every replica reaches the same applied index; then the
	// kv ranges of the three stores are identical.
	waitUntil(t, 20*time.Second, "replicas at the same index", func() bool {
		var applied [3]uint64
		for i, id := range members {
			st, err := c.node(id).ShardStatus(s)
			if err != nil {
				return false
			}
			applied[i] = st.Applied
		}
		return applied[0] == applied[1] && applied[1] == applied[2]
	})
	want := dump(t, c.stores[1].db, s)
	if len(want) < 10 {
		t.Fatalf("leader holds only %d keys", len(want))
	}
	for _, id := range []uint64{2, 3} {
		if err := sameMaps(want, dump(t, c.stores[id].db, s)); err != nil {
			t.Fatalf("node %d differs from node 1: %v", id, err)
		}
	}
}
