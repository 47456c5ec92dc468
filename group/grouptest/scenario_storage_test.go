package grouptest

// Storage and durability scenarios of SCENARIOS.md (S08, S15, S37–S41) and
// bad input to Step. The shared helpers of scenario_*_test.go (prefix sn)
// live here too.

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

// ---------------------------------------------------------------------------
// Helpers shared by scenario_snap_test.go, scenario_read_test.go and this file.

// snShard is the shard every hand-driven replica belongs to (as in Cluster).
const snShard raftpb.ShardID = 1

// snNode drives one group.Group by hand over a MemoryLog: Readys are handed
// out with ready(), persisted and advanced (in order) with persistNext(), or
// dropped by crash() as a crash before the fsync would.
type snNode struct {
	t   testing.TB
	id  raftpb.NodeID
	Log *group.MemoryLog
	G   *group.Group
	mod func(*group.Config)
	// out are the Readys handed out and not yet persisted and advanced.
	out []group.Ready
	// all is every Ready handed out since the last (re)start, in order.
	all []group.Ready
}

func snOpen(t testing.TB, log *group.MemoryLog, id raftpb.NodeID, applied raftpb.Index, mod func(*group.Config)) *snNode {
	t.Helper()
	n := &snNode{t: t, id: id, Log: log, mod: mod}
	if err := n.start(applied); err != nil {
		t.Fatalf("group.New(%d): %v", id, err)
	}
	return n
}

func snConfig(log *group.MemoryLog, id raftpb.NodeID, applied raftpb.Index, mod func(*group.Config)) group.Config {
	cfg := group.Config{ID: id, Shard: snShard, Log: log, Applied: applied}
	if mod != nil {
		mod(&cfg)
	}
	return cfg
}

func (n *snNode) start(applied raftpb.Index) error {
	g, err := group.New(snConfig(n.Log, n.id, applied, n.mod))
	if err != nil {
		return err
	}
	n.G, n.out, n.all = g, nil, nil
	return nil
}

// ready hands out the next Ready (without persisting it).
func (n *snNode) ready() group.Ready {
	n.t.Helper()
	rd := n.G.Ready()
	if err := n.G.Err(); err != nil {
		n.t.Fatalf("replica %d stopped: %v", n.id, err)
	}
	n.out = append(n.out, rd)
	n.all = append(n.all, rd)
	return rd
}

// persistNext persists and advances the oldest outstanding Ready.
func (n *snNode) persistNext() group.Ready {
	n.t.Helper()
	if len(n.out) == 0 {
		n.t.Fatalf("replica %d: no outstanding Ready", n.id)
	}
	rd := n.out[0]
	n.out = n.out[1:]
	if err := n.Log.Persist(&rd); err != nil {
		n.t.Fatalf("replica %d persist: %v", n.id, err)
	}
	if err := n.G.Advance(rd); err != nil {
		n.t.Fatalf("replica %d advance: %v", n.id, err)
	}
	return rd
}

// flush persists and advances every outstanding Ready.
func (n *snNode) flush() {
	n.t.Helper()
	for len(n.out) > 0 {
		n.persistNext()
	}
}

// drain hands out, persists and advances Readys until there are none; it
// returns them.
func (n *snNode) drain() []group.Ready {
	n.t.Helper()
	n.flush()
	var rds []group.Ready
	for i := 0; i < 100 && n.G.HasReady(); i++ {
		rds = append(rds, n.ready())
		n.persistNext()
	}
	return rds
}

// crash drops the core and every Ready not persisted.
func (n *snNode) crash() { n.G, n.out = nil, nil }

// restart crashes (if needed) and starts again from the durable log.
func (n *snNode) restart(applied raftpb.Index) {
	n.t.Helper()
	n.crash()
	if err := n.start(applied); err != nil {
		n.t.Fatalf("restart %d: %v", n.id, err)
	}
}

func (n *snNode) step(m raftpb.Message) error { return n.G.Step(m) }

func (n *snNode) mustStep(m raftpb.Message) {
	n.t.Helper()
	if err := n.G.Step(m); err != nil {
		n.t.Fatalf("replica %d step %v: %v", n.id, m, err)
	}
}

// snMsg builds a message of shard snShard.
func snMsg(typ raftpb.MessageType, from, to raftpb.NodeID, term raftpb.Term) raftpb.Message {
	return raftpb.Message{Type: typ, Shard: snShard, From: from, To: to, Term: term}
}

// snApp builds a MsgApp after (prevTerm, prev) with ents.
func snApp(from, to raftpb.NodeID, term raftpb.Term, prev raftpb.Index, prevTerm raftpb.Term,
	commit raftpb.Index, ents []raftpb.Entry) raftpb.Message {
	m := snMsg(raftpb.MsgApp, from, to, term)
	m.Index, m.LogTerm, m.Commit, m.Entries = prev, prevTerm, commit, ents
	return m
}

// snEnts makes entries lo..hi (inclusive) of term, each with distinct data.
func snEnts(lo, hi raftpb.Index, term raftpb.Term) []raftpb.Entry {
	var ents []raftpb.Entry
	for i := lo; i <= hi; i++ {
		ents = append(ents, raftpb.Entry{Index: i, Term: term, Data: []byte(fmt.Sprintf("e%d/t%d", i, term))})
	}
	return ents
}

// snVoters is the ConfState with the given voters.
func snVoters(ids ...raftpb.NodeID) raftpb.ConfState { return raftpb.ConfState{Voters: ids} }

