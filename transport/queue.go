package transport

import (
	"sync"

	"github.com/shardd/shardd/raftpb"
)

// msgOverhead approximates the in-memory cost of a queued message beyond
// its entries, and hbOverhead that of a queued heartbeat record, so that
// the byte bound counts small messages too.
const (
	msgOverhead = 128
	hbOverhead  = 48
)

// A drained queue buffer with a capacity above keepCap that was less than
// a quarter full shrinkAfter times in a row is released instead of kept,
// so that one burst does not pin its memory for the life of the peer while
// a steady load keeps its buffers (releasing at the first light drain made
// the queue regrow by appending, over and over, under uneven load).
const (
	keepCap     = 4096
	shrinkAfter = 64
)

// sendQueue is what waits to be sent to one peer: messages in order, and
// heartbeats already in their compact form (they travel as the frame's
// coalesced list). Send appends under mu; the peer's send loop swaps the
// whole queue out under mu and encodes it outside (double-buffered, so
// steady state allocates nothing).
//
// Invariant: len(msgs)+len(hbs) <= maxMsgs and bytes <= maxBytes, except
// that a single message larger than maxBytes is admitted into an empty
// queue (it is dropped later if it cannot fit a frame).
type sendQueue struct {
	mu        sync.Mutex
	msgs      []raftpb.Message
	hbs       []raftpb.Heartbeat
	bytes     int
	spareMsgs []raftpb.Message
	spareHbs  []raftpb.Heartbeat

	maxMsgs, maxBytes int

	// Owned by the send loop (the only caller of recycle).
	lightMsgs, lightHbs int // consecutive light drains of a large buffer
}

// add queues the messages of msgs addressed to node to. Messages that
// break a bound are dropped; so are messages the receiver would refuse,
// which would otherwise poison the whole frame: those not from self, of
// an invalid type, or MsgSnap (snapshots go through SendSnapshot).
func (q *sendQueue) add(msgs []raftpb.Message, self, to raftpb.NodeID) (queued, dropped, invalid int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := range msgs {
		m := &msgs[i]
		if m.To != to {
			continue
		}
		if m.From != self || !m.Type.Valid() || m.Type == raftpb.MsgSnap {
			invalid++
			continue
		}
		if len(q.msgs)+len(q.hbs) >= q.maxMsgs {
			dropped++
			continue
		}
		if raftpb.CanCoalesce(m) {
			if q.bytes+hbOverhead > q.maxBytes {
				dropped++
				continue
			}
			q.hbs = append(q.hbs, raftpb.Coalesce(m))
			q.bytes += hbOverhead
		} else {
			sz := msgOverhead + int(raftpb.EntriesSize(m.Entries))
			if q.bytes+sz > q.maxBytes && q.bytes > 0 {
				dropped++
				continue
			}
			q.msgs = append(q.msgs, *m)
			q.bytes += sz
		}
		queued++
	}
	return queued, dropped, invalid
}

// take swaps everything queued out; the caller gives the slices back with
// recycle once encoded.
func (q *sendQueue) take() ([]raftpb.Message, []raftpb.Heartbeat) {
	q.mu.Lock()
	defer q.mu.Unlock()
	msgs, hbs := q.msgs, q.hbs
	q.msgs, q.hbs, q.bytes = q.spareMsgs[:0], q.spareHbs[:0], 0
	q.spareMsgs, q.spareHbs = nil, nil
	return msgs, hbs
}

// recycle returns slices obtained from take as the next spare buffers.
func (q *sendQueue) recycle(msgs []raftpb.Message, hbs []raftpb.Heartbeat) {
	clear(msgs) // release entry data for the garbage collector
	if shrink(len(msgs), cap(msgs), &q.lightMsgs) {
		msgs = nil
	}
	if shrink(len(hbs), cap(hbs), &q.lightHbs) {
		hbs = nil
	}
	q.mu.Lock()
	q.spareMsgs, q.spareHbs = msgs[:0], hbs[:0]
	q.mu.Unlock()
}

// shrink counts light drains of a large buffer and says when to release
// it.
func shrink(n, c int, light *int) bool {
	if c <= keepCap || n >= c/4 {
		*light = 0
		return false
	}
	*light++
	if *light < shrinkAfter {
		return false
	}
	*light = 0
	return true
}

// clear drops everything queued and returns how many messages that was.
func (q *sendQueue) clear() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.msgs) + len(q.hbs)
	clear(q.msgs)
	q.msgs, q.hbs, q.bytes = q.msgs[:0], q.hbs[:0], 0
	return n
}
