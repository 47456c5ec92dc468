package chaos

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// echoServer echoes every line it reads, on every connection.
type echoServer struct {
	lis net.Listener
	wg  sync.WaitGroup
}

func newEchoServer(t *testing.T) *echoServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{lis: lis}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { lis.Close(); s.wg.Wait() })
	return s
}

func newTestProxy(t *testing.T, target string) *linkProxy {
	t.Helper()
	p, err := newLinkProxy(1, 2, target, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	return p
}

func dialProxy(t *testing.T, p *linkProxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", p.addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// roundTrip sends a line and waits up to d for its echo.
func roundTrip(c net.Conn, r *bufio.Reader, line string, d time.Duration) (time.Duration, error) {
	start := time.Now()
	_ = c.SetDeadline(start.Add(d))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return 0, err
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if got != line+"\n" {
		return 0, errors.New("echo mismatch: " + got)
	}
	return time.Since(start), nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestProxyPassAndBlackhole(t *testing.T) {
	s := newEchoServer(t)
	p := newTestProxy(t, s.lis.Addr().String())
	c, r := dialProxy(t, p)
	if _, err := roundTrip(c, r, "hello", 2*time.Second); err != nil {
		t.Fatalf("pass: %v", err)
	}

	p.set(linkFault{Blackhole: true})
	if _, err := roundTrip(c, r, "held", 200*time.Millisecond); !isTimeout(err) {
		t.Fatalf("blackhole: want a timeout, got %v", err)
	}
	// A new connection is accepted but carries nothing.
	c2, r2 := dialProxy(t, p)
	if _, err := roundTrip(c2, r2, "new", 200*time.Millisecond); !isTimeout(err) {
		t.Fatalf("blackhole, new connection: want a timeout, got %v", err)
	}

	// The heal delivers what was held, in order, on both connections.
	p.set(linkFault{})
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if got, err := r.ReadString('\n'); err != nil || got != "held\n" {
		t.Fatalf("after heal: %q %v", got, err)
	}
	_ = c2.SetDeadline(time.Now().Add(2 * time.Second))
	if got, err := r2.ReadString('\n'); err != nil || got != "new\n" {
		t.Fatalf("after heal, new connection: %q %v", got, err)
	}
}

func TestProxyRefuse(t *testing.T) {
	s := newEchoServer(t)
	p := newTestProxy(t, s.lis.Addr().String())
	c, r := dialProxy(t, p)
	if _, err := roundTrip(c, r, "a", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	p.set(linkFault{Refuse: true})
	// The carried connection is reset ...
	if _, err := roundTrip(c, r, "b", 2*time.Second); err == nil || isTimeout(err) {
		t.Fatalf("refuse: want a reset, got %v", err)
	}
	// ... and so is a new one, at once: the reset may even beat the end
	// of the dial.
	if c2, err := net.Dial("tcp", p.addr()); err == nil {
		defer c2.Close()
		if _, err := roundTrip(c2, bufio.NewReader(c2), "c", 2*time.Second); err == nil || isTimeout(err) {
			t.Fatalf("refuse, new connection: want a reset, got %v", err)
		}
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("refuse, dialling: want a reset, got %v", err)
	}
	p.set(linkFault{})
	c3, r3 := dialProxy(t, p)
	if _, err := roundTrip(c3, r3, "d", 2*time.Second); err != nil {
		t.Fatalf("after heal: %v", err)
	}
}

func TestProxyDelay(t *testing.T) {
	s := newEchoServer(t)
	p := newTestProxy(t, s.lis.Addr().String())
	c, r := dialProxy(t, p)
	p.set(linkFault{Delay: 50 * time.Millisecond})
	// Both directions pass the proxy: at least two delays per round trip.
	d, err := roundTrip(c, r, "slow", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if d < 100*time.Millisecond {
		t.Fatalf("round trip took %v, want ≥ 100ms", d)
	}
	// Chunks read together are delayed together, not one after another.
	start := time.Now()
	for i := 0; i < 10; i++ {
		if _, err := io.WriteString(c, "x\n"); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 10; i++ {
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	if el := time.Since(start); el > 600*time.Millisecond {
		t.Fatalf("10 pipelined lines took %v: the delay serialises chunks", el)
	}
}

func TestProxyDrop(t *testing.T) {
	s := newEchoServer(t)
	p := newTestProxy(t, s.lis.Addr().String())
	p.set(linkFault{DropRate: 1})
	c, r := dialProxy(t, p)
	if _, err := roundTrip(c, r, "gone", 2*time.Second); err == nil || isTimeout(err) {
		t.Fatalf("drop rate 1: want a reset, got %v", err)
	}
	if p.stats().resets == 0 {
		t.Fatal("no reset counted")
	}
}

// The proxy's goroutines end with close, even with held connections.
func TestProxyCloseWhileBlackholed(t *testing.T) {
	s := newEchoServer(t)
	p, err := newLinkProxy(1, 2, s.lis.Addr().String(), 1)
	if err != nil {
		t.Fatal(err)
	}
	c, r := dialProxy(t, p)
	if _, err := roundTrip(c, r, "x", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	p.set(linkFault{Blackhole: true})
	_, _ = io.WriteString(c, "held\n")
	dialProxy(t, p)
	done := make(chan struct{})
	go func() { p.close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("close hangs")
	}
}
