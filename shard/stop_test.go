package shard

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/shardd/shardd/raftpb"
)

// BUG: Stop does not resolve proposals waiting for a leader.
//
// A proposal the core dropped because no leader is known is kept in
// r.waitingProps (step.go:127/142) and retried at the next Step. Stop
// (inbox.go:158) resolves the inbox, r.pending and r.readWait, but not
// r.waitingProps, and every Step after Stop returns at once (step.go:35), so
// nothing resolves them any more: the proposal never completes and its
// MaxPendingProposals slot is never released. Stop's contract ("queued and
// future requests fail") and the engine's StopShard/Close/failNode rely on
// Stop resolving everything.
func TestRegressionStopLeavesProposalsWaitingForLeader(t *testing.T) {
	n := newNode(t, 1, nodeOpts{}) // no leader yet
	p := n.propose(1, "a=1")
	cc, err := n.r.ProposeConfChange(2, raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.AddLearner, Node: 4}}})
	if err != nil {
		t.Fatal(err)
	}
	n.settle()
	if len(n.r.waitingProps) != 2 {
		t.Fatalf("setup: %d proposals waiting for a leader", len(n.r.waitingProps))
	}
	n.r.Stop(nil)
	n.settle() // a step after Stop does not help either
	for _, pr := range []*Proposal{p, cc} {
		if !isDone(pr.Done()) {
			t.Errorf("proposal %d waiting for a leader never completes after Stop", pr.key)
			continue
		}
		if _, err := pr.Result(); !errors.Is(err, ErrStopped) {
			t.Errorf("proposal %d: %v, want ErrStopped", pr.key, err)
		}
	}
	if got := n.r.outstanding.Load(); got != 0 {
		t.Errorf("outstanding after Stop = %d, want 0", got)
	}
}

// BUG: Stop does not resolve reads whose ReadIndex is in flight.
//
// A read handed to the core (startReads, step.go:166) waits in
// r.readRounds for its ReadState. Stop resolves reads in the inbox and in
// r.readWait, not those in r.readRounds, and Step returns at once after
// Stop, so the read never completes. On a follower this is the normal state
// of a read between sending MsgReadIndex and getting the answer.
func TestRegressionStopLeavesReadsInFlight(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{})
	c.elect(1)
	f := c.node(2)
	rr := f.read()
	f.settle() // MsgReadIndex sent, not answered yet
	if len(f.r.readRounds) != 1 {
		t.Fatalf("setup: %d read rounds in flight", len(f.r.readRounds))
	}
	f.r.Stop(nil)
	c.deliver() // even the leader's answer does not complete it
	if !isDone(rr.Done()) {
		t.Fatal("read in flight never completes after Stop")
	}
	if !errors.Is(rr.Err(), ErrStopped) {
		t.Fatalf("read: %v, want ErrStopped", rr.Err())
	}
}

// The same on a failure: an Update error stops the replica through Stop,
// and a proposal waiting for a leader on it is left hanging.
func TestRegressionFailureLeavesProposalsWaitingForLeader(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{})
	c.elect(1)
	f := c.node(3)
	f.kv.failCmd = "bad=1"
	bad := c.node(1).propose(1, "bad=1")
	f.holdApply = true
	c.deliver()
	mustSucceed(t, bad) // the leader is fine
	// Node 3 loses its leader before it applies the bad entry, and gets a
	// proposal while it has none.
	c.drop = isolate(3)
	for range 3 * electionTicks {
		c.tick(3)
	}
	if f.r.Status().Leader != raftpb.None {
		t.Fatalf("setup: node 3 still knows leader %d", f.r.Status().Leader)
	}
	p := f.propose(2, "x=1")
	f.settle()
	if len(f.r.waitingProps) != 1 {
		t.Fatalf("setup: %d waiting", len(f.r.waitingProps))
	}
	f.apply() // Update fails: the replica stops
	if f.r.Err() == nil {
		t.Fatal("setup: no failure")
	}
	if !isDone(p.Done()) {
		t.Fatal("proposal waiting for a leader never completes after the replica failed")
	}
}

// hookHandler is a slog.Handler that runs a hook on one log message: it
// lets a test run code at a precise point inside Step, as another
// goroutine could.
type hookHandler struct {
	msg  string
	hook func()
}

func (h *hookHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *hookHandler) Handle(_ context.Context, rec slog.Record) error {
	if rec.Message == h.msg && h.hook != nil {
		f := h.hook
		h.hook = nil
		f()
	}
	return nil
}

func (h *hookHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *hookHandler) WithGroup(string) slog.Handler      { return h }

// BUG: a Stop that runs while a step is in progress loses the proposals
// that step took from the inbox.
//
// Step takes the inbox (step.go:34) and hands the proposals to the core
// afterwards, tracking them in r.pending (step.go:73-76, track at
// step.go:153). Stop, called by the engine from another goroutine
// (StopShard, Close, failNode), swaps r.pending for an empty map and
// resolves what it took (inbox.go:171-180). A proposal that Step took from
// the inbox before Stop and tracks after it lands in the new map, which
// nothing resolves any more (every later Step returns at once): the
// proposal never completes. Here the Stop runs at the point of a log line
// inside Step, as a concurrent Stop could.
func TestRegressionStopDuringStepLosesProposal(t *testing.T) {
	h := &hookHandler{msg: "message refused"}
	n := newNode(t, 1, nodeOpts{logger: slog.New(h)})
	n.electSingle()
	p := n.propose(1, "a=1")
	// An invalid message makes Step log while the proposal is taken from
	// the inbox but not yet tracked.
	n.r.AddMessages(raftpb.Message{Type: raftpb.MsgApp, Shard: testShard + 1, From: 2, To: 1, Term: 2})
	h.hook = func() { n.r.Stop(nil) }
	n.settle()
	if h.hook != nil {
		t.Fatal("setup: the hook did not run")
	}
	n.settle()
	if !isDone(p.Done()) {
		t.Fatal("proposal taken by a step that raced with Stop never completes")
	}
}
