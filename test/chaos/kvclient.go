package chaos

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	sharddv1 "github.com/shardd/shardd/api/shardd/v1"
	"github.com/shardd/shardd/client"
)

// kvClient is what a worker calls: the Go client (goKV), or rawKV, which
// speaks the gRPC API itself and retries only what certainly did not run.
// Besides nil, a write returns errCASFailed (the CAS ran and found another
// value), errNotApplied (it certainly did not run) or any other error,
// which may hide a success.
type kvClient interface {
	get(ctx context.Context, key string) (value string, found bool, err error)
	put(ctx context.Context, key, value string) (shard uint64, err error)
	cas(ctx context.Context, key, expected, value string) (shard uint64, err error)
	close()
}

var (
	errCASFailed  = errors.New("chaos: compare-and-swap found another value")
	errNotApplied = errors.New("chaos: write certainly not applied")
)

func newKVClient(kind string, addrs []string, timeout time.Duration) (kvClient, error) {
	switch kind {
	case "go":
		cl, err := client.New(addrs, client.Options{Timeout: timeout})
		if err != nil {
			return nil, err
		}
		return goKV{cl}, nil
	case "raw":
		return newRawKV(addrs)
	}
	return nil, fmt.Errorf("unknown -chaos.client %q (go or raw)", kind)
}

// goKV is the Go client (package client), as users run it.
type goKV struct{ cl *client.Client }

func (g goKV) get(ctx context.Context, key string) (string, bool, error) {
	v, found, err := g.cl.Get(ctx, []byte(key))
	return string(v), found, err
}

func (g goKV) put(ctx context.Context, key, value string) (uint64, error) {
	res, err := g.cl.Put(ctx, []byte(key), []byte(value))
	return res.Shard, err
}

func (g goKV) cas(ctx context.Context, key, expected, value string) (uint64, error) {
	res, err := g.cl.CompareAndSwap(ctx, []byte(key), []byte(expected), expected == "", []byte(value))
	if errors.Is(err, client.ErrCASFailed) {
		err = fmt.Errorf("%w: %w", errCASFailed, err)
	}
	return res.Shard, err
}

func (g goKV) close() { g.cl.Close() }

// rawKV calls shardd.v1.KV on the nodes in turn. It retries a write only
// when the request certainly did not run: the node refused it before
// proposing (Unavailable with the retry-after-ms trailer, or "has no
// leader yet" relayed by a forwarding node), a full queue
// (ResourceExhausted), or a connection that never got as far as sending
// a request (notSent). Anything else ends the write with its error, which
// may hide a success — in particular Unavailable from a connection that
// broke while the request was in flight (a node killed under it, or a
// forwarding node relaying that from the next hop).
type rawKV struct {
	conns []*grpc.ClientConn
	kvs   []sharddv1.KVClient
	next  atomic.Uint64
}

func newRawKV(addrs []string) (*rawKV, error) {
	r := &rawKV{}
	for _, a := range addrs {
		conn, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			r.close()
			return nil, err
		}
		r.conns = append(r.conns, conn)
		r.kvs = append(r.kvs, sharddv1.NewKVClient(conn))
	}
	return r, nil
}

func (r *rawKV) close() {
	for _, c := range r.conns {
		c.Close()
	}
}

// notRun reports whether a failed call certainly did not run its write.
func notRun(st *status.Status, trailer metadata.MD) bool {
	switch st.Code() {
	case codes.ResourceExhausted:
		return true
	case codes.Unavailable:
		return len(trailer.Get("retry-after-ms")) > 0 ||
			strings.Contains(st.Message(), "has no leader yet") ||
			notSent(st.Message())
	}
	return false
}

// connection setup failures after which gRPC has written no request on
// the connection (its http2 client queues streams until the preface is
// exchanged). "connection error:" alone is not enough: gRPC uses it too
// for a connection lost with requests in flight.
var setupFailures = []string{"Error while dialing", "error reading server preface", "failed to write client preface"}

// notSent reports whether an Unavailable message says the connection
// failed before any request went out on it.
func notSent(msg string) bool {
	if !strings.HasPrefix(msg, "connection error:") {
		return false
	}
	for _, f := range setupFailures {
		if strings.Contains(msg, f) {
			return true
		}
	}
	return false
}

func (r *rawKV) do(ctx context.Context, write bool, call func(context.Context, sharddv1.KVClient, ...grpc.CallOption) error) error {
	backoff := 10 * time.Millisecond
	for {
		i := r.next.Add(1) % uint64(len(r.kvs))
		var trailer metadata.MD
		err := call(ctx, r.kvs[i], grpc.Trailer(&trailer))
		if err == nil {
			return nil
		}
		st := status.Convert(err)
		if st.Code() == codes.FailedPrecondition {
			return errCASFailed
		}
		if write && !notRun(st, trailer) {
			return err
		}
		if !sleep(ctx, backoff) {
			if write {
				return fmt.Errorf("%w: %v", errNotApplied, err)
			}
			return err
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

func (r *rawKV) get(ctx context.Context, key string) (string, bool, error) {
	var v string
	var found bool
	err := r.do(ctx, false, func(ctx context.Context, kv sharddv1.KVClient, opts ...grpc.CallOption) error {
		res, err := kv.Get(ctx, &sharddv1.GetRequest{Key: []byte(key)}, opts...)
		if err == nil {
			v, found = string(res.Value), res.Found
		}
		return err
	})
	return v, found, err
}

func (r *rawKV) put(ctx context.Context, key, value string) (uint64, error) {
	var shard uint64
	err := r.do(ctx, true, func(ctx context.Context, kv sharddv1.KVClient, opts ...grpc.CallOption) error {
		res, err := kv.Put(ctx, &sharddv1.PutRequest{Key: []byte(key), Value: []byte(value)}, opts...)
		if err == nil {
			shard = res.Shard
		}
		return err
	})
	return shard, err
}

func (r *rawKV) cas(ctx context.Context, key, expected, value string) (uint64, error) {
	var shard uint64
	err := r.do(ctx, true, func(ctx context.Context, kv sharddv1.KVClient, opts ...grpc.CallOption) error {
		res, err := kv.CompareAndSwap(ctx, &sharddv1.CompareAndSwapRequest{Key: []byte(key), Expected: []byte(expected),
			ExpectAbsent: expected == "", Value: []byte(value)}, opts...)
		if err == nil {
			shard = res.Shard
		}
		return err
	})
	return shard, err
}
