package client

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	sharddv1 "github.com/shardd/shardd/api/shardd/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeKV is a KV server whose answers a test scripts: reply(call) returns
// the error of the n-th call (1-based) of any method, or nil to succeed.
type fakeKV struct {
	sharddv1.UnimplementedKVServer
	mu    sync.Mutex
	calls int
	reply func(ctx context.Context, call int) error
}

func (f *fakeKV) next(ctx context.Context) error {
	f.mu.Lock()
	f.calls++
	n := f.calls
	f.mu.Unlock()
	if f.reply == nil {
		return nil
	}
	return f.reply(ctx, n)
}

func (f *fakeKV) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeKV) Put(ctx context.Context, _ *sharddv1.PutRequest) (*sharddv1.PutResponse, error) {
	if err := f.next(ctx); err != nil {
		return nil, err
	}
	return &sharddv1.PutResponse{Shard: 1, Index: 7}, nil
}

func (f *fakeKV) CompareAndSwap(ctx context.Context, _ *sharddv1.CompareAndSwapRequest) (*sharddv1.CompareAndSwapResponse, error) {
	if err := f.next(ctx); err != nil {
		return nil, err
	}
	return &sharddv1.CompareAndSwapResponse{Shard: 1, Index: 8}, nil
}

func (f *fakeKV) Get(ctx context.Context, _ *sharddv1.GetRequest) (*sharddv1.GetResponse, error) {
	if err := f.next(ctx); err != nil {
		return nil, err
	}
	return &sharddv1.GetResponse{Value: []byte("v"), Found: true}, nil
}

// serve starts f on a loopback port; stop ends the server abruptly.
func serve(t *testing.T, f *fakeKV) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	sharddv1.RegisterKVServer(srv, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			srv.Stop()
			<-done
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

func newClient(t *testing.T, targets ...string) *Client {
	t.Helper()
	c, err := New(targets, Options{Timeout: 3 * time.Second, RetryBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A write whose reply is lost on a live connection (the node dies while
// it runs) may have applied: it is ErrOutcomeUnknown and is not sent
// again — a retry could apply it twice, or report a compare-and-swap that
// applied as failed (found by the chaos test).
func TestWriteWithLostReplyIsUnknown(t *testing.T) {
	f := &fakeKV{}
	running := make(chan struct{})
	f.reply = func(ctx context.Context, call int) error {
		if call == 1 {
			close(running)
			<-ctx.Done() // applied; the reply never leaves
			return ctx.Err()
		}
		return nil
	}
	addr, stop := serve(t, f)
	c := newClient(t, addr)
	errc := make(chan error, 1)
	go func() {
		_, err := c.CompareAndSwap(context.Background(), []byte("k"), []byte("old"), false, []byte("new"))
		errc <- err
	}()
	<-running
	stop()
	err := <-errc
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("CompareAndSwap: %v, want ErrOutcomeUnknown", err)
	}
	if n := f.count(); n != 1 {
		t.Fatalf("the write was sent %d times", n)
	}
}

// A write refused with the server's retry hint (no leader yet) did not
// run: it is retried and succeeds.
func TestWriteRetriedOnHint(t *testing.T) {
	f := &fakeKV{reply: func(ctx context.Context, call int) error {
		if call <= 2 {
			_ = grpc.SetTrailer(ctx, metadata.Pairs("retry-after-ms", "1"))
			return status.Error(codes.Unavailable, "shard 1 has no leader yet")
		}
		return nil
	}}
	addr, _ := serve(t, f)
	res, err := newClient(t, addr).Put(context.Background(), []byte("k"), []byte("v"))
	if err != nil || res.Index != 7 {
		t.Fatalf("Put: %+v %v", res, err)
	}
	if n := f.count(); n != 3 {
		t.Fatalf("calls %d, want 3", n)
	}
}

// ResourceExhausted (a full queue) did not run either.
func TestWriteRetriedWhenBusy(t *testing.T) {
	f := &fakeKV{reply: func(ctx context.Context, call int) error {
		if call == 1 {
			return status.Error(codes.ResourceExhausted, "busy")
		}
		return nil
	}}
	addr, _ := serve(t, f)
	if _, err := newClient(t, addr).Put(context.Background(), []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
}

// An Unavailable without the hint after the write left is a lost reply.
func TestWriteUnavailableWithoutHintIsUnknown(t *testing.T) {
	f := &fakeKV{reply: func(ctx context.Context, call int) error {
		return status.Error(codes.Unavailable, "connection reset")
	}}
	addr, _ := serve(t, f)
	_, err := newClient(t, addr).Put(context.Background(), []byte("k"), []byte("v"))
	if !errors.Is(err, ErrOutcomeUnknown) || f.count() != 1 {
		t.Fatalf("Put: %v after %d calls, want ErrOutcomeUnknown after 1", err, f.count())
	}
}

// A node that is down is skipped for writes without sending anything: the
// write goes to the next node and succeeds.
func TestWriteSkipsDownNode(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	f := &fakeKV{}
	live, _ := serve(t, f)
	c := newClient(t, dead, live)
	for i := 0; i < 4; i++ {
		if _, err := c.Put(context.Background(), []byte("k"), []byte("v")); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	if n := f.count(); n != 4 {
		t.Fatalf("live node got %d writes, want 4", n)
	}
}

// Reads have no side effect: any Unavailable is retried.
func TestReadRetriedOnUnavailable(t *testing.T) {
	f := &fakeKV{reply: func(ctx context.Context, call int) error {
		if call == 1 {
			return status.Error(codes.Unavailable, "connection reset")
		}
		return nil
	}}
	addr, _ := serve(t, f)
	v, found, err := newClient(t, addr).Get(context.Background(), []byte("k"))
	if err != nil || !found || string(v) != "v" {
		t.Fatalf("Get: %q %v %v", v, found, err)
	}
}

// With every node down, a write fails as unavailable (it never ran), not
// as unknown.
func TestWriteAllDownIsUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	c := newClient(t, dead)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := c.Put(ctx, []byte("k"), []byte("v")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Put: %v, want ErrUnavailable", err)
	}
}
