package transport

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	circuit "github.com/lni/goutils/netutil/rubyist/circuitbreaker"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardd/shardd/raftpb"
)

// peer is this node's side of the link to one other node: the send queue,
// the goroutine that keeps the outbound stream up and drains the queue
// into it, liveness state and counters.
type peer struct {
	t    *GRPC
	id   raftpb.NodeID
	addr string

	q    sendQueue
	wake chan struct{} // capacity 1: "the queue may be non-empty"

	stats peerCounters
	// lastHeard is when anything last arrived from the peer (a frame on
	// its stream to us, a pong on ours), in t.now() units.
	lastHeard atomic.Int64
	// unreachable is the state last reported to the handler; only the
	// liveness monitor writes it.
	unreachable atomic.Bool

	// mu guards cancelStream, which ends the current outbound stream (the
	// monitor calls it when the peer falls silent, so that a half-dead
	// connection is redialled instead of trusted).
	mu           sync.Mutex
	cancelStream context.CancelFunc

	// Owned by the peer's goroutine.
	backoff     *jitterBackoff
	breaker     *circuit.Breaker
	lastFailure time.Time
	lastErr     string
	recvErr     error        // why the pong reader stopped; read after it is joined
	hdrSize     int          // encoded size of an empty frame to this peer
	ping        []byte       // an empty frame self -> peer; immutable
	out         outFrame     // reused: gRPC does not keep it past SendMsg
	ident       identity     // what our outbound stream claims
	sizes       []int        // scratch: encoded size of each queued message
	hbSizes     []int        // scratch: encoded size of each queued heartbeat
	batch       raftpb.Batch // scratch frame header

	pingsSent   atomic.Uint64 // pings sent, for tests
	connections atomic.Uint64 // outbound streams established, for tests
}

func newPeer(t *GRPC, id raftpb.NodeID, addr string) *peer {
	p := &peer{
		t:     t,
		id:    id,
		addr:  addr,
		wake:  make(chan struct{}, 1),
		q:     sendQueue{maxMsgs: t.cfg.SendQueueMessages, maxBytes: t.cfg.SendQueueBytes},
		ident: identity{cluster: t.cfg.ClusterID, from: t.self, to: id},
		batch: raftpb.Batch{ClusterID: t.cfg.ClusterID, From: t.self, To: id},
	}
	p.hdrSize = p.batch.Size()
	p.ping = p.batch.MarshalAppend(nil)
	p.backoff = newJitterBackoff(t.cfg.DialBackoffMin, t.cfg.DialBackoffMax, t.cfg.JitterSeed, uint64(id))
	p.breaker = newBreaker(p.backoff)
	p.lastHeard.Store(t.now()) // a grace period of one liveness bound at start
	return p
}

// signal tells the send loop that the queue may be non-empty.
func (p *peer) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// setCancel installs the cancel function of the current outbound stream.
func (p *peer) setCancel(c context.CancelFunc) {
	p.mu.Lock()
	p.cancelStream = c
	p.mu.Unlock()
}

// breakStream ends the current outbound stream, if any; the peer loop
// then reconnects with backoff.
func (p *peer) breakStream() {
	p.mu.Lock()
	c := p.cancelStream
	p.mu.Unlock()
	if c != nil {
		c()
	}
}

// run keeps a stream to the peer open until the transport closes:
// connect, serve until the stream breaks, back off, again.
func (p *peer) run() {
	defer p.t.wg.Done()
	ctx := p.t.ctx
	for p.waitForAttempt(ctx) {
		err := p.connectAndServe(ctx)
		if ctx.Err() != nil {
			return
		}
		p.failed(err)
	}
}

// waitForAttempt sleeps until the breaker lets the next connection attempt
// through. It returns false when the transport closes.
func (p *peer) waitForAttempt(ctx context.Context) bool {
	for !p.breaker.Ready() {
		wait := time.Until(p.lastFailure.Add(p.backoff.last))
		if wait <= 0 {
			// The breaker measures from its own clock reading; give it a
			// moment rather than spin.
			wait = time.Millisecond
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return false
		case <-timer.C:
		}
	}
	return ctx.Err() == nil
}

