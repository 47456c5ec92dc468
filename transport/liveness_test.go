package transport

import (
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shardd/shardd/raftpb"
)

// eventTime returns when e was first reported, or the zero time.
func (r *recorder) eventTime(e string) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i := slices.Index(r.events, e); i >= 0 {
		return r.eventAt[i]
	}
	return time.Time{}
}

// A peer that stops is reported unreachable once, within the configured
// bound (checked against 3x the bound); while it is, Send drops for it;
// when it returns it is reported reachable once and messages flow again.
func TestUnreachableAndBack(t *testing.T) {
	c := newCluster(t, 2, nil)
	c.connect(1)
	c.connect(2)
	n1 := c.node(1)
	bound := n1.tr.cfg.unreachableAfter()

	stopped := time.Now()
	c.stop(2)
	waitFor(t, 10*bound, "unreachable", func() bool { return !n1.h.eventTime("unreachable 2").IsZero() })
	took := n1.h.eventTime("unreachable 2").Sub(stopped)
	if took > 3*bound || took < bound/2 {
		t.Fatalf("unreachable reported %v after the peer stopped; bound %v", took, bound)
	}
	if ps := n1.tr.PeerStats(); ps[0].Reachable {
		t.Fatalf("peer stats still say reachable: %+v", ps)
	}
	before := n1.tr.Stats().Dropped
	n1.tr.Send([]raftpb.Message{app(1, 2, 1, 1, nil), app(1, 2, 2, 1, nil)})
	if d := n1.tr.Stats().Dropped - before; d != 2 {
		t.Fatalf("Send to an unreachable peer dropped %d of 2", d)
	}

	n2 := c.restart(2)
	waitFor(t, 10*time.Second, "reachable", func() bool { return !n1.h.eventTime("reachable 2").IsZero() })
	waitFor(t, 10*time.Second, "messages after the peer returned", func() bool {
		n1.tr.Send([]raftpb.Message{app(1, 2, 1, 2, nil)})
		time.Sleep(5 * time.Millisecond)
		return n2.h.received() > 0
	})
	if ev := n1.h.eventList(); !slices.Equal(ev, []string{"unreachable 2", "reachable 2"}) {
		t.Fatalf("events %v, want exactly one unreachable then one reachable", ev)
	}
	if ps := n1.tr.PeerStats(); !ps[0].Reachable {
		t.Fatalf("peer stats say unreachable: %+v", ps)
	}
}

// A peer that accepts TCP connections but never answers (a stopped
// process) is reported unreachable within the bound of the grace period
// given at start.
func TestUnreachableSilentPeer(t *testing.T) {
	hole := newBlackHole(t)
	c := newCluster(t, 2, nil)
	c.stop(2)
	// Start node 1 anew, with node 2's address pointing at the black hole.
	c.stop(1)
	c.peers = map[raftpb.NodeID]string{1: c.peers[1], 2: hole.addr()}
	start := time.Now()
	n1 := c.restart(1)
	bound := n1.tr.cfg.unreachableAfter()
	waitFor(t, 10*bound, "unreachable", func() bool { return !n1.h.eventTime("unreachable 2").IsZero() })
	if took := n1.h.eventTime("unreachable 2").Sub(start); took > 3*bound {
		t.Fatalf("unreachable reported after %v; bound %v", took, bound)
	}
	if hole.accepted() == 0 {
		t.Fatal("the transport never dialled the black hole")
	}
}

// A peer restarted while messages flow is redialled, and messages reach
// the new process.
func TestReconnectAfterRestart(t *testing.T) {
	c := newCluster(t, 2, nil)
	c.connect(1)
	n1 := c.node(1)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() { // the test's sender: keeps the stream busy
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			n1.tr.Send([]raftpb.Message{app(1, 2, 1, raftpb.Index(i), []byte("payload"))})
			time.Sleep(100 * time.Microsecond)
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()

	old := c.node(2)
	waitFor(t, 10*time.Second, "traffic before the restart", func() bool { return old.h.received() > 100 })
	c.stop(2)
	n2 := c.restart(2)
	waitFor(t, 10*time.Second, "traffic after the restart", func() bool { return n2.h.received() > 100 })
	if conns := n1.tr.peers[2].connections.Load(); conns < 2 {
		t.Fatalf("%d streams established to the restarted peer, want a new one", conns)
	}
}

// blackHole accepts TCP connections and never answers.
type blackHole struct {
	lis   net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newBlackHole(t *testing.T) *blackHole {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &blackHole{lis: lis}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, conn)
			h.mu.Unlock()
		}
	}()
	t.Cleanup(h.close)
	return h
}

func (h *blackHole) addr() string { return h.lis.Addr().String() }

func (h *blackHole) accepted() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

func (h *blackHole) close() {
	h.lis.Close()
	h.wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		c.Close()
	}
}

// Idle peers stay reachable: with nothing to send, pings keep each stream
// checked (without them the peers would be reported unreachable after the
// bound). Pings are not message frames.
func TestIdlePingsKeepPeersReachable(t *testing.T) {
	c := newCluster(t, 2, nil)
	c.connect(1)
	c.connect(2)
	n1 := c.node(1)
	bound := n1.tr.cfg.unreachableAfter()
	pings := n1.tr.peers[2].pingsSent.Load()
	time.Sleep(4 * bound)
	if ev := n1.h.eventList(); len(ev) != 0 {
		t.Fatalf("idle peers reported %v", ev)
	}
	if got := n1.tr.peers[2].pingsSent.Load() - pings; got < 2 {
		t.Fatalf("%d pings in %v of idleness with a %v ping interval", got, 4*bound, n1.tr.cfg.PingInterval)
	}
	if st := n1.tr.Stats(); st.FramesSent != 0 || st.MessagesSent != 0 {
		t.Fatalf("pings counted as message frames: %+v", st)
	}
	if ps := n1.tr.PeerStats(); !ps[0].Reachable {
		t.Fatalf("peer stats %+v", ps)
	}
}

// The monitor's verdict: silence beyond the bound makes a peer unreachable
// unless the check itself ran late (this process stalled, so the silence
// may be ours); a late check still declares a peer that was heard from
// reachable.
func TestLivenessVerdict(t *testing.T) {
	lv := liveness{period: 50 * time.Millisecond, ping: 100 * time.Millisecond, bound: time.Second}
	for _, tc := range []struct {
		silent    time.Duration
		was, late bool
		want      bool
	}{
		{silent: 900 * time.Millisecond, want: false},
		{silent: 1100 * time.Millisecond, want: true},
		{silent: 1100 * time.Millisecond, late: true, want: false},
		{silent: 1100 * time.Millisecond, was: true, late: true, want: true},
		{silent: 10 * time.Millisecond, was: true, late: true, want: false},
		{silent: 10 * time.Millisecond, was: true, want: false},
	} {
		if got := lv.unreachable(tc.silent, tc.was, tc.late); got != tc.want {
			t.Errorf("unreachable(silent %v, was %v, late %v) = %v, want %v", tc.silent, tc.was, tc.late, got, tc.want)
		}
	}
	if lv.late(int64(140 * time.Millisecond)) {
		t.Error("a check 140ms after the last (due at 50ms, ping 100ms) is not late")
	}
	if !lv.late(int64(160 * time.Millisecond)) {
		t.Error("a check 160ms after the last is late")
	}
}
