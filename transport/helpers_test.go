package transport

import (
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shardd/shardd/raftpb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testClusterID is the ClusterID of test transports.
const testClusterID = 7

// recorder is a Handler that records everything it is given.
type recorder struct {
	mu      sync.Mutex
	calls   [][]raftpb.Message // one element per HandleMessages call
	from    []raftpb.NodeID
	count   int
	events  []string // "unreachable 2", "reachable 2", in order
	eventAt []time.Time
	sinks   []*testSink

	// newSink, when set, makes the sink for SnapshotSink; set it with
	// setNewSink.
	newSink func(m raftpb.Message, size int64) (*testSink, error)
}

func (r *recorder) setNewSink(f func(m raftpb.Message, size int64) (*testSink, error)) {
	r.mu.Lock()
	r.newSink = f
	r.mu.Unlock()
}

func (r *recorder) HandleMessages(from raftpb.NodeID, msgs []raftpb.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, msgs)
	r.from = append(r.from, from)
	r.count += len(msgs)
}

func (r *recorder) NodeUnreachable(n raftpb.NodeID) { r.event(fmt.Sprintf("unreachable %d", n)) }
func (r *recorder) NodeReachable(n raftpb.NodeID)   { r.event(fmt.Sprintf("reachable %d", n)) }

func (r *recorder) event(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	r.eventAt = append(r.eventAt, time.Now())
}

func (r *recorder) SnapshotSink(m raftpb.Message, size int64) (SnapshotSink, error) {
	r.mu.Lock()
	newSink := r.newSink
	r.mu.Unlock()
	var s *testSink
	if newSink != nil {
		var err error
		if s, err = newSink(m, size); err != nil {
			return nil, err
		}
	} else {
		s = &testSink{}
	}
	r.mu.Lock()
	r.sinks = append(r.sinks, s)
	r.mu.Unlock()
	return s, nil
}

// received returns how many messages arrived.
func (r *recorder) received() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

// messages returns every message received, in arrival order.
func (r *recorder) messages() []raftpb.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []raftpb.Message
	for _, c := range r.calls {
		out = append(out, c...)
	}
	return out
}

func (r *recorder) eventList() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

func (r *recorder) sinkList() []*testSink {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*testSink(nil), r.sinks...)
}

// testSink checksums what it is given instead of keeping it.
type testSink struct {
	mu        sync.Mutex
	n         int64
	crc       uint32
	committed bool
	aborted   bool
	failWrite error
	failCommt error
	onWrite   func(total int64)
}

func (s *testSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	if s.failWrite != nil {
		s.mu.Unlock()
		return 0, s.failWrite
	}
	s.n += int64(len(p))
	s.crc = crc32.Update(s.crc, castagnoli, p)
	n, hook := s.n, s.onWrite
	s.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	return len(p), nil
}

func (s *testSink) Commit() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failCommt != nil {
		return s.failCommt
	}
	s.committed = true
	return nil
}

func (s *testSink) Abort() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.aborted = true
	return nil
}

func (s *testSink) state() (n int64, crc uint32, committed, aborted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n, s.crc, s.committed, s.aborted
}

// testNode is one transport of a test cluster.
type testNode struct {
	id   raftpb.NodeID
	addr string
	h    *recorder
	tr   *GRPC
}

// cluster is n transports on 127.0.0.1 with ephemeral ports, closed
// when the test ends.
type cluster struct {
	t      testing.TB
	peers  map[raftpb.NodeID]string
	nodes  map[raftpb.NodeID]*testNode
	config func(*Config)
}

// newCluster starts nodes 1..n; config, if set, adjusts every node's
// Config (applied after the test defaults).
func newCluster(t testing.TB, n int, config func(*Config)) *cluster {
	t.Helper()
	c := &cluster{t: t, peers: map[raftpb.NodeID]string{}, nodes: map[raftpb.NodeID]*testNode{}, config: config}
	lis := map[raftpb.NodeID]net.Listener{}
	for i := 1; i <= n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		id := raftpb.NodeID(i)
		lis[id] = l
		c.peers[id] = l.Addr().String()
	}
	for i := 1; i <= n; i++ {
		id := raftpb.NodeID(i)
		c.start(id, lis[id])
	}
	t.Cleanup(c.close)
	return c
}

// testConfig is a node's configuration with fast liveness and backoff.
func (c *cluster) testConfig(id raftpb.NodeID, lis net.Listener, h Handler) Config {
	cfg := Config{
		NodeID:         id,
		ClusterID:      testClusterID,
		Listener:       lis,
		Peers:          c.peers,
		Handler:        h,
		Logger:         slog.New(slog.DiscardHandler),
		PingInterval:   20 * time.Millisecond,
		MissedPings:    10,
		DialBackoffMin: 5 * time.Millisecond,
		DialBackoffMax: 50 * time.Millisecond,
		JitterSeed:     uint64(id),
	}
	if c.config != nil {
		c.config(&cfg)
	}
	return cfg
}

func (c *cluster) start(id raftpb.NodeID, lis net.Listener) *testNode {
	c.t.Helper()
	h := &recorder{}
	tr, err := New(c.testConfig(id, lis, h))
	if err != nil {
		c.t.Fatal(err)
	}
	n := &testNode{id: id, addr: c.peers[id], h: h, tr: tr}
	c.nodes[id] = n
	return n
}

// stop closes node id's transport.
func (c *cluster) stop(id raftpb.NodeID) {
	if n := c.nodes[id]; n != nil && n.tr != nil {
		n.tr.Close()
		n.tr = nil
	}
}

// restart starts node id again on its address, with a fresh handler.
func (c *cluster) restart(id raftpb.NodeID) *testNode {
	c.t.Helper()
	return c.start(id, listenAgain(c.t, c.peers[id]))
}

// listenAgain listens on addr, which was just released.
func listenAgain(t testing.TB, addr string) net.Listener {
	t.Helper()
	var err error
	// Retry briefly in case the kernel lags behind the close.
	for range 50 {
		var lis net.Listener
		if lis, err = net.Listen("tcp", addr); err == nil {
			return lis
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal(err)
	return nil
}

func (c *cluster) close() {
	for id := range c.nodes {
		c.stop(id)
	}
}

func (c *cluster) node(id raftpb.NodeID) *testNode { return c.nodes[id] }

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// connect waits until from has an established stream to every other node
// and every node answered a ping, so later sends are not dropped while
// dialling.
func (c *cluster) connect(from raftpb.NodeID) {
	c.t.Helper()
	tr := c.node(from).tr
	waitFor(c.t, 10*time.Second, "streams established", func() bool {
		for _, p := range tr.peerList {
			if p.connections.Load() == 0 || p.unreachable.Load() {
				return false
			}
		}
		return true
	})
}

// app is a MsgApp from -> to of shard with one entry at index.
func app(from, to raftpb.NodeID, shard raftpb.ShardID, index raftpb.Index, data []byte) raftpb.Message {
	return raftpb.Message{
		Type: raftpb.MsgApp, Shard: shard, From: from, To: to, Term: 3, LogTerm: 3,
		Index: index - 1, Commit: index - 1,
		Entries: []raftpb.Entry{{Term: 3, Index: index, Data: data}},
	}
}

// heartbeat is a coalescable MsgHeartbeat.
func heartbeat(from, to raftpb.NodeID, shard raftpb.ShardID) raftpb.Message {
	return raftpb.Message{Type: raftpb.MsgHeartbeat, Shard: shard, From: from, To: to, Term: 5, Commit: raftpb.Index(shard), Context: 9}
}

var errInjected = errors.New("injected")
