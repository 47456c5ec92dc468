package chaos

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// A linkProxy carries one directed peer link, node `from` -> node `to`:
// from's --peers names the proxy's address for to, and the proxy forwards
// every connection to to's real Raft address. The shardd transport sends
// from's frames to `to` over this connection (to's replies travel on its own
// link to -> from; only pongs and HTTP/2 control frames come back on this
// one), so a fault on the proxy is a fault of one direction.
//
// The transport is a gRPC stream over TCP, which never loses or reorders
// bytes inside a connection: a real network fault shows up as a connection
// that stalls (packets lost and retransmitted), that is reset, or whose
// bytes arrive late. So the proxy never drops bytes from the middle of a
// connection (that would be stream corruption, not a network fault); its
// faults are, per linkFault field:
//
//   - Blackhole: nothing crosses the link in either direction of its
//     connections. Bytes already read wait in the proxy and the kernel
//     buffers fill, so the senders stall as under packet loss; a new
//     connection is accepted (the SYN-ACK is the proxy's) but not connected
//     onwards. On heal the held bytes and connections go through, as TCP
//     retransmission would deliver them, unless an end gave up meanwhile
//     (the transport's liveness monitor redials a silent peer).
//   - Refuse: every carried connection is reset (RST) and new ones are
//     reset at once, like a firewall REJECT: dials fail fast.
//   - Delay (+ up to Jitter): every chunk is delivered that long after the
//     proxy read it, in order.
//   - DropRate: each forwarded chunk resets its connection with this
//     probability (both ends see a reset), which is how random packet loss
//     surfaces to a TCP user when it is bad enough.
//
// A one-way partition is a Blackhole on i -> j only.
type linkProxy struct {
	from, to uint64
	lis      net.Listener
	target   string

	mu      sync.Mutex
	fault   linkFault
	changed chan struct{} // closed and replaced on every change of fault
	conns   map[*proxyConn]struct{}
	rnd     *rand.Rand
	closed  bool

	accepted, resets atomic.Uint64
	bytes            atomic.Uint64

	wg sync.WaitGroup
}

// linkFault is the state of a link; the zero value passes everything.
type linkFault struct {
	Blackhole bool
	Refuse    bool
	Delay     time.Duration
	Jitter    time.Duration
	DropRate  float64
}

func (f linkFault) String() string {
	switch {
	case f == linkFault{}:
		return "pass"
	case f.Blackhole:
		return "blackhole"
	case f.Refuse:
		return "refuse"
	}
	s := ""
	if f.Delay > 0 || f.Jitter > 0 {
		s = fmt.Sprintf("delay %v+%v", f.Delay, f.Jitter)
	}
	if f.DropRate > 0 {
		if s != "" {
			s += ", "
		}
		s += fmt.Sprintf("drop %.3f", f.DropRate)
	}
	return s
}

// proxyConn is one carried connection: the accepted side and, once the
// link lets it through, the side dialled to the target.
type proxyConn struct {
	in   net.Conn
	done chan struct{} // closed by shut

	mu     sync.Mutex
	out    net.Conn // set once by carry; nil until the link let c through
	closed bool
}

// chunkBytes is the most a pipe reads at once; chunkQueue the most chunks
// a direction holds (so at most 2 MiB per direction waits in the proxy).
const (
	chunkBytes = 32 << 10
	chunkQueue = 64
)

func newLinkProxy(from, to uint64, target string, seed uint64) (*linkProxy, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &linkProxy{from: from, to: to, lis: lis, target: target, changed: make(chan struct{}),
		conns: map[*proxyConn]struct{}{}, rnd: rand.New(rand.NewPCG(seed, from<<32|to))}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

func (p *linkProxy) addr() string { return p.lis.Addr().String() }

// set changes the link's fault; Refuse resets what the link carries.
func (p *linkProxy) set(f linkFault) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.fault = f
	close(p.changed)
	p.changed = make(chan struct{})
	var reset []*proxyConn
	if f.Refuse {
		for c := range p.conns {
			reset = append(reset, c)
		}
	}
	p.mu.Unlock()
	for _, c := range reset {
		p.reset(c)
	}
}

func (p *linkProxy) get() linkFault {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fault
}

