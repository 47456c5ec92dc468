package transport

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/shardd/shardd/raftpb"
)

// lenFieldSize is the encoded size of a length-delimited field of n bytes
// in a Batch: raftpb's field numbers are all below 16, so the tag is one
// byte (raftpb.proto states it as a compatibility rule).
func lenFieldSize(n int) int { return 1 + protowire.SizeVarint(uint64(n)) + n }

// flush sends everything queued.
func (p *peer) flush(cs grpc.ClientStream) error {
	msgs, hbs := p.q.take()
	if len(msgs)+len(hbs) == 0 {
		p.q.recycle(msgs, hbs)
		return nil
	}
	err := p.sendFrames(cs, msgs, hbs)
	p.q.recycle(msgs, hbs)
	return err
}

// sendFrames encodes msgs and hbs into frames of at most MaxFrameBytes and
// sends them in order. Heartbeats go first, all in the first frame when
// they fit (a tick's heartbeats to one node are one frame); messages keep
// their order. A message too large for any frame is dropped and counted.
// On a send error the unsent rest is counted as dropped.
func (p *peer) sendFrames(cs grpc.ClientStream, msgs []raftpb.Message, hbs []raftpb.Heartbeat) error {
	limit := p.t.cfg.MaxFrameBytes
	p.sizes = p.sizes[:0]
	for i := range msgs {
		p.sizes = append(p.sizes, lenFieldSize(msgs[i].Size()))
	}
	p.hbSizes = p.hbSizes[:0]
	for i := range hbs {
		p.hbSizes = append(p.hbSizes, lenFieldSize(hbs[i].Size()))
	}
	i, h := 0, 0
	for i < len(msgs) || h < len(hbs) {
		size, i0, h0 := p.hdrSize, i, h
		for h < len(hbs) && size+p.hbSizes[h] <= limit {
			size += p.hbSizes[h]
			h++
		}
		for h == len(hbs) && i < len(msgs) {
			if size+p.sizes[i] <= limit {
				size += p.sizes[i]
				i++
				continue
			}
			if i > i0 || h > h0 {
				break // the frame is full
			}
			// Alone in a frame it still does not fit: it never will.
			p.t.lg.Warn("transport: message larger than MaxFrameBytes dropped",
				"peer", p.id, "shard", msgs[i].Shard, "type", msgs[i].Type,
				"bytes", p.sizes[i], "max", limit)
			p.t.countDropped(p, 1)
			i++
			i0++
		}
		if i == i0 && h == h0 {
			break
		}
		p.batch.Messages, p.batch.Heartbeats = msgs[i0:i], hbs[h0:h]
		err := p.sendFrame(cs, size)
		p.batch.Messages, p.batch.Heartbeats = nil, nil
		if err != nil {
			p.t.countDropped(p, len(msgs)-i0+len(hbs)-h0)
			return err
		}
	}
	return nil
}

// sendFrame encodes p.batch, whose encoded size is size, into a pooled
// buffer and sends it; gRPC returns the buffer to the pool once written.
func (p *peer) sendFrame(cs grpc.ClientStream, size int) error {
	pool := p.t.pool
	bufp := pool.Get(size)
	buf := p.batch.MarshalAppend((*bufp)[:0])
	var data mem.Buffer
	if cap(buf) == cap(*bufp) {
		*bufp = buf
		data = pool.buffer(bufp)
	} else {
		// Grown past the size we computed: raftpb's Size disagrees with
		// its encoder. Send what was encoded; the receiver's bound still
		// applies.
		pool.Put(bufp)
		data = mem.SliceBuffer(buf)
	}
	n := len(buf)
	p.out.data = mem.BufferSlice{data}
	if err := cs.SendMsg(&p.out); err != nil {
		return err
	}
	nm := uint64(len(p.batch.Messages) + len(p.batch.Heartbeats))
	st := &p.t.stats
	st.framesSent.Add(1)
	st.messagesSent.Add(nm)
	st.bytesSent.Add(uint64(n))
	st.heartbeatsCoalesced.Add(uint64(len(p.batch.Heartbeats)))
	p.stats.messagesSent.Add(nm)
	p.stats.bytesSent.Add(uint64(n))
	return nil
}
