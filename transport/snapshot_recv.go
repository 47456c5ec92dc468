package transport

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardd/shardd/raftpb"
)

// serveSnapshot receives one snapshot: checks the stream's identity, opens
// the handler's sink for the announced MsgSnap, writes each chunk to it as
// it arrives (one chunk in memory at a time), verifies size and checksum,
// commits the sink and hands the MsgSnap to HandleMessages. Any failure
// aborts the sink and ends the stream with a status the sender reads.
func (t *GRPC) serveSnapshot(ss grpc.ServerStream) error {
	id, err := identityFromContext(ss.Context())
	p, err := t.checkStream(id, err)
	if err != nil {
		return t.reject(id, err)
	}
	select {
	case t.snapRecv <- struct{}{}:
		defer func() { <-t.snapRecv }()
	default:
		return status.Errorf(codes.Unavailable, "transport: node %d is receiving %d snapshots already", t.self, cap(t.snapRecv))
	}

	f := inFrame{reuse: true}
	if err := ss.RecvMsg(&f); err != nil {
		return t.snapshotRecvErr(id, err)
	}
	m, size, err := t.decodeBegin(f.data, p.id)
	if err != nil {
		return t.reject(id, status.Error(codes.InvalidArgument, err.Error()))
	}
	sink, err := t.cfg.Handler.SnapshotSink(m, int64(size))
	if err != nil {
		t.stats.snapshotsFailed.Add(1)
		return status.Errorf(codes.Internal, "transport: opening snapshot sink: %v", err)
	}
	if err := t.receiveData(ss, id, &f, sink, size); err != nil {
		t.abort(sink, m)
		return err
	}
	if err := sink.Commit(); err != nil {
		t.abort(sink, m)
		return status.Errorf(codes.Internal, "transport: committing snapshot: %v", err)
	}
	t.stats.snapshotsReceived.Add(1)
	p.lastHeard.Store(t.now())
	t.cfg.Handler.HandleMessages(p.id, []raftpb.Message{m})
	out := outFrame{data: frameSlice([]byte{chunkOK})}
	return ss.SendMsg(&out)
}

// decodeBegin checks a begin frame and returns its MsgSnap and size.
func (t *GRPC) decodeBegin(data []byte, from raftpb.NodeID) (raftpb.Message, uint64, error) {
	c, err := parseChunk(data)
	if err != nil {
		return raftpb.Message{}, 0, err
	}
	if c.kind != chunkBegin {
		return raftpb.Message{}, 0, fmt.Errorf("%w: stream starts with kind %q, not begin", errBadChunk, c.kind)
	}
	if c.size > uint64(t.cfg.MaxSnapshotBytes) {
		return raftpb.Message{}, 0, fmt.Errorf("transport: snapshot of %d bytes exceeds MaxSnapshotBytes %d", c.size, t.cfg.MaxSnapshotBytes)
	}
	// The frame buffer is reused by the next chunk: decode from a copy so
	// that nothing in the message aliases it.
	var b raftpb.Batch
	if err := b.Unmarshal(bytes.Clone(c.payload)); err != nil {
		return raftpb.Message{}, 0, err
	}
	if b.ClusterID != t.cfg.ClusterID || b.From != from || b.To != t.self ||
		len(b.Messages) != 1 || len(b.Heartbeats) != 0 {
		return raftpb.Message{}, 0, fmt.Errorf("%w: snapshot header of cluster %d, %d->%d with %d messages",
			errForeignFrame, b.ClusterID, b.From, b.To, len(b.Messages)+len(b.Heartbeats))
	}
	m := b.Messages[0]
	if m.Type != raftpb.MsgSnap || m.Snapshot == nil || m.From != from || m.To != t.self || len(m.Entries) > 0 {
		return raftpb.Message{}, 0, fmt.Errorf("%w: snapshot header holds %v", errForeignFrame, m)
	}
	return m, c.size, nil
}

// receiveData writes the data chunks to sink and checks the end frame. It
// returns the status to end the stream with on failure.
func (t *GRPC) receiveData(ss grpc.ServerStream, id identity, f *inFrame, sink SnapshotSink, size uint64) error {
	var written uint64
	var crc uint32
	for {
		if err := ss.RecvMsg(f); err != nil {
			if err == io.EOF {
				return t.reject(id, status.Errorf(codes.DataLoss,
					"transport: snapshot stream truncated at %d of %d bytes", written, size))
			}
			return t.snapshotRecvErr(id, err)
		}
		c, err := parseChunk(f.data)
		if err != nil {
			return t.reject(id, status.Error(codes.DataLoss, err.Error()))
		}
		switch c.kind {
		case chunkData:
			if c.offset != written || uint64(len(c.payload)) > size-written {
				return t.reject(id, status.Errorf(codes.DataLoss,
					"transport: snapshot chunk of %d bytes at offset %d; expected offset %d of %d",
					len(c.payload), c.offset, written, size))
			}
			if _, err := sink.Write(c.payload); err != nil {
				return status.Errorf(codes.Internal, "transport: writing snapshot: %v", err)
			}
			written += uint64(len(c.payload))
			crc = crc32.Update(crc, castagnoli, c.payload)
		case chunkEnd:
			if c.size != size || written != size || c.crc != crc {
				return t.reject(id, status.Errorf(codes.DataLoss,
					"transport: snapshot ends at %d bytes with checksum %08x; announced %d, end frame says %d bytes, %08x",
					written, crc, size, c.size, c.crc))
			}
			return nil
		default:
			return t.reject(id, status.Errorf(codes.InvalidArgument, "transport: unexpected %q frame in snapshot", c.kind))
		}
	}
}

// snapshotRecvErr is the status for a receive that broke (not refused).
func (t *GRPC) snapshotRecvErr(id identity, err error) error {
	if status.Code(err) == codes.ResourceExhausted {
		return t.reject(id, err)
	}
	return err
}

// abort discards a failed snapshot's data.
func (t *GRPC) abort(sink SnapshotSink, m raftpb.Message) {
	t.stats.snapshotsFailed.Add(1)
	if err := sink.Abort(); err != nil {
		t.lg.Warn("transport: aborting snapshot sink", "shard", m.Shard, "from", m.From, "err", err)
	}
}
