package grouptest

// Snapshot and compaction scenarios of SCENARIOS.md: S14 (follower restart
// after a snapshot), S25, S26, S29, S30, S31. Helpers are in
// scenario_storage_test.go.

import (
	"errors"
	"fmt"
	"testing"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

// snReleaseChecker follows a replica's Readys in order and checks what they
// release for applying: a snapshot never moves applied back, and committed
// entries continue exactly after the last thing released (so nothing at or
// below a snapshot's index is released after it).
type snReleaseChecker struct {
	t       *testing.T
	applied raftpb.Index
	log     []string
}

func (c *snReleaseChecker) ready(rd group.Ready) {
	c.t.Helper()
	if s := rd.Snapshot; s != nil {
		if s.Index < c.applied {
			c.t.Fatalf("snapshot %d released after entries up to %d: applied would regress", s.Index, c.applied)
		}
		if len(rd.CommittedEntries) > 0 {
			c.t.Fatalf("Ready carries both a snapshot and committed entries %v", rd.CommittedEntries)
		}
		c.applied = s.Index
		c.log = append(c.log, fmt.Sprintf("snap@%d", s.Index))
	}
	for _, e := range rd.CommittedEntries {
		if e.Index != c.applied+1 {
			c.t.Fatalf("entry %d released after %d (history %v)", e.Index, c.applied, c.log)
		}
		c.applied = e.Index
		c.log = append(c.log, fmt.Sprint(e.Index))
	}
}

// S25: a snapshot arriving while committed entries are still being applied
// (their Ready handed out, not advanced) moves applied forward only; entries
// released before it are at or below its index, and none at or below it are
// released after it — not even ones whose append raced with the install.
func TestS25SnapshotDuringApplyNeverRegresses(t *testing.T) {
	cs := snVoters(1, 2, 3)
	n := snOpen(t, group.NewMemoryLog(cs), 3, 0, nil)
	chk := &snReleaseChecker{t: t}
	var lastApplying raftpb.Index
	ready := func() group.Ready {
		t.Helper()
		rd := n.ready()
		chk.ready(rd)
		if a := n.G.BasicStatus().Applying; a < lastApplying {
			t.Fatalf("Applying went back %d -> %d", lastApplying, a)
		} else {
			lastApplying = a
		}
		return rd
	}
	for n.G.HasReady() {
		ready()
		n.persistNext()
	}
	// Leader 1 of term 2 replicates 2..5 and commits 3.
	n.mustStep(snApp(1, 3, 2, 1, 1, 3, snEnts(2, 5, 2)))
	ready()
	n.persistNext()
	// The apply of 2..3 is handed out and slow: not advanced.
	rdApply := ready()
	if len(rdApply.CommittedEntries) == 0 || rdApply.CommittedEntries[len(rdApply.CommittedEntries)-1].Index != 3 {
		t.Fatalf("apply Ready: %v", rdApply.CommittedEntries)
	}
	// Meanwhile the leader (which compacted past 5) sends its snapshot at 8.
	snap := snMsg(raftpb.MsgSnap, 1, 3, 2)
	snap.Snapshot = &raftpb.SnapshotMeta{Index: 8, Term: 2, ConfState: cs}
	n.mustStep(snap)
	rdSnap := ready()
	if rdSnap.Snapshot == nil || rdSnap.Snapshot.Index != 8 {
		t.Fatalf("no snapshot in the Ready after MsgSnap: %+v", rdSnap)
	}
	if len(rdSnap.AfterPersist) == 0 || rdSnap.AfterPersist[0].Index != 8 {
		t.Fatalf("snapshot ack: %v", rdSnap.AfterPersist)
	}
	// Entries after the snapshot arrive before it is durable: they must not
	// be released until the snapshot is installed.
	n.mustStep(snApp(1, 3, 2, 8, 2, 10, snEnts(9, 10, 2)))
	rdMore := ready()
	if len(rdMore.CommittedEntries) > 0 {
		t.Fatalf("entries %v released before the snapshot is durable", rdMore.CommittedEntries)
	}
	// The slow apply finishes, then the snapshot and the entries persist.
	n.flush()
	for n.G.HasReady() {
		ready()
		n.persistNext()
	}
	if chk.applied != 10 {
		t.Fatalf("released up to %d, want 10 (history %v)", chk.applied, chk.log)
	}
	if st := n.G.BasicStatus(); st.Applying != 10 || st.HardState.Commit != 10 || st.FirstIndex != 9 {
		t.Fatalf("status %+v", st)
	}
	// A duplicate of the old MsgApp (entries 2..5, now below the snapshot)
	// is skipped, not re-released, and does not panic.
	n.mustStep(snApp(1, 3, 2, 1, 1, 3, snEnts(2, 5, 2)))
	for n.G.HasReady() {
		ready()
		n.persistNext()
	}
}

// S25 in a cluster with pipelined persistence: a follower whose appends are
// mostly lost falls behind a leader that compacts its whole log often, and
// receives snapshots while its own earlier applies are still queued (Readys
// handed out, persist pending). No replica's applied index ever goes back and
// every apply is in order (the oracle checks each one).
func TestS25ClusterSnapshotRaceWithPendingApply(t *testing.T) {
	races, installs := 0, 0
	for seed := uint64(1); seed <= 8; seed++ {
		c := snCluster(t, Options{Voters: []raftpb.NodeID{1, 2, 3}, Seed: seed, PersistDelay: 20})
		lead := snElect(t, c)
		// Stabilize (used by snElect and snSettle) cannot run with network
		// delays: see TestSnHarnessStabilizeWithNetworkDelay.
		c.Net.MaxDelay = 5
		f := snOthers(c, lead)[0]
		c.Net.Filter = func(m *raftpb.Message) bool {
			if m.To != f {
				return true
			}
			if m.Type == raftpb.MsgSnap {
				installs++
				for _, p := range c.R(f).pending {
					if len(p.rd.CommittedEntries) > 0 {
						races++
						break
					}
				}
				return true
			}
			// Most appends to f are lost: it lags behind the compaction.
			return m.Type != raftpb.MsgApp || c.Rand.IntN(10) < 3
		}
		applied := map[raftpb.NodeID]raftpb.Index{}
		watch := func() {
			for _, id := range c.IDs {
				r := c.R(id)
				if r.Down {
					continue
				}
				if r.SM.Applied < applied[id] {
					t.Fatalf("seed %d: replica %d applied went back %d -> %d", seed, id, applied[id], r.SM.Applied)
				}
				applied[id] = r.SM.Applied
			}
		}
		for s := 1; s <= 3000 && c.Err() == nil; s++ {
			if s%4 == 0 {
				_ = c.Propose(lead, EncodePut("a", fmt.Sprint(s)))
			}
			snStep(c)
			if s%StepsPerTick == 0 {
				c.TickAll()
			}
			if s%40 == 0 {
				c.Flush(lead)
				if err := c.TakeSnapshot(lead, 0); err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
			}
			watch()
		}
		c.Net.Filter, c.Net.MaxDelay = nil, 0
		c.Stabilize()
		snSettle(c, 3*c.Opts.ElectionTicks)
		watch()
		if err := c.Err(); err != nil {
			t.Fatalf("seed %d: oracle: %v", seed, err)
		}
		l := c.Leader()
		for _, id := range c.IDs {
			if got, want := c.R(id).SM.Applied, c.R(l).SM.Applied; got != want {
				t.Fatalf("seed %d: replica %d applied %d, leader %d", seed, id, got, want)
			}
		}
	}
	t.Logf("snapshots sent %d, of which %d while the follower had applies queued", installs, races)
	if races == 0 {
		t.Fatal("the race was never exercised")
	}
}

// S26(a): a delayed snapshot at 100 reaching a follower that has committed
// and applied 120 is ignored; the reply reports 120. Also when the follower
// has itself compacted past 100 (it can no longer compare terms at 100).
func TestS26aStaleSnapshotIgnored(t *testing.T) {
	cs := snVoters(1, 2, 3)
	for _, compacted := range []bool{false, true} {
		t.Run(fmt.Sprintf("compacted=%v", compacted), func(t *testing.T) {
			l := snLog(t, cs, raftpb.HardState{Term: 2, Vote: 1, Commit: 120}, snEnts(2, 120, 2))
			if compacted {
				if err := l.SetSnapshot(raftpb.SnapshotMeta{Index: 110, Term: 2, ConfState: cs}); err != nil {
					t.Fatal(err)
				}
				if err := l.Compact(110); err != nil {
					t.Fatal(err)
				}
			}
			first := snFirst(l)
			n := snOpen(t, l, 3, 120, nil)
			n.mustStep(snMsg(raftpb.MsgHeartbeat, 1, 3, 2))
			n.drain()
			before := n.G.BasicStatus()
			m := snMsg(raftpb.MsgSnap, 1, 3, 2)
			m.Snapshot = &raftpb.SnapshotMeta{Index: 100, Term: 2, ConfState: cs}
			n.mustStep(m)
			rds := n.drain()
			var resp []raftpb.Message
			for _, rd := range rds {
				if rd.Snapshot != nil {
					t.Fatalf("stale snapshot %d installed", rd.Snapshot.Index)
				}
				if len(rd.Entries) > 0 || len(rd.CommittedEntries) > 0 {
					t.Fatalf("stale snapshot changed the log: %+v", rd)
				}
				resp = append(resp, snMsgsOf(append(rd.Messages, rd.AfterPersist...), raftpb.MsgAppResp)...)
			}
			if len(resp) != 1 || resp[0].Reject || resp[0].Index != 120 {
				t.Fatalf("reply %v, want one MsgAppResp reporting 120", resp)
			}
			if after := n.G.BasicStatus(); after != before {
				t.Fatalf("state changed: %+v -> %+v", before, after)
			}
			if snLast(n.Log) != 120 || snFirst(n.Log) != first {
				t.Fatalf("durable log [%d, %d]", snFirst(n.Log), snLast(n.Log))
			}
		})
	}
}

// S26(b): a follower with uncommitted conflicting entries 90..110 receives
// a snapshot at 100: one Ready carries the snapshot (which replaces the whole
// log, conflicting suffix included), the new term and commit, so a single
// atomic persist either leaves the old state or the new one — never a dirty
// suffix behind the snapshot.
func TestS26bSnapshotReplacesConflictingLogInOnePersist(t *testing.T) {
	cs := snVoters(1, 2, 3)
	mk := func() *snNode {
		l := snLog(t, cs, raftpb.HardState{Term: 3, Vote: 3, Commit: 89}, snEnts(2, 89, 2), snEnts(90, 110, 3))
		n := snOpen(t, l, 3, 0, nil)
		n.drain()
		return n
	}
	snap := snMsg(raftpb.MsgSnap, 2, 3, 4)
	snap.Snapshot = &raftpb.SnapshotMeta{Index: 100, Term: 4, ConfState: cs}

	n := mk()
	n.mustStep(snap)
	rd := n.ready()
	if n.G.HasReady() {
		t.Fatalf("the install is split over several Readys: %+v", n.G.Ready())
	}
	if rd.Snapshot == nil || rd.Snapshot.Index != 100 {
		t.Fatalf("Ready without the snapshot: %+v", rd)
	}
	if len(rd.Entries) != 0 {
		t.Fatalf("Ready also writes entries %v", rd.Entries)
	}
	if rd.HardState.Term != 4 || rd.HardState.Commit != 100 {
		t.Fatalf("hard state %+v not persisted with the snapshot", rd.HardState)
	}
	if rd.ConfState == nil || !rd.ConfState.Equal(&cs) || rd.ConfIndex != 100 {
		t.Fatalf("membership not recorded with the snapshot: %v at %d", rd.ConfState, rd.ConfIndex)
	}
	if len(snMsgsOf(rd.Messages, raftpb.MsgAppResp)) != 0 {
		t.Fatal("snapshot acknowledged before the persist")
	}

	// Crash before the persist: the old state, intact and consistent.
	crashed := n.Log.Clone()
	c := snOpen(t, crashed, 3, 0, nil)
	if st := c.G.BasicStatus(); st.LastIndex != 110 || st.HardState.Commit != 89 || st.HardState.Term != 3 {
		t.Fatalf("restart after a crash before the persist: %+v", st)
	}

	// The persist: the whole log is the snapshot, no suffix left.
	n.persistNext()
	if snLast(n.Log) != 100 || snFirst(n.Log) != 101 {
		t.Fatalf("durable log [%d, %d] after the install, want empty after 100", snFirst(n.Log), snLast(n.Log))
	}
	if tm := snTerm(t, n.Log, 100); tm != 4 {
		t.Fatalf("term at the snapshot index %d", tm)
	}
	if _, err := n.Log.Term(101); !errors.Is(err, group.ErrUnavailable) {
		t.Fatalf("dirty suffix: term(101) = %v", err)
	}
	if hs := n.Log.HardState(); hs.Term != 4 || hs.Commit != 100 {
		t.Fatalf("durable hard state %+v", hs)
	}
	if s, err := n.Log.Snapshot(); err != nil || s.Index != 100 || s.Term != 4 {
		t.Fatalf("durable snapshot %+v %v", s, err)
	}
	rds := n.drain()
	for _, rd := range rds {
		if len(rd.CommittedEntries) > 0 {
			t.Fatalf("entries released after the snapshot: %v", rd.CommittedEntries)
		}
	}
	// Restart from the new state: the conflicting entries are gone; the
	// new leader continues after (4, 100).
	n.restart(100)
	if st := n.G.BasicStatus(); st.LastIndex != 100 || st.FirstIndex != 101 || st.HardState.Commit != 100 {
		t.Fatalf("after restart: %+v", st)
	}
	n.mustStep(snApp(2, 3, 4, 100, 4, 101, snEnts(101, 101, 4)))
	rd = n.ready()
	if len(rd.AfterPersist) != 1 || rd.AfterPersist[0].Reject || rd.AfterPersist[0].Index != 101 {
		t.Fatalf("append after the snapshot: %v", rd.AfterPersist)
	}
}

// S26(c): a snapshot whose (index, term) contradicts a committed entry is
// refused with ErrInvalidMessage and not adopted.
func TestS26cConflictingSnapshotRejected(t *testing.T) {
	cs := snVoters(1, 2, 3)
	mk := func() *snNode {
		l := snLog(t, cs, raftpb.HardState{Term: 2, Vote: 1, Commit: 120}, snEnts(2, 120, 2))
		n := snOpen(t, l, 3, 120, nil)
		n.mustStep(snMsg(raftpb.MsgHeartbeat, 1, 3, 2))
		n.drain()
		return n
	}
	t.Run("sameTerm", func(t *testing.T) {
		n := mk()
		before := n.G.Status()
		m := snMsg(raftpb.MsgSnap, 1, 3, 2)
		m.Snapshot = &raftpb.SnapshotMeta{Index: 100, Term: 1, ConfState: snVoters(1, 2, 3, 4)}
		if err := n.step(m); !errors.Is(err, group.ErrInvalidMessage) {
			t.Fatalf("Step = %v, want ErrInvalidMessage", err)
		}
		after := n.G.Status()
		if after.BasicStatus != before.BasicStatus || !after.Config.Equal(&before.Config) {
			t.Fatalf("state changed: %+v -> %+v", before, after)
		}
		if n.G.HasReady() {
			rd := n.G.Ready()
			if rd.Snapshot != nil || rd.ConfState != nil {
				t.Fatalf("conflicting snapshot adopted: %+v", rd)
			}
		}
	})
	t.Run("higherTerm", func(t *testing.T) {
		n := mk()
		m := snMsg(raftpb.MsgSnap, 2, 3, 3)
		m.Snapshot = &raftpb.SnapshotMeta{Index: 100, Term: 3, ConfState: snVoters(1, 2, 3, 4)}
		if err := n.step(m); !errors.Is(err, group.ErrInvalidMessage) {
			t.Fatalf("Step = %v, want ErrInvalidMessage", err)
		}
		for _, rd := range n.drain() {
			if rd.Snapshot != nil || rd.ConfState != nil || len(rd.Entries) > 0 {
				t.Fatalf("conflicting snapshot adopted: %+v", rd)
			}
		}
		st := n.G.Status()
		if st.HardState.Commit != 120 || st.LastIndex != 120 || !st.Config.Equal(&cs) {
			t.Fatalf("state after the refused snapshot: %+v", st)
		}
		if snTerm(t, n.Log, 100) != 2 || snLast(n.Log) != 120 {
			t.Fatal("durable log changed")
		}
	})
}

// S26(c), contract of Step: "a message that can never be valid returns
// ErrInvalidMessage and changes nothing" (step.go, errors.go). A snapshot
// contradicting a committed entry, sent at a higher term, is refused with
// ErrInvalidMessage — but the term check in stepTerm runs before the
// conflict is detected in handleSnapshot, so the replica has already moved
// to the sender's term (vote forgotten, sender taken as leader), and the
// next Ready persists that hard state.
func TestS26cRejectedSnapshotChangesNothing(t *testing.T) {
	cs := snVoters(1, 2, 3)
	l := snLog(t, cs, raftpb.HardState{Term: 2, Vote: 1, Commit: 120}, snEnts(2, 120, 2))
	n := snOpen(t, l, 3, 120, nil)
	n.mustStep(snMsg(raftpb.MsgHeartbeat, 1, 3, 2))
	n.drain()
	before := n.G.BasicStatus()
	m := snMsg(raftpb.MsgSnap, 2, 3, 3)
	m.Snapshot = &raftpb.SnapshotMeta{Index: 100, Term: 3, ConfState: cs}
	if err := n.step(m); !errors.Is(err, group.ErrInvalidMessage) {
		t.Fatalf("Step = %v, want ErrInvalidMessage", err)
	}
	if after := n.G.BasicStatus(); after != before {
		t.Errorf("refused message changed the state:\n before %+v\n after  %+v", before, after)
	}
	for _, rd := range n.drain() {
		if !rd.HardState.IsEmpty() {
			t.Errorf("refused message leads to persisting hard state %+v", rd.HardState)
		}
	}
}

// S29: an idle leader has snapshotted and compacted its whole log. A
// follower below the compaction point — or unknown to a new leader —
// converges through the existing snapshot without any new proposal, within a
// bounded number of ticks and MsgSnap.
func TestS29FollowerBehindFullyCompactedLog(t *testing.T) {
	for _, tc := range []struct {
		newLeader bool
		lost      int // MsgSnap lost in transit before one arrives
	}{{false, 0}, {true, 0}, {false, 3}} {
		newLeader := tc.newLeader
		t.Run(fmt.Sprintf("newLeader=%v,lost=%d", newLeader, tc.lost), func(t *testing.T) {
			c := snCluster(t, Options{Voters: []raftpb.NodeID{1, 2, 3}, Seed: 29})
			snMakeLeader(t, c, 1)
			snProposeN(t, c, 1, 3, "a")
			c.Net.Isolate(3, c.IDs)
			snProposeN(t, c, 1, 10, "b")
			snSettle(c, 1)
			lead := raftpb.NodeID(1)
			if newLeader {
				snMakeLeader(t, c, 2)
				lead = 2
			}
			for _, id := range []raftpb.NodeID{1, 2} {
				if err := c.TakeSnapshot(id, 0); err != nil {
					t.Fatal(err)
				}
			}
			st := c.R(lead).G.BasicStatus()
			if st.FirstIndex != st.LastIndex+1 {
				t.Fatalf("leader log not fully compacted: %+v", st)
			}
			snaps, msgs, ticks := 0, 0, 0
			snapTicks := map[int]int{}
			c.Net.Filter = func(m *raftpb.Message) bool {
				msgs++
				if m.Type == raftpb.MsgSnap {
					snaps++
					snapTicks[ticks]++
					// A failed transfer is retried only after the follower
					// answers again, never in a loop on the failure report.
					if snapTicks[ticks] > 1 {
						t.Errorf("%d MsgSnap in tick %d", snapTicks[ticks], ticks)
					}
					if snaps <= tc.lost {
						return false
					}
				}
				return true
			}
			c.Net.Heal()
			want := c.R(lead).SM.Applied
			for ; ticks < (3+tc.lost)*c.Opts.ElectionTicks && c.R(3).SM.Applied < want; ticks++ {
				c.TickAll()
				c.Stabilize()
			}
			if got := c.R(3).SM.Applied; got != want {
				t.Fatalf("follower at %d after %d ticks, leader applied %d (MsgSnap sent %d)", got, ticks, want, snaps)
			}
			if snaps < 1+tc.lost || snaps > 2+tc.lost {
				t.Fatalf("%d MsgSnap sent to converge (%d lost), want at most %d", snaps, tc.lost, 2+tc.lost)
			}
			t.Logf("converged in %d ticks with %d MsgSnap", ticks, snaps)
			if c.R(lead).G.BasicStatus().LastIndex != want {
				t.Fatal("a proposal was needed to converge")
			}
			// Idle afterwards: no more snapshots, a bounded trickle of
			// messages (heartbeats and their answers).
			snaps, msgs = 0, 0
			const idle = 50
			snSettle(c, idle)
			if snaps != 0 {
				t.Fatalf("%d MsgSnap while idle and converged", snaps)
			}
			if perTick := msgs / idle; perTick > 3*len(c.IDs) {
				t.Fatalf("%d messages per idle tick: busy loop", perTick)
			}
			snCheck(t, c)
		})
	}
}

// S29: a brand-new replica added after the leader compacted its whole log
// (its log is empty, its progress unknown) converges through the snapshot
// and the entries after it.
func TestS29NewMemberAfterFullCompaction(t *testing.T) {
	c := snCluster(t, Options{Voters: []raftpb.NodeID{1, 2, 3}, Spare: []raftpb.NodeID{4}, Seed: 291})
	snMakeLeader(t, c, 1)
	snProposeN(t, c, 1, 10, "a")
	snSettle(c, 1)
	for _, id := range []raftpb.NodeID{1, 2, 3} {
		if err := c.TakeSnapshot(id, 0); err != nil {
			t.Fatal(err)
		}
	}
	snaps := 0
	c.Net.Filter = func(m *raftpb.Message) bool {
		if m.Type == raftpb.MsgSnap && m.To == 4 {
			snaps++
		}
		return true
	}
	cc := raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.AddLearner, Node: 4}}}
	if err := c.ProposeConfChange(1, cc); err != nil {
		t.Fatal(err)
	}
	ticks := 0
	for ; ticks < 3*c.Opts.ElectionTicks && c.R(4).SM.Applied < c.R(1).SM.Applied; ticks++ {
		c.TickAll()
		c.Stabilize()
	}
	if got, want := c.R(4).SM.Applied, c.R(1).SM.Applied; got != want || want == 0 {
		t.Fatalf("new member at %d after %d ticks, leader %d", got, ticks, want)
	}
	if snaps < 1 || snaps > 2 {
		t.Fatalf("%d MsgSnap to the new member", snaps)
	}
	if cs := c.R(4).G.ConfState(); !cs.IsMember(4) {
		t.Fatalf("new member's membership %v", cs)
	}
	snSettle(c, 10)
	if snaps > 2 {
		t.Fatalf("%d MsgSnap after converging", snaps)
	}
	snCheck(t, c)
}

