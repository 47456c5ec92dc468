package transport

// The gRPC transport.
//
// Streams. Every node dials every other node for its outbound messages, so
// a pair of nodes has two long-lived Raft streams, one per direction, each
// carrying the messages of every shard. A stream is used one way for
// frames; the other way carries only pongs. One stream per direction keeps
// each side the single writer of its own stream (no coordination on who
// dials, no tie-breaking when both dial at once) and makes "the peer is
// back" simply "my dial succeeded". The alternative, one stream per pair
// used both ways, halves the connections but needs a rule for which side
// dials and a way to resolve simultaneous dials; at the cluster sizes of a
// Raft deployment (a handful to tens of nodes) the extra connection is
// cheap. Snapshots do not share that connection: each transfer dials its
// own, so megabytes of snapshot never queue ahead of heartbeats.
//
// Stages of a message (sender):
//
//  1. Send (any goroutine, typically a step worker) appends to the peer's
//     bounded queue under the queue's lock and signals the peer's loop. It
//     never waits for the network: a full queue, an unknown node or an
//     unreachable peer drops and counts. Heartbeats are queued in their
//     compact form.
//  2. The peer's goroutine blocks until signalled, swaps the whole queue
//     out under the lock, and encodes it (outside the lock) into as few
//     frames of at most MaxFrameBytes as possible: all queued heartbeats in
//     the first frame's coalesced list, then the messages in order. There
//     is no batching timer: while one frame is being written the next one
//     accumulates, so frames grow with load and an idle link adds no delay.
//  3. The frame is encoded into a pooled buffer whose ownership passes to
//     gRPC; gRPC returns it to the pool once written to the socket (it may
//     still be queued in gRPC after SendMsg returns, so the buffer cannot
//     simply be reused by the next frame).
//
// Receiver: the stream's handshake metadata (cluster, sender, receiver) is
// checked before the first frame is read, and every frame's header and
// every message's From/To again; anything foreign or misaddressed is
// counted in Stats.Rejected and the stream is closed with a status that
// says why. gRPC refuses frames over MaxFrameBytes from their length
// prefix, before allocating. A frame is copied out of gRPC's buffers once,
// decoded with raftpb (entries alias the copy, which is never reused),
// heartbeats are expanded, and the frame's messages go to
// Handler.HandleMessages in one call from the stream's goroutine.
//
// Liveness: a peer is reachable while something arrives from it: frames
// on its stream to us, pongs on ours. A peer's loop pings (an empty frame)
// when it has heard nothing for a PingInterval; the receiver answers each
// ping with an empty frame back. One monitor goroutine compares each
// peer's last-heard time with MissedPings*PingInterval and reports edges
// (NodeUnreachable, NodeReachable) from its own goroutine, holding no lock.
// Declaring a peer unreachable also breaks our stream to it, so a
// half-dead TCP connection is redialled rather than trusted, and makes Send
// drop for it until it is heard from again.
//
// Reconnection: each peer has a circuit breaker (goutils' rubyist breaker)
// that trips on a failed or broken stream and lets one attempt through per
// backoff wait; waits grow exponentially from DialBackoffMin to
// DialBackoffMax with ±50% jitter. A failed attempt drops what is queued:
// it would be stale by the next attempt and Raft retransmits.
//
// Invariants:
//   - No lock is held across I/O or a call into the Handler.
//   - Goroutines: one per peer (plus one pong reader per live outbound
//     stream, joined by it), one liveness monitor, one serving the
//     listener, one per snapshot being sent, and gRPC's per-stream
//     handlers; Close cancels them all and waits for every one of them
//     (gRPC's handlers too, via grpc.WaitForHandlers).
//   - Per-peer memory is bounded by SendQueueBytes/SendQueueMessages plus
//     the frames gRPC holds (its write quota).
//
// Considered first: encoding every frame into one buffer per peer, reused
// in place, as a plain TCP transport would. With gRPC that is unsafe:
// SendMsg hands the buffer to the connection's writer goroutine and returns
// before it is written (http2Client.write queues it), so reusing it would
// corrupt frames still queued. Pooled buffers released by gRPC's reference
// counting give the same reuse safely.
//
// Heartbeat order: coalesced heartbeats are handed on after the other
// messages of their frame. Order holds among messages and among
// heartbeats, not between the two; Raft does not depend on it (a
// heartbeat's commit index never exceeds what the follower is known to
// hold).

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/shardd/shardd/raftpb"
)

