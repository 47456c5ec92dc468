package tracker

import "github.com/shardd/shardd/raftpb"

// Inflights is the window of MsgApp a leader has sent to one follower and
// not yet seen acknowledged. It is a ring of (last index, bytes) per message,
// bounded both in messages and in bytes, so that a slow follower cannot make
// the leader buffer or send without limit.
type Inflights struct {
	start int // ring position of the oldest message
	count int
	bytes uint64

	maxCount int
	maxBytes uint64 // 0 = no byte bound

	buf []inflight // grows on demand up to maxCount
}

type inflight struct {
	index raftpb.Index
	bytes uint64
}

// NewInflights returns a window of at most maxCount messages and maxBytes
// bytes (0 = unbounded bytes).
func NewInflights(maxCount int, maxBytes uint64) *Inflights {
	return &Inflights{maxCount: maxCount, maxBytes: maxBytes}
}

// Clone returns an independent copy.
func (in *Inflights) Clone() *Inflights {
	c := *in
	c.buf = append([]inflight(nil), in.buf...)
	return &c
}

// Add records a message whose last entry is index and that carries bytes.
// REQUIRES: !Full(), and index not below any index already recorded.
func (in *Inflights) Add(index raftpb.Index, bytes uint64) {
	if in.Full() {
		panic("tracker: Add on a full inflight window")
	}
	next := in.start + in.count
	size := len(in.buf)
	if next >= in.maxCount {
		next -= in.maxCount
	}
	if next >= size {
		in.grow()
	}
	in.buf[next] = inflight{index: index, bytes: bytes}
	in.count++
	in.bytes += bytes
}

// grow doubles the ring (up to maxCount): most followers never need the
// whole window, so it is not allocated up front.
func (in *Inflights) grow() {
	n := len(in.buf) * 2
	if n == 0 {
		n = 1
	} else if n > in.maxCount {
		n = in.maxCount
	}
	nb := make([]inflight, n)
	copy(nb, in.buf)
	in.buf = nb
}

// FreeLE drops every message whose last index is at most to: they are
// acknowledged.
func (in *Inflights) FreeLE(to raftpb.Index) {
	if in.count == 0 || to < in.buf[in.start].index {
		return
	}
	idx := in.start
	var i int
	var freed uint64
	for i = 0; i < in.count; i++ {
		if to < in.buf[idx].index {
			break
		}
		freed += in.buf[idx].bytes
		idx++
		if idx >= in.maxCount {
			idx -= in.maxCount
		}
	}
	in.count -= i
	in.bytes -= freed
	in.start = idx
	if in.count == 0 {
		// Restart at the ring's beginning so a short window stays short.
		in.start = 0
	}
}

// FreeFirstOne drops the oldest message. A leader uses it when a follower
// that answers heartbeats has a full window: messages of the window were
// probably lost, and letting one more through makes the follower reveal
// the gap (by rejecting it) instead of the flow staying stuck.
func (in *Inflights) FreeFirstOne() {
	if in.count == 0 {
		return
	}
	in.FreeLE(in.buf[in.start].index)
}

// Full reports whether no further message may be sent.
func (in *Inflights) Full() bool {
	return in.count == in.maxCount || (in.maxBytes != 0 && in.bytes >= in.maxBytes)
}

// Count is the number of unacknowledged messages.
func (in *Inflights) Count() int { return in.count }

// Bytes is the payload of the unacknowledged messages.
func (in *Inflights) Bytes() uint64 { return in.bytes }

// Reset empties the window.
func (in *Inflights) Reset() {
	in.count, in.start, in.bytes = 0, 0, 0
}