// S30: Compact never passes what is released for applying nor the latest
// snapshot; a follower left behind the compaction point is caught up by the
// snapshot that covers it.
func TestS30CompactionBounds(t *testing.T) {
	c := snCluster(t, Options{Voters: []raftpb.NodeID{1, 2, 3}, Seed: 30})
	snMakeLeader(t, c, 1)
	g := c.R(1).G
	if err := g.Compact(1); !errors.Is(err, group.ErrCompactBeyondApplied) {
		t.Fatalf("Compact without any snapshot: %v", err)
	}
	snProposeN(t, c, 1, 45, "a")
	snSettle(c, 1)
	if c.R(3).SM.Applied < 48 {
		t.Fatalf("follower 3 at %d", c.R(3).SM.Applied)
	}
	// Follower 3 stays at ~50 while the leader goes on.
	c.Net.Isolate(3, c.IDs)
	at := c.R(3).SM.Applied
	snProposeN(t, c, 1, 60, "b")
	snSettle(c, 1)
	// Snapshot without compaction (lag beyond the log), then more entries.
	if err := c.TakeSnapshot(1, 1000); err != nil {
		t.Fatal(err)
	}
	snapIdx := c.R(1).SM.Applied
	snProposeN(t, c, 1, 5, "c")
	snSettle(c, 1)
	st := g.BasicStatus()
	if st.Applying <= snapIdx {
		t.Fatalf("applying %d not past the snapshot %d", st.Applying, snapIdx)
	}
	if err := g.Compact(st.Applying + 1); !errors.Is(err, group.ErrCompactBeyondApplied) {
		t.Fatalf("Compact beyond applying: %v", err)
	}
	if err := g.Compact(snapIdx + 1); !errors.Is(err, group.ErrCompactBeyondApplied) {
		t.Fatalf("Compact beyond the latest snapshot: %v", err)
	}
	if g.HasReady() {
		if rd := g.Ready(); rd.CompactTo != 0 {
			t.Fatalf("refused Compact left CompactTo %d", rd.CompactTo)
		}
	}
	if err := g.Compact(snapIdx); err != nil {
		t.Fatalf("Compact at the snapshot: %v", err)
	}
	c.Process(1)
	if fi := snFirst(c.R(1).Log); fi != snapIdx+1 {
		t.Fatalf("leader first index %d, want %d", fi, snapIdx+1)
	}
	if at+1 >= snapIdx+1 {
		t.Fatalf("follower %d not behind the compaction point %d", at, snapIdx)
	}
	// Applying lags commit on a pipelined leader: Compact follows applying.
	snaps := 0
	c.Net.Filter = func(m *raftpb.Message) bool {
		if m.Type == raftpb.MsgSnap && m.To == 3 {
			snaps++
			if m.Snapshot.Index != snapIdx {
				t.Errorf("snapshot %d sent, latest is %d", m.Snapshot.Index, snapIdx)
			}
		}
		return true
	}
	c.Net.Heal()
	applied0 := len(c.R(3).Applies)
	snSettle(c, 3*c.Opts.ElectionTicks)
	if snaps == 0 {
		t.Fatal("follower behind the compaction point got no snapshot")
	}
	if got, want := c.R(3).SM.Applied, c.R(1).SM.Applied; got != want {
		t.Fatalf("follower at %d, leader %d", got, want)
	}
	// The follower jumped from `at` over the snapshot: entries at+1..snap
	// were never applied individually, and nothing was applied twice.
	for _, idx := range c.R(3).Applies[applied0:] {
		if idx <= snapIdx {
			t.Fatalf("follower applied %d at or below the snapshot %d", idx, snapIdx)
		}
	}
	snCheck(t, c)
}