// GRPC is the gRPC implementation of Transport.
type GRPC struct {
	cfg   Config
	lg    *slog.Logger
	self  raftpb.NodeID
	epoch time.Time

	peers    map[raftpb.NodeID]*peer // read-only after New
	peerList []*peer                 // the same, sorted by id

	lis      net.Listener
	srv      *grpc.Server
	pool     *bufferPool
	dialOpts []grpc.DialOption

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// mu guards closed, so that no snapshot goroutine is added to wg once
	// Close waits for it.
	mu       sync.Mutex
	closed   bool
	isClosed atomic.Bool

	snapSend chan struct{} // semaphore of snapshots being sent
	snapRecv chan struct{} // semaphore of snapshots being received

	stats counters
}

var _ Transport = (*GRPC)(nil)

// New validates cfg, listens, and starts the transport: it serves incoming
// streams and dials every peer in the background.
func New(cfg Config) (*GRPC, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		if cfg.Listener != nil {
			cfg.Listener.Close()
		}
		return nil, err
	}
	lis := cfg.Listener
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
			return nil, fmt.Errorf("transport: listening on %s: %w", cfg.ListenAddr, err)
		}
	}
	t := &GRPC{
		cfg:      cfg,
		lg:       cfg.Logger,
		self:     cfg.NodeID,
		epoch:    time.Now(),
		peers:    make(map[raftpb.NodeID]*peer, len(cfg.Peers)),
		lis:      lis,
		pool:     newBufferPool(cfg.MaxFrameBytes),
		snapSend: make(chan struct{}, cfg.MaxConcurrentSnapshots),
		snapRecv: make(chan struct{}, cfg.MaxConcurrentSnapshots),
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	for id, addr := range cfg.Peers {
		if id == t.self {
			continue
		}
		p := newPeer(t, id, addr)
		t.peers[id] = p
		t.peerList = append(t.peerList, p)
	}
	slices.SortFunc(t.peerList, func(a, b *peer) int { return cmp.Compare(a.id, b.id) })
	t.srv = grpc.NewServer(t.serverOptions()...)
	t.srv.RegisterService(&serviceDesc, t)
	t.dialOpts = t.dialOptions()

	t.wg.Add(2 + len(t.peerList))
	go t.serve()
	go t.monitor()
	for _, p := range t.peerList {
		go p.run()
	}
	return t, nil
}

// windowBytes is the HTTP/2 flow-control window of each incoming stream:
// room for two snapshot chunks or a few large frames in flight, which
// bounds what a receiver buffers per stream.
func (t *GRPC) windowBytes() int32 {
	return int32(max(2*t.cfg.SnapshotChunkBytes, 1<<20))
}

// serverOptions configure the server side of every stream.
func (t *GRPC) serverOptions() []grpc.ServerOption {
	creds := insecure.NewCredentials()
	if t.cfg.TLS != nil {
		c := t.cfg.TLS.Clone()
		c.ClientAuth = tls.RequireAndVerifyClientCert
		if c.ClientCAs == nil {
			c.ClientCAs = c.RootCAs
		}
		creds = credentials.NewTLS(c)
	}
	return []grpc.ServerOption{
		grpc.Creds(creds),
		grpc.ForceServerCodecV2(frameCodec{}),
		grpc.MaxRecvMsgSize(t.cfg.MaxFrameBytes),
		grpc.InitialWindowSize(t.windowBytes()),
		grpc.InitialConnWindowSize(4 * t.windowBytes()),
		// Close waits for the stream handlers, so no Handler call happens
		// after Close returns.
		grpc.WaitForHandlers(true),
		// A sender that stops answering (a stopped process) is found by
		// HTTP/2 pings, which frees its snapshot stream and sink.
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    t.cfg.SnapshotTimeout,
			Timeout: t.cfg.SnapshotTimeout,
		}),
	}
}

// dialOptions configure every connection this node dials.
func (t *GRPC) dialOptions() []grpc.DialOption {
	creds := insecure.NewCredentials()
	if t.cfg.TLS != nil {
		creds = credentials.NewTLS(t.cfg.TLS.Clone())
	}
	return []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(
			grpc.ForceCodecV2(frameCodec{}),
			grpc.MaxCallRecvMsgSize(t.cfg.MaxFrameBytes),
		),
		// Our breaker decides when to redial; gRPC's own backoff only
		// matters within one attempt, so keep it on the same scale.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  t.cfg.DialBackoffMin,
				Multiplier: 2,
				Jitter:     0.5,
				MaxDelay:   t.cfg.DialBackoffMax,
			},
			MinConnectTimeout: t.cfg.DialTimeout,
		}),
		grpc.WithDisableRetry(),
		grpc.WithDisableHealthCheck(),
		grpc.WithDisableServiceConfig(),
	}
}

