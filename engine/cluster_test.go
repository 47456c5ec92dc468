package engine

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testCluster runs nodes in this process on real Pebble stores under a
// temporary directory and real gRPC on loopback.
type testCluster struct {
	t     testing.TB
	dir   string
	addrs map[uint64]string
	nodes map[uint64]*Node
	mod   func(*Config)
	mu    sync.Mutex
}

func quietLogger() *slog.Logger {
	if os.Getenv("SHARDD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newTestCluster binds an ephemeral port for each of n nodes and opens them.
func newTestCluster(t testing.TB, n int, mod func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, dir: t.TempDir(), addrs: map[uint64]string{}, nodes: map[uint64]*Node{}, mod: mod}
	lns := map[uint64]net.Listener{}
	for id := uint64(1); id <= uint64(n); id++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[id] = ln
		c.addrs[id] = ln.Addr().String()
	}
	for id := uint64(1); id <= uint64(n); id++ {
		c.openWith(id, lns[id])
	}
	t.Cleanup(c.closeAll)
	return c
}

func (c *testCluster) config(id uint64) Config {
	cfg := Config{
		NodeID:          id,
		ClusterID:       77,
		ListenAddr:      c.addrs[id],
		Peers:           c.addrs,
		DataDir:         filepath.Join(c.dir, fmt.Sprint("node", id)),
		Logger:          quietLogger().With("n", id),
		NewStateMachine: newKV,
	}
	if c.mod != nil {
		c.mod(&cfg)
	}
	return cfg
}

func (c *testCluster) openWith(id uint64, ln net.Listener) *Node {
	c.t.Helper()
	cfg := c.config(id)
	cfg.Listener = ln
	n, err := Open(cfg)
	if err != nil {
		c.t.Fatalf("open node %d: %v", id, err)
	}
	c.mu.Lock()
	c.nodes[id] = n
	c.mu.Unlock()
	return n
}

// reopen opens node id again on its address.
func (c *testCluster) reopen(id uint64) *Node {
	c.t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", c.addrs[id]); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	return c.openWith(id, ln)
}

func (c *testCluster) node(id uint64) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

func (c *testCluster) close(id uint64) {
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

func (c *testCluster) closeAll() {
	c.mu.Lock()
	var ids []uint64
	for id := range c.nodes {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	for _, id := range ids {
		c.close(id)
	}
}

// startShards starts shards [from, to] on the given nodes, concurrently so
// that the creations share flushes.
func (c *testCluster) startShards(from, to uint64, members []uint64, on ...uint64) {
	c.t.Helper()
	if len(on) == 0 {
		on = members
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for _, id := range on {
		n := c.node(id)
		for w := uint64(0); w < 16; w++ {
			wg.Add(1)
			go func(w uint64) {
				defer wg.Done()
				for s := from + w; s <= to; s += 16 {
					if err := n.StartShard(ShardConfig{ShardID: s, Members: members}); err != nil {
						errs <- err
						return
					}
				}
			}(w)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		c.t.Fatal(err)
	}
}

// waitLeaders waits until every shard in [from, to] has a leader known to
// every node in on.
func (c *testCluster) waitLeaders(from, to uint64, d time.Duration, on ...uint64) {
	c.t.Helper()
	var missing []string
	deadline := time.Now().Add(d)
	for {
		missing = missing[:0]
		for _, id := range on {
			n := c.node(id)
			for s := from; s <= to; s++ {
				if _, _, ok := n.Leader(s); !ok {
					st, _ := n.ShardStatus(s)
					missing = append(missing, fmt.Sprintf("shard %d on node %d: %+v", s, id, st))
				}
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			if len(missing) > 5 {
				missing = missing[:5]
			}
			c.t.Fatalf("no leader after %v: %v", d, missing)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitFor(t testing.TB, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// proposeRetry proposes until it succeeds (retrying transient errors).
func proposeRetry(t testing.TB, ctx context.Context, n *Node, s uint64, cmd string) Result {
	t.Helper()
	for {
		res, err := n.Propose(ctx, s, []byte(cmd))
		if err == nil {
			return res
		}
		if ctx.Err() != nil {
			t.Fatalf("shard %d propose %q on node %d: %v", s, cmd, n.id, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
