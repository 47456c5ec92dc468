package main

import (
	"context"
	"errors"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sharddv1 "github.com/shardd/shardd/api/shardd/v1"
)

// fakeKV serves shardd.v1.KV over an in-process cluster, as the daemon
// will: keys hashed to shards, each request to the shard's leader.
type fakeKV struct {
	sharddv1.UnimplementedKVServer
	c  *cluster
	st *localStore
}

func (f *fakeKV) keyOf(k []byte) key {
	h := fnv.New64a()
	h.Write(k)
	return key{shard: 1 + h.Sum64()%uint64(f.c.o.shards), name: k}
}

func grpcError(err error) error {
	switch {
	case errors.Is(err, errRetry):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}

func (f *fakeKV) Put(ctx context.Context, r *sharddv1.PutRequest) (*sharddv1.PutResponse, error) {
	k := f.keyOf(r.Key)
	if err := f.st.Put(ctx, k, r.Value); err != nil {
		return nil, grpcError(err)
	}
	return &sharddv1.PutResponse{Shard: k.shard}, nil
}

func (f *fakeKV) Get(ctx context.Context, r *sharddv1.GetRequest) (*sharddv1.GetResponse, error) {
	v, err := f.st.Get(ctx, f.keyOf(r.Key))
	if err != nil {
		return nil, grpcError(err)
	}
	return &sharddv1.GetResponse{Value: v, Found: v != nil}, nil
}

func (f *fakeKV) Status(ctx context.Context, r *sharddv1.StatusRequest) (*sharddv1.StatusResponse, error) {
	res := &sharddv1.StatusResponse{NodeId: 1, Shards: uint64(f.c.o.shards)}
	for s := 1; s <= f.c.o.shards; s++ {
		res.LocalShards = append(res.LocalShards, &sharddv1.ShardStatus{Shard: uint64(s), Leader: f.c.leaderOf(uint64(s))})
	}
	return res, nil
}

// --targets drives a cluster through the client package; --metrics adds
// the nodes' figures.
func TestRemote(t *testing.T) {
	c, err := newCluster(clusterOptions{nodes: 3, replicas: 3, shards: 6, dir: t.TempDir(),
		logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.closeAll()
	ctx := context.Background()
	if err := c.startShards(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.waitLeaders(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	sharddv1.RegisterKVServer(srv, &fakeKV{c: c, st: &localStore{c: c, payload: 16}})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() {
		srv.Stop()
		<-served
	}()
	metrics := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, n := range c.nodeList() {
			n.WritePrometheus(w)
		}
	}))
	defer metrics.Close()

	_, stderr, m, err := runTool(t, "--targets", lis.Addr().String(), "--metrics", strings.TrimPrefix(metrics.URL, "http://"),
		"--clients", "8", "--duration", "1s", "--warmup", "200ms", "--read-ratio", "0.3")
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr)
	}
	if m["mode"] != "remote" || field(t, m, "shards") != 6 || field(t, m, "writes_per_sec") <= 0 ||
		field(t, m, "reads_per_sec") <= 0 || field(t, m, "errors") != 0 {
		t.Errorf("remote figures: %v", m)
	}
	if field(t, m, "fsyncs_per_sec") <= 0 || field(t, m, "entries_per_fsync") <= 0 || field(t, m, "messages_per_sec") <= 0 {
		t.Errorf("node figures from /metrics: fsyncs/s %v entries/fsync %v messages/s %v",
			m["fsyncs_per_sec"], m["entries_per_fsync"], m["messages_per_sec"])
	}
}
