package transporttest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shardd/shardd/raftpb"
	"github.com/shardd/shardd/transport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder is a Handler that records what it is given.
type recorder struct {
	mu       sync.Mutex
	calls    [][]raftpb.Message
	from     []raftpb.NodeID
	events   []string
	sinks    []*sink
	failSink error
}

func (r *recorder) HandleMessages(from raftpb.NodeID, msgs []raftpb.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, msgs)
	r.from = append(r.from, from)
}

func (r *recorder) NodeUnreachable(n raftpb.NodeID) { r.event(fmt.Sprintf("unreachable %d", n)) }
func (r *recorder) NodeReachable(n raftpb.NodeID)   { r.event(fmt.Sprintf("reachable %d", n)) }

func (r *recorder) event(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) SnapshotSink(m raftpb.Message, size int64) (transport.SnapshotSink, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failSink != nil {
		return nil, r.failSink
	}
	s := &sink{size: size}
	r.sinks = append(r.sinks, s)
	return s, nil
}

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
	return slices.Clone(r.events)
}

type sink struct {
	mu                 sync.Mutex
	size               int64
	buf                bytes.Buffer
	committed, aborted bool
	failCommit         error
}

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *sink) Commit() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failCommit != nil {
		return s.failCommit
	}
	s.committed = true
	return nil
}

func (s *sink) Abort() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.aborted = true
	return nil
}

