package tracker

import (
	"testing"

	"github.com/shardd/shardd/raftpb"
)

// newProgress returns an active progress in state with the given position
// and a window of 4 messages.
func newProgress(state StateType, match, next raftpb.Index) *Progress {
	return &Progress{
		ID:           1,
		Match:        match,
		Next:         next,
		State:        state,
		RecentActive: true,
		Inflights:    NewInflights(4, 0),
	}
}

func TestStateTypeString(t *testing.T) {
	for s, want := range map[StateType]string{
		StateProbe:     "StateProbe",
		StateReplicate: "StateReplicate",
		StateSnapshot:  "StateSnapshot",
		7:              "StateType(7)",
	} {
		if got := s.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", uint8(s), got, want)
		}
	}
}

// Every state change drops the flow-control state of the old one: a stale
// pause, inflight window or snapshot must not leak into the new state.
func TestProgressResetState(t *testing.T) {
	pr := newProgress(StateReplicate, 5, 9)
	pr.MsgAppFlowPaused = true
	pr.SentCommit = 4
	pr.PendingSnapshot = 3
	pr.Inflights.Add(8, 1)
	pr.ResetState(StateProbe)
	if pr.State != StateProbe || pr.MsgAppFlowPaused || pr.SentCommit != 0 ||
		pr.PendingSnapshot != 0 || pr.Inflights.Count() != 0 {
		t.Fatalf("after ResetState: %+v", pr)
	}
	if pr.Match != 5 || pr.Next != 9 {
		t.Fatalf("ResetState moved the position: match=%d next=%d", pr.Match, pr.Next)
	}
}

func TestProgressBecomeProbe(t *testing.T) {
	for _, tc := range []struct {
		name      string
		pr        *Progress
		snap      raftpb.Index // BecomeSnapshot(snap) first when non-zero
		wantNext  raftpb.Index
		wantMatch raftpb.Index
	}{
		{"from replicate", newProgress(StateReplicate, 1, 5), 0, 2, 1},
		{"from probe", newProgress(StateProbe, 1, 2), 0, 2, 1},
		// The follower may have installed the snapshot: probe after it.
		{"from snapshot", newProgress(StateReplicate, 1, 5), 10, 11, 1},
		// ... unless it is known to hold more than the snapshot.
		{"from snapshot behind match", newProgress(StateReplicate, 20, 21), 10, 21, 20},
		{"from snapshot equal", newProgress(StateReplicate, 10, 11), 10, 11, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr := tc.pr
			pr.Inflights.Add(pr.Next, 1)
			pr.SentCommit = 3
			if tc.snap != 0 {
				pr.BecomeSnapshot(tc.snap)
				if pr.State != StateSnapshot || pr.PendingSnapshot != tc.snap {
					t.Fatalf("BecomeSnapshot: %+v", pr)
				}
			}
			pr.MsgAppFlowPaused = true
			pr.BecomeProbe()
			if pr.State != StateProbe || pr.Next != tc.wantNext || pr.Match != tc.wantMatch {
				t.Fatalf("BecomeProbe: state=%s match=%d next=%d, want StateProbe %d %d",
					pr.State, pr.Match, pr.Next, tc.wantMatch, tc.wantNext)
			}
			if pr.MsgAppFlowPaused || pr.PendingSnapshot != 0 || pr.SentCommit != 0 || pr.Inflights.Count() != 0 {
				t.Fatalf("BecomeProbe kept old flow state: %+v", pr)
			}
		})
	}
}

func TestProgressBecomeReplicate(t *testing.T) {
	pr := newProgress(StateProbe, 3, 9)
	pr.MsgAppFlowPaused = true
	pr.BecomeReplicate()
	if pr.State != StateReplicate || pr.Match != 3 || pr.Next != 4 || pr.MsgAppFlowPaused {
		t.Fatalf("BecomeReplicate: %+v", pr)
	}
}

func TestProgressBecomeSnapshot(t *testing.T) {
	pr := newProgress(StateReplicate, 3, 9)
	pr.Inflights.Add(8, 10)
	pr.BecomeSnapshot(50)
	if pr.State != StateSnapshot || pr.PendingSnapshot != 50 || pr.Inflights.Count() != 0 {
		t.Fatalf("BecomeSnapshot: %+v", pr)
	}
	// The position is left for the snapshot report to settle.
	if pr.Match != 3 || pr.Next != 9 {
		t.Fatalf("BecomeSnapshot moved the position: match=%d next=%d", pr.Match, pr.Next)
	}
}

