// Package transporttest is an in-memory implementation of
// transport.Transport for engine tests and the simulator: a Network of
// nodes, each with its own Transport, that delivers messages with
// injectable per-link faults (drop, duplicate, delay with reordering),
// directed link cuts, nodes going down, node-level liveness reports and
// snapshots through the same SnapshotSink contract as the gRPC transport.
//
// It runs in one of two modes. By default the Network owns goroutines that
// deliver messages when their delay has passed in real time: one per node
// (so a node's handler sees one delivery at a time, as it does one frame
// at a time per peer stream on the real transport), one for snapshots and
// one for liveness. With Config.Manual there is no goroutine at all: time
// is virtual and advances only when the caller calls Advance, which
// delivers everything due, in order, on the caller's goroutine. Fault
// draws come from a source seeded by Config.Seed in the order Send is
// called, so a manual network driven by one goroutine replays exactly.
package transporttest

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/shardd/shardd/raftpb"
	"github.com/shardd/shardd/transport"
)

// Faults are what a directed link does to the messages it carries.
type Faults struct {
	// DropRate is the probability that a message (or a snapshot transfer)
	// is lost.
	DropRate float64
	// DupRate is the probability that a message is delivered twice (each
	// copy with its own delay).
	DupRate float64
	// MinDelay and MaxDelay bound each message's delay, drawn uniformly;
	// messages with different delays overtake each other, which is how
	// the network reorders.
	MinDelay, MaxDelay time.Duration
	// FrameRate is the probability that the messages of one Send call to
	// one node travel as one frame, as the gRPC transport sends them: one
	// delay for all, one HandleMessages call, and the coalescable
	// heartbeats (raftpb.CanCoalesce) handed on after the frame's other
	// messages. That is how a message sent after a heartbeat can overtake
	// it on a perfect link.
	FrameRate float64
}

// Config configures a Network.
type Config struct {
	// Seed seeds every random draw (drops, duplicates, delays). The
	// default value is 1.
	Seed uint64
	// Faults apply to every link without its own (SetFaults). The default
	// value is a perfect link.
	Faults Faults
	// UnreachableAfter is how long a node must be down, closed or cut off
	// (its link to the observer cut) before the observer's handler is told
	// NodeUnreachable; NodeReachable follows as soon as it is back. The
	// default value is 50ms.
	UnreachableAfter time.Duration
	// MaxPending bounds the messages waiting for delivery to one node;
	// beyond it Send drops and counts, as the real transport's queue does.
	// The default value is 65536.
	MaxPending int
	// Manual selects virtual time: nothing is delivered until Advance.
	Manual bool
}

// link is a directed link between two nodes.
type link struct{ from, to raftpb.NodeID }

// Network is a set of in-memory transports and the faults between them.
// Its methods are safe for concurrent use.
type Network struct {
	cfg   Config
	epoch time.Time

	// mu guards everything below and every node's inbox and state.
	mu      sync.Mutex
	rnd     *rand.Rand
	virtual time.Duration // Manual mode's clock
	seq     uint64        // orders envelopes with equal delivery times
	nodes   map[raftpb.NodeID]*memTransport
	order   []raftpb.NodeID // node ids in registration order, for fair iteration
	faults  map[link]Faults
	cut     map[link]bool
	down    map[raftpb.NodeID]bool
	snaps   []snapJob
	closed  bool

	stop     chan struct{}
	snapWake chan struct{}
	wg       sync.WaitGroup
}

// New returns a Network. Close it to stop its goroutines.
func New(cfg Config) *Network {
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	if cfg.UnreachableAfter == 0 {
		cfg.UnreachableAfter = 50 * time.Millisecond
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = 65536
	}
	n := &Network{
		cfg:      cfg,
		epoch:    time.Now(),
		rnd:      rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		nodes:    map[raftpb.NodeID]*memTransport{},
		faults:   map[link]Faults{},
		cut:      map[link]bool{},
		down:     map[raftpb.NodeID]bool{},
		stop:     make(chan struct{}),
		snapWake: make(chan struct{}, 1),
	}
	if !cfg.Manual {
		n.wg.Add(2)
		go n.runSnapshots()
		go n.runLiveness()
	}
	return n
}

// nowLocked is the network's clock: real time since New, or the virtual
// time of a manual network.
// REQUIRES: n.mu held (for the virtual clock).
func (n *Network) nowLocked() time.Duration {
	if n.cfg.Manual {
		return n.virtual
	}
	return time.Since(n.epoch)
}

// Transport returns a new transport for node id whose arrivals go to h.
// A node that already has a transport is restarted: the old transport is
// closed first (what was in flight to it is lost), as when a process
// crashes and comes back.
func (n *Network) Transport(id raftpb.NodeID, h transport.Handler) transport.Transport {
	n.mu.Lock()
	old := n.nodes[id]
	n.mu.Unlock()
	if old != nil {
		old.Close()
	}
	t := newMemTransport(n, id, h)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		t.closed = true
		return t
	}
	if old == nil {
		n.order = append(n.order, id)
	}
	n.nodes[id] = t
	if !n.cfg.Manual {
		n.wg.Add(1)
		go t.run()
	}
	return t
}

