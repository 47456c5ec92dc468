package grouptest

import (
	"math/rand/v2"
	"slices"

	"github.com/shardd/shardd/raftpb"
)

// envelope is a message in flight, with the snapshot data a MsgSnap
// carries out of band.
type envelope struct {
	m    raftpb.Message
	at   int64
	seq  uint64
	snap *SnapshotData
}

// Network is a deterministic simulated network: per-message delay (which
// also reorders), drop, duplication and directed link cuts, all drawn from
// the cluster's seeded source.
type Network struct {
	// DropRate and DupRate are probabilities per message.
	DropRate float64
	DupRate  float64
	// MinDelay and MaxDelay bound the delivery delay in steps; messages
	// with different delays overtake each other.
	MinDelay, MaxDelay int64
	// Filter, when set, drops every message it returns false for.
	Filter func(m *raftpb.Message) bool

	queue []envelope
	seq   uint64
	cut   map[[2]raftpb.NodeID]bool
	rand  *rand.Rand

	// Sent and Dropped count messages, for tests of traffic.
	Sent, Dropped int

	// onDrop is told of every message lost (the cluster reports failed
	// snapshot transfers through it, as a transport would).
	onDrop func(m *raftpb.Message)
}

func (n *Network) drop(m *raftpb.Message) {
	n.Dropped++
	if n.onDrop != nil {
		n.onDrop(m)
	}
}

func newNetwork(r *rand.Rand) *Network {
	return &Network{rand: r, cut: map[[2]raftpb.NodeID]bool{}}
}

// Cut blocks messages from -> to (one way) until Heal.
func (n *Network) Cut(from, to raftpb.NodeID) { n.cut[[2]raftpb.NodeID{from, to}] = true }

// Restore unblocks from -> to.
func (n *Network) Restore(from, to raftpb.NodeID) { delete(n.cut, [2]raftpb.NodeID{from, to}) }

// Heal removes every cut.
func (n *Network) Heal() { clear(n.cut) }

// Blocked reports whether from -> to is cut.
func (n *Network) Blocked(from, to raftpb.NodeID) bool { return n.cut[[2]raftpb.NodeID{from, to}] }

// Isolate cuts id from every node in ids, both ways.
func (n *Network) Isolate(id raftpb.NodeID, ids []raftpb.NodeID) {
	for _, o := range ids {
		if o != id {
			n.Cut(id, o)
			n.Cut(o, id)
		}
	}
}

// Partition cuts every link between the two groups, both ways.
func (n *Network) Partition(a, b []raftpb.NodeID) {
	for _, x := range a {
		for _, y := range b {
			n.Cut(x, y)
			n.Cut(y, x)
		}
	}
}

func (n *Network) send(now int64, m raftpb.Message, snap *SnapshotData) {
	n.Sent++
	if n.Filter != nil && !n.Filter(&m) {
		n.drop(&m)
		return
	}
	if n.DropRate > 0 && n.rand.Float64() < n.DropRate {
		n.drop(&m)
		return
	}
	copies := 1
	if n.DupRate > 0 && n.rand.Float64() < n.DupRate {
		copies = 2
	}
	for range copies {
		d := n.MinDelay
		if n.MaxDelay > n.MinDelay {
			d += n.rand.Int64N(n.MaxDelay - n.MinDelay + 1)
		}
		n.seq++
		n.queue = append(n.queue, envelope{m: m, at: now + d, seq: n.seq, snap: snap})
	}
}

// due removes and returns the messages due at or before now, in delivery
// order (time, then send order). Messages on a cut link are dropped at
// delivery time.
func (n *Network) due(now int64) []envelope {
	if len(n.queue) == 0 {
		return nil
	}
	slices.SortFunc(n.queue, func(a, b envelope) int {
		if a.at != b.at {
			if a.at < b.at {
				return -1
			}
			return 1
		}
		if a.seq < b.seq {
			return -1
		}
		return 1
	})
	k := 0
	for k < len(n.queue) && n.queue[k].at <= now {
		k++
	}
	out := slices.Clone(n.queue[:k])
	n.queue = append(n.queue[:0], n.queue[k:]...)
	kept := out[:0]
	for _, e := range out {
		if n.Blocked(e.m.From, e.m.To) {
			n.drop(&e.m)
			continue
		}
		kept = append(kept, e)
	}
	return kept
}

// Pending is the number of messages in flight.
func (n *Network) Pending() int { return len(n.queue) }

// Take removes and returns every in-flight message for which keep returns
// true, without delivering it (scenario tests hold messages back this way).
func (n *Network) Take(match func(m *raftpb.Message) bool) []raftpb.Message {
	var out []raftpb.Message
	kept := n.queue[:0]
	for _, e := range n.queue {
		if match(&e.m) {
			out = append(out, e.m)
			continue
		}
		kept = append(kept, e)
	}
	n.queue = kept
	return out
}
