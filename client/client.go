// Package client is the Go client of the shardd daemon's KV API
// (shardd.v1.KV). It spreads requests over the nodes it is given and
// retries, until the request's deadline and honouring the server's retry
// hint, what is safe to retry:
//
//   - reads and Status: any Unavailable or ResourceExhausted;
//   - writes: only what certainly did not run — a full queue
//     (ResourceExhausted) or an Unavailable carrying the server's retry
//     hint (no leader yet; the node is closing). A write is sent only over
//     a connection that is up, and one whose reply is lost (the node died,
//     the connection broke) returns ErrOutcomeUnknown: sending it again
//     could apply it twice, or report a compare-and-swap that applied as
//     failed.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	sharddv1 "github.com/shardd/shardd/api/shardd/v1"
)

// Errors a caller can test with errors.Is.
var (
	// ErrCASFailed: CompareAndSwap found another value.
	ErrCASFailed = errors.New("client: compare-and-swap precondition failed")
	// ErrInvalidArgument: the key or value was refused (empty, too large).
	ErrInvalidArgument = errors.New("client: invalid argument")
	// ErrOutcomeUnknown: the write may or may not have been applied.
	ErrOutcomeUnknown = errors.New("client: write outcome unknown")
	// ErrUnavailable: no node could serve the request before the deadline.
	ErrUnavailable = errors.New("client: unavailable")
)

// Options configures a Client. Zero values take the documented defaults.
type Options struct {
	// TLS, when set, is used for every connection. The default is
	// plaintext.
	TLS *tls.Config
	// Timeout applies to requests whose context has no deadline. The
	// default value is 5s.
	Timeout time.Duration
	// RetryBackoff is the first wait between retries (doubling up to
	// 1s). The default value is 10ms.
	RetryBackoff time.Duration
}

// Client talks to a shardd cluster.
type Client struct {
	opts  Options
	conns []*grpc.ClientConn
	kvs   []sharddv1.KVClient
	next  atomic.Uint64
}

// New connects to the given client addresses (any node serves any key).
func New(targets []string, opts Options) (*Client, error) {
	if len(targets) == 0 {
		return nil, errors.New("client: no targets")
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.RetryBackoff == 0 {
		opts.RetryBackoff = 10 * time.Millisecond
	}
	creds := insecure.NewCredentials()
	if opts.TLS != nil {
		creds = credentials.NewTLS(opts.TLS)
	}
	c := &Client{opts: opts}
	for _, t := range targets {
		conn, err := grpc.NewClient(t, grpc.WithTransportCredentials(creds), grpc.WithConnectParams(connectParams))
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("client: %s: %w", t, err)
		}
		c.conns = append(c.conns, conn)
		c.kvs = append(c.kvs, sharddv1.NewKVClient(conn))
	}
	return c, nil
}