func msg(from, to raftpb.NodeID, shard raftpb.ShardID, index raftpb.Index) raftpb.Message {
	return raftpb.Message{Type: raftpb.MsgApp, Shard: shard, From: from, To: to, Index: index,
		Entries: []raftpb.Entry{{Index: index + 1, Data: []byte{byte(index)}}}}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// startNodes returns handlers and transports for nodes 1..n.
func startNodes(net *Network, n int) ([]*recorder, []transport.Transport) {
	hs := make([]*recorder, n+1)
	ts := make([]transport.Transport, n+1)
	for i := 1; i <= n; i++ {
		hs[i] = &recorder{}
		ts[i] = net.Transport(raftpb.NodeID(i), hs[i])
	}
	return hs, ts
}

// A perfect network delivers everything, in order, one HandleMessages call
// per Send call and destination, to the right node, as copies.
func TestPerfectDelivery(t *testing.T) {
	net := New(Config{})
	defer net.Close()
	hs, ts := startNodes(net, 3)
	for i := range 100 {
		ts[1].Send([]raftpb.Message{msg(1, 2, 1, raftpb.Index(i)), msg(1, 3, 1, raftpb.Index(i)), msg(1, 2, 2, raftpb.Index(i))})
	}
	waitFor(t, "delivery", func() bool { return len(hs[2].messages()) == 200 && len(hs[3].messages()) == 100 })
	hs[2].mu.Lock()
	if len(hs[2].calls) != 100 || len(hs[2].calls[0]) != 2 {
		t.Fatalf("%d calls to node 2, first with %d messages; want 100 of 2", len(hs[2].calls), len(hs[2].calls[0]))
	}
	hs[2].mu.Unlock()
	next := map[raftpb.ShardID]raftpb.Index{}
	for _, m := range hs[2].messages() {
		if m.Index != next[m.Shard] || m.To != 2 || m.From != 1 {
			t.Fatalf("got %v, want index %d", m, next[m.Shard])
		}
		next[m.Shard]++
	}
	if st := ts[1].Stats(); st.MessagesSent != 300 || st.Dropped != 0 || st.FramesSent != 200 {
		t.Fatalf("sender stats %+v", st)
	}
	if st := ts[2].Stats(); st.MessagesReceived != 200 || st.FramesReceived != 100 {
		t.Fatalf("receiver stats %+v", st)
	}

	// The receiver's message is a copy: changing it leaves the sender's.
	orig := msg(1, 3, 9, 5)
	ts[1].Send([]raftpb.Message{orig})
	waitFor(t, "the last message", func() bool { return len(hs[3].messages()) == 101 })
	got := hs[3].messages()[100]
	got.Entries[0].Index = 999
	if orig.Entries[0].Index == 999 {
		t.Fatal("the receiver's entries alias the sender's")
	}
}

// runManual sends n messages 1->2 through a manual network with the
// given faults, advancing 1ms per message, and returns what arrived.
func runManual(seed uint64, f Faults, n int) []raftpb.Message {
	net := New(Config{Seed: seed, Faults: f, Manual: true})
	defer net.Close()
	hs, ts := startNodes(net, 2)
	for i := range n {
		ts[1].Send([]raftpb.Message{msg(1, 2, 1, raftpb.Index(i))})
		net.Advance(time.Millisecond)
	}
	net.Advance(time.Hour)
	return hs[2].messages()
}

func indexes(ms []raftpb.Message) []raftpb.Index {
	out := make([]raftpb.Index, len(ms))
	for i, m := range ms {
		out[i] = m.Index
	}
	return out
}

// A manual network replays exactly from its seed: same drops, duplicates
// and order; another seed gives another run.
func TestManualDeterministic(t *testing.T) {
	f := Faults{DropRate: 0.2, DupRate: 0.1, MinDelay: time.Millisecond, MaxDelay: 30 * time.Millisecond}
	a, b := indexes(runManual(42, f, 500)), indexes(runManual(42, f, 500))
	if !slices.Equal(a, b) {
		t.Fatal("the same seed gave two different runs")
	}
	if c := indexes(runManual(43, f, 500)); slices.Equal(a, c) {
		t.Fatal("another seed gave the same run")
	}
}

// Drop, duplicate and delay faults do what they say, in proportion.
func TestFaults(t *testing.T) {
	const n = 4000
	t.Run("drop", func(t *testing.T) {
		got := len(runManual(1, Faults{DropRate: 0.25}, n))
		if got < n*65/100 || got > n*85/100 {
			t.Fatalf("%d of %d arrived with a 25%% drop rate", got, n)
		}
	})
	t.Run("duplicate", func(t *testing.T) {
		ms := runManual(1, Faults{DupRate: 0.25}, n)
		seen := map[raftpb.Index]int{}
		for _, m := range ms {
			seen[m.Index]++
		}
		dups := len(ms) - len(seen)
		if len(seen) != n || dups < n*15/100 || dups > n*35/100 {
			t.Fatalf("%d distinct, %d duplicates of %d with a 25%% duplicate rate", len(seen), dups, n)
		}
		for i, c := range seen {
			if c > 2 {
				t.Fatalf("message %d delivered %d times", i, c)
			}
		}
	})
	t.Run("delay reorders", func(t *testing.T) {
		ms := runManual(1, Faults{MinDelay: time.Millisecond, MaxDelay: 20 * time.Millisecond}, n)
		if len(ms) != n {
			t.Fatalf("%d of %d arrived", len(ms), n)
		}
		if slices.IsSorted(indexes(ms)) {
			t.Fatal("delays between 1ms and 20ms, sent 1ms apart, never reordered")
		}
	})
	t.Run("delay bounds", func(t *testing.T) {
		net := New(Config{Manual: true, Faults: Faults{MinDelay: 5 * time.Millisecond, MaxDelay: 10 * time.Millisecond}})
		defer net.Close()
		hs, ts := startNodes(net, 2)
		ts[1].Send([]raftpb.Message{msg(1, 2, 1, 1)})
		net.Advance(4 * time.Millisecond)
		if len(hs[2].messages()) != 0 {
			t.Fatal("delivered before MinDelay")
		}
		net.Advance(6 * time.Millisecond)
		if len(hs[2].messages()) != 1 {
			t.Fatal("not delivered by MaxDelay")
		}
	})
}

// With FrameRate 1 a Send call's messages to one node arrive in one call,
// all at once, with coalescable heartbeats after the others — as the gRPC
// transport hands on a frame — however the per-message delays would fall.
// A heartbeat that cannot be coalesced keeps its place.
func TestFrames(t *testing.T) {
	net := New(Config{Manual: true, Seed: 7,
		Faults: Faults{MinDelay: time.Millisecond, MaxDelay: 20 * time.Millisecond, FrameRate: 1}})
	defer net.Close()
	hs, ts := startNodes(net, 3)
	hb := raftpb.Message{Type: raftpb.MsgHeartbeat, Shard: 1, From: 1, To: 2, Term: 3, Commit: 4}
	hbReject := raftpb.Message{Type: raftpb.MsgHeartbeatResp, Shard: 2, From: 1, To: 2, Term: 3, Reject: true}
	quiesce := raftpb.Message{Type: raftpb.MsgQuiesce, Shard: 1, From: 1, To: 2, Term: 3, Commit: 4}
	for round := 0; round < 20; round++ {
		hs[2].mu.Lock()
		hs[2].calls = nil
		hs[2].mu.Unlock()
		ts[1].Send([]raftpb.Message{hb, msg(1, 3, 9, 1), hbReject, quiesce, msg(1, 2, 5, 1)})
		net.Advance(20 * time.Millisecond)
		hs[2].mu.Lock()
		calls := slices.Clone(hs[2].calls)
		hs[2].mu.Unlock()
		if len(calls) != 1 {
			t.Fatalf("round %d: the frame arrived in %d calls", round, len(calls))
		}
		var types []raftpb.MessageType
		for _, m := range calls[0] {
			types = append(types, m.Type)
		}
		want := []raftpb.MessageType{raftpb.MsgHeartbeatResp, raftpb.MsgQuiesce, raftpb.MsgApp, raftpb.MsgHeartbeat}
		if !slices.Equal(types, want) {
			t.Fatalf("round %d: frame handed on as %v, want %v", round, types, want)
		}
	}
	if got := len(hs[3].messages()); got != 20 {
		t.Fatalf("node 3 got %d of its 20 messages", got)
	}
	// FrameRate 0: per-message delays, a heartbeat never waits for the rest.
	net2 := New(Config{Manual: true, Seed: 7, Faults: Faults{MinDelay: time.Millisecond, MaxDelay: 20 * time.Millisecond}})
	defer net2.Close()
	hs2, ts2 := startNodes(net2, 2)
	calls := 0
	for round := 0; round < 20; round++ {
		ts2[1].Send([]raftpb.Message{hb, quiesce, msg(1, 2, 5, 1)})
	}
	net2.Advance(20 * time.Millisecond)
	hs2[2].mu.Lock()
	calls = len(hs2[2].calls)
	hs2[2].mu.Unlock()
	if calls < 40 {
		t.Fatalf("without frames 60 messages arrived in %d calls", calls)
	}
}

// Cuts are one-way; Partition and Isolate cut both ways; Heal restores.
func TestCutsAndPartitions(t *testing.T) {
	net := New(Config{Manual: true})
	defer net.Close()
	hs, ts := startNodes(net, 3)
	send := func() {
		for i := 1; i <= 3; i++ {
			for j := 1; j <= 3; j++ {
				if i != j {
					ts[i].Send([]raftpb.Message{msg(raftpb.NodeID(i), raftpb.NodeID(j), 1, 1)})
				}
			}
		}
		net.Advance(0)
	}
	// got returns, per node, the senders it heard from in the last round.
	got := func() [4][]raftpb.NodeID {
		var out [4][]raftpb.NodeID
		for i := 1; i <= 3; i++ {
			hs[i].mu.Lock()
			out[i] = slices.Clone(hs[i].from)
			hs[i].from, hs[i].calls = nil, nil
			hs[i].mu.Unlock()
			slices.Sort(out[i])
		}
		return out
	}
	net.Cut(1, 2)
	send()
	if g := got(); !slices.Equal(g[2], []raftpb.NodeID{3}) || !slices.Equal(g[1], []raftpb.NodeID{2, 3}) {
		t.Fatalf("after Cut(1,2): %v", g)
	}
	net.Heal(1, 2)
	net.Partition([]raftpb.NodeID{1}, []raftpb.NodeID{2, 3})
	send()
	if g := got(); len(g[1]) != 0 || !slices.Equal(g[2], []raftpb.NodeID{3}) || !slices.Equal(g[3], []raftpb.NodeID{2}) {
		t.Fatalf("after Partition: %v", g)
	}
	net.HealAll()
	net.Isolate(3)
	send()
	if g := got(); len(g[3]) != 0 || !slices.Equal(g[1], []raftpb.NodeID{2}) {
		t.Fatalf("after Isolate(3): %v", g)
	}
	net.HealAll()
	send()
	if g := got(); len(g[1])+len(g[2])+len(g[3]) != 6 {
		t.Fatalf("after HealAll: %v", g)
	}
}

// A node that goes down is reported unreachable to the others once, within
// the bound (checked against 3x), and reachable once when it comes back;
// a one-way cut is reported only by the node that stops hearing.
func TestLiveness(t *testing.T) {
	const bound = 40 * time.Millisecond
	net := New(Config{UnreachableAfter: bound})
	defer net.Close()
	hs, ts := startNodes(net, 3)
	down := time.Now()
	net.Down(2)
	waitFor(t, "unreachable", func() bool {
		return slices.Contains(hs[1].eventList(), "unreachable 2") && slices.Contains(hs[3].eventList(), "unreachable 2")
	})
	if took := time.Since(down); took > 3*bound+50*time.Millisecond {
		t.Fatalf("unreachable reported after %v, bound %v", took, bound)
	}
	if len(hs[2].eventList()) != 0 {
		t.Fatalf("a node that is down was told %v", hs[2].eventList())
	}
	ts[1].Send([]raftpb.Message{msg(1, 2, 1, 1)})
	if st := ts[1].Stats(); st.Dropped != 1 {
		t.Fatalf("send to a down node: %+v", st)
	}
	if ps := ts[1].PeerStats(); ps[0].Node != 2 || ps[0].Reachable || !ps[1].Reachable {
		t.Fatalf("peer stats %+v", ps)
	}
	net.Up(2)
	waitFor(t, "reachable", func() bool { return slices.Contains(hs[1].eventList(), "reachable 2") })
	time.Sleep(2 * bound)
	if ev := hs[1].eventList(); !slices.Equal(ev, []string{"unreachable 2", "reachable 2"}) {
		t.Fatalf("node 1 saw %v", ev)
	}

	net.Cut(3, 1)
	waitFor(t, "unreachable over a cut", func() bool { return slices.Contains(hs[1].eventList(), "unreachable 3") })
	time.Sleep(2 * bound)
	if slices.Contains(hs[3].eventList(), "unreachable 1") {
		t.Fatal("node 3 reported 1 unreachable though it hears from it")
	}
}

// Snapshots go through the sink contract: all the data, Commit, then the
// MsgSnap; failures abort the sink and report an error.
func TestSnapshots(t *testing.T) {
	net := New(Config{})
	defer net.Close()
	hs, ts := startNodes(net, 2)
	data := bytes.Repeat([]byte("snap"), 10000)
	m := raftpb.Message{Type: raftpb.MsgSnap, Shard: 3, From: 1, To: 2, Snapshot: &raftpb.SnapshotMeta{Index: 9, Term: 2}}
	open := func() (io.ReadCloser, int64, error) {
		return io.NopCloser(bytes.NewReader(data)), int64(len(data)), nil
	}
	send := func(m raftpb.Message, open func() (io.ReadCloser, int64, error)) error {
		ch := make(chan error, 1)
		ts[1].SendSnapshot(m, open, func(err error) { ch <- err })
		return <-ch
	}
	if err := send(m, open); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the MsgSnap", func() bool { return len(hs[2].messages()) == 1 })
	s := hs[2].sinks[0]
	if !bytes.Equal(s.buf.Bytes(), data) || !s.committed || s.aborted || s.size != int64(len(data)) {
		t.Fatalf("sink: %d bytes, committed %v", s.buf.Len(), s.committed)
	}
	if got := hs[2].messages()[0]; got.Type != raftpb.MsgSnap || got.Snapshot.Index != 9 {
		t.Fatalf("delivered %v", got)
	}

	short := func() (io.ReadCloser, int64, error) {
		return io.NopCloser(bytes.NewReader(data[:10])), int64(len(data)), nil
	}
	if err := send(m, short); !errors.Is(err, transport.ErrSnapshotRejected) {
		t.Fatalf("short snapshot: %v", err)
	}
	if s := hs[2].sinks[1]; s.committed || !s.aborted {
		t.Fatal("short snapshot's sink not aborted")
	}
	hs[2].mu.Lock()
	hs[2].failSink = errors.New("no space")
	hs[2].mu.Unlock()
	if err := send(m, open); !errors.Is(err, transport.ErrSnapshotRejected) {
		t.Fatalf("refused sink: %v", err)
	}
	net.Cut(1, 2)
	if err := send(m, open); err == nil {
		t.Fatal("snapshot over a cut link succeeded")
	}
	if err := send(raftpb.Message{Type: raftpb.MsgSnap, From: 1, To: 7, Snapshot: m.Snapshot}, open); !errors.Is(err, transport.ErrUnknownNode) {
		t.Fatalf("snapshot to an unknown node: %v", err)
	}
	if st := ts[1].Stats(); st.SnapshotsSent != 1 || st.SnapshotsFailed != 4 {
		t.Fatalf("stats %+v", st)
	}
	if n := len(hs[2].messages()); n != 1 {
		t.Fatalf("%d messages delivered, only the good snapshot's expected", n)
	}
}

// Transport for a node again is a restart: the old transport is closed and
// the new one receives.
func TestRestartAndClose(t *testing.T) {
	net := New(Config{})
	hs, ts := startNodes(net, 2)
	h2 := &recorder{}
	t2 := net.Transport(2, h2)
	ts[1].Send([]raftpb.Message{msg(1, 2, 1, 1)})
	waitFor(t, "delivery to the new transport", func() bool { return len(h2.messages()) == 1 })
	if len(hs[2].messages()) != 0 {
		t.Fatal("the old transport received after its restart")
	}
	ts[2].Send([]raftpb.Message{msg(2, 1, 1, 1)})
	if st := ts[2].Stats(); st.Dropped != 1 {
		t.Fatalf("a closed transport sent: %+v", st)
	}
	t2.Send([]raftpb.Message{msg(2, 1, 1, 1)})
	waitFor(t, "delivery from the new transport", func() bool { return len(hs[1].messages()) == 1 })

	net.Close()
	var got error
	ts[1].SendSnapshot(raftpb.Message{Type: raftpb.MsgSnap, From: 1, To: 2}, nil, func(err error) { got = err })
	if got != transport.ErrClosed {
		t.Fatalf("SendSnapshot after Close: %v", got)
	}
}
