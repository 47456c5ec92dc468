package main

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// A forwarded write whose reply was lost may have run: it must not come
// back as a retryable Unavailable (the client would send it again), while
// one the other node refused with its retry hint did not run and stays
// retryable.
func TestForwardErr(t *testing.T) {
	k := &kvService{}
	ctx := context.Background()
	lost := status.Error(codes.Unavailable, "transport is closing")
	if got := status.Code(k.forwardErr(ctx, lost, nil)); got != codes.Aborted {
		t.Fatalf("lost reply: %v, want Aborted", got)
	}
	hinted := metadata.Pairs("retry-after-ms", "200")
	if got := status.Code(k.forwardErr(ctx, lost, hinted)); got != codes.Unavailable {
		t.Fatalf("refused with a hint: %v, want Unavailable", got)
	}
	cas := status.Error(codes.FailedPrecondition, "holds another value")
	if err := k.forwardErr(ctx, cas, nil); !errors.Is(err, cas) {
		t.Fatalf("other errors pass unchanged: %v", err)
	}
	if err := k.forwardErr(ctx, nil, nil); err != nil {
		t.Fatalf("success: %v", err)
	}
}