// close stops the proxy: the listener and every connection close, and
// its goroutines are joined.
func (p *linkProxy) close() {
	p.mu.Lock()
	p.closed = true
	close(p.changed)
	p.changed = make(chan struct{})
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	p.lis.Close()
	for _, c := range conns {
		c.shut()
	}
	p.wg.Wait()
}

func (p *linkProxy) acceptLoop() {
	defer p.wg.Done()
	for {
		in, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		c := &proxyConn{in: in, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed || p.fault.Refuse {
			p.mu.Unlock()
			p.resets.Add(1)
			resetConn(in)
			continue
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.carry(c)
	}
}

// carry connects c onwards once the link lets it through, then runs its
// two directions until either ends.
func (p *linkProxy) carry(c *proxyConn) {
	defer p.wg.Done()
	defer p.forget(c)
	if !p.waitPass(c.done) {
		return
	}
	out, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		// The target is down (killed): the dialler sees a reset, as it
		// would dialling the real address.
		c.close(resetConn)
		return
	}
	if !c.setOut(out) { // reset or closed while dialling
		out.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(c, out, c.in) }()
	go func() { defer wg.Done(); p.pipe(c, c.in, out) }()
	wg.Wait()
}

type chunk struct {
	b  []byte
	at time.Time // when it was read
}

// pipe copies src to dst under the link's fault until either side fails;
// then both sides are closed. A reader goroutine queues timestamped
// chunks so that a delay holds each chunk for its own time, not the sum.
func (p *linkProxy) pipe(c *proxyConn, dst, src net.Conn) {
	q := make(chan chunk, chunkQueue)
	var rd sync.WaitGroup
	rd.Add(1)
	go func() {
		defer rd.Done()
		defer close(q)
		for {
			b := make([]byte, chunkBytes)
			n, err := src.Read(b)
			if n > 0 {
				select {
				case q <- chunk{b: b[:n], at: time.Now()}:
				case <-c.done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	defer rd.Wait()
	defer c.shut()
	for ch := range q {
		if !p.waitPass(c.done) {
			return
		}
		f := p.get()
		if d := f.Delay + p.jitter(f.Jitter); d > 0 {
			if wait := time.Until(ch.at.Add(d)); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-c.done:
					t.Stop()
					return
				}
			}
			// The fault may have changed while the chunk waited.
			if !p.waitPass(c.done) {
				return
			}
		}
		if f.DropRate > 0 && p.chance(f.DropRate) {
			p.reset(c)
			return
		}
		if _, err := dst.Write(ch.b); err != nil {
			return
		}
		p.bytes.Add(uint64(len(ch.b)))
	}
}

// waitPass blocks while the link is blackholed; false if done closed (or
// the proxy closed) first.
func (p *linkProxy) waitPass(done <-chan struct{}) bool {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return false
		}
		if !p.fault.Blackhole {
			p.mu.Unlock()
			select {
			case <-done:
				return false
			default:
				return true
			}
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-done:
			return false
		}
	}
}

func (p *linkProxy) jitter(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return time.Duration(p.rnd.Int64N(int64(max)))
}

func (p *linkProxy) chance(prob float64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rnd.Float64() < prob
}

// reset closes both sides of c with an RST.
func (p *linkProxy) reset(c *proxyConn) {
	p.resets.Add(1)
	c.close(resetConn)
}

func (p *linkProxy) forget(c *proxyConn) {
	c.shut()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// setOut records the dialled side; false if c was closed meanwhile.
func (c *proxyConn) setOut(out net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.out = out
	return true
}

// shut closes both sides (the first close wins).
func (c *proxyConn) shut() { c.close(func(conn net.Conn) { conn.Close() }) }

func (c *proxyConn) close(how func(net.Conn)) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	out := c.out
	c.mu.Unlock()
	close(c.done)
	how(c.in)
	if out != nil {
		how(out)
	}
}

// resetConn closes conn so that the peer sees a reset rather than an EOF.
func resetConn(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	conn.Close()
}

// proxyStats sums what a set of proxies did, for the report.
type proxyStats struct{ accepted, resets, bytes uint64 }

func (p *linkProxy) stats() proxyStats {
	return proxyStats{accepted: p.accepted.Load(), resets: p.resets.Load(), bytes: p.bytes.Load()}
}
