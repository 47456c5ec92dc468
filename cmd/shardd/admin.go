package main

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sharddv1 "github.com/shardd/shardd/api/shardd/v1"
	"github.com/shardd/shardd/engine"
)

// adminService implements shardd.v1.Admin on the shards this node hosts.
type adminService struct {
	sharddv1.UnimplementedAdminServer
	s *server
}

func (a *adminService) TransferLeader(ctx context.Context, req *sharddv1.TransferLeaderRequest) (*sharddv1.TransferLeaderResponse, error) {
	if err := a.s.node.TransferLeader(ctx, req.Shard, req.Target); err != nil {
		return nil, adminStatus(ctx, err)
	}
	return &sharddv1.TransferLeaderResponse{}, nil
}

func (a *adminService) ChangeMembership(ctx context.Context, req *sharddv1.ChangeMembershipRequest) (*sharddv1.ChangeMembershipResponse, error) {
	if len(req.Voters) == 0 {
		return nil, status.Error(codes.InvalidArgument, "voters: at least one is needed")
	}
	if err := a.s.node.ChangeMembership(ctx, req.Shard, req.Voters, req.Learners); err != nil {
		return nil, adminStatus(ctx, err)
	}
	return &sharddv1.ChangeMembershipResponse{}, nil
}

func (a *adminService) RequestSnapshot(ctx context.Context, req *sharddv1.RequestSnapshotRequest) (*sharddv1.RequestSnapshotResponse, error) {
	idx, err := a.s.node.RequestSnapshot(ctx, req.Shard)
	if err != nil {
		return nil, adminStatus(ctx, err)
	}
	return &sharddv1.RequestSnapshotResponse{Index: idx}, nil
}

func adminStatus(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, engine.ErrShardNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, engine.ErrMembershipChangeInProgress):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, engine.ErrInvalidConfig):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return toStatus(ctx, err)
}
