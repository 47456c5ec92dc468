package main

import (
	"context"
	"errors"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	sharddv1 "github.com/shardd/shardd/api/shardd/v1"
	"github.com/shardd/shardd/engine"
	"github.com/shardd/shardd/kv"
)

// kvService implements shardd.v1.KV on one node: it maps the key to its
// shard and serves it from the local replica (any replica: followers
// forward writes inside Raft and serve linearizable reads by ReadIndex),
// or forwards the request to a node that hosts the shard.
type kvService struct {
	sharddv1.UnimplementedKVServer
	s *server
}

func (k *kvService) Put(ctx context.Context, req *sharddv1.PutRequest) (*sharddv1.PutResponse, error) {
	if err := kv.Validate(req.Key, req.Value); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	shard := k.s.place.shardOf(req.Key)
	if !k.local(shard) {
		c, err := k.s.forwarder(ctx, shard)
		if err != nil {
			return nil, k.unavailable(ctx, err)
		}
		var md metadata.MD
		resp, err := c.Put(ctx, req, grpc.Trailer(&md))
		return resp, k.forwardErr(ctx, err, md)
	}
	res, err := k.propose(ctx, shard, kv.EncodePut(req.Key, req.Value))
	if err != nil {
		return nil, err
	}
	return &sharddv1.PutResponse{Shard: shard, Index: res.Index}, nil
}

func (k *kvService) Delete(ctx context.Context, req *sharddv1.DeleteRequest) (*sharddv1.DeleteResponse, error) {
	if err := kv.Validate(req.Key, nil); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	shard := k.s.place.shardOf(req.Key)
	if !k.local(shard) {
		c, err := k.s.forwarder(ctx, shard)
		if err != nil {
			return nil, k.unavailable(ctx, err)
		}
		var md metadata.MD
		resp, err := c.Delete(ctx, req, grpc.Trailer(&md))
		return resp, k.forwardErr(ctx, err, md)
	}
	res, err := k.propose(ctx, shard, kv.EncodeDelete(req.Key))
	if err != nil {
		return nil, err
	}
	return &sharddv1.DeleteResponse{Shard: shard, Index: res.Index}, nil
}

func (k *kvService) CompareAndSwap(ctx context.Context, req *sharddv1.CompareAndSwapRequest) (*sharddv1.CompareAndSwapResponse, error) {
	if err := kv.Validate(req.Key, req.Value); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if len(req.Expected) > kv.MaxValueBytes {
		return nil, status.Errorf(codes.InvalidArgument, "expected value of %d bytes exceeds the limit of %d bytes",
			len(req.Expected), kv.MaxValueBytes)
	}
	shard := k.s.place.shardOf(req.Key)
	if !k.local(shard) {
		c, err := k.s.forwarder(ctx, shard)
		if err != nil {
			return nil, k.unavailable(ctx, err)
		}
		var md metadata.MD
		resp, err := c.CompareAndSwap(ctx, req, grpc.Trailer(&md))
		return resp, k.forwardErr(ctx, err, md)
	}
	res, err := k.propose(ctx, shard, kv.EncodeCAS(req.Key, req.Expected, !req.ExpectAbsent, req.Value))
	if err != nil {
		return nil, err
	}
	if !kv.Applied(res) {
		return nil, status.Error(codes.FailedPrecondition, "compare-and-swap: the key holds another value")
	}
	return &sharddv1.CompareAndSwapResponse{Shard: shard, Index: res.Index}, nil
}

func (k *kvService) Get(ctx context.Context, req *sharddv1.GetRequest) (*sharddv1.GetResponse, error) {
	if err := kv.Validate(req.Key, nil); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	shard := k.s.place.shardOf(req.Key)
	if !k.local(shard) {
		c, err := k.s.forwarder(ctx, shard)
		if err != nil {
			return nil, k.unavailable(ctx, err)
		}
		var md metadata.MD
		resp, err := c.Get(ctx, req, grpc.Trailer(&md))
		if hint := md.Get("retry-after-ms"); len(hint) > 0 {
			_ = grpc.SetTrailer(ctx, metadata.Pairs("retry-after-ms", hint[0]))
		}
		return resp, err
	}
	var out []byte
	var err error
	if req.Stale {
		out, err = k.s.node.StaleRead(shard, kv.EncodeGet(req.Key))
	} else {
		if err := k.needLeader(ctx, shard); err != nil {
			return nil, err
		}
		out, err = k.s.node.Read(ctx, shard, kv.EncodeGet(req.Key))
	}
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	v, found, err := kv.DecodeLookup(out)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &sharddv1.GetResponse{Value: v, Found: found}, nil
}