// failed records a broken or refused stream: the breaker trips (or stays
// tripped), and what was queued is dropped because it would be stale by
// the time a new stream is up (Raft retransmits what still matters).
func (p *peer) failed(err error) {
	p.breaker.Fail()
	p.lastFailure = time.Now()
	if n := p.q.clear(); n > 0 {
		p.t.countDropped(p, n)
	}
	msg := err.Error()
	if msg == p.lastErr {
		return // already logged; a peer that stays down would flood the log
	}
	p.lastErr = msg
	if isRefusal(err) {
		p.t.lg.Error("transport: peer refused our stream", "peer", p.id, "addr", p.addr, "err", err)
	} else {
		p.t.lg.Info("transport: stream to peer failed", "peer", p.id, "addr", p.addr, "err", err)
	}
}

// connectAndServe dials the peer, opens the Raft stream, waits for the
// peer to accept the handshake, and then sends until the stream breaks.
// It returns why it ended.
func (p *peer) connectAndServe(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conn, err := p.t.dial(p.addr)
	if err != nil {
		return err
	}
	defer conn.Close()

	// The handshake must complete within DialTimeout: a peer that accepts
	// TCP but never answers (a stopped process) must not hold us forever.
	timer := time.AfterFunc(p.t.cfg.DialTimeout, cancel)
	cs, err := conn.NewStream(p.ident.outgoing(ctx), raftStreamDesc, raftMethod)
	if err == nil {
		err = awaitAccepted(cs)
	}
	if !timer.Stop() && err == nil {
		err = context.DeadlineExceeded
	}
	if err != nil {
		return err
	}
	p.breaker.Success()
	p.lastErr = ""
	p.connections.Add(1)
	p.setCancel(cancel)
	defer p.setCancel(nil)

	p.recvErr = nil
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.readPongs(cs, cancel)
	}()
	err = p.sendLoop(ctx, cs)
	cancel()
	wg.Wait()
	if p.recvErr != nil && status.Code(p.recvErr) != codes.Canceled {
		err = p.recvErr // the peer's verdict says more than our cancelled send
	}
	return err
}

// readPongs reads what the peer sends back on our stream (pongs only) and
// notes that the peer is alive. It cancels the stream when it ends.
func (p *peer) readPongs(cs grpc.ClientStream, cancel context.CancelFunc) {
	defer cancel()
	f := inFrame{reuse: true}
	for {
		if err := cs.RecvMsg(&f); err != nil {
			p.recvErr = err
			return
		}
		if err := p.t.checkPong(f.data, p.id); err != nil {
			p.t.stats.rejected.Add(1)
			p.recvErr = err
			return
		}
		p.lastHeard.Store(p.t.now())
	}
}

// sendLoop blocks for the first queued message, then drains everything
// queued into as few frames as the frame bound allows. No timer delays a
// frame: under load frames grow by themselves, because messages pile up
// while the previous frame is being written. It pings when the peer has
// been silent for a ping interval.
func (p *peer) sendLoop(ctx context.Context, cs grpc.ClientStream) error {
	ticker := time.NewTicker(p.t.cfg.PingInterval)
	defer ticker.Stop()
	// Ping at once: a new stream should prove the peer alive quickly.
	if err := p.sendPing(cs); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.wake:
			if err := p.flush(cs); err != nil {
				return err
			}
		case <-ticker.C:
			if time.Duration(p.t.now()-p.lastHeard.Load()) >= p.t.cfg.PingInterval {
				if err := p.sendPing(cs); err != nil {
					return err
				}
			}
		}
	}
}

// sendPing sends an empty frame; the peer answers with one.
func (p *peer) sendPing(cs grpc.ClientStream) error {
	p.out.data = frameSlice(p.ping)
	p.pingsSent.Add(1)
	return cs.SendMsg(&p.out)
}
