package grouptest

// Read scenarios of SCENARIOS.md: S32–S35 (ReadIndex on a new leader, retried
// reads, lease reads and leadership transfer, read quorums). Helpers are in
// scenario_storage_test.go.

import (
	"errors"
	"fmt"
	"testing"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

// snReads returns the ReadStates of replica id for request rid, from
// position from of its ReadStates on.
func snReads(c *Cluster, id raftpb.NodeID, rid uint64, from int) []group.ReadState {
	var out []group.ReadState
	rs := c.R(id).ReadStates
	for _, s := range rs[min(from, len(rs)):] {
		if s.ID == rid {
			out = append(out, s)
		}
	}
	return out
}

// snAnswered returns the non-dropped ReadStates of replica id for rid.
func snAnswered(c *Cluster, id raftpb.NodeID, rid uint64, from int) []group.ReadState {
	var out []group.ReadState
	for _, s := range snReads(c, id, rid, from) {
		if !s.Dropped {
			out = append(out, s)
		}
	}
	return out
}

// snImmediateRead starts read rid at id and reports whether it was answered
// by the very next Ready, without any message exchange (a lease read).
func snImmediateRead(t testing.TB, c *Cluster, id raftpb.NodeID, rid uint64) bool {
	t.Helper()
	mark := len(c.R(id).ReadStates)
	if err := c.R(id).G.ReadIndex(rid); err != nil {
		t.Fatalf("ReadIndex(%d) at %d: %v", rid, id, err)
	}
	c.Process(id)
	return len(snAnswered(c, id, rid, mark)) > 0
}

func snLease(cfg *group.Config) { cfg.ReadOnly = group.ReadLeaseBased }

// S32: L1 commits x and crashes before the followers learn the commit. The
// new leader's commit index is below x; a read on it and a read through a
// follower are held (not answered, not dropped) until the new term's empty
// entry commits, and then return an index covering x.
func TestS32NewLeaderReadWaitsForTermCommit(t *testing.T) {
	c := snCluster(t, Options{Voters: []raftpb.NodeID{1, 2, 3}, Seed: 32})
	snMakeLeader(t, c, 1)
	snProposeN(t, c, 1, 2, "w")
	snSettle(c, 1)
	oldTerm := c.R(1).G.BasicStatus().HardState.Term
	if err := c.Propose(1, EncodePut("x", "1")); err != nil {
		t.Fatal(err)
	}
	c.Deliver() // the append reaches 2 and 3
	c.Deliver() // their acks reach 1: x commits there
	x := c.R(1).G.BasicStatus().LastIndex
	if got := c.R(1).G.BasicStatus().HardState.Commit; got != x {
		t.Fatalf("x at %d not committed at L1 (commit %d)", x, got)
	}
	c.Crash(1)
	c.Net.Take(func(m *raftpb.Message) bool { return m.From == 1 })
	for _, id := range []raftpb.NodeID{2, 3} {
		if st := c.R(id).G.BasicStatus(); st.HardState.Commit >= x || st.LastIndex < x {
			t.Fatalf("replica %d: %+v, want x=%d in the log above the commit", id, st, x)
		}
	}
	// Hold the new leader's appends: its empty entry cannot commit.
	hold := true
	c.Net.Filter = func(m *raftpb.Message) bool {
		return !(hold && m.Type == raftpb.MsgApp && m.Term > oldTerm)
	}
	var lead raftpb.NodeID
	for i := 0; i < 20*c.Opts.ElectionTicks && lead == 0; i++ {
		c.Tick(2)
		c.Tick(3)
		c.Stabilize()
		lead = snLeaderAmong(c, 2, 3)
	}
	if lead == 0 {
		t.Fatal("no new leader")
	}
	f := raftpb.NodeID(5) - lead
	// A heartbeat tells f who leads: the periodic heartbeat right after an
	// append (held back here) is skipped, so it takes up to two ticks.
	for i := 0; i < 2 && c.R(f).G.BasicStatus().Lead != lead; i++ {
		c.Tick(lead)
		c.Stabilize()
	}
	if st := c.R(f).G.BasicStatus(); st.Lead != lead {
		t.Fatalf("follower %d does not know leader %d: %+v", f, lead, st)
	}
	if st := c.R(lead).G.BasicStatus(); st.HardState.Commit >= x {
		t.Fatalf("new leader commit %d already covers x=%d", st.HardState.Commit, x)
	}
	if err := c.R(lead).G.ReadIndex(100); err != nil {
		t.Fatal(err)
	}
	c.Process(lead)
	if err := c.R(f).G.ReadIndex(200); err != nil {
		t.Fatal(err)
	}
	c.Process(f)
	for i := 0; i < 3; i++ {
		c.Tick(lead)
		c.Tick(f)
		c.Stabilize()
		if rs := snReads(c, lead, 100, 0); len(rs) > 0 {
			t.Fatalf("read on the new leader answered before its term committed: %+v", rs)
		}
		if rs := snReads(c, f, 200, 0); len(rs) > 0 {
			t.Fatalf("read via the follower answered before the term committed: %+v", rs)
		}
	}
	hold = false
	snSettle(c, 2)
	for _, w := range []struct {
		id  raftpb.NodeID
		rid uint64
	}{{lead, 100}, {f, 200}} {
		rs := snReads(c, w.id, w.rid, 0)
		if len(rs) != 1 || rs[0].Dropped || rs[0].Index < x {
			t.Fatalf("replica %d read %d: %+v, want one answer at >= %d", w.id, w.rid, rs, x)
		}
		r := c.R(w.id)
		if r.SM.Applied < rs[0].Index || r.SM.Values["x"] != "1" {
			t.Fatalf("replica %d at %d reads x=%q", w.id, r.SM.Applied, r.SM.Values["x"])
		}
	}
	snCheck(t, c)
}

// S33: a follower's read (request id 7) is duplicated by the network and its
// heartbeat acks are held; the leader changes twice; the read is retried with
// the same id. The retry's round is numbered afresh by the leader; the held
// acks — as they were, and re-stamped with the current term — do not
// confirm it; the answer is at least the commit index when the retry began.
func TestS33RetriedReadIndexNeverReusesIdentity(t *testing.T) {
	c := snCluster(t, Options{Voters: []raftpb.NodeID{1, 2, 3}, Seed: 33})
	snMakeLeader(t, c, 1)
	snProposeN(t, c, 1, 3, "a")
	snSettle(c, 1)

	if err := c.R(3).G.ReadIndex(7); err != nil {
		t.Fatal(err)
	}
	c.Process(3)
	reqs := c.Net.Take(func(m *raftpb.Message) bool { return m.Type == raftpb.MsgReadIndex })
	if len(reqs) != 1 || reqs[0].Context != 7 {
		t.Fatalf("forwarded read: %v", reqs)
	}
	dup := reqs[0]
	c.Net.send(c.Now, dup, nil)
	c.Deliver() // the leader opens a round
	c.Deliver() // heartbeats reach 2 and 3
	stale := c.Net.Take(func(m *raftpb.Message) bool { return m.Type == raftpb.MsgHeartbeatResp })
	if len(stale) != 2 {
		t.Fatalf("held acks: %v", stale)
	}
	var oldRound uint64
	for _, m := range stale {
		oldRound = max(oldRound, m.Context)
	}

	// Leader changes: 2 leads and commits more, then 1 again.
	snMakeLeader(t, c, 2)
	snProposeN(t, c, 2, 3, "b")
	snMakeLeader(t, c, 1)
	snProposeN(t, c, 1, 3, "c")
	snSettle(c, 1)
	term := c.R(1).G.BasicStatus().HardState.Term
	for _, rs := range snReads(c, 3, 7, 0) {
		if !rs.Dropped && rs.Index < stale[0].Commit {
			t.Fatalf("first attempt answered below its start: %+v", rs)
		}
	}

	// The retry, with the same id, and the duplicate of the first attempt.
	began := c.CommittedIndex()
	mark := len(c.R(3).ReadStates)
	if err := c.R(3).G.ReadIndex(7); err != nil {
		t.Fatal(err)
	}
	c.Process(3)
	c.Net.send(c.Now, dup, nil)
	c.Deliver() // both requests reach leader 1, which opens a round
	fresh := c.Net.Take(func(m *raftpb.Message) bool { return m.Type == raftpb.MsgHeartbeat })
	if len(fresh) == 0 {
		t.Fatal("the retry started no round")
	}
	for _, m := range fresh {
		if m.Context <= oldRound {
			t.Fatalf("retry round %d reuses an identity at or below the first attempt's %d", m.Context, oldRound)
		}
	}
	// Deliver only the stale acks, as sent and re-stamped with this term.
	for _, m := range stale {
		c.Net.send(c.Now, m, nil)
		m.Term = term
		c.Net.send(c.Now, m, nil)
	}
	c.Deliver()
	c.Deliver()
	if rs := snAnswered(c, 3, 7, mark); len(rs) > 0 {
		t.Fatalf("retry confirmed by stale acks: %+v", rs)
	}
	for _, m := range fresh {
		c.Net.send(c.Now, m, nil)
	}
	c.Stabilize()
	rs := snAnswered(c, 3, 7, mark)
	if len(rs) == 0 {
		t.Fatalf("retry never answered: %+v", snReads(c, 3, 7, mark))
	}
	for _, s := range rs {
		if s.Index < began {
			t.Fatalf("read index %d below the commit %d when the read began", s.Index, began)
		}
	}
	snCheck(t, c)
}

// S34: once a leadership transfer starts, the leader stops answering reads
// from its lease. The target wins and commits y=2 while the old leader hears
// nothing: a read on the old leader is never answered (it is dropped when it
// learns the new term), so it cannot return y's old value.
func TestS34LeaseStopsWhenTransferStarts(t *testing.T) {
	c := snCluster(t, Options{Voters: []raftpb.NodeID{1, 2, 3}, Seed: 34, Configure: snLease})
	snMakeLeader(t, c, 1)
	if err := c.Propose(1, EncodePut("y", "1")); err != nil {
		t.Fatal(err)
	}
	c.Stabilize()
	snSettle(c, 1)
	if !snImmediateRead(t, c, 1, 1) {
		t.Fatal("baseline: the leader does not serve lease reads")
	}
	c.Net.Cut(2, 1)
	c.Net.Cut(3, 1)
	if err := c.R(1).G.TransferLeader(2); err != nil {
		t.Fatal(err)
	}
	c.Process(1)
	c.Stabilize()
	for i := 0; i < 3; i++ {
		c.Tick(2)
		c.Tick(3)
		c.Stabilize()
	}
	if snLeaderAmong(c, 2) != 2 {
		t.Fatalf("transfer target did not win: %+v", c.R(2).G.BasicStatus())
	}
	if err := c.Propose(2, EncodePut("y", "2")); err != nil {
		t.Fatal(err)
	}
	c.Stabilize()
	c.Tick(2)
	c.Tick(3)
	c.Stabilize()
	if c.R(2).SM.Values["y"] != "2" {
		t.Fatal("y=2 not applied on the new leader")
	}
	if st := c.R(1).G.BasicStatus(); st.Role != group.Leader {
		t.Fatalf("old leader already knows: %+v", st)
	}
	mark := len(c.R(1).ReadStates)
	if snImmediateRead(t, c, 1, 2) {
		t.Fatalf("old leader answered from its lease after starting a transfer (y=%q)", c.R(1).SM.Values["y"])
	}
	c.Stabilize()
	if rs := snAnswered(c, 1, 2, mark); len(rs) > 0 {
		t.Fatalf("old leader answered a read without a quorum: %+v (y=%q)", rs, c.R(1).SM.Values["y"])
	}
	c.Net.Heal()
	snSettle(c, 2)
	if st := c.R(1).G.BasicStatus(); st.Role == group.Leader {
		t.Fatal("old leader did not step down")
	}
	rs := snReads(c, 1, 2, mark)
	if len(rs) != 1 || !rs[0].Dropped {
		t.Fatalf("read on the deposed leader: %+v, want one Dropped", rs)
	}
	snCheck(t, c)
}

// S34: while a transfer is in progress reads wait for a quorum round; after a
// transfer to a dead (caught-up) target aborts, the lease stays void for the
// rest of the term — reads keep needing a round — and proposals resume.
func TestS34LeaseVoidDuringAndAfterTransfer(t *testing.T) {
	t.Run("inProgress", func(t *testing.T) {
		c := snCluster(t, Options{Voters: []raftpb.NodeID{1, 2, 3}, Seed: 341, Configure: snLease})
		snMakeLeader(t, c, 1)
		snSettle(c, 1)
		if !snImmediateRead(t, c, 1, 1) {
			t.Fatal("baseline: no lease read")
		}
		c.Net.Cut(1, 2) // the TimeoutNow never arrives
		if err := c.R(1).G.TransferLeader(2); err != nil {
			t.Fatal(err)
		}
		c.Process(1)
		mark := len(c.R(1).ReadStates)
		if snImmediateRead(t, c, 1, 10) {
			t.Fatal("lease read served with a transfer in progress")
		}
		c.Stabilize()
		if rs := snAnswered(c, 1, 10, mark); len(rs) != 1 {
			t.Fatalf("read not answered by a quorum round: %+v", snReads(c, 1, 10, mark))
		}
		snCheck(t, c)
	})
	t.Run("deadTargetAborted", func(t *testing.T) {
		c := snCluster(t, Options{Voters: []raftpb.NodeID{1, 2, 3}, Seed: 342, Configure: snLease})
		snMakeLeader(t, c, 1)
		snSettle(c, 1)
		c.Crash(2)
		c.Tick(1)
		c.Tick(3)
		c.Stabilize()
		if !snImmediateRead(t, c, 1, 20) {
			t.Fatal("baseline: no lease read")
		}
		if err := c.R(1).G.TransferLeader(2); err != nil {
			t.Fatal(err)
		}
		c.Process(1)
		mark := len(c.R(1).ReadStates)
		if snImmediateRead(t, c, 1, 21) {
			t.Fatal("lease read served with a transfer in progress")
		}
		c.Stabilize()
		if len(snAnswered(c, 1, 21, mark)) != 1 {
			t.Fatal("read not answered by a quorum round")
		}
		for i := 0; i <= c.Opts.ElectionTicks; i++ {
			c.Tick(1)
			c.Tick(3)
			c.Stabilize()
		}
		st := c.R(1).G.BasicStatus()
		if st.Role != group.Leader || st.LeadTransferee != 0 {
			t.Fatalf("transfer not aborted after an election timeout: %+v", st)
		}
		mark = len(c.R(1).ReadStates)
		if snImmediateRead(t, c, 1, 22) {
			t.Fatal("lease read served in the term of an aborted transfer (a TimeoutNow may still arrive)")
		}
		c.Stabilize()
		if len(snAnswered(c, 1, 22, mark)) != 1 {
			t.Fatal("read not answered by a quorum round")
		}
		if err := c.Propose(1, EncodePut("z", "1")); err != nil {
			t.Fatalf("proposal after the aborted transfer: %v", err)
		}
		snCheck(t, c)
	})
}

// S34: a quiesced leader's lease does not survive quiescence: the clock
// stood still, so the first read after waking needs a quorum round.
func TestS34QuiescedLeaderLeaseGoneWhenWoken(t *testing.T) {
	c := snCluster(t, Options{Voters: []raftpb.NodeID{1, 2, 3}, Seed: 343, Configure: snLease})
	snMakeLeader(t, c, 1)
	snProposeN(t, c, 1, 2, "q")
	snSettle(c, 2)
	if !snImmediateRead(t, c, 1, 1) {
		t.Fatal("baseline: no lease read")
	}
	c.Stabilize()
	if !c.R(1).G.Quiesce() {
		t.Fatalf("leader refuses to quiesce: %+v", c.R(1).G.Status())
	}
	c.Process(1)
	c.Stabilize()
	for i := 0; i < 3*c.Opts.ElectionTicks; i++ {
		c.TickAll() // ignored while quiesced
		c.Stabilize()
	}
	if st := c.R(1).G.BasicStatus(); st.Role != group.Leader || !st.Quiesced {
		t.Fatalf("leader after quiescence: %+v", st)
	}
	mark := len(c.R(1).ReadStates)
	if snImmediateRead(t, c, 1, 30) {
		t.Fatal("woken leader answered from a lease that predates quiescence")
	}
	c.Stabilize()
	if len(snAnswered(c, 1, 30, mark)) != 1 {
		t.Fatal("read after waking not answered by a quorum round")
	}
	snCheck(t, c)
}

// S35(a): five voters, only the leader and one follower reachable: ReadIndex
// (on the leader or through the follower) never returns a read index; it
// ends dropped when the leader steps down. With lease reads, the same holds
// once the lease has run out.
func TestS35aReadNeedsRealMajority(t *testing.T) {
	for _, lease := range []bool{false, true} {
		t.Run(fmt.Sprintf("lease=%v", lease), func(t *testing.T) {
			opts := Options{Voters: []raftpb.NodeID{1, 2, 3, 4, 5}, Seed: 35}
			if lease {
				opts.Configure = snLease
			}
			c := snCluster(t, opts)
			snMakeLeader(t, c, 1)
			snProposeN(t, c, 1, 2, "a")
			snSettle(c, 1)
			c.Net.Partition([]raftpb.NodeID{1, 2}, []raftpb.NodeID{3, 4, 5})
			if lease {
				for i := 0; i <= c.Opts.ElectionTicks/2; i++ {
					c.Tick(1)
					c.Tick(2)
					c.Stabilize()
				}
			}
			if st := c.R(1).G.BasicStatus(); st.Role != group.Leader {
				t.Fatalf("leader stepped down too early to test: %+v", st)
			}
			if err := c.R(1).G.ReadIndex(1); err != nil {
				t.Fatal(err)
			}
			c.Process(1)
			if err := c.R(2).G.ReadIndex(2); err != nil {
				t.Fatal(err)
			}
			c.Process(2)
			for i := 0; i < 3*c.Opts.ElectionTicks; i++ {
				c.TickAll()
				c.Stabilize()
				if rs := append(snAnswered(c, 1, 1, 0), snAnswered(c, 2, 2, 0)...); len(rs) > 0 {
					t.Fatalf("read answered with 2 of 5 voters after %d ticks: %+v", i, rs)
				}
			}
			if st := c.R(1).G.BasicStatus(); st.Role == group.Leader {
				t.Fatal("minority leader did not step down")
			}
			for _, w := range []struct {
				id  raftpb.NodeID
				rid uint64
			}{{1, 1}, {2, 2}} {
				if rs := snReads(c, w.id, w.rid, 0); len(rs) != 1 || !rs[0].Dropped {
					t.Fatalf("replica %d read %d: %+v, want one Dropped", w.id, w.rid, rs)
				}
			}
			snCheck(t, c)
		})
	}
}

// S35(b): a single voter applied and acknowledged up to 10 but its persisted
// commit is 7. After the restart a read waits until an entry of the new term
// commits and returns at least 10, never 7.
func TestS35bSingleNodeReadAfterRestart(t *testing.T) {
	l := snLog(t, snVoters(1), raftpb.HardState{Term: 2, Vote: 1, Commit: 7}, snEnts(2, 10, 2))
	n := snOpen(t, l, 1, 0, nil)
	if err := n.G.ReadIndex(1); !errors.Is(err, group.ErrReadDropped) {
		t.Fatalf("read before any leader: %v, want ErrReadDropped", err)
	}
	var reads []group.ReadState
	var released raftpb.Index
	step := func() {
		for n.G.HasReady() {
			rd := n.ready()
			reads = append(reads, rd.ReadStates...)
			for _, e := range rd.CommittedEntries {
				released = e.Index
			}
			n.persistNext()
			if n.G.BasicStatus().Role == group.Leader {
				return
			}
		}
	}
	for i := 0; i < 100 && n.G.BasicStatus().Role != group.Leader; i++ {
		n.G.Tick()
		step()
	}
	if n.G.BasicStatus().Role != group.Leader {
		t.Fatal("no leader")
	}
	if err := n.G.ReadIndex(2); err != nil {
		t.Fatal(err)
	}
	rd := n.ready() // carries the new term's empty entry
	reads = append(reads, rd.ReadStates...)
	if len(rd.Entries) != 1 || rd.Entries[0].Index != 11 {
		t.Fatalf("empty entry Ready: %v", rd.Entries)
	}
	for _, rs := range reads {
		if rs.ID == 2 {
			t.Fatalf("read answered before the new term's entry is durable and committed: %+v", rs)
		}
	}
	n.persistNext()
	for _, rd := range n.drain() {
		reads = append(reads, rd.ReadStates...)
		for _, e := range rd.CommittedEntries {
			released = e.Index
		}
	}
	var got []group.ReadState
	for _, rs := range reads {
		if rs.ID == 2 {
			got = append(got, rs)
		}
	}
	if len(got) != 1 || got[0].Dropped || got[0].Index < 10 {
		t.Fatalf("read after restart: %+v, want one answer at >= 10", got)
	}
	if released < got[0].Index {
		t.Fatalf("read index %d beyond what was released (%d)", got[0].Index, released)
	}
}