// snLog makes the durable log of an initial member of cs (bootstrap entry 1,
// term 1) followed by ents, with hard state hs (if not empty).
func snLog(t testing.TB, cs raftpb.ConfState, hs raftpb.HardState, ents ...[]raftpb.Entry) *group.MemoryLog {
	t.Helper()
	l := group.NewMemoryLog(cs)
	for _, e := range ents {
		if err := l.Append(e); err != nil {
			t.Fatal(err)
		}
	}
	if !hs.IsEmpty() {
		if err := l.Persist(&group.Ready{HardState: hs}); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func snLast(l *group.MemoryLog) raftpb.Index {
	i, _ := l.LastIndex()
	return i
}

func snFirst(l *group.MemoryLog) raftpb.Index {
	i, _ := l.FirstIndex()
	return i
}

func snTerm(t testing.TB, l *group.MemoryLog, i raftpb.Index) raftpb.Term {
	t.Helper()
	tm, err := l.Term(i)
	if err != nil {
		t.Fatalf("term(%d): %v", i, err)
	}
	return tm
}

// snMsgsOf returns the messages of type typ in msgs.
func snMsgsOf(msgs []raftpb.Message, typ raftpb.MessageType) []raftpb.Message {
	var out []raftpb.Message
	for _, m := range msgs {
		if m.Type == typ {
			out = append(out, m)
		}
	}
	return out
}

// snCluster creates a cluster and fails the test on error.
func snCluster(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c, err := NewCluster(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// snElect ticks (and stabilizes) until the cluster has a leader, within a
// bound of election timeouts.
func snElect(t testing.TB, c *Cluster) raftpb.NodeID {
	t.Helper()
	for i := 0; i < 20*c.Opts.ElectionTicks; i++ {
		if l := c.Leader(); l != 0 {
			c.TickAll()
			c.Stabilize()
			return l
		}
		c.TickAll()
		c.Stabilize()
	}
	t.Fatalf("no leader within %d ticks", 20*c.Opts.ElectionTicks)
	return 0
}

// snMakeLeader makes id the leader through a leadership transfer.
func snMakeLeader(t testing.TB, c *Cluster, id raftpb.NodeID) {
	t.Helper()
	for i := 0; i < 10*c.Opts.ElectionTicks; i++ {
		l := c.Leader()
		if l == id {
			c.TickAll()
			c.Stabilize()
			return
		}
		if l == 0 {
			c.TickAll()
			c.Stabilize()
			continue
		}
		if c.R(l).G.BasicStatus().LeadTransferee != id {
			if err := c.R(l).G.TransferLeader(id); err != nil {
				t.Fatalf("transfer %d -> %d: %v", l, id, err)
			}
			c.Process(l)
		}
		c.Stabilize()
		c.TickAll()
		c.Stabilize()
	}
	t.Fatalf("replica %d did not become leader (leader %d)", id, c.Leader())
}

// snLeaderAmong returns the live replica among ids that leads at the
// highest term, or 0.
func snLeaderAmong(c *Cluster, ids ...raftpb.NodeID) raftpb.NodeID {
	var lead raftpb.NodeID
	var term raftpb.Term
	for _, id := range ids {
		r := c.R(id)
		if r.Down {
			continue
		}
		if st := r.G.BasicStatus(); st.Role == group.Leader && st.HardState.Term >= term {
			lead, term = id, st.HardState.Term
		}
	}
	return lead
}

// snOthers returns the ids of c other than those given.
func snOthers(c *Cluster, not ...raftpb.NodeID) []raftpb.NodeID {
	var out []raftpb.NodeID
	for _, id := range c.IDs {
		if !slices.Contains(not, id) {
			out = append(out, id)
		}
	}
	return out
}

// snProposeN proposes n puts at the leader and stabilizes.
func snProposeN(t testing.TB, c *Cluster, lead raftpb.NodeID, n int, prefix string) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := c.Propose(lead, EncodePut(prefix, fmt.Sprintf("%s%d", prefix, i))); err != nil {
			t.Fatalf("propose at %d: %v", lead, err)
		}
	}
	c.Stabilize()
}

// snSettle ticks everyone a few times so commit indexes propagate.
func snSettle(c *Cluster, ticks int) {
	for i := 0; i < ticks; i++ {
		c.TickAll()
		c.Stabilize()
	}
}

func snCheck(t testing.TB, c *Cluster) {
	t.Helper()
	if err := c.Err(); err != nil {
		t.Fatalf("oracle: %v", err)
	}
}

// snStep is one simulated step of a cluster with delays: deliver what is
// due, persist what is due, process everyone (as the random driver does).
func snStep(c *Cluster) {
	c.Now++
	c.Deliver()
	for _, id := range c.IDs {
		r := c.Replicas[id]
		if !r.Down {
			c.persistDue(r, false)
			c.Process(id)
		}
	}
}

// ---------------------------------------------------------------------------
// S08

// S08: an append overlapping entries the follower already holds writes only
// from the first new (or really conflicting) index; the committed entry
// survives a crash before or after the persist.
func TestS08AppendWritesOnlyFromFirstConflict(t *testing.T) {
	// Leader 1 of term 2 holds 1 (bootstrap), 2 (its empty entry), 3 (x),
	// 4 (y) — the (1,1)(1,2)(1,3) of the scenario, shifted by the bootstrap
	// entry. R2 holds 1..3 and 3 is committed.
	e2 := raftpb.Entry{Index: 2, Term: 2}
	e3 := raftpb.Entry{Index: 3, Term: 2, Data: EncodePut("x", "1")}
	e4 := raftpb.Entry{Index: 4, Term: 2, Data: EncodePut("y", "1")}
	mkR2 := func() *snNode {
		l := snLog(t, snVoters(1, 2, 3), raftpb.HardState{Term: 2, Vote: 1, Commit: 3}, []raftpb.Entry{e2, e3})
		return snOpen(t, l, 2, 0, nil)
	}
	ae := snApp(1, 2, 2, 2, 2, 3, []raftpb.Entry{e3, e4})

	for _, crashAfterPersist := range []bool{false, true} {
		t.Run(fmt.Sprintf("crashAfterPersist=%v", crashAfterPersist), func(t *testing.T) {
			r2 := mkR2()
			r2.drain() // release 1..3
			r2.mustStep(ae)
			rd := r2.ready()
			if len(rd.Entries) != 1 || rd.Entries[0].Index != 4 || rd.Entries[0].Term != 2 {
				t.Fatalf("Ready.Entries = %v, want only entry 4: an entry equal to the stored one must not be rewritten",
					rd.Entries)
			}
			if len(snMsgsOf(rd.Messages, raftpb.MsgAppResp)) != 0 {
				t.Fatalf("append acknowledged before the persist: %v", rd.Messages)
			}
			if crashAfterPersist {
				r2.persistNext()
			}
			r2.restart(0)
			if got := snTerm(t, r2.Log, 3); got != 2 {
				t.Fatalf("committed entry 3 has term %d after the crash", got)
			}
			ents, err := r2.Log.Entries(3, 4, 1<<30)
			if err != nil || string(ents[0].Data) != string(e3.Data) {
				t.Fatalf("committed entry 3 lost or changed: %v %v", ents, err)
			}
			want := raftpb.Index(3)
			if crashAfterPersist {
				want = 4
			}
			if got := snLast(r2.Log); got != want {
				t.Fatalf("durable last index %d, want %d", got, want)
			}
			if st := r2.G.BasicStatus(); st.HardState.Commit != 3 {
				t.Fatalf("commit after restart %d, want 3", st.HardState.Commit)
			}
		})
	}

	t.Run("inProgress", func(t *testing.T) {
		// The overlapping append arrives while the first append of 3 is
		// handed out but not yet durable: the second Ready still starts at 4.
		l := snLog(t, snVoters(1, 2, 3), raftpb.HardState{Term: 2, Vote: 1, Commit: 2}, []raftpb.Entry{e2})
		r2 := snOpen(t, l, 2, 0, nil)
		r2.drain()
		r2.mustStep(snApp(1, 2, 2, 2, 2, 2, []raftpb.Entry{e3}))
		rd1 := r2.ready()
		if len(rd1.Entries) != 1 || rd1.Entries[0].Index != 3 {
			t.Fatalf("first Ready entries %v", rd1.Entries)
		}
		r2.mustStep(ae)
		rd2 := r2.ready()
		if len(rd2.Entries) != 1 || rd2.Entries[0].Index != 4 {
			t.Fatalf("second Ready entries %v, want only 4", rd2.Entries)
		}
		r2.flush()
		if snLast(r2.Log) != 4 || snTerm(t, r2.Log, 3) != 2 {
			t.Fatalf("log after both persists: last %d", snLast(r2.Log))
		}
	})

	t.Run("realConflict", func(t *testing.T) {
		// R2 holds a stale uncommitted 4 of term 3; the leader of term 4
		// sends (2,3) and (4,4) after (2,2): only 4 is replaced.
		stale := raftpb.Entry{Index: 4, Term: 3, Data: []byte("stale")}
		l := snLog(t, snVoters(1, 2, 3), raftpb.HardState{Term: 3, Commit: 3}, []raftpb.Entry{e2, e3, stale})
		r2 := snOpen(t, l, 2, 0, nil)
		r2.drain()
		n4 := raftpb.Entry{Index: 4, Term: 4, Data: []byte("new")}
		r2.mustStep(snApp(1, 2, 4, 2, 2, 3, []raftpb.Entry{e3, n4}))
		rd := r2.ready()
		if len(rd.Entries) != 1 || rd.Entries[0].Index != 4 || rd.Entries[0].Term != 4 {
			t.Fatalf("Ready.Entries = %v, want only the replacement of 4", rd.Entries)
		}
		if rd.HardState.Term != 4 {
			t.Fatalf("term 4 not in the Ready that carries its entry: %+v", rd.HardState)
		}
		r2.persistNext()
		if snTerm(t, r2.Log, 3) != 2 || snTerm(t, r2.Log, 4) != 4 {
			t.Fatalf("log after persist: 3/%d 4/%d", snTerm(t, r2.Log, 3), snTerm(t, r2.Log, 4))
		}
	})
}

// S08: the same in a cluster: R2 receives the overlapping append, crashes
// before or after persisting it, restarts; with R1 partitioned away R2 and
// R3 elect a leader that still holds the committed entry.
func TestS08CommittedEntrySurvivesCrashAndElection(t *testing.T) {
	for _, mode := range []string{"noCrash", "crashBeforePersist", "crashAfterPersist"} {
		t.Run(mode, func(t *testing.T) {
			c := snCluster(t, Options{Voters: []raftpb.NodeID{1, 2, 3}, Seed: 8})
			snMakeLeader(t, c, 1)
			term := c.R(1).G.BasicStatus().HardState.Term
			// R3 gets nothing more; R2 gets x and acknowledges it.
			c.Net.Cut(1, 3)
			if err := c.Propose(1, EncodePut("x", "1")); err != nil {
				t.Fatal(err)
			}
			c.Deliver() // MsgApp to 2
			c.Deliver() // ack to 1: x commits at 1
			x := c.R(1).G.BasicStatus().LastIndex
			if got := c.R(1).G.BasicStatus().HardState.Commit; got != x {
				t.Fatalf("x at %d not committed at the leader (commit %d)", x, got)
			}
			c.Net.Cut(1, 2)
			if err := c.Propose(1, EncodePut("y", "1")); err != nil {
				t.Fatal(err)
			}
			c.Stabilize()
			ents, err := c.R(1).Log.Entries(x, x+2, 1<<30)
			if err != nil || len(ents) != 2 {
				t.Fatalf("leader entries: %v %v", ents, err)
			}
			// AE(prev = x-1, entries = [x, y]) overlapping what R2 holds.
			prevTerm := snTerm(t, c.R(1).Log, x-1)
			ae := snApp(1, 2, term, x-1, prevTerm, x, slices.Clone(ents))
			r2 := c.R(2)
			if err := r2.G.Step(ae); err != nil {
				t.Fatal(err)
			}
			switch mode {
			case "crashBeforePersist":
				rd := r2.G.Ready()
				if len(rd.Entries) == 0 || rd.Entries[0].Index != x+1 {
					t.Fatalf("Ready.Entries %v must start at %d", rd.Entries, x+1)
				}
				c.Crash(2) // the Ready is lost
			case "crashAfterPersist":
				c.Process(2)
				c.Crash(2)
			default:
				c.Process(2)
			}
			if r2.Down {
				if err := c.Restart(2); err != nil {
					t.Fatal(err)
				}
			}
			if got := snTerm(t, r2.Log, x); got != term {
				t.Fatalf("R2 lost committed entry %d (term %d)", x, got)
			}
			// Partition R1; R2 and R3 elect.
			c.Net.Heal()
			c.Net.Isolate(1, c.IDs)
			var lead raftpb.NodeID
			for i := 0; i < 20*c.Opts.ElectionTicks && lead == 0; i++ {
				c.Tick(2)
				c.Tick(3)
				c.Stabilize()
				lead = snLeaderAmong(c, 2, 3)
			}
			if lead != 2 && lead != 3 {
				t.Fatal("R2 and R3 elected no leader")
			}
			nl := c.R(lead)
			if got := snTerm(t, nl.Log, x); got != term {
				t.Fatalf("new leader %d lacks committed entry %d (term %d)", lead, x, got)
			}
			snProposeN(t, c, lead, 1, "z")
			snSettle(c, 2)
			for _, id := range []raftpb.NodeID{2, 3} {
				if v := c.R(id).SM.Values["x"]; v != "1" {
					t.Fatalf("replica %d: x = %q after the new leader's commit", id, v)
				}
			}
			snCheck(t, c)
		})
	}
}

// ---------------------------------------------------------------------------
// S15

// S15: every committed entry is applied exactly once and in order across 10
// forced leader changes, snapshot installs and restarts. Applies is strictly
// increasing between restarts; it jumps only over a snapshot delivered to the
// replica, and after a restart it resumes just past the durable snapshot.
func TestS15ApplyExactlyOnceAcrossLeaderChanges(t *testing.T) {
	c := snCluster(t, Options{Voters: []raftpb.NodeID{1, 2, 3}, Seed: 15})
	c.Net.DupRate = 0.1
	// Snapshots sent, per recipient.
	snaps := map[raftpb.NodeID]map[raftpb.Index]bool{}
	c.Net.Filter = func(m *raftpb.Message) bool {
		if m.Type == raftpb.MsgSnap {
			if snaps[m.To] == nil {
				snaps[m.To] = map[raftpb.Index]bool{}
			}
			snaps[m.To][m.Snapshot.Index] = true
		}
		return true
	}
	// Segment starts: position in Applies and the applied index at restart.
	type segStart struct {
		pos  int
		base raftpb.Index
	}
	segs := map[raftpb.NodeID][]segStart{}
	for _, id := range c.IDs {
		segs[id] = []segStart{{0, 0}}
	}
	restart := func(id raftpb.NodeID) {
		if err := c.Restart(id); err != nil {
			t.Fatal(err)
		}
		segs[id] = append(segs[id], segStart{len(c.R(id).Applies), c.R(id).SM.Applied})
	}

	lead := snElect(t, c)
	changes := 0
	for round := 0; changes < 10; round++ {
		if round > 40 {
			t.Fatalf("only %d leader changes in %d rounds", changes, round)
		}
		snProposeN(t, c, lead, 3, fmt.Sprintf("r%d", round))
		fs := snOthers(c, lead)
		f := fs[round%len(fs)]
		switch round % 4 {
		case 0: // f misses entries the leader compacts: snapshot install
			c.Net.Isolate(f, c.IDs)
			snProposeN(t, c, lead, 4, "s")
			if err := c.TakeSnapshot(lead, 0); err != nil {
				t.Fatal(err)
			}
			c.Net.Heal()
			snSettle(c, 3)
		case 1: // f crashes, misses entries, restarts and replays
			c.Crash(f)
			snProposeN(t, c, lead, 2, "c")
			restart(f)
			snSettle(c, 3)
		case 2: // f snapshots its own state, then restarts from it
			snSettle(c, 1)
			if err := c.TakeSnapshot(f, 1); err != nil {
				t.Fatal(err)
			}
			snProposeN(t, c, lead, 2, "d")
			c.Crash(f)
			restart(f)
			snSettle(c, 3)
		case 3: // the leader crashes (forced change) and restarts
			c.Crash(lead)
			old := lead
			lead = 0
			for i := 0; i < 20*c.Opts.ElectionTicks && (lead == 0 || lead == old); i++ {
				c.TickAll()
				c.Stabilize()
				lead = c.Leader()
			}
			if lead == 0 {
				t.Fatal("no leader after the leader crashed")
			}
			changes++
			restart(old)
			snSettle(c, 3)
			continue
		}
		// Forced change by transfer to the next voter.
		next := fs[(round+1)%len(fs)]
		snMakeLeader(t, c, next)
		lead = next
		changes++
	}
	snProposeN(t, c, lead, 1, "final")
	snSettle(c, 3)
	snCheck(t, c)

	want := c.R(lead).G.BasicStatus().HardState.Commit
	for _, id := range c.IDs {
		r := c.R(id)
		if r.SM.Applied != want {
			t.Errorf("replica %d applied %d, leader committed %d", id, r.SM.Applied, want)
		}
		if n := len(r.Applies); n > 0 && r.Applies[n-1] != r.SM.Applied && !snaps[id][r.SM.Applied] {
			t.Errorf("replica %d: last applied entry %d but SM.Applied %d", id, r.Applies[n-1], r.SM.Applied)
		}
		ss := segs[id]
		for k, s := range ss {
			end := len(r.Applies)
			if k+1 < len(ss) {
				end = ss[k+1].pos
			}
			prev := s.base
			for _, idx := range r.Applies[s.pos:end] {
				switch {
				case idx == prev+1:
				case idx > prev+1 && snaps[id][idx-1]:
					// Jumped over a snapshot installed at idx-1.
				default:
					t.Fatalf("replica %d segment %d (from %d): applies %d after %d: %v",
						id, k, s.base, idx, prev, r.Applies[s.pos:end])
				}
				prev = idx
			}
		}
	}
	if len(snaps) == 0 {
		t.Fatal("no snapshot was ever sent: the scenario did not exercise installs")
	}
	restarts := 0
	for _, id := range c.IDs {
		restarts += c.R(id).Restarts
		t.Logf("replica %d: %d applies, %d segments, snapshots received %v", id, len(c.R(id).Applies), len(segs[id]), snaps[id])
	}
	t.Logf("leader changes %d, restarts %d, final commit %d", changes, restarts, want)
}

// ---------------------------------------------------------------------------
// S37

// S37: a follower of term 2 receiving an append of term 5 gets the new term
// and the entry in one Ready (one atomic persist): a crash before it loses
// both, after it keeps both, and the old leader's append is then refused.
func TestS37TermDurableWithEntries(t *testing.T) {
	mk := func() *snNode {
		l := snLog(t, snVoters(1, 2, 3), raftpb.HardState{Term: 2, Vote: 1, Commit: 2}, snEnts(2, 2, 2))
		n := snOpen(t, l, 3, 0, nil)
		n.drain()
		return n
	}
	e5 := raftpb.Entry{Index: 3, Term: 5, Data: []byte("E5-1")}

	t.Run("oneReady", func(t *testing.T) {
		n := mk()
		n.mustStep(snApp(2, 3, 5, 2, 2, 2, []raftpb.Entry{e5}))
		rd := n.ready()
		if len(rd.Entries) != 1 || rd.Entries[0].Term != 5 {
			t.Fatalf("entries %v", rd.Entries)
		}
		if rd.HardState.Term != 5 {
			t.Fatalf("the Ready carrying E5-1 has hard state %+v: term 5 must be persisted with it", rd.HardState)
		}
		if len(snMsgsOf(rd.Messages, raftpb.MsgAppResp)) > 0 || len(snMsgsOf(rd.AfterPersist, raftpb.MsgAppResp)) != 1 {
			t.Fatalf("ack must wait for the persist: messages %v after %v", rd.Messages, rd.AfterPersist)
		}
	})

	t.Run("crashBeforePersist", func(t *testing.T) {
		n := mk()
		n.mustStep(snApp(2, 3, 5, 2, 2, 2, []raftpb.Entry{e5}))
		n.ready()
		n.restart(0)
		if hs := n.Log.HardState(); hs.Term != 2 || snLast(n.Log) != 2 {
			t.Fatalf("after a crash before the persist: hard state %+v last %d: want term 2, last 2 (both lost)",
				hs, snLast(n.Log))
		}
	})

	t.Run("crashAfterPersist", func(t *testing.T) {
		n := mk()
		n.mustStep(snApp(2, 3, 5, 2, 2, 2, []raftpb.Entry{e5}))
		n.ready()
		n.persistNext()
		n.restart(0)
		n.drain()
		if hs := n.Log.HardState(); hs.Term != 5 || snTerm(t, n.Log, 3) != 5 {
			t.Fatalf("durable term %d, entry 3 term %d", hs.Term, snTerm(t, n.Log, 3))
		}
		// The term-2 leader sends its own entry 3.
		old := raftpb.Entry{Index: 3, Term: 2, Data: []byte("E1-1")}
		if err := n.step(snApp(1, 3, 2, 2, 2, 2, []raftpb.Entry{old})); err != nil {
			t.Fatalf("stale append: %v", err)
		}
		rds := n.drain()
		for _, rd := range rds {
			if len(rd.Entries) > 0 {
				t.Fatalf("stale append wrote %v", rd.Entries)
			}
			for _, m := range append(slices.Clone(rd.Messages), rd.AfterPersist...) {
				if m.Type == raftpb.MsgAppResp && m.To == 1 && m.Term <= 2 {
					t.Fatalf("stale leader acknowledged at its term: %v", m)
				}
			}
		}
		if got := snTerm(t, n.Log, 3); got != 5 {
			t.Fatalf("E5-1 overwritten by term %d", got)
		}
		if st := n.G.BasicStatus(); st.HardState.Term != 5 {
			t.Fatalf("term %d after the stale append", st.HardState.Term)
		}
	})
}

// ---------------------------------------------------------------------------
// S38

// S38 (core): append and vote acknowledgements leave only in AfterPersist; a
// vote granted in memory and lost in a crash was never sent.
func TestS38AcksOnlyAfterPersist(t *testing.T) {
	l := snLog(t, snVoters(1, 2, 3), raftpb.HardState{Term: 2, Vote: 1, Commit: 1}, snEnts(2, 2, 2))
	n := snOpen(t, l, 3, 0, func(c *group.Config) { c.DisableCheckQuorum = true })
	n.drain()

	check := func(rd group.Ready, typ raftpb.MessageType) {
		t.Helper()
		if len(snMsgsOf(rd.Messages, typ)) != 0 {
			t.Fatalf("%v in Ready.Messages (sent before the persist): %v", typ, rd.Messages)
		}
		if len(snMsgsOf(rd.AfterPersist, typ)) != 1 {
			t.Fatalf("want one %v in AfterPersist, got %v", typ, rd.AfterPersist)
		}
	}
	n.mustStep(snApp(1, 3, 2, 2, 2, 2, snEnts(3, 4, 2)))
	check(n.ready(), raftpb.MsgAppResp)
	n.flush()

	// A rejected append (probe mismatch) waits too: it asserts the term.
	n.mustStep(snApp(1, 3, 2, 9, 2, 2, nil))
	check(n.ready(), raftpb.MsgAppResp)
	n.flush()

	// Vote in term 3 for candidate 2.
	vote := snMsg(raftpb.MsgVote, 2, 3, 3)
	vote.Index, vote.LogTerm = 4, 2
	n.mustStep(vote)
	rd := n.ready()
	check(rd, raftpb.MsgVoteResp)
	if rd.HardState.Term != 3 || rd.HardState.Vote != 2 {
		t.Fatalf("vote not in the Ready's hard state: %+v", rd.HardState)
	}
	if m := snMsgsOf(rd.AfterPersist, raftpb.MsgVoteResp)[0]; m.Reject {
		t.Fatalf("vote refused: %v", m)
	}
	// Crash before the persist: the grant never left, and after the restart
	// the replica is free to vote for candidate 1 in term 3.
	n.restart(0)
	n.drain()
	if hs := n.Log.HardState(); hs.Term != 2 {
		t.Fatalf("durable hard state %+v after crash before persist", hs)
	}
	vote1 := snMsg(raftpb.MsgVote, 1, 3, 3)
	vote1.Index, vote1.LogTerm = 4, 2
	n.mustStep(vote1)
	rd = n.ready()
	check(rd, raftpb.MsgVoteResp)
	if m := snMsgsOf(rd.AfterPersist, raftpb.MsgVoteResp)[0]; m.Reject {
		t.Fatalf("vote for 1 refused after the lost vote for 2: %v", m)
	}
	n.flush()
	// A refusal also waits for the persist (it carries the durable term).
	vote2 := snMsg(raftpb.MsgVote, 2, 3, 3)
	vote2.Index, vote2.LogTerm = 4, 2
	n.mustStep(vote2)
	rd = n.ready()
	check(rd, raftpb.MsgVoteResp)
	if m := snMsgsOf(rd.AfterPersist, raftpb.MsgVoteResp)[0]; !m.Reject {
		t.Fatalf("second vote in term 3 granted: %v", m)
	}
}

// S38 (cluster): with pipelined persistence, random crashes and message
// loss, every append or vote acknowledgement is durable when it is sent, and
// stays durable across the sender's crashes for as long as its term does.
func TestS38NoAckBeforeFsync(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			c := snCluster(t, Options{Voters: []raftpb.NodeID{1, 2, 3}, Seed: seed, PersistDelay: 15})
			c.Net.MaxDelay = 8
			c.Net.DropRate = 0.02
			var violations []string
			acks, grants := 0, 0
			// Highest index acknowledged, per (replica, term).
			acked := map[[2]uint64]raftpb.Index{}
			c.Net.Filter = func(m *raftpb.Message) bool {
				r := c.R(m.From)
				hs := r.Log.HardState()
				switch m.Type {
				case raftpb.MsgAppResp:
					if hs.Term < m.Term {
						violations = append(violations, fmt.Sprintf("%v sent with durable term %d", m, hs.Term))
					}
					if !m.Reject && m.Index > 0 {
						acks++
						if last := snLast(r.Log); m.Index > last {
							violations = append(violations, fmt.Sprintf("%v acks beyond durable last %d", m, last))
						}
						k := [2]uint64{uint64(m.From), uint64(m.Term)}
						acked[k] = max(acked[k], m.Index)
					}
				case raftpb.MsgVoteResp:
					if hs.Term < m.Term {
						violations = append(violations, fmt.Sprintf("%v sent with durable term %d", m, hs.Term))
					}
					if !m.Reject {
						grants++
						if hs.Term != m.Term || hs.Vote != m.To {
							violations = append(violations, fmt.Sprintf("%v granted with durable %+v", m, hs))
						}
					}
				}
				return true
			}
			crashes, lostReadys := 0, 0
			for step := 0; step < 3000; step++ {
				snStep(c)
				if step%StepsPerTick == 0 {
					c.TickAll()
				}
				if step%7 == 0 {
					if l := c.Leader(); l != 0 {
						_ = c.Propose(l, EncodePut("k", fmt.Sprint(step)))
					}
				}
				if step%211 == 100 {
					id := c.IDs[c.Rand.IntN(len(c.IDs))]
					lostReadys += len(c.R(id).pending)
					c.Crash(id)
					crashes++
					for k := 0; k < 30; k++ {
						snStep(c)
					}
					if err := c.Restart(id); err != nil {
						t.Fatal(err)
					}
					// Nothing acknowledged at the durable term was lost.
					r := c.R(id)
					hs := r.Log.HardState()
					if i, ok := acked[[2]uint64{uint64(id), uint64(hs.Term)}]; ok && i > snLast(r.Log) {
						violations = append(violations, fmt.Sprintf(
							"replica %d acked %d in term %d but restarted with last %d", id, i, hs.Term, snLast(r.Log)))
					}
				}
				if c.Err() != nil || len(violations) > 0 {
					break
				}
			}
			snCheck(t, c)
			if len(violations) > 0 {
				t.Fatalf("%d violations, first: %s", len(violations), violations[0])
			}
			if acks == 0 || grants == 0 || crashes == 0 {
				t.Fatalf("vacuous run: acks %d grants %d crashes %d", acks, grants, crashes)
			}
			t.Logf("acks %d grants %d crashes %d (unpersisted Readys lost %d)", acks, grants, crashes, lostReadys)
		})
	}
}