// SetFaults sets the faults of the link from -> to.
func (n *Network) SetFaults(from, to raftpb.NodeID, f Faults) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.faults[link{from, to}] = f
}

// SetDefaultFaults sets the faults of every link without its own.
func (n *Network) SetDefaultFaults(f Faults) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cfg.Faults = f
}

// faultsLocked returns the faults of a link.
// REQUIRES: n.mu held.
func (n *Network) faultsLocked(l link) Faults {
	if f, ok := n.faults[l]; ok {
		return f
	}
	return n.cfg.Faults
}

// Cut blocks the link from -> to (one way) until Heal.
func (n *Network) Cut(from, to raftpb.NodeID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut[link{from, to}] = true
}

// Heal unblocks the link from -> to.
func (n *Network) Heal(from, to raftpb.NodeID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.cut, link{from, to})
}

// HealAll removes every cut.
func (n *Network) HealAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.cut)
}

// Partition cuts every link between the groups a and b, both ways.
func (n *Network) Partition(a, b []raftpb.NodeID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			n.cut[link{x, y}] = true
			n.cut[link{y, x}] = true
		}
	}
}

// Isolate cuts node id off from every other node, both ways.
func (n *Network) Isolate(id raftpb.NodeID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, o := range n.order {
		if o != id {
			n.cut[link{id, o}] = true
			n.cut[link{o, id}] = true
		}
	}
}

// Down takes node id off the network, as a stopped process: nothing it
// sends or is sent arrives (what was in flight to it is lost), its
// handler is not called, and other nodes are told it is unreachable after
// UnreachableAfter.
func (n *Network) Down(id raftpb.NodeID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.down[id] = true
	if t := n.nodes[id]; t != nil {
		t.inbox = t.inbox[:0]
	}
}

// Up brings node id back.
func (n *Network) Up(id raftpb.NodeID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.down, id)
}

// blockedLocked reports whether a message from -> to cannot arrive now.
// REQUIRES: n.mu held.
func (n *Network) blockedLocked(from, to raftpb.NodeID) bool {
	t := n.nodes[to]
	return t == nil || t.closed || n.down[from] || n.down[to] || n.cut[link{from, to}]
}

// delayLocked draws a delay for link f.
// REQUIRES: n.mu held.
func (n *Network) delayLocked(f Faults) time.Duration {
	if f.MaxDelay <= f.MinDelay {
		return f.MinDelay
	}
	return f.MinDelay + time.Duration(n.rnd.Int64N(int64(f.MaxDelay-f.MinDelay)+1))
}

// Advance moves a manual network's clock forward by d and delivers, on
// the caller's goroutine, every message whose time has come (in delivery
// time order), then the snapshots sent so far, then liveness changes.
// Messages sent without delay are delivered by the next Advance, even
// Advance(0). It panics on a network that is not manual: there, time is
// real.
func (n *Network) Advance(d time.Duration) {
	if !n.cfg.Manual {
		panic("transporttest: Advance on a network that is not Manual")
	}
	n.mu.Lock()
	n.virtual += d
	n.mu.Unlock()
	for {
		t, batch := n.nextDue()
		if t == nil {
			break
		}
		t.deliver(batch)
	}
	for {
		n.mu.Lock()
		if len(n.snaps) == 0 {
			n.mu.Unlock()
			break
		}
		job := n.snaps[0]
		n.snaps = n.snaps[1:]
		n.mu.Unlock()
		n.transfer(job)
	}
	n.checkLiveness()
}

// nextDue pops the earliest group of due envelopes over all nodes.
func (n *Network) nextDue() (*memTransport, []envelope) {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.nowLocked()
	var best *memTransport
	for _, id := range n.order {
		t := n.nodes[id]
		if len(t.inbox) == 0 || t.inbox[0].at > now {
			continue
		}
		if best == nil || t.inbox[0].less(&best.inbox[0]) {
			best = t
		}
	}
	if best == nil {
		return nil, nil
	}
	return best, best.popDueLocked(now, nil)
}

// Close closes every transport and stops the network's goroutines.
// Snapshots not yet transferred end with transport.ErrClosed.
func (n *Network) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	nodes := make([]*memTransport, 0, len(n.nodes))
	for _, id := range n.order {
		nodes = append(nodes, n.nodes[id])
	}
	snaps := n.snaps
	n.snaps = nil
	n.mu.Unlock()
	for _, t := range nodes {
		t.Close()
	}
	close(n.stop)
	n.wg.Wait()
	for _, j := range snaps {
		j.done(transport.ErrClosed)
	}
}