// Close closes every connection.
func (c *Client) Close() error {
	var first error
	for _, conn := range c.conns {
		if err := conn.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// WriteResult tells where a write was applied.
type WriteResult struct {
	Shard, Index uint64
}

// Put sets key to value.
func (c *Client) Put(ctx context.Context, key, value []byte) (WriteResult, error) {
	var res WriteResult
	err := c.do(ctx, true, func(ctx context.Context, kv sharddv1.KVClient, opts ...grpc.CallOption) error {
		r, err := kv.Put(ctx, &sharddv1.PutRequest{Key: key, Value: value}, opts...)
		if err == nil {
			res = WriteResult{Shard: r.Shard, Index: r.Index}
		}
		return err
	})
	return res, err
}

// Get reads key, linearizably. found is false when the key does not exist.
func (c *Client) Get(ctx context.Context, key []byte) (value []byte, found bool, err error) {
	return c.get(ctx, key, false)
}

// GetStale reads key from the contacted replica's state, without
// consensus: it may miss recent writes.
func (c *Client) GetStale(ctx context.Context, key []byte) (value []byte, found bool, err error) {
	return c.get(ctx, key, true)
}

func (c *Client) get(ctx context.Context, key []byte, stale bool) ([]byte, bool, error) {
	var v []byte
	var found bool
	err := c.do(ctx, false, func(ctx context.Context, kv sharddv1.KVClient, opts ...grpc.CallOption) error {
		r, err := kv.Get(ctx, &sharddv1.GetRequest{Key: key, Stale: stale}, opts...)
		if err == nil {
			v, found = r.Value, r.Found
		}
		return err
	})
	return v, found, err
}

// Delete removes key (a no-op if it does not exist).
func (c *Client) Delete(ctx context.Context, key []byte) (WriteResult, error) {
	var res WriteResult
	err := c.do(ctx, true, func(ctx context.Context, kv sharddv1.KVClient, opts ...grpc.CallOption) error {
		r, err := kv.Delete(ctx, &sharddv1.DeleteRequest{Key: key}, opts...)
		if err == nil {
			res = WriteResult{Shard: r.Shard, Index: r.Index}
		}
		return err
	})
	return res, err
}

// CompareAndSwap sets key to value if it holds expected (or, with
// expectAbsent, if it does not exist); otherwise it returns ErrCASFailed.
func (c *Client) CompareAndSwap(ctx context.Context, key, expected []byte, expectAbsent bool, value []byte) (WriteResult, error) {
	var res WriteResult
	err := c.do(ctx, true, func(ctx context.Context, kv sharddv1.KVClient, opts ...grpc.CallOption) error {
		r, err := kv.CompareAndSwap(ctx, &sharddv1.CompareAndSwapRequest{Key: key, Expected: expected,
			ExpectAbsent: expectAbsent, Value: value}, opts...)
		if err == nil {
			res = WriteResult{Shard: r.Shard, Index: r.Index}
		}
		return err
	})
	return res, err
}

// Status returns the status of one node (the next in rotation).
func (c *Client) Status(ctx context.Context) (*sharddv1.StatusResponse, error) {
	var res *sharddv1.StatusResponse
	err := c.do(ctx, false, func(ctx context.Context, kv sharddv1.KVClient, opts ...grpc.CallOption) error {
		r, err := kv.Status(ctx, &sharddv1.StatusRequest{}, opts...)
		res = r
		return err
	})
	return res, err
}

// do runs call on the next node, retrying transient failures on the
// following nodes until the deadline; a write is retried only when it
// certainly did not run (see the package documentation).
func (c *Client) do(ctx context.Context, write bool, call func(context.Context, sharddv1.KVClient, ...grpc.CallOption) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.Timeout)
		defer cancel()
	}
	backoff := c.opts.RetryBackoff
	last := "no node reachable"
	for {
		i := c.next.Add(1) % uint64(len(c.kvs))
		var trailer metadata.MD
		var err error
		if write && !c.up(ctx, i) {
			err = status.Error(codes.Unavailable, "connection not up")
		} else {
			err = call(ctx, c.kvs[i], grpc.Trailer(&trailer))
		}
		if err == nil {
			return nil
		}
		st, _ := status.FromError(err)
		hint := trailer.Get("retry-after-ms")
		switch {
		case st.Code() == codes.ResourceExhausted:
		case st.Code() == codes.Unavailable && (!write || len(hint) > 0 || st.Message() == "connection not up"):
		case st.Code() == codes.Unavailable:
			// Sent over a live connection, and the reply was lost.
			return fmt.Errorf("%w: %s", ErrOutcomeUnknown, st.Message())
		default:
			return mapStatus(st)
		}
		last = st.Message()
		wait := backoff
		if len(hint) > 0 {
			if ms, perr := strconv.Atoi(hint[0]); perr == nil && ms > 0 {
				wait = time.Duration(ms) * time.Millisecond
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s (last: %v)", ErrUnavailable, ctx.Err(), last)
		case <-time.After(wait):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// connectParams retry a lost node's connection within seconds (gRPC's
// default backoff grows to two minutes), so a restarted node takes writes
// again soon.
var connectParams = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
	MinConnectTimeout: 2 * time.Second,
}

// connectWait bounds how long a write waits for a node's connection to
// come up before it tries the next node.
const connectWait = 200 * time.Millisecond

// up reports whether node i's connection is up, connecting it and waiting
// a little if it is not: a write goes only over a live connection, so that
// a failure before it left is told from a lost reply.
func (c *Client) up(ctx context.Context, i uint64) bool {
	conn := c.conns[i]
	s := conn.GetState()
	if s == connectivity.Ready {
		return true
	}
	conn.Connect()
	wctx, cancel := context.WithTimeout(ctx, connectWait)
	defer cancel()
	for s != connectivity.Ready {
		if s == connectivity.TransientFailure || s == connectivity.Shutdown || !conn.WaitForStateChange(wctx, s) {
			return false
		}
		s = conn.GetState()
	}
	return true
}

// mapStatus turns a final status into the client's error values.
func mapStatus(st *status.Status) error {
	switch st.Code() {
	case codes.FailedPrecondition:
		return fmt.Errorf("%w: %s", ErrCASFailed, st.Message())
	case codes.InvalidArgument:
		return fmt.Errorf("%w: %s", ErrInvalidArgument, st.Message())
	case codes.Aborted:
		return fmt.Errorf("%w: %s", ErrOutcomeUnknown, st.Message())
	case codes.DeadlineExceeded:
		return fmt.Errorf("%w: %s", context.DeadlineExceeded, st.Message())
	case codes.Canceled:
		return fmt.Errorf("%w: %s", context.Canceled, st.Message())
	}
	return st.Err()
}