// ---------------------------------------------------------------------------
// S39

// S39: Advance out of order is refused; a single voter elects and commits its
// empty entry only once the Readys carrying its vote and the entry are
// advanced, in order, and the idle group then has nothing left pending.
func TestS39AdvanceInOrder(t *testing.T) {
	n := snOpen(t, group.NewMemoryLog(snVoters(1)), 1, 0, nil)
	n.drain()
	var rdVote group.Ready
	for i := 0; i < 40; i++ {
		n.G.Tick()
		if n.G.HasReady() {
			rdVote = n.ready()
			break
		}
	}
	if rdVote.HardState.Vote != 1 || rdVote.HardState.Term != 2 {
		t.Fatalf("no campaign Ready: %+v", rdVote.HardState)
	}
	if st := n.G.BasicStatus(); st.Role == group.Leader {
		t.Fatal("leader before its own vote is durable")
	}
	n.persistNext()
	if st := n.G.BasicStatus(); st.Role != group.Leader {
		t.Fatalf("role %v after the vote is durable", st.Role)
	}
	rdEmpty := n.ready()
	if len(rdEmpty.Entries) != 1 || rdEmpty.Entries[0].Index != 2 || rdEmpty.Entries[0].Term != 2 {
		t.Fatalf("empty entry Ready: %v", rdEmpty.Entries)
	}
	if err := n.G.Propose([]raftpb.Entry{{Data: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	rdX := n.ready()
	if len(rdX.Entries) != 1 || rdX.Entries[0].Index != 3 {
		t.Fatalf("proposal Ready: %v", rdX.Entries)
	}
	// Both writes complete; the later completion is reported first.
	for _, rd := range []group.Ready{rdEmpty, rdX} {
		if err := n.Log.Persist(&rd); err != nil {
			t.Fatal(err)
		}
	}
	n.out = nil
	before := n.G.BasicStatus()
	if err := n.G.Advance(rdX); !errors.Is(err, group.ErrAdvanceOutOfOrder) {
		t.Fatalf("Advance out of order: %v, want ErrAdvanceOutOfOrder", err)
	}
	if after := n.G.BasicStatus(); after != before || after.HardState.Commit != 1 {
		t.Fatalf("refused Advance changed state: %+v -> %+v", before, after)
	}
	if err := n.G.Advance(rdEmpty); err != nil {
		t.Fatal(err)
	}
	if got := n.G.BasicStatus().HardState.Commit; got != 2 {
		t.Fatalf("commit %d after advancing the empty entry, want 2 (3 is not advanced)", got)
	}
	if err := n.G.Advance(rdEmpty); !errors.Is(err, group.ErrAdvanceOutOfOrder) {
		t.Fatalf("second Advance of the same Ready: %v", err)
	}
	if err := n.G.Advance(rdX); err != nil {
		t.Fatal(err)
	}
	if got := n.G.BasicStatus().HardState.Commit; got != 3 {
		t.Fatalf("commit %d, want 3", got)
	}
	var released []raftpb.Index
	for _, rd := range n.drain() {
		for _, e := range rd.CommittedEntries {
			released = append(released, e.Index)
		}
	}
	if !slices.Equal(released, []raftpb.Index{2, 3}) {
		t.Fatalf("released %v, want [2 3]", released)
	}
	// Idle: no Ready left, nothing stranded.
	for i := 0; i < 30; i++ {
		n.G.Tick()
		n.drain()
	}
	if st := n.G.BasicStatus(); st.Role != group.Leader || st.HardState.Commit != 3 || st.Applying != 3 {
		t.Fatalf("idle single voter: %+v", st)
	}
}

// snFailLog is a LogReader whose Entries fail while fail is set.
type snFailLog struct {
	*group.MemoryLog
	fail bool
}

var errSnDisk = errors.New("disk read failed")

func (l *snFailLog) Entries(lo, hi raftpb.Index, maxBytes uint64) ([]raftpb.Entry, error) {
	if l.fail {
		return nil, errSnDisk
	}
	return l.MemoryLog.Entries(lo, hi, maxBytes)
}

// S39: a storage failure is sticky: once a read of the log failed, later
// successes do not resume the group, nothing decided on the failed read
// leaves, and every call reports the failure.
func TestS39StorageErrorOverridesLaterSuccess(t *testing.T) {
	ml := snLog(t, snVoters(1), raftpb.HardState{Term: 2, Vote: 1, Commit: 5}, snEnts(2, 5, 2))
	fl := &snFailLog{MemoryLog: ml}
	g, err := group.New(group.Config{ID: 1, Shard: snShard, Log: fl, Applied: 1})
	if err != nil {
		t.Fatal(err)
	}
	fl.fail = true
	rd := g.Ready() // must read 2..5 to release them
	if len(rd.CommittedEntries) > 0 || rd.HardState != (raftpb.HardState{}) || g.HasReady() {
		t.Fatalf("Ready after a failed read: %+v", rd)
	}
	if !errors.Is(g.Err(), group.ErrStorage) || !errors.Is(g.Err(), errSnDisk) {
		t.Fatalf("Err() = %v", g.Err())
	}
	fl.fail = false
	if rd := g.Ready(); len(rd.CommittedEntries) > 0 {
		t.Fatalf("group resumed after the failure: %+v", rd)
	}
	if err := g.Propose([]raftpb.Entry{{Data: []byte("x")}}); !errors.Is(err, group.ErrStorage) {
		t.Fatalf("Propose after failure: %v", err)
	}
	if err := g.Step(snMsg(raftpb.MsgHeartbeat, 2, 1, 3)); !errors.Is(err, group.ErrStorage) {
		t.Fatalf("Step after failure: %v", err)
	}
	if err := g.Advance(rd); !errors.Is(err, group.ErrStorage) {
		t.Fatalf("Advance after failure: %v", err)
	}
}

// ---------------------------------------------------------------------------
// S40

// S40: a single voter with 100 entries restarts: the commit is recovered from
// the hard state, the log is replayed, writes and reads are refused until it
// leads again through the normal path (vote durable, new-term entry), and the
// first read waits for that entry.
func TestS40SingleNodeRestart(t *testing.T) {
	l := snLog(t, snVoters(1), raftpb.HardState{Term: 2, Vote: 1, Commit: 101}, snEnts(2, 101, 2))
	n := snOpen(t, l, 1, 0, nil)
	st := n.G.BasicStatus()
	if st.HardState.Commit != 101 || st.Role != group.Follower || st.HardState.Term != 2 {
		t.Fatalf("after restart: %+v", st)
	}
	if err := n.G.Propose([]raftpb.Entry{{Data: []byte("w")}}); !errors.Is(err, group.ErrProposalDropped) {
		t.Fatalf("write before leadership: %v, want ErrProposalDropped", err)
	}
	if err := n.G.ReadIndex(1); !errors.Is(err, group.ErrReadDropped) {
		t.Fatalf("read before leadership: %v, want ErrReadDropped", err)
	}
	var released raftpb.Index
	var sawVote bool
	collect := func(rd group.Ready) {
		for _, e := range rd.CommittedEntries {
			if e.Index != released+1 {
				t.Fatalf("replay out of order: %d after %d", e.Index, released)
			}
			released = e.Index
		}
		if rd.HardState.Term == 3 && rd.HardState.Vote == 1 {
			sawVote = true
		}
		for _, rs := range rd.ReadStates {
			t.Fatalf("read state %+v before the new-term entry committed", rs)
		}
	}
	for i := 0; i < 100 && n.G.BasicStatus().Role != group.Leader; i++ {
		n.G.Tick()
		for n.G.HasReady() {
			rd := n.ready()
			collect(rd)
			n.persistNext()
			if n.G.BasicStatus().Role == group.Leader && !sawVote {
				t.Fatal("leader without a durable vote of the new term")
			}
			if n.G.BasicStatus().Role == group.Leader {
				break
			}
		}
	}
	if n.G.BasicStatus().Role != group.Leader {
		t.Fatal("single voter did not become leader again")
	}
	if released != 101 {
		t.Fatalf("replayed to %d before leading, want 101", released)
	}
	// Leader, its empty entry not yet durable: the read waits.
	if err := n.G.ReadIndex(7); err != nil {
		t.Fatal(err)
	}
	rd := n.ready()
	collect(rd)
	if len(rd.Entries) != 1 || rd.Entries[0].Index != 102 || rd.Entries[0].Term != 3 {
		t.Fatalf("new-term entry: %v", rd.Entries)
	}
	n.persistNext()
	var got []group.ReadState
	for _, rd := range n.drain() {
		got = append(got, rd.ReadStates...)
		for _, e := range rd.CommittedEntries {
			released = e.Index
		}
	}
	if len(got) != 1 || got[0].ID != 7 || got[0].Dropped || got[0].Index < 102 {
		t.Fatalf("read states %+v, want one for 7 at >= 102", got)
	}
	if released < got[0].Index {
		t.Fatalf("read index %d but only %d released for applying", got[0].Index, released)
	}
}

// ---------------------------------------------------------------------------
// S41

// S41: a state machine behind the compacted log, or ahead of the durable
// commit, is refused by group.New.
func TestS41AppliedOutsideTheLog(t *testing.T) {
	mk := func() *group.MemoryLog {
		l := snLog(t, snVoters(1, 2, 3), raftpb.HardState{Term: 2, Commit: 60}, snEnts(2, 70, 2))
		if err := l.SetSnapshot(raftpb.SnapshotMeta{Index: 50, Term: 2, ConfState: snVoters(1, 2, 3)}); err != nil {
			t.Fatal(err)
		}
		if err := l.Compact(50); err != nil {
			t.Fatal(err)
		}
		return l
	}
	for _, tc := range []struct {
		applied raftpb.Index
		ok      bool
	}{
		{33, false}, // behind the snapshot: entries 34..50 are gone
		{49, false},
		{50, true},
		{55, true},
		{60, true},
		{61, false}, // beyond the durable commit
		{70, false},
	} {
		_, err := group.New(snConfig(mk(), 1, tc.applied, nil))
		if (err == nil) != tc.ok {
			t.Errorf("Applied %d: err = %v, want ok=%v", tc.applied, err, tc.ok)
		}
		if err != nil && !errors.Is(err, group.ErrInvalidConfig) {
			t.Errorf("Applied %d: error %v does not wrap ErrInvalidConfig", tc.applied, err)
		}
	}
	// Applied 55 resumes at 56: nothing before is released again.
	n := snOpen(t, mk(), 1, 55, nil)
	rds := n.drain()
	if len(rds) == 0 || len(rds[0].CommittedEntries) == 0 || rds[0].CommittedEntries[0].Index != 56 {
		t.Fatalf("release after Applied 55: %+v", rds)
	}
}

// ---------------------------------------------------------------------------
// Bad input

// Step refuses messages no correct peer sends, with ErrInvalidMessage and no
// change at all; a heartbeat commit beyond the log is clamped.
func TestStepBadInput(t *testing.T) {
	mk := func() *snNode {
		l := snLog(t, snVoters(1, 2, 3), raftpb.HardState{Term: 2, Vote: 1, Commit: 3}, snEnts(2, 5, 2))
		n := snOpen(t, l, 2, 0, nil)
		n.mustStep(snMsg(raftpb.MsgHeartbeat, 1, 2, 2)) // knows its leader
		n.drain()
		return n
	}
	huge := raftpb.Term(1 << 62)
	bad := map[string]raftpb.Message{
		"termTooLarge":      snMsg(raftpb.MsgHeartbeat, 1, 2, huge),
		"voteTermTooLarge":  func() raftpb.Message { m := snMsg(raftpb.MsgVote, 3, 2, huge); return m }(),
		"indexTooLarge":     snApp(1, 2, 2, raftpb.Index(1<<62), 2, 3, nil),
		"commitTooLarge":    snApp(1, 2, 2, 5, 2, raftpb.Index(1<<62), nil),
		"gap":               snApp(1, 2, 2, 5, 2, 3, []raftpb.Entry{{Index: 7, Term: 2}}),
		"gapInside":         snApp(1, 2, 2, 5, 2, 3, []raftpb.Entry{{Index: 6, Term: 2}, {Index: 8, Term: 2}}),
		"overlapInside":     snApp(1, 2, 2, 5, 2, 3, []raftpb.Entry{{Index: 6, Term: 2}, {Index: 6, Term: 2}}),
		"decreasingTerms":   snApp(1, 2, 3, 5, 2, 3, []raftpb.Entry{{Index: 6, Term: 3}, {Index: 7, Term: 2}}),
		"entryBelowPrev":    snApp(1, 2, 3, 5, 3, 3, []raftpb.Entry{{Index: 6, Term: 2}}),
		"entryAboveMsgTerm": snApp(1, 2, 2, 5, 2, 3, []raftpb.Entry{{Index: 6, Term: 3}}),
		"higherTermGap":     snApp(1, 2, 7, 5, 2, 3, []raftpb.Entry{{Index: 9, Term: 7}}),
		"otherShard": func() raftpb.Message {
			m := snMsg(raftpb.MsgHeartbeat, 1, 2, 3)
			m.Shard = 2
			return m
		}(),
		"otherNode":     snMsg(raftpb.MsgHeartbeat, 1, 3, 3),
		"noSender":      snMsg(raftpb.MsgHeartbeat, 0, 2, 3),
		"fromSelf":      snMsg(raftpb.MsgHeartbeat, 2, 2, 3),
		"unknownType":   snMsg(raftpb.MessageType(200), 1, 2, 3),
		"invalidType":   snMsg(raftpb.MsgInvalid, 1, 2, 3),
		"termlessApp":   snApp(1, 2, 0, 5, 0, 3, nil),
		"logTermAbove":  snApp(1, 2, 2, 5, 3, 3, nil),
		"snapNoSnap":    snMsg(raftpb.MsgSnap, 1, 2, 3),
		"heartbeatEnts": func() raftpb.Message { m := snMsg(raftpb.MsgHeartbeat, 1, 2, 2); m.Entries = snEnts(6, 6, 2); return m }(),
		"snapNoVoters": func() raftpb.Message {
			m := snMsg(raftpb.MsgSnap, 1, 2, 3)
			m.Snapshot = &raftpb.SnapshotMeta{Index: 50, Term: 3}
			return m
		}(),
		"snapTermAbove": func() raftpb.Message {
			m := snMsg(raftpb.MsgSnap, 1, 2, 3)
			m.Snapshot = &raftpb.SnapshotMeta{Index: 50, Term: 4, ConfState: snVoters(1, 2, 3)}
			return m
		}(),
		"propWithTerm": func() raftpb.Message {
			m := snMsg(raftpb.MsgProp, 1, 2, 2)
			m.Entries = []raftpb.Entry{{Data: []byte("x")}}
			return m
		}(),
	}
	names := make([]string, 0, len(bad))
	for k := range bad {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			n := mk()
			before := n.G.Status()
			logBefore := n.Log.Clone()
			err := n.step(bad[name])
			if !errors.Is(err, group.ErrInvalidMessage) {
				t.Fatalf("Step(%v) = %v, want ErrInvalidMessage", bad[name], err)
			}
			if after := n.G.Status(); after.BasicStatus != before.BasicStatus ||
				!after.Config.Equal(&before.Config) {
				t.Fatalf("state changed: %+v -> %+v", before.BasicStatus, after.BasicStatus)
			}
			if n.G.HasReady() {
				t.Fatalf("refused message produced a Ready: %+v", n.G.Ready())
			}
			if n.G.Err() != nil {
				t.Fatalf("group stopped: %v", n.G.Err())
			}
			if snLast(n.Log) != snLast(logBefore) || n.Log.HardState() != logBefore.HardState() {
				t.Fatal("durable log changed")
			}
		})
	}

	t.Run("heartbeatCommitBeyondLog", func(t *testing.T) {
		n := mk()
		m := snMsg(raftpb.MsgHeartbeat, 1, 2, 2)
		m.Commit = 1000
		if err := n.step(m); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
		st := n.G.BasicStatus()
		if st.HardState.Commit > st.LastIndex {
			t.Fatalf("commit %d beyond last index %d", st.HardState.Commit, st.LastIndex)
		}
		n.drain()
		if hs := n.Log.HardState(); hs.Commit > snLast(n.Log) {
			t.Fatalf("durable commit %d beyond durable log %d", hs.Commit, snLast(n.Log))
		}
	})

	t.Run("appendCommitBeyondProof", func(t *testing.T) {
		// S09: the commit is capped at what this append proved.
		n := mk()
		n.mustStep(snApp(1, 2, 2, 5, 2, 100, snEnts(6, 6, 2)))
		if got := n.G.BasicStatus().HardState.Commit; got != 6 {
			t.Fatalf("commit %d, want 6", got)
		}
	})

	t.Run("peerOutsideMembership", func(t *testing.T) {
		// A response from a node that is not a member is refused by a leader.
		l := snLog(t, snVoters(1), raftpb.HardState{Term: 1, Commit: 1})
		n := snOpen(t, l, 1, 0, nil)
		for i := 0; i < 40 && n.G.BasicStatus().Role != group.Leader; i++ {
			n.G.Tick()
			n.drain()
		}
		if n.G.BasicStatus().Role != group.Leader {
			t.Fatal("no leader")
		}
		before := n.G.BasicStatus()
		m := snMsg(raftpb.MsgAppResp, 9, 1, before.HardState.Term)
		m.Index = before.LastIndex
		if err := n.step(m); !errors.Is(err, group.ErrStepPeerNotFound) {
			t.Fatalf("response from non-member: %v, want ErrStepPeerNotFound", err)
		}
		if after := n.G.BasicStatus(); after != before {
			t.Fatalf("state changed: %+v -> %+v", before, after)
		}
	})
}

// ---------------------------------------------------------------------------
// Harness

// Cluster.Stabilize is documented to deliver everything in flight "ignoring
// delays", but with network delays it cannot: it delivers at Now = 1<<62, so
// every message sent during that delivery is stamped 1<<62+d and, for d > 0,
// is never due again — not in the next round (Now is again 1<<62), nor ever
// after (Now is restored). Stabilize then gives up after 10000 rounds with
// "no stable state" and the messages stay stuck in the queue.
func TestSnHarnessStabilizeWithNetworkDelay(t *testing.T) {
	c := snCluster(t, Options{Voters: []raftpb.NodeID{1, 2, 3}, Seed: 1})
	c.Net.MinDelay, c.Net.MaxDelay = 1, 3
	for i := 0; i < 20*c.Opts.ElectionTicks && c.Leader() == 0 && c.Err() == nil; i++ {
		c.TickAll()
		c.Stabilize()
	}
	if err := c.Err(); err != nil {
		t.Fatalf("Stabilize with MinDelay=1, MaxDelay=3: %v (%d messages stuck in flight)", err, c.Net.Pending())
	}
	if c.Leader() == 0 {
		t.Fatal("no leader")
	}
}