// dial returns a new connection to addr; it connects on first use.
func (t *GRPC) dial(addr string) (*grpc.ClientConn, error) {
	// passthrough: the address is used as is, without a resolver.
	return grpc.NewClient("passthrough:///"+addr, t.dialOpts...)
}

// serve runs the gRPC server until Close.
func (t *GRPC) serve() {
	defer t.wg.Done()
	if err := t.srv.Serve(t.lis); err != nil && t.ctx.Err() == nil {
		t.lg.Error("transport: server stopped", "addr", t.lis.Addr(), "err", err)
	}
}

// Addr returns the address the transport listens on.
func (t *GRPC) Addr() net.Addr { return t.lis.Addr() }

// now is the transport's monotonic clock, in nanoseconds since New.
func (t *GRPC) now() int64 { return int64(time.Since(t.epoch)) }

// Send implements Transport. Messages to one node are queued under one
// lock acquisition, so a concurrent drain never splits one call's messages
// for a node across frames unless they exceed a frame. The messages'
// entries are referenced, not copied, until encoded: their data must not
// change after Send (the Raft core never changes an entry once made).
// Coalesced heartbeats are delivered after the other messages of their
// frame (see the design notes at the top of this file).
func (t *GRPC) Send(msgs []raftpb.Message) {
	if t.isClosed.Load() {
		t.stats.dropped.Add(uint64(len(msgs)))
		return
	}
	var seen [8]raftpb.NodeID
	done := seen[:0]
	for i := range msgs {
		to := msgs[i].To
		if slices.Contains(done, to) {
			continue
		}
		done = append(done, to)
		t.sendTo(to, msgs[i:])
	}
}

// sendTo queues the messages of msgs addressed to node to.
func (t *GRPC) sendTo(to raftpb.NodeID, msgs []raftpb.Message) {
	p := t.peers[to]
	if p == nil {
		n := 0
		for i := range msgs {
			if msgs[i].To == to {
				n++
			}
		}
		t.stats.dropped.Add(uint64(n))
		t.lg.Debug("transport: message to unknown node dropped", "node", to, "count", n, "err", ErrUnknownNode)
		return
	}
	if p.unreachable.Load() {
		n := 0
		for i := range msgs {
			if msgs[i].To == to {
				n++
			}
		}
		t.countDropped(p, n)
		return
	}
	queued, dropped, invalid := p.q.add(msgs, t.self, to)
	if dropped+invalid > 0 {
		t.countDropped(p, dropped+invalid)
	}
	if invalid > 0 {
		t.lg.Warn("transport: invalid messages dropped (wrong From, invalid type, or MsgSnap outside SendSnapshot)",
			"peer", to, "count", invalid)
	}
	if queued > 0 {
		p.signal()
	}
}

// countDropped counts n messages for p dropped.
func (t *GRPC) countDropped(p *peer, n int) {
	t.stats.dropped.Add(uint64(n))
	p.stats.dropped.Add(uint64(n))
}

// Stats implements Transport. Frames count message frames only, not pings
// and pongs. SnapshotsFailed counts transfers that failed on either side:
// sends that ended in an error and receives that were aborted.
func (t *GRPC) Stats() Stats { return t.stats.load() }

// PeerStats implements Transport: one entry per other node, by id.
func (t *GRPC) PeerStats() []PeerStats {
	out := make([]PeerStats, 0, len(t.peerList))
	for _, p := range t.peerList {
		out = append(out, PeerStats{
			Node:             p.id,
			MessagesSent:     p.stats.messagesSent.Load(),
			MessagesReceived: p.stats.messagesReceived.Load(),
			BytesSent:        p.stats.bytesSent.Load(),
			BytesReceived:    p.stats.bytesReceived.Load(),
			Dropped:          p.stats.dropped.Load(),
			Reachable:        !p.unreachable.Load(),
		})
	}
	return out
}

// Close implements Transport. It returns once every goroutine of the
// transport has ended; no Handler method is called after it returns.
// Snapshots being sent end with ErrClosed.
func (t *GRPC) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.isClosed.Store(true)
	t.mu.Unlock()

	t.cancel()
	t.srv.Stop() // closes the listener and every incoming stream, waits for handlers
	t.wg.Wait()
	for _, p := range t.peerList {
		p.q.clear()
	}
	return nil
}

// closeQuietly closes c, for cleanup paths where the error changes nothing.
func closeQuietly(c io.Closer) { _ = c.Close() }