func TestProgressMaybeUpdate(t *testing.T) {
	for _, tc := range []struct {
		name      string
		match     raftpb.Index
		next      raftpb.Index
		n         raftpb.Index
		want      bool
		wantMatch raftpb.Index
		wantNext  raftpb.Index
	}{
		{"stale below match", 5, 10, 4, false, 5, 10},
		{"stale at match", 5, 10, 5, false, 5, 10},
		{"advance below next", 5, 10, 7, true, 7, 10},
		{"advance to next-1", 5, 10, 9, true, 9, 10},
		{"advance at next", 5, 10, 10, true, 10, 11},
		{"advance past next", 5, 10, 20, true, 20, 21},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr := newProgress(StateProbe, tc.match, tc.next)
			pr.MsgAppFlowPaused = true
			got := pr.MaybeUpdate(tc.n)
			if got != tc.want || pr.Match != tc.wantMatch || pr.Next != tc.wantNext {
				t.Fatalf("MaybeUpdate(%d) = %v match=%d next=%d, want %v %d %d",
					tc.n, got, pr.Match, pr.Next, tc.want, tc.wantMatch, tc.wantNext)
			}
			// An acknowledgement unpauses the probe; a stale one must not,
			// or a reordered old answer would let a second probe through.
			if pr.MsgAppFlowPaused != !tc.want {
				t.Fatalf("MsgAppFlowPaused = %v after MaybeUpdate = %v", pr.MsgAppFlowPaused, got)
			}
		})
	}
}

// Match never decreases whatever order acknowledgements arrive in (S13).
func TestProgressMaybeUpdateMonotonic(t *testing.T) {
	pr := newProgress(StateReplicate, 0, 1)
	var high raftpb.Index
	for _, n := range []raftpb.Index{3, 1, 7, 7, 2, 6, 9, 0, 8} {
		updated := pr.MaybeUpdate(n)
		if updated != (n > high) {
			t.Fatalf("MaybeUpdate(%d) = %v with match %d", n, updated, high)
		}
		high = max(high, n)
		if pr.Match != high || pr.Next <= pr.Match {
			t.Fatalf("after MaybeUpdate(%d): match=%d next=%d, want match %d < next", n, pr.Match, pr.Next, high)
		}
	}
}

func TestProgressMaybeDecrToReplicate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rejected raftpb.Index
		hint     raftpb.Index
		want     bool
		wantNext raftpb.Index
	}{
		{"stale below match", 3, 0, false, 10},
		{"stale at match", 5, 0, false, 10},
		// The hint does not matter: replicate restarts right after Match.
		{"rejected above match", 6, 0, true, 6},
		{"rejected at next-1", 9, 8, true, 6},
		{"hint below match", 9, 1, true, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr := newProgress(StateReplicate, 5, 10)
			got := pr.MaybeDecrTo(tc.rejected, tc.hint)
			if got != tc.want || pr.Next != tc.wantNext || pr.Match != 5 {
				t.Fatalf("MaybeDecrTo(%d, %d) = %v match=%d next=%d, want %v 5 %d",
					tc.rejected, tc.hint, got, pr.Match, pr.Next, tc.want, tc.wantNext)
			}
		})
	}
}

func TestProgressMaybeDecrToProbe(t *testing.T) {
	for _, tc := range []struct {
		name     string
		match    raftpb.Index
		next     raftpb.Index
		rejected raftpb.Index
		hint     raftpb.Index
		want     bool
		wantNext raftpb.Index
	}{
		// Only the answer to the last probe (at Next-1) counts.
		{"stale older probe", 0, 10, 8, 3, false, 10},
		{"stale newer than probe", 0, 10, 10, 3, false, 10},
		{"hint below rejected", 0, 10, 9, 3, true, 4},
		{"hint at rejected", 0, 10, 9, 9, true, 9},
		// A hint past the rejected index cannot move Next forward.
		{"hint above rejected", 0, 10, 9, 50, true, 9},
		{"hint zero", 0, 10, 9, 0, true, 1},
		// Next never goes below Match+1: the follower holds at least Match.
		{"hint below match", 5, 10, 9, 2, true, 6},
		{"hint at match", 5, 10, 9, 5, true, 6},
		{"hint above match", 5, 10, 9, 7, true, 8},
		{"probe right after match", 5, 6, 5, 0, true, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr := newProgress(StateProbe, tc.match, tc.next)
			pr.MsgAppFlowPaused = true
			got := pr.MaybeDecrTo(tc.rejected, tc.hint)
			if got != tc.want || pr.Next != tc.wantNext || pr.Match != tc.match {
				t.Fatalf("MaybeDecrTo(%d, %d) = %v match=%d next=%d, want %v %d %d",
					tc.rejected, tc.hint, got, pr.Match, pr.Next, tc.want, tc.match, tc.wantNext)
			}
			if pr.MsgAppFlowPaused == tc.want {
				t.Fatalf("MsgAppFlowPaused = %v after MaybeDecrTo = %v", pr.MsgAppFlowPaused, got)
			}
			if pr.Next <= pr.Match {
				t.Fatalf("invariant Match < Next broken: %d >= %d", pr.Match, pr.Next)
			}
		})
	}
}