// S30 at the core: with the apply Ready outstanding, Compact is bounded by
// the index released for applying.
func TestS30CompactBoundedByApplying(t *testing.T) {
	l := snLog(t, snVoters(1), raftpb.HardState{Term: 2, Vote: 1, Commit: 20}, snEnts(2, 30, 2))
	if err := l.SetSnapshot(raftpb.SnapshotMeta{Index: 25, Term: 2, ConfState: snVoters(1)}); err != nil {
		t.Fatal(err)
	}
	n := snOpen(t, l, 1, 10, nil)
	if err := n.G.Compact(11); !errors.Is(err, group.ErrCompactBeyondApplied) {
		t.Fatalf("Compact(11) with applying 10: %v", err)
	}
	rd := n.ready() // releases 11..20
	if len(rd.CommittedEntries) == 0 || rd.CommittedEntries[len(rd.CommittedEntries)-1].Index != 20 {
		t.Fatalf("release %v", rd.CommittedEntries)
	}
	if err := n.G.Compact(21); !errors.Is(err, group.ErrCompactBeyondApplied) {
		t.Fatalf("Compact(21) beyond applying 20: %v", err)
	}
	if err := n.G.Compact(20); err != nil {
		t.Fatalf("Compact(20): %v", err)
	}
	n.flush()
	rd = n.ready()
	if rd.CompactTo != 20 {
		t.Fatalf("CompactTo %d", rd.CompactTo)
	}
	n.persistNext()
	if snFirst(n.Log) != 21 {
		t.Fatalf("first index %d", snFirst(n.Log))
	}
}

