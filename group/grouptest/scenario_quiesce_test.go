package grouptest

import (
	"testing"

	"github.com/shardd/shardd/group/tracker"
	"github.com/shardd/shardd/raftpb"
)

// qElect ticks everybody until a leader is known and the shard is idle.
func qElect(t *testing.T, c *Cluster) raftpb.NodeID {
	t.Helper()
	for i := 0; i < 200 && c.Leader() == 0; i++ {
		c.TickAll()
		c.Stabilize()
	}
	lead := c.Leader()
	if lead == 0 {
		t.Fatal("no leader")
	}
	// A heartbeat round so every progress is in StateReplicate.
	c.TickAll()
	c.Stabilize()
	return lead
}

// qTickAwake ticks only replicas that are not quiesced, as the engine's
// ticker does.
func qTickAwake(c *Cluster) {
	for _, id := range c.IDs {
		if r := c.R(id); !r.Down && !r.G.Quiesced() {
			c.Tick(id)
		}
	}
}

func newQuiesceCluster(t *testing.T, voters ...raftpb.NodeID) *Cluster {
	t.Helper()
	c, err := NewCluster(Options{Voters: voters, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestQuiesceAndWake(t *testing.T) {
	c := newQuiesceCluster(t, 1, 2, 3)
	lead := qElect(t, c)
	if !c.R(lead).G.Quiesce() {
		t.Fatalf("idle leader refused to quiesce: %+v", c.R(lead).G.Status())
	}
	c.Stabilize()
	for _, id := range c.IDs {
		if !c.R(id).G.Quiesced() {
			t.Fatalf("replica %d not quiesced", id)
		}
	}
	if c.R(lead).G.Quiesce() {
		t.Fatal("quiesced twice")
	}
	// Quiesced replicas ignore ticks: no election, no heartbeat, for ever.
	sent := c.Net.Sent
	for i := 0; i < 100; i++ {
		c.TickAll()
		c.Stabilize()
	}
	if c.Net.Sent != sent || c.Leader() != lead {
		t.Fatalf("quiesced shard sent %d messages, leader %d", c.Net.Sent-sent, c.Leader())
	}
	// A proposal wakes the leader, and its append wakes the followers.
	if err := c.Propose(lead, EncodePut("k", "v")); err != nil {
		t.Fatal(err)
	}
	c.Stabilize()
	for _, id := range c.IDs {
		r := c.R(id)
		if r.G.Quiesced() {
			t.Fatalf("replica %d still quiesced after a proposal", id)
		}
		if r.SM.Values["k"] != "v" {
			t.Fatalf("replica %d did not apply the proposal", id)
		}
	}
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
}

// S45: quiesce only when fully idle.
func TestQuiesceRefusedUnlessIdle(t *testing.T) {
	c := newQuiesceCluster(t, 1, 2, 3)
	lead := qElect(t, c)
	var other raftpb.NodeID = 1
	if other == lead {
		other = 2
	}
	g := c.R(lead).G

	// (a) A follower in probe (it was reported unreachable).
	g.ReportUnreachable(other)
	if g.Quiesce() {
		t.Fatal("quiesced with a follower in probe")
	}
	c.TickAll()
	c.Stabilize()

	// (b) Outstanding proposals (uncommitted entries in flight).
	c.Net.Cut(lead, other)
	c.Net.Cut(lead, 3^lead^other)
	_ = c.Propose(lead, []byte("x"))
	if g.Quiesce() {
		t.Fatal("quiesced with an uncommitted entry")
	}
	c.Net.Heal()
	c.TickAll()
	c.Stabilize()

	// A read round in flight.
	if err := g.ReadIndex(1); err != nil {
		t.Fatal(err)
	}
	if g.Quiesce() {
		t.Fatal("quiesced with a read pending")
	}
	c.Stabilize()

	// A transfer in progress.
	c.Net.Cut(lead, other)
	_ = g.TransferLeader(other)
	if g.Quiesce() && g.BasicStatus().LeadTransferee != 0 {
		t.Fatal("quiesced during a transfer")
	}
	c.Net.Heal()
	for i := 0; i < 30; i++ {
		c.TickAll()
		c.Stabilize()
	}
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
}

// S45(c): a follower that had not learned the commit index gets it with the
// quiesce message, so reads and applies on it are not stuck behind.
func TestQuiesceCarriesCommit(t *testing.T) {
	c := newQuiesceCluster(t, 1, 2, 3)
	lead := qElect(t, c)
	_ = c.Propose(lead, EncodePut("a", "1"))
	// Deliver the appends and their acknowledgements, but hold back the
	// messages that would tell followers the new commit.
	c.Net.Filter = func(m *raftpb.Message) bool {
		return !(m.From == lead && m.Type == raftpb.MsgApp && len(m.Entries) == 0)
	}
	c.Stabilize()
	c.Net.Filter = nil
	follower := c.IDs[0]
	if follower == lead {
		follower = c.IDs[1]
	}
	leadCommit := c.R(lead).G.BasicStatus().HardState.Commit
	if c.R(follower).G.BasicStatus().HardState.Commit >= leadCommit {
		t.Skip("follower learned the commit anyway; nothing to show")
	}
	if !c.R(lead).G.Quiesce() {
		t.Fatal("leader refused to quiesce")
	}
	c.Stabilize()
	if got := c.R(follower).G.BasicStatus().HardState.Commit; got != leadCommit {
		t.Fatalf("quiesced follower commit %d, leader %d", got, leadCommit)
	}
	if c.R(follower).SM.Values["a"] != "1" {
		t.Fatal("quiesced follower did not apply the committed entry")
	}
}

// S44: a quiesced shard whose leader is cut off elects again promptly once
// the followers are told the leader's node is unreachable.
func TestQuiescedLeaderPartitionedReelects(t *testing.T) {
	c := newQuiesceCluster(t, 1, 2, 3)
	lead := qElect(t, c)
	if !c.R(lead).G.Quiesce() {
		t.Fatal("leader refused to quiesce")
	}
	c.Stabilize()
	c.Net.Isolate(lead, c.IDs)
	// The transport's liveness reports the leader's node unreachable.
	for _, id := range c.IDs {
		if id != lead {
			c.R(id).G.ReportUnreachable(lead)
			c.Process(id)
		}
	}
	bound := 3 * 2 * c.Opts.ElectionTicks // 3 election timeouts (max)
	elected := -1
	for i := 0; i < bound; i++ {
		qTickAwake(c)
		c.Stabilize()
		if l := c.Leader(); l != 0 && l != lead {
			elected = i
			break
		}
	}
	if elected < 0 {
		t.Fatalf("no new leader within %d ticks of the leader becoming unreachable", bound)
	}
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
}

// S44 (first half): partition the leader from one follower and write: the
// shard wakes; then cut the other follower too: they elect.
func TestQuiescedWakeThenLoseLeader(t *testing.T) {
	c := newQuiesceCluster(t, 1, 2, 3)
	lead := qElect(t, c)
	if !c.R(lead).G.Quiesce() {
		t.Fatal("leader refused to quiesce")
	}
	c.Stabilize()
	var b, cc raftpb.NodeID
	for _, id := range c.IDs {
		if id != lead {
			if b == 0 {
				b = id
			} else {
				cc = id
			}
		}
	}
	c.Net.Cut(lead, b)
	c.Net.Cut(b, lead)
	_ = c.Propose(lead, []byte("w"))
	c.Stabilize()
	c.Net.Cut(lead, cc)
	c.Net.Cut(cc, lead)
	bound := 3 * 2 * c.Opts.ElectionTicks
	for i := 0; i < bound; i++ {
		qTickAwake(c)
		c.Stabilize()
		if l := c.Leader(); l == b || l == cc {
			if err := c.Err(); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("B and C did not elect within %d ticks (B quiesced=%v C quiesced=%v)",
		bound, c.R(b).G.Quiesced(), c.R(cc).G.Quiesced())
}

// S46: with check-quorum, a follower that missed the quiesce message and
// campaigns wakes the leader, which reasserts itself: no loop of
// step-downs and elections.
func TestQuiesceMissedByOneFollower(t *testing.T) {
	c := newQuiesceCluster(t, 1, 2, 3)
	lead := qElect(t, c)
	var lost raftpb.NodeID
	for _, id := range c.IDs {
		if id != lead {
			lost = id
			break
		}
	}
	c.Net.Filter = func(m *raftpb.Message) bool { return !(m.Type == raftpb.MsgQuiesce && m.To == lost) }
	if !c.R(lead).G.Quiesce() {
		t.Fatal("leader refused to quiesce")
	}
	c.Stabilize()
	c.Net.Filter = nil
	term := c.R(lead).G.BasicStatus().HardState.Term
	for i := 0; i < 10*c.Opts.ElectionTicks; i++ {
		qTickAwake(c)
		c.Stabilize()
	}
	// The shard has one leader and at most one more election happened.
	if l := c.Leader(); l == 0 {
		t.Fatal("no leader")
	}
	if nt := c.R(c.Leader()).G.BasicStatus().HardState.Term; nt > term+1 {
		t.Fatalf("term went from %d to %d: elections kept happening", term, nt)
	}
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
}

// A quiesced leader ignores an unreachable report (S45: state changes wait
// until unquiesce) and stays quiesced.
func TestQuiescedLeaderIgnoresUnreachable(t *testing.T) {
	c := newQuiesceCluster(t, 1, 2, 3)
	lead := qElect(t, c)
	g := c.R(lead).G
	if !g.Quiesce() {
		t.Fatal("leader refused to quiesce")
	}
	other := c.IDs[0]
	if other == lead {
		other = c.IDs[1]
	}
	g.ReportUnreachable(other)
	if !g.Quiesced() {
		t.Fatal("report woke the quiesced leader")
	}
	if pr := g.Status().Progress[other]; pr.State.String() != "StateReplicate" {
		t.Fatalf("progress of %d changed while quiesced: %v", other, pr.State)
	}
}

// A quiesce message that does not match the follower's log is ignored.
func TestQuiesceMismatchIgnored(t *testing.T) {
	c := newQuiesceCluster(t, 1, 2, 3)
	lead := qElect(t, c)
	f := c.IDs[0]
	if f == lead {
		f = c.IDs[1]
	}
	st := c.R(f).G.BasicStatus()
	m := raftpb.Message{Type: raftpb.MsgQuiesce, Shard: 1, From: lead, To: f, Term: st.HardState.Term,
		LogTerm: st.HardState.Term, Index: st.LastIndex + 5, Commit: st.LastIndex + 5}
	if err := c.R(f).G.Step(m); err != nil {
		t.Fatal(err)
	}
	if c.R(f).G.Quiesced() {
		t.Fatal("follower quiesced on a quiesce message beyond its log")
	}
	if c.R(f).G.BasicStatus().HardState.Commit > st.LastIndex {
		t.Fatal("commit moved beyond the log")
	}
}

// The engine asks to quiesce right after the tick that found the shard
// idle, when that tick's heartbeats are still queued: that must not refuse.
func TestQuiesceWithHeartbeatsQueued(t *testing.T) {
	c := newQuiesceCluster(t, 1, 2, 3)
	lead := qElect(t, c)
	g := c.R(lead).G
	g.Tick() // queues heartbeats, not yet handed out
	if !g.HasReady() {
		t.Fatal("tick queued nothing")
	}
	if !g.Quiesce() {
		t.Fatal("idle leader with heartbeats queued refused to quiesce")
	}
	qSettled(t, c)
}

// A caught-up follower put back to probing while nothing is proposed (its
// node was reported unreachable, and came back) returns to replicating at
// the next heartbeat round, so the idle shard can still quiesce. Before,
// the probe's answer carried the match the leader knew already, was taken
// for a stale one, and the follower stayed probing: the leader refused to
// quiesce for ever (found by the simulator's idle-quiescence check).
func TestQuiesceAfterCaughtUpFollowerProbed(t *testing.T) {
	c := newQuiesceCluster(t, 1, 2, 3)
	lead := qElect(t, c)
	follower := raftpb.NodeID(1)
	if follower == lead {
		follower = 2
	}
	g := c.R(lead).G
	g.ReportUnreachable(follower)
	if st := g.Status().Progress[follower].State; st != tracker.StateProbe {
		t.Fatalf("follower %d is %v after being reported unreachable, want probing", follower, st)
	}
	c.TickAll()
	c.Stabilize()
	if st := g.Status().Progress[follower].State; st != tracker.StateReplicate {
		t.Fatalf("caught-up follower %d still %v after a heartbeat round", follower, st)
	}
	if !g.Quiesce() {
		t.Fatalf("idle leader refused to quiesce: %+v", g.Status())
	}
	qSettled(t, c)
}

// qSettled delivers everything and requires every replica quiesced and the
// oracle content.
func qSettled(t *testing.T, c *Cluster) {
	t.Helper()
	c.Stabilize()
	for _, id := range c.IDs {
		if !c.R(id).G.Quiesced() {
			t.Fatalf("replica %d not quiesced", id)
		}
	}
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
}