func TestProgressIsPaused(t *testing.T) {
	probe := newProgress(StateProbe, 0, 1)
	if probe.IsPaused() {
		t.Error("fresh probe is paused")
	}
	probe.MsgAppFlowPaused = true
	if !probe.IsPaused() {
		t.Error("paused probe is not paused")
	}

	repl := newProgress(StateReplicate, 0, 1)
	// The probe pause flag means nothing in replicate.
	repl.MsgAppFlowPaused = true
	for i := range raftpb.Index(4) {
		if repl.IsPaused() {
			t.Fatalf("replicate with %d/4 inflight is paused", i)
		}
		repl.Inflights.Add(i+1, 1)
	}
	if !repl.IsPaused() {
		t.Error("replicate with a full window is not paused")
	}

	snap := newProgress(StateSnapshot, 0, 1)
	if !snap.IsPaused() {
		t.Error("snapshot is not paused")
	}
}

func TestProgressSentEntries(t *testing.T) {
	t.Run("replicate", func(t *testing.T) {
		pr := newProgress(StateReplicate, 3, 4)
		pr.SentEntries(6, 3, 300)
		if pr.Next != 7 || pr.Inflights.Count() != 1 || pr.Inflights.Bytes() != 300 {
			t.Fatalf("after sending 4..6: next=%d inflight=%d bytes=%d", pr.Next, pr.Inflights.Count(), pr.Inflights.Bytes())
		}
		// An empty MsgApp (commit update, heartbeat-like) takes no slot.
		pr.SentEntries(6, 0, 0)
		if pr.Next != 7 || pr.Inflights.Count() != 1 {
			t.Fatalf("after an empty send: next=%d inflight=%d", pr.Next, pr.Inflights.Count())
		}
		if pr.MsgAppFlowPaused {
			t.Fatal("replicate send set the probe pause")
		}
	})
	t.Run("probe", func(t *testing.T) {
		pr := newProgress(StateProbe, 3, 4)
		pr.SentEntries(6, 3, 300)
		// A probe does not advance Next optimistically and uses no window.
		if pr.Next != 4 || pr.Inflights.Count() != 0 || !pr.MsgAppFlowPaused || !pr.IsPaused() {
			t.Fatalf("after probing: %+v", pr)
		}
		pr = newProgress(StateProbe, 3, 4)
		pr.SentEntries(3, 0, 0)
		if !pr.MsgAppFlowPaused {
			t.Fatal("an empty probe did not pause")
		}
	})
	t.Run("snapshot", func(t *testing.T) {
		pr := newProgress(StateSnapshot, 3, 4)
		mustPanic(t, "SentEntries in StateSnapshot", func() { pr.SentEntries(6, 3, 300) })
	})
}

func TestProgressString(t *testing.T) {
	full := newProgress(StateReplicate, 3, 8)
	for i := range raftpb.Index(4) {
		full.Inflights.Add(4+i, 1)
	}
	partial := newProgress(StateReplicate, 3, 5)
	partial.Inflights.Add(4, 1)
	learner := newProgress(StateProbe, 0, 1)
	learner.IsLearner = true
	learner.RecentActive = false
	learner.MsgAppFlowPaused = true
	snap := newProgress(StateSnapshot, 2, 3)
	snap.PendingSnapshot = 9
	for _, tc := range []struct {
		pr   *Progress
		want string
	}{
		{newProgress(StateProbe, 0, 1), "StateProbe match=0 next=1"},
		{partial, "StateReplicate match=3 next=5 inflight=1"},
		{full, "StateReplicate match=3 next=8 inflight=4[full] paused"},
		{learner, "StateProbe match=0 next=1 learner inactive paused"},
		{snap, "StateSnapshot match=2 next=3 pendingSnap=9 paused"},
	} {
		if got := tc.pr.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}
