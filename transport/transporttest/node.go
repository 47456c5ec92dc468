package transporttest

import (
	"cmp"
	"container/heap"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"github.com/shardd/shardd/raftpb"
	"github.com/shardd/shardd/transport"
)

// envelope is a message on its way, with when it arrives.
type envelope struct {
	at   time.Duration
	seq  uint64
	from raftpb.NodeID
	m    raftpb.Message
	// framed: it travels in a frame of its Send call (Faults.FrameRate).
	framed bool
}

func (e *envelope) less(o *envelope) bool {
	if e.at != o.at {
		return e.at < o.at
	}
	return e.seq < o.seq
}

// inbox is a min-heap of envelopes by (at, seq).
type inbox []envelope

func (h inbox) Len() int           { return len(h) }
func (h inbox) Less(i, j int) bool { return h[i].less(&h[j]) }
func (h inbox) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *inbox) Push(x any)        { *h = append(*h, x.(envelope)) }
func (h *inbox) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = envelope{}
	*h = old[:len(old)-1]
	return e
}

// counters are a transport's counters.
type counters struct {
	messagesSent, messagesReceived atomic.Uint64
	framesSent, framesReceived     atomic.Uint64
	heartbeatsCoalesced            atomic.Uint64
	dropped, rejected              atomic.Uint64
	snapshotsSent, snapshotsRecv   atomic.Uint64
	snapshotsFailed                atomic.Uint64
}

// peerCounters are the counters of one peer.
type peerCounters struct {
	sent, received, dropped atomic.Uint64
}

// reach is what one node last reported about another.
type reach struct {
	unreachable bool
	silentSince time.Duration // when the other became silent; -1 when it is not
}

// memTransport is one node's transport on a Network.
type memTransport struct {
	net  *Network
	id   raftpb.NodeID
	h    transport.Handler
	wake chan struct{}
	stop chan struct{}
	done chan struct{} // closed when run returns

	// Guarded by net.mu.
	inbox  inbox
	events []livenessEvent // liveness reports for run to make
	closed bool
	peers  map[raftpb.NodeID]*peerCounters
	reach  map[raftpb.NodeID]*reach

	stats counters
}

var _ transport.Transport = (*memTransport)(nil)

func newMemTransport(n *Network, id raftpb.NodeID, h transport.Handler) *memTransport {
	return &memTransport{
		net:   n,
		id:    id,
		h:     h,
		wake:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
		peers: map[raftpb.NodeID]*peerCounters{},
		reach: map[raftpb.NodeID]*reach{},
	}
}

// peerLocked returns the counters of peer id.
// REQUIRES: net.mu held.
func (t *memTransport) peerLocked(id raftpb.NodeID) *peerCounters {
	p := t.peers[id]
	if p == nil {
		p = &peerCounters{}
		t.peers[id] = p
	}
	return p
}

// Send implements transport.Transport: each message is dropped, delayed
// and possibly duplicated as its link's faults say. Messages of one call
// to one node that draw the same delay arrive in one HandleMessages call.
// Dropped counts every message that will not arrive (unknown or closed
// node, a node down, a cut link, a random drop, a full inbox).
func (t *memTransport) Send(msgs []raftpb.Message) {
	n := t.net
	var wake []*memTransport
	n.mu.Lock()
	if t.closed {
		n.mu.Unlock()
		t.stats.dropped.Add(uint64(len(msgs)))
		return
	}
	now := n.nowLocked()
	// The frame of this call to each node: whether there is one (drawn at
	// the node's first message) and its delay.
	type frame struct {
		on    bool
		delay time.Duration
	}
	var frames map[raftpb.NodeID]frame
	for i := range msgs {
		m := msgs[i]
		pc := t.peerLocked(m.To)
		if m.From != t.id || m.Type == raftpb.MsgSnap {
			// The real transport refuses these at Send too.
			t.stats.dropped.Add(1)
			pc.dropped.Add(1)
			continue
		}
		t.stats.messagesSent.Add(1)
		pc.sent.Add(1)
		if raftpb.CanCoalesce(&m) {
			t.stats.heartbeatsCoalesced.Add(1)
		}
		f := n.faultsLocked(link{t.id, m.To})
		if n.blockedLocked(t.id, m.To) || (f.DropRate > 0 && n.rnd.Float64() < f.DropRate) {
			t.stats.dropped.Add(1)
			pc.dropped.Add(1)
			continue
		}
		copies := 1
		if f.DupRate > 0 && n.rnd.Float64() < f.DupRate {
			copies = 2
		}
		dst := n.nodes[m.To]
		fr, drawn := frames[m.To]
		if !drawn && f.FrameRate > 0 {
			fr = frame{on: n.rnd.Float64() < f.FrameRate, delay: n.delayLocked(f)}
			if frames == nil {
				frames = map[raftpb.NodeID]frame{}
			}
			frames[m.To] = fr
		}
		for c := range copies {
			if len(dst.inbox) >= n.cfg.MaxPending {
				t.stats.dropped.Add(1)
				pc.dropped.Add(1)
				continue
			}
			n.seq++
			e := envelope{at: now + n.delayLocked(f), seq: n.seq, from: t.id, m: clone(m)}
			if fr.on && c == 0 {
				// A duplicate travels on its own.
				e.at, e.framed = now+fr.delay, true
			}
			heap.Push(&dst.inbox, e)
		}
		if !slices.Contains(wake, dst) {
			wake = append(wake, dst)
		}
	}
	n.mu.Unlock()
	t.stats.framesSent.Add(uint64(len(wake)))
	for _, d := range wake {
		d.signal()
	}
}

