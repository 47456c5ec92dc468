package transport

import (
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardd/shardd/raftpb"
)

// errForeignFrame is wrapped when a frame's header or a message in it
// names another cluster or other nodes than its stream, or a frame holds
// what may not travel on the Raft stream.
var errForeignFrame = errors.New("transport: foreign or misaddressed frame")

// checkStream validates the identity a stream claims and returns the
// sending peer. The error is the status the stream is ended with.
func (t *GRPC) checkStream(id identity, err error) (*peer, error) {
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if id.cluster != t.cfg.ClusterID {
		return nil, status.Errorf(codes.FailedPrecondition,
			"transport: stream of cluster %d refused by node %d of cluster %d", id.cluster, t.self, t.cfg.ClusterID)
	}
	if id.to != t.self {
		return nil, status.Errorf(codes.FailedPrecondition,
			"transport: stream for node %d refused by node %d", id.to, t.self)
	}
	p := t.peers[id.from]
	if p == nil {
		return nil, status.Errorf(codes.PermissionDenied,
			"transport: stream from unknown node %d refused by node %d", id.from, t.self)
	}
	return p, nil
}

// reject counts a refused stream or frame, logs why, and returns err (a
// status error) for the handler to end the stream with.
func (t *GRPC) reject(id identity, err error) error {
	t.stats.rejected.Add(1)
	t.lg.Warn("transport: refused", "stream", id, "err", err)
	return err
}

// serveRaft serves one peer's Raft stream to us: handshake, then frames
// until the stream ends. Pings are answered on the same stream.
func (t *GRPC) serveRaft(ss grpc.ServerStream) error {
	id, err := identityFromContext(ss.Context())
	p, err := t.checkStream(id, err)
	if err != nil {
		return t.reject(id, err)
	}
	if err := ss.SendHeader(acceptedHeader()); err != nil {
		return err
	}
	pong := (&raftpb.Batch{ClusterID: t.cfg.ClusterID, From: t.self, To: p.id}).MarshalAppend(nil)
	var out outFrame
	for {
		var f inFrame
		if err := ss.RecvMsg(&f); err != nil {
			if status.Code(err) == codes.ResourceExhausted {
				// Over MaxFrameBytes: gRPC refused it from its length
				// prefix, before allocating.
				return t.reject(id, err)
			}
			return err // the stream ended: the peer closed it, or we did
		}
		msgs, ping, err := t.decodeFrame(f.data, p.id)
		if err != nil {
			return t.reject(id, status.Error(codes.InvalidArgument, err.Error()))
		}
		p.lastHeard.Store(t.now())
		if ping {
			out.data = frameSlice(pong)
			if err := ss.SendMsg(&out); err != nil {
				return err
			}
			continue
		}
		n := uint64(len(msgs))
		t.stats.framesReceived.Add(1)
		t.stats.messagesReceived.Add(n)
		t.stats.bytesReceived.Add(uint64(len(f.data)))
		p.stats.messagesReceived.Add(n)
		p.stats.bytesReceived.Add(uint64(len(f.data)))
		t.cfg.Handler.HandleMessages(p.id, msgs)
	}
}

// decodeFrame decodes a frame from node from and checks it: the header
// and every message must name this cluster, from and us; MsgSnap may only
// arrive through the snapshot stream (with its data). It returns the
// frame's messages with heartbeats expanded after them, or ping when the
// frame is empty. The messages alias data.
func (t *GRPC) decodeFrame(data []byte, from raftpb.NodeID) (msgs []raftpb.Message, ping bool, err error) {
	var b raftpb.Batch
	if err := b.Unmarshal(data); err != nil {
		return nil, false, err
	}
	if b.ClusterID != t.cfg.ClusterID || b.From != from || b.To != t.self {
		return nil, false, fmt.Errorf("%w: frame of cluster %d, %d->%d on a stream of cluster %d, %d->%d",
			errForeignFrame, b.ClusterID, b.From, b.To, t.cfg.ClusterID, from, t.self)
	}
	if len(b.Messages)+len(b.Heartbeats) == 0 {
		return nil, true, nil
	}
	for i := range b.Messages {
		m := &b.Messages[i]
		if m.From != from || m.To != t.self {
			return nil, false, fmt.Errorf("%w: message %d is %d->%d in a frame %d->%d",
				errForeignFrame, i, m.From, m.To, from, t.self)
		}
		if m.Type == raftpb.MsgSnap {
			return nil, false, fmt.Errorf("%w: MsgSnap without its data (message %d)", errForeignFrame, i)
		}
	}
	if len(b.Heartbeats) == 0 {
		return b.Messages, false, nil
	}
	msgs = make([]raftpb.Message, len(b.Messages), len(b.Messages)+len(b.Heartbeats))
	copy(msgs, b.Messages)
	for _, h := range b.Heartbeats {
		msgs = append(msgs, h.Expand(from, t.self))
	}
	return msgs, false, nil
}

// checkPong checks a frame that came back on our stream to peer from: it
// must be an empty frame from that peer to us.
func (t *GRPC) checkPong(data []byte, from raftpb.NodeID) error {
	var b raftpb.Batch
	if err := b.Unmarshal(data); err != nil {
		return err
	}
	if b.ClusterID != t.cfg.ClusterID || b.From != from || b.To != t.self ||
		len(b.Messages)+len(b.Heartbeats) != 0 {
		return fmt.Errorf("%w: pong of cluster %d, %d->%d with %d messages from peer %d",
			errForeignFrame, b.ClusterID, b.From, b.To, len(b.Messages)+len(b.Heartbeats), from)
	}
	return nil
}