// S31: membership survives compaction. After several changes and two
// compactions the last membership entry exists only inside the snapshot;
// every replica restarts with the latest membership and the shard works
// under it.
func TestS31MembershipSurvivesCompaction(t *testing.T) {
	c := snCluster(t, Options{Voters: []raftpb.NodeID{1, 2, 3}, Spare: []raftpb.NodeID{4, 5}, Seed: 31})
	snMakeLeader(t, c, 1)
	change := func(typ raftpb.ConfChangeType, id raftpb.NodeID) raftpb.Index {
		t.Helper()
		cc := raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{{Type: typ, Node: id}}}
		if err := c.ProposeConfChange(1, cc); err != nil {
			t.Fatalf("%v %d: %v", typ, id, err)
		}
		idx := c.R(1).G.BasicStatus().LastIndex
		c.Stabilize()
		snSettle(c, 2)
		if got := c.R(1).G.BasicStatus().ConfIndex; got != idx {
			t.Fatalf("%v %d at %d not applied (conf index %d)", typ, id, idx, got)
		}
		return idx
	}
	change(raftpb.AddLearner, 4)
	change(raftpb.AddVoter, 4)
	change(raftpb.AddLearner, 5)
	last := change(raftpb.RemoveNode, 3)
	want := raftpb.ConfState{Voters: []raftpb.NodeID{1, 2, 4}, Learners: []raftpb.NodeID{5}}
	members := []raftpb.NodeID{1, 2, 4, 5}
	for round := 0; round < 2; round++ {
		snProposeN(t, c, 1, 5, fmt.Sprint("p", round))
		snSettle(c, 2)
		for _, id := range members {
			if err := c.TakeSnapshot(id, 0); err != nil {
				t.Fatalf("snapshot %d: %v", id, err)
			}
		}
	}
	for _, id := range members {
		if fi := snFirst(c.R(id).Log); fi <= last {
			t.Fatalf("replica %d still holds the membership entry %d (first %d)", id, last, fi)
		}
	}
	c.Crash(3)
	for _, id := range members {
		c.Crash(id)
	}
	for _, id := range members {
		if err := c.Restart(id); err != nil {
			t.Fatal(err)
		}
		st := c.R(id).G.Status()
		if !st.Config.Equal(&want) {
			t.Fatalf("replica %d restarted with membership %v, want %v", id, st.Config, want)
		}
		if st.ConfIndex < last {
			t.Fatalf("replica %d conf index %d < %d", id, st.ConfIndex, last)
		}
	}
	// The restarted shard elects among {1, 2, 4} and commits.
	lead := snElect(t, c)
	if lead == 5 || lead == 3 {
		t.Fatalf("leader %d is not a voter", lead)
	}
	snProposeN(t, c, lead, 1, "after")
	snSettle(c, 2)
	for _, id := range members {
		if c.R(id).SM.Values["after"] == "" {
			t.Fatalf("replica %d did not apply the write after restart", id)
		}
	}
	// And the next membership change is accepted under it.
	cc := raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.AddVoter, Node: 5}}}
	if err := c.ProposeConfChange(lead, cc); err != nil {
		t.Fatalf("change after restart: %v", err)
	}
	snSettle(c, 2)
	if cs := c.R(lead).G.ConfState(); !cs.IsVoter(5) {
		t.Fatalf("membership %v after promoting 5", cs)
	}
	snCheck(t, c)
}