// clone copies what a receiver could change without the sender seeing it
// (the real transport gives the receiver a decoded copy). Entry data is
// shared: neither side may change it.
func clone(m raftpb.Message) raftpb.Message {
	m.Entries = slices.Clone(m.Entries)
	if m.Snapshot != nil {
		s := *m.Snapshot
		s.ConfState = m.Snapshot.ConfState.Clone()
		m.Snapshot = &s
	}
	return m
}

func (t *memTransport) signal() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// popDueLocked pops the next group of due envelopes: consecutive in
// delivery order, from one sender, with one delivery time.
// REQUIRES: net.mu held.
func (t *memTransport) popDueLocked(now time.Duration, buf []envelope) []envelope {
	if len(t.inbox) == 0 || t.inbox[0].at > now {
		return buf
	}
	first := heap.Pop(&t.inbox).(envelope)
	buf = append(buf, first)
	for len(t.inbox) > 0 && t.inbox[0].at == first.at && t.inbox[0].from == first.from {
		buf = append(buf, heap.Pop(&t.inbox).(envelope))
	}
	return buf
}

// deliver hands a group of envelopes to the handler, unless the node went
// down or closed meanwhile.
func (t *memTransport) deliver(batch []envelope) {
	n := t.net
	n.mu.Lock()
	if t.closed || n.down[t.id] {
		n.mu.Unlock()
		return
	}
	pc := t.peerLocked(batch[0].from)
	n.mu.Unlock()
	msgs := make([]raftpb.Message, 0, len(batch))
	for i := range batch {
		if !batch[i].framed || !raftpb.CanCoalesce(&batch[i].m) {
			msgs = append(msgs, batch[i].m)
		}
	}
	// A frame's coalesced heartbeats are expanded after its other
	// messages, as the gRPC transport's receiver does.
	for i := range batch {
		if batch[i].framed && raftpb.CanCoalesce(&batch[i].m) {
			msgs = append(msgs, batch[i].m)
		}
	}
	t.stats.framesReceived.Add(1)
	t.stats.messagesReceived.Add(uint64(len(msgs)))
	pc.received.Add(uint64(len(msgs)))
	t.h.HandleMessages(batch[0].from, msgs)
}

// run delivers the node's messages as they fall due, and its liveness
// reports (real-time mode). Every handler call but SnapshotSink comes from
// here, so Close, which waits for run, ends them.
func (t *memTransport) run() {
	defer t.net.wg.Done()
	defer close(t.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var batch []envelope
	var events []livenessEvent
	for {
		n := t.net
		n.mu.Lock()
		now := n.nowLocked()
		events = append(events[:0], t.events...)
		t.events = t.events[:0]
		batch = t.popDueLocked(now, batch[:0])
		wait := time.Duration(-1)
		if len(batch) == 0 && len(t.inbox) > 0 {
			wait = t.inbox[0].at - now
		}
		n.mu.Unlock()
		for _, e := range events {
			e.report()
		}
		if len(batch) > 0 {
			t.deliver(batch)
			clear(batch)
			continue
		}
		if len(events) > 0 {
			continue
		}
		if wait >= 0 {
			timer.Reset(wait)
		}
		select {
		case <-t.stop:
			return
		case <-t.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// SendSnapshot implements transport.Transport: the snapshot is read from
// open and written to the receiver's sink in one go, unless the link
// drops it (done gets an error, as when a real transfer fails).
func (t *memTransport) SendSnapshot(m raftpb.Message, open func() (io.ReadCloser, int64, error), done func(error)) {
	n := t.net
	n.mu.Lock()
	if t.closed || n.closed {
		n.mu.Unlock()
		done(transport.ErrClosed)
		return
	}
	n.snaps = append(n.snaps, snapJob{from: t, m: m, open: open, done: done})
	n.mu.Unlock()
	select {
	case n.snapWake <- struct{}{}:
	default:
	}
}

// Stats implements transport.Transport. Byte counters stay zero: nothing
// is encoded.
func (t *memTransport) Stats() transport.Stats {
	s := &t.stats
	return transport.Stats{
		MessagesSent:        s.messagesSent.Load(),
		MessagesReceived:    s.messagesReceived.Load(),
		FramesSent:          s.framesSent.Load(),
		FramesReceived:      s.framesReceived.Load(),
		HeartbeatsCoalesced: s.heartbeatsCoalesced.Load(),
		Dropped:             s.dropped.Load(),
		Rejected:            s.rejected.Load(),
		SnapshotsSent:       s.snapshotsSent.Load(),
		SnapshotsReceived:   s.snapshotsRecv.Load(),
		SnapshotsFailed:     s.snapshotsFailed.Load(),
	}
}

// PeerStats implements transport.Transport: every other node of the
// network, by id.
func (t *memTransport) PeerStats() []transport.PeerStats {
	n := t.net
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []transport.PeerStats
	for _, id := range n.order {
		if id == t.id {
			continue
		}
		pc := t.peerLocked(id)
		r := t.reach[id]
		out = append(out, transport.PeerStats{
			Node:             id,
			MessagesSent:     pc.sent.Load(),
			MessagesReceived: pc.received.Load(),
			Dropped:          pc.dropped.Load(),
			Reachable:        r == nil || !r.unreachable,
		})
	}
	slices.SortFunc(out, func(a, b transport.PeerStats) int { return cmp.Compare(a.Node, b.Node) })
	return out
}

// Close implements transport.Transport: what is in flight to the node is
// lost and its handler is not called after Close returns (except by a
// snapshot transfer already writing to one of its sinks).
func (t *memTransport) Close() error {
	n := t.net
	n.mu.Lock()
	if t.closed {
		n.mu.Unlock()
		return nil
	}
	t.closed = true
	t.inbox = nil
	started := n.nodes[t.id] == t && !n.cfg.Manual
	n.mu.Unlock()
	close(t.stop)
	if started {
		<-t.done
	}
	return nil
}