func (k *kvService) Status(ctx context.Context, _ *sharddv1.StatusRequest) (*sharddv1.StatusResponse, error) {
	st := k.s.status()
	resp := &sharddv1.StatusResponse{NodeId: st.Node, Shards: st.Shards, Replicas: uint64(st.Replicas)}
	for _, p := range st.Peers {
		resp.Peers = append(resp.Peers, &sharddv1.PeerStatus{NodeId: p.Node, RaftAddress: p.Address, Reachable: p.Reachable})
	}
	for _, sh := range st.LocalShards {
		resp.LocalShards = append(resp.LocalShards, &sharddv1.ShardStatus{Shard: sh.Shard, Role: sh.Role,
			Term: sh.Term, Leader: sh.Leader, Commit: sh.Commit, Applied: sh.Applied, Voters: sh.Voters,
			Learners: sh.Learners, Quiesced: sh.Quiesced, Error: sh.Error})
	}
	return resp, nil
}

func (k *kvService) local(shard uint64) bool { return k.s.place.hosts(shard, k.s.f.nodeID) }

// retryAfterMs is the hint sent with Unavailable: about an election.
func (k *kvService) retryAfterMs() string {
	return strconv.Itoa(int(k.s.f.tick.Milliseconds()) * 20)
}

// unavailable refuses a request that did not run, with a retry hint.
func (k *kvService) unavailable(ctx context.Context, err error) error {
	_ = grpc.SetTrailer(ctx, metadata.Pairs("retry-after-ms", k.retryAfterMs()))
	return status.Error(codes.Unavailable, err.Error())
}

// forwardErr passes on the outcome of a write forwarded to another node.
// An Unavailable with the other node's retry hint did not run and is
// passed on with the hint; one without it means the reply was lost on a
// live connection — the write may have run — so it becomes Aborted
// (outcome unknown), never a retryable Unavailable.
func (k *kvService) forwardErr(ctx context.Context, err error, md metadata.MD) error {
	if err == nil || status.Code(err) != codes.Unavailable {
		return err
	}
	if hint := md.Get("retry-after-ms"); len(hint) > 0 {
		_ = grpc.SetTrailer(ctx, metadata.Pairs("retry-after-ms", hint[0]))
		return err
	}
	return status.Error(codes.Aborted, "outcome unknown: forwarded write lost its reply: "+status.Convert(err).Message())
}

// needLeader refuses at once, with a retry hint, a request for a shard that
// has no leader yet (an election is under way): waiting here would only
// hold the client's deadline.
func (k *kvService) needLeader(ctx context.Context, shard uint64) error {
	if _, _, ok := k.s.node.Leader(shard); ok {
		return nil
	}
	_ = grpc.SetTrailer(ctx, metadata.Pairs("retry-after-ms", k.retryAfterMs()))
	return status.Errorf(codes.Unavailable, "shard %d has no leader yet", shard)
}

func (k *kvService) propose(ctx context.Context, shard uint64, cmd []byte) (engine.Result, error) {
	if err := k.needLeader(ctx, shard); err != nil {
		return engine.Result{}, err
	}
	res, err := k.s.node.Propose(ctx, shard, cmd)
	if err != nil {
		if status.Code(toStatus(ctx, err)) == codes.Unavailable {
			_ = grpc.SetTrailer(ctx, metadata.Pairs("retry-after-ms", k.retryAfterMs()))
		}
		return res, toStatus(ctx, err)
	}
	return res, nil
}

// toStatus maps the engine's errors to status codes a client can act on.
func toStatus(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, engine.ErrBusy):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, engine.ErrResultUnknown):
		return status.Error(codes.Aborted, "outcome unknown: "+err.Error())
	case errors.Is(err, engine.ErrClosed), errors.Is(err, engine.ErrShardNotFound):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	return status.Error(codes.Internal, err.Error())
}