// S31: at restart the membership in force is the newer (by index) of the one
// stored with the hard state and the one inside the snapshot — whichever
// write a crash interrupted — and a change already covered is not applied
// again on replay.
func TestS31RestartPicksNewerMembership(t *testing.T) {
	old := snVoters(1, 2, 3)
	newer := raftpb.ConfState{Voters: []raftpb.NodeID{1, 2, 4}, Learners: []raftpb.NodeID{5}}

	t.Run("snapshotNewer", func(t *testing.T) {
		// The snapshot at 50 was installed; the stored membership is still
		// the bootstrap one (index 1).
		l := group.NewMemoryLog(old)
		if err := l.InstallSnapshot(raftpb.SnapshotMeta{Index: 50, Term: 2, ConfState: newer}); err != nil {
			t.Fatal(err)
		}
		if st, _ := l.InitialState(); st.ConfIndex != 1 || !st.ConfState.Equal(&old) {
			t.Fatalf("setup: stored %+v", st)
		}
		n := snOpen(t, l, 1, 50, nil)
		st := n.G.Status()
		if !st.Config.Equal(&newer) || st.ConfIndex != 50 {
			t.Fatalf("membership %v at %d, want the snapshot's %v at 50", st.Config, st.ConfIndex, newer)
		}
		if st.FirstIndex != 51 || st.HardState.Commit != 50 {
			t.Fatalf("status %+v", st.BasicStatus)
		}
	})

	t.Run("storedNewer", func(t *testing.T) {
		// Snapshot at 50 with the old membership; a change at 55 (in the
		// log) was applied and stored.
		cc := raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.AddLearner, Node: 5}}}
		ents := snEnts(2, 60, 2)
		ents[55-2] = raftpb.Entry{Index: 55, Term: 2, Type: raftpb.EntryConfChange, Data: cc.Marshal()}
		l := snLog(t, old, raftpb.HardState{Term: 2, Commit: 60}, ents)
		if err := l.SetSnapshot(raftpb.SnapshotMeta{Index: 50, Term: 2, ConfState: old}); err != nil {
			t.Fatal(err)
		}
		if err := l.Compact(50); err != nil {
			t.Fatal(err)
		}
		withLearner := raftpb.ConfState{Voters: []raftpb.NodeID{1, 2, 3}, Learners: []raftpb.NodeID{5}}
		if err := l.Persist(&group.Ready{ConfState: &withLearner, ConfIndex: 55}); err != nil {
			t.Fatal(err)
		}
		n := snOpen(t, l, 1, 50, nil)
		st := n.G.Status()
		if !st.Config.Equal(&withLearner) || st.ConfIndex != 55 {
			t.Fatalf("membership %v at %d, want %v at 55", st.Config, st.ConfIndex, withLearner)
		}
		// Replay of 51..60 does not apply the change at 55 a second time.
		for _, rd := range n.drain() {
			if rd.ConfState != nil && !rd.ConfState.Equal(&withLearner) {
				t.Fatalf("replay changed the membership to %v", rd.ConfState)
			}
		}
		if cs := n.G.ConfState(); !cs.Equal(&withLearner) {
			t.Fatalf("membership after replay %v", cs)
		}
	})
}

// S14: a follower restarts from a snapshot at 100 with its log purged up to
// 100. An append with prev (t, 80) and entries 81..120 is a match: it skips
// 81..100, writes 101..120 and acknowledges 120 — no conflict, no truncation.
func TestS14FollowerRestartAfterSnapshot(t *testing.T) {
	cs := snVoters(1, 2, 3)
	mk := func() *snNode {
		l := group.NewMemoryLog(cs)
		if err := l.InstallSnapshot(raftpb.SnapshotMeta{Index: 100, Term: 2, ConfState: cs}); err != nil {
			t.Fatal(err)
		}
		if err := l.Persist(&group.Ready{HardState: raftpb.HardState{Term: 2, Vote: 1, Commit: 100}}); err != nil {
			t.Fatal(err)
		}
		return snOpen(t, l, 3, 100, nil)
	}
	t.Run("appendAcrossSnapshot", func(t *testing.T) {
		n := mk()
		n.mustStep(snApp(1, 3, 2, 80, 2, 120, snEnts(81, 120, 2)))
		rd := n.ready()
		if len(rd.Entries) != 20 || rd.Entries[0].Index != 101 || rd.Entries[19].Index != 120 {
			t.Fatalf("entries written: %d from %v", len(rd.Entries), rd.Entries[:min(1, len(rd.Entries))])
		}
		acks := snMsgsOf(rd.AfterPersist, raftpb.MsgAppResp)
		if len(acks) != 1 || acks[0].Reject || acks[0].Index != 120 {
			t.Fatalf("reply %v, want a match at 120", acks)
		}
		n.persistNext()
		if snFirst(n.Log) != 101 || snLast(n.Log) != 120 {
			t.Fatalf("durable log [%d, %d]", snFirst(n.Log), snLast(n.Log))
		}
	})
	t.Run("appendBelowSnapshot", func(t *testing.T) {
		n := mk()
		n.mustStep(snApp(1, 3, 2, 80, 2, 90, snEnts(81, 95, 2)))
		rd := n.ready()
		acks := snMsgsOf(append(rd.Messages, rd.AfterPersist...), raftpb.MsgAppResp)
		if len(rd.Entries) != 0 || len(acks) != 1 || acks[0].Reject || acks[0].Index != 100 {
			t.Fatalf("entries %v reply %v, want no write and a match at 100", rd.Entries, acks)
		}
	})
	t.Run("probeBelowSnapshot", func(t *testing.T) {
		n := mk()
		n.mustStep(snApp(1, 3, 2, 80, 2, 90, nil))
		rd := n.ready()
		acks := snMsgsOf(append(rd.Messages, rd.AfterPersist...), raftpb.MsgAppResp)
		if len(acks) != 1 || acks[0].Reject || acks[0].Index < 100 {
			t.Fatalf("reply %v to a probe below the snapshot, want a match", acks)
		}
	})

	t.Run("cluster", func(t *testing.T) {
		// Follower 3 installs a snapshot, restarts from it and keeps up.
		c := snCluster(t, Options{Voters: []raftpb.NodeID{1, 2, 3}, Seed: 14})
		snMakeLeader(t, c, 1)
		c.Net.Isolate(3, c.IDs)
		snProposeN(t, c, 1, 20, "a")
		if err := c.TakeSnapshot(1, 0); err != nil {
			t.Fatal(err)
		}
		c.Net.Heal()
		snSettle(c, 3*c.Opts.ElectionTicks)
		if s, err := c.R(3).Log.Snapshot(); err != nil || s.Index == 0 {
			t.Fatalf("follower 3 has no snapshot: %v", err)
		}
		snProposeN(t, c, 1, 5, "b")
		c.Crash(3)
		snProposeN(t, c, 1, 5, "c")
		if err := c.Restart(3); err != nil {
			t.Fatal(err)
		}
		snap, _ := c.R(3).Log.Snapshot()
		if fi := snFirst(c.R(3).Log); fi != snap.Index+1 {
			t.Fatalf("restarted follower: first index %d, snapshot %d", fi, snap.Index)
		}
		rejects := 0
		c.Net.Filter = func(m *raftpb.Message) bool {
			if m.Type == raftpb.MsgAppResp && m.From == 3 && m.Reject {
				rejects++
				// Entries it missed while down are a legitimate gap; a
				// prev at or below its snapshot is a match, never a conflict.
				if m.Index <= snap.Index {
					t.Errorf("restarted follower rejects prev %d at or below its snapshot %d: %v", m.Index, snap.Index, *m)
				}
			}
			return true
		}
		snSettle(c, 3*c.Opts.ElectionTicks)
		if got, want := c.R(3).SM.Applied, c.R(1).SM.Applied; got != want {
			t.Fatalf("restarted follower at %d, leader %d", got, want)
		}
		t.Logf("rejections after restart: %d", rejects)
		snCheck(t, c)
	})
}
