package grouptest

// Replication and commit scenarios of SCENARIOS.md (S09, S10, S11, S12,
// S13, S14, S16), at the pure-core layer: single groups stepped by hand, and
// the simulated cluster. Helpers carry the prefix "er" (the shared ones are
// in scenario_elect_test.go).

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

// erStepsPerTick is the number of simulated steps per replica tick in the
// step-driven tests (message delays are in steps).
const erStepsPerTick = 10

// erDeliverEach delivers the messages due at c.Now one at a time, exactly as
// Deliver does, calling check after each delivered message.
func erDeliverEach(c *Cluster, check func(m *raftpb.Message)) {
	for _, e := range c.Net.due(c.Now) {
		if c.deliver(e) && check != nil {
			check(&e.m)
		}
	}
}

// erStep advances the simulation one step: delivery of what is due (check
// after each message), persistence of what is due, and a tick of every
// replica every erStepsPerTick steps.
func erStep(c *Cluster, check func(m *raftpb.Message)) {
	c.Now++
	erDeliverEach(c, check)
	for _, id := range c.IDs {
		r := c.R(id)
		if !r.Down {
			c.persistDue(r, false)
			c.Process(id)
		}
	}
	if c.Now%erStepsPerTick == 0 {
		c.TickAll()
	}
}

// erQuiesceNet turns delays and duplicates off and lets everything settle.
func erQuiesceNet(c *Cluster, ticks int) {
	c.Net.MinDelay, c.Net.MaxDelay, c.Net.DupRate, c.Net.DropRate = 0, 0, 0, 0
	c.Stabilize()
	erTicks(c, ticks)
}

func erDurable(t *testing.T, r *Replica) (raftpb.Index, []raftpb.Entry) {
	t.Helper()
	first, _ := r.Log.FirstIndex()
	last, _ := r.Log.LastIndex()
	if last < first {
		return first, nil
	}
	ents, err := r.Log.Entries(first, last+1, 1<<62)
	if err != nil {
		t.Fatal(err)
	}
	return first, ents
}

// erSameLog fails unless the durable logs of a and b end at the same index
// and hold the same entries wherever both hold entries.
func erSameLog(t *testing.T, c *Cluster, a, b raftpb.NodeID) {
	t.Helper()
	fa, ea := erDurable(t, c.R(a))
	fb, eb := erDurable(t, c.R(b))
	la, lb := fa+raftpb.Index(len(ea))-1, fb+raftpb.Index(len(eb))-1
	if la != lb {
		t.Fatalf("replica %d log ends at %d, replica %d at %d", a, la, b, lb)
	}
	for i := max(fa, fb); i <= la; i++ {
		x, y := ea[i-fa], eb[i-fb]
		if x.Index != i || y.Index != i || x.Term != y.Term || x.Type != y.Type || !bytes.Equal(x.Data, y.Data) {
			t.Fatalf("logs of %d and %d differ at %d: %+v vs %+v", a, b, i, x, y)
		}
	}
}

func erDurableTerm(r *Replica, i raftpb.Index) (raftpb.Term, bool) {
	t, err := r.Log.Term(i)
	return t, err == nil
}

// ---------------------------------------------------------------------------
// S09. The follower's commit index is capped by what this request proved.

// TestS09CommitCappedByVerifiedPrefix: follower R1 holds (1,1)(1,2)(2,3);
// the leader R0 (term 3) holds (1,1)(1,2)(3,3) and sends AE(prev=(1,1),
// entries=[(1,2)], commit=3). R1 must commit min(3, 2) = 2 and never apply
// its (2,3). A later AE replaces (2,3) with (3,3); only then index 3 applies,
// as (3,3). Taking min(leader_commit, last log index) = 3 applies (2,3).
func TestS09CommitCappedByVerifiedPrefix(t *testing.T) {
	l := erMemLog(t, erIDs(1, 2, 3), true, erEnts(2, 1, 2), raftpb.HardState{Term: 2, Commit: 1})
	f := erNewNode(t, 2, l, nil)

	out := f.mustStep(raftpb.Message{Type: raftpb.MsgApp, From: 1, Term: 3, Index: 1, LogTerm: 1,
		Entries: erEnts(2, 1), Commit: 3})
	resp := erOnly(t, out, raftpb.MsgAppResp)
	if resp.Reject || resp.Index != 2 {
		t.Fatalf("response %v, want success at 2", resp)
	}
	st := f.status()
	if st.HardState.Commit != 2 {
		t.Fatalf("commit %d after AE proving only up to 2, want 2", st.HardState.Commit)
	}
	if tm, _ := l.Term(3); tm != 2 || st.LastIndex != 3 {
		t.Fatalf("the unproven (2,3) should still be held, uncommitted: term %d last %d", tm, st.LastIndex)
	}
	check := func() {
		t.Helper()
		for _, e := range f.applied {
			if e.Index == 3 && e.Term != 3 {
				t.Fatalf("applied the unproven entry (%d,%d)", e.Term, e.Index)
			}
		}
	}
	check()
	for range 3 {
		f.tick()
	}
	if c := f.status().HardState.Commit; c != 2 {
		t.Fatalf("commit moved to %d without a new AE", c)
	}
	for _, e := range f.applied {
		if e.Index > 2 {
			t.Fatalf("applied %d before it was proven", e.Index)
		}
	}

	out = f.mustStep(raftpb.Message{Type: raftpb.MsgApp, From: 1, Term: 3, Index: 2, LogTerm: 1,
		Entries: erEnts(3, 3), Commit: 3})
	resp = erOnly(t, out, raftpb.MsgAppResp)
	if resp.Reject || resp.Index != 3 {
		t.Fatalf("second response %v", resp)
	}
	if st := f.status(); st.HardState.Commit != 3 {
		t.Fatalf("commit %d after the replacing AE", st.HardState.Commit)
	}
	if tm, _ := l.Term(3); tm != 3 {
		t.Fatalf("entry 3 has term %d, want the leader's 3", tm)
	}
	check()
	last := f.applied[len(f.applied)-1]
	if last.Index != 3 || last.Term != 3 {
		t.Fatalf("last applied %+v, want (3,3)", last)
	}
}

// ---------------------------------------------------------------------------
// S10. Conflict search converges with long divergent suffixes.

// TestS10ConflictBackoffLongSuffix: R0 (1) holds n uncommitted entries after
// the bootstrap entry whose terms run over followerTerms; R2 (3) holds n
// entries over leaderTerms; R1 (2) holds none. R2 becomes leader. R0 must
// match R2's log within at most 2 rejected AppendEntries per distinct term
// of R0's divergent suffix, and the leader never retries the prev it was
// just refused. A follower that only ever says "conflict at my last index"
// makes the leader walk back one entry per round trip (n rejections).
func TestS10ConflictBackoffLongSuffix(t *testing.T) {
	cases := []struct {
		n                          int
		followerTerms, leaderTerms []raftpb.Term
	}{
		{100, []raftpb.Term{2}, []raftpb.Term{3}},
		{10000, []raftpb.Term{2}, []raftpb.Term{3}},
		{99, []raftpb.Term{2, 4, 6}, []raftpb.Term{3, 5, 7}},
		{9999, []raftpb.Term{2, 4, 6}, []raftpb.Term{3, 5, 7}},
	}
	build := func(n int, terms []raftpb.Term) []raftpb.Entry {
		var ents []raftpb.Entry
		per := n / len(terms)
		for k, tm := range terms {
			ents = append(ents, erRun(raftpb.Index(2+k*per), per, tm)...)
		}
		return ents
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("n%d/terms%d", tc.n, len(tc.followerTerms)), func(t *testing.T) {
			const R0, R1, R2 = 1, 2, 3
			c := erNewCluster(t, Options{Voters: erIDs(R0, R1, R2), Seed: uint64(tc.n)})
			fTop, lTop := tc.followerTerms[len(tc.followerTerms)-1], tc.leaderTerms[len(tc.leaderTerms)-1]
			erSetLog(t, c, R0, build(tc.n, tc.followerTerms), raftpb.HardState{Term: fTop, Commit: 1})
			erSetLog(t, c, R2, build(tc.n, tc.leaderTerms), raftpb.HardState{Term: lTop, Commit: 1})
			erSetLog(t, c, R1, nil, raftpb.HardState{Term: lTop, Commit: 1})
			rec := erRecord(c)
			erElect(t, c, R2)
			c.Net.Filter = nil

			var apps, rejects int
			var lastRejected *raftpb.Message
			matched := false
			for i := range rec.msgs {
				m := &rec.msgs[i]
				switch {
				case m.Type == raftpb.MsgApp && m.From == R2 && m.To == R0 && !matched:
					apps++
					if lastRejected != nil && m.Index == lastRejected.Index && m.LogTerm == lastRejected.LogTerm {
						t.Fatalf("leader re-sent prev (%d,%d) right after it was rejected", m.LogTerm, m.Index)
					}
					lastRejected = nil
				case m.Type == raftpb.MsgAppResp && m.From == R0 && m.To == R2 && !matched:
					if m.Reject {
						rejects++
						// Find the MsgApp this answers (prev index m.Index).
						for j := i - 1; j >= 0; j-- {
							p := &rec.msgs[j]
							if p.Type == raftpb.MsgApp && p.From == R2 && p.To == R0 && p.Index == m.Index {
								lastRejected = p
								break
							}
						}
					} else if m.Index >= raftpb.Index(tc.n+1) {
						matched = true
					}
				}
			}
			bound := 2 * len(tc.followerTerms)
			t.Logf("n=%d: %d AppendEntries to R0 until match, %d rejected (bound %d)", tc.n, apps, rejects, bound)
			if !matched {
				t.Fatal("R0 never matched the leader")
			}
			if rejects > bound {
				t.Fatalf("%d rejected AppendEntries before R0 matched, want <= %d (2 per divergent term)", rejects, bound)
			}
			if apps > bound+1 {
				t.Fatalf("%d AppendEntries round trips before R0 matched, want <= %d", apps, bound+1)
			}
			erSameLog(t, c, R0, R2)
			erSameLog(t, c, R1, R2)
			erOracleOK(t, c)
		})
	}
}

// ---------------------------------------------------------------------------
// S11. Only current-term entries commit by counting replicas (Figure 8).

// TestS11Figure8: five replicas scripted through the Raft paper's Figure 8
// (indexes shifted by the bootstrap entry and each leader's empty entry).
// (a) S1 leads term 2 and its term-2 entry X at index 3 reaches S2 only.
// (b) S1 crashes; S5 leads term 3 (votes of S3, S4) and appends (3,3)
// locally only. (c) S5 crashes, S1 restarts and leads term 4; it
// replicates X to S3, so X is on a majority (S1, S2, S3), but its own
// term-4 entry reaches nobody. X must not be committed by counting. (d) S1
// crashes; S5 restarts, leads term 5 and overwrites X everywhere: the oracle
// sees no committed entry overwritten.
func TestS11Figure8(t *testing.T) {
	c := erNewCluster(t, Options{Voters: erIDs(1, 2, 3, 4, 5), Seed: 8,
		Configure: func(cfg *group.Config) { cfg.DisablePreVote = true; cfg.DisableCheckQuorum = true }})
	// (a)
	erCampaignUntilLeader(t, c, 1)
	if tm := erTerm(c, 1); tm != 2 {
		t.Fatalf("S1 leads term %d", tm)
	}
	for _, id := range erIDs(3, 4, 5) {
		c.Net.Cut(1, id)
	}
	if err := c.Propose(1, EncodePut("x", "term2")); err != nil {
		t.Fatal(err)
	}
	c.Stabilize()
	for _, id := range c.IDs {
		tm, ok := erDurableTerm(c.R(id), 3)
		if want := id <= 2; ok != want || (ok && tm != 2) {
			t.Fatalf("(a) replica %d index 3: term %d held %v", id, tm, ok)
		}
	}
	if ci := erStatus(c, 1).HardState.Commit; ci != 2 {
		t.Fatalf("(a) commit %d", ci)
	}
	// (b)
	c.Crash(1)
	c.Net.Heal()
	c.Net.Filter = func(m *raftpb.Message) bool { return !(m.From == 5 && m.Type == raftpb.MsgApp) }
	erCampaignUntilLeader(t, c, 5)
	if tm := erTerm(c, 5); tm != 3 {
		t.Fatalf("(b) S5 leads term %d", tm)
	}
	if tm, _ := erDurableTerm(c.R(5), 3); tm != 3 {
		t.Fatalf("(b) S5 index 3 term %d", tm)
	}
	c.Crash(5)
	// (c)
	if err := c.Restart(1); err != nil {
		t.Fatal(err)
	}
	c.Net.Filter = func(m *raftpb.Message) bool {
		if m.From != 1 || m.Type != raftpb.MsgApp {
			return true
		}
		if m.To == 4 {
			return false
		}
		// The term-4 entries of this message are lost on the way.
		for k := range m.Entries {
			if m.Entries[k].Term >= 4 {
				m.Entries = m.Entries[:k]
				break
			}
		}
		return true
	}
	erCampaignUntilLeader(t, c, 1)
	if tm := erTerm(c, 1); tm != 4 {
		t.Fatalf("(c) S1 leads term %d", tm)
	}
	for range 5 {
		c.TickAll()
		c.Stabilize()
		st := c.R(1).G.Status()
		if st.Role != group.Leader || st.HardState.Term != 4 {
			t.Fatalf("(c) S1 lost leadership: %+v", st.BasicStatus)
		}
		if st.Progress[2].Match < 3 || st.Progress[3].Match < 3 {
			t.Fatalf("(c) X not on a majority: %v", st.Progress)
		}
		if st.HardState.Commit != 2 || c.CommittedIndex() != 2 {
			t.Fatalf("(c) term-2 entry committed by counting replicas: commit %d (oracle %d)",
				st.HardState.Commit, c.CommittedIndex())
		}
	}
	for _, id := range erIDs(1, 2, 3) {
		if tm, _ := erDurableTerm(c.R(id), 3); tm != 2 {
			t.Fatalf("(c) replica %d index 3 term %d, want X (term 2)", id, tm)
		}
	}
	// (d)
	c.Crash(1)
	c.Net.Filter = nil
	if err := c.Restart(5); err != nil {
		t.Fatal(err)
	}
	erCampaignUntilLeader(t, c, 5)
	if tm := erTerm(c, 5); tm < 5 {
		t.Fatalf("(d) S5 leads term %d", tm)
	}
	erTicks(c, 3)
	for _, id := range erIDs(2, 3, 4, 5) {
		if tm, _ := erDurableTerm(c.R(id), 3); tm != 3 {
			t.Fatalf("(d) replica %d index 3 term %d, want S5's (term 3)", id, tm)
		}
		if ci := erStatus(c, id).HardState.Commit; ci < 4 {
			t.Fatalf("(d) replica %d commit %d", id, ci)
		}
	}
	if err := c.Restart(1); err != nil {
		t.Fatal(err)
	}
	erTicks(c, 3)
	erSameLog(t, c, 1, 5)
	if tm, _ := erDurableTerm(c.R(1), 3); tm != 3 {
		t.Fatalf("S1 index 3 term %d after rejoining", tm)
	}
	erOracleOK(t, c)
}

// ---------------------------------------------------------------------------
// S12. Heartbeats never cause truncation, log reversion or over-commit.

// TestS12HeartbeatsNeverTruncateOrOverCommit: follower F (3) holds a
// divergent, uncommitted suffix (indexes 11..20 of an old term) and lags
// the leader L (1), whose commit is 51. Heartbeats run during replication;
// the network delays, reorders and duplicates heartbeats, appends and their
// replies. After every delivered message: F's commit lies within the prefix
// on which F and L agree, F's committed entries never change, and L's match
// for F never decreases; every heartbeat to F carries exactly
// min(match(F), leader commit). A heartbeat carrying the leader's commit
// would make F commit its divergent entries.
func TestS12HeartbeatsNeverTruncateOrOverCommit(t *testing.T) {
	const L, O, F = 1, 2, 3
	for seed := uint64(1); seed <= 10; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			c := erNewCluster(t, Options{Voters: erIDs(L, O, F), Seed: seed,
				Configure: func(cfg *group.Config) { cfg.MaxSizePerMsg = 256; cfg.MaxInflightMsgs = 4 }})
			erElect(t, c, F) // term 2
			for i := range 8 {
				if err := c.Propose(F, EncodePut("a", fmt.Sprint(i))); err != nil {
					t.Fatal(err)
				}
			}
			c.Stabilize()
			c.Net.Isolate(F, c.IDs)
			for i := range 10 {
				_ = c.Propose(F, EncodePut("div", fmt.Sprint(i)))
			}
			erElect(t, c, L) // term 3, without F
			for i := range 40 {
				if err := c.Propose(L, EncodePut("b", fmt.Sprint(i))); err != nil {
					t.Fatal(err)
				}
			}
			c.Stabilize()
			if ci, fl := erStatus(c, L).HardState.Commit, erStatus(c, F).LastIndex; ci != 51 || fl != 20 {
				t.Fatalf("setup: leader commit %d, F last %d", ci, fl)
			}
			term := erTerm(c, L)

			heartbeats, lagging := 0, 0
			c.Net.Filter = func(m *raftpb.Message) bool {
				if m.Type == raftpb.MsgHeartbeat && m.From == L && m.To == F {
					st := c.R(L).G.Status()
					pr := st.Progress[F]
					if want := min(pr.Match, st.HardState.Commit); m.Commit != want {
						t.Errorf("heartbeat to F carries commit %d; match %d, leader commit %d", m.Commit, pr.Match, st.HardState.Commit)
					}
					heartbeats++
					if m.Commit < st.HardState.Commit {
						lagging++
					}
				}
				return true
			}
			committedAtF := map[raftpb.Index]raftpb.Term{}
			var lastMatch raftpb.Index
			check := func(m *raftpb.Message) {
				t.Helper()
				fr := c.R(F)
				fs := fr.G.BasicStatus()
				if fs.HardState.Commit > fs.LastIndex {
					t.Fatalf("after %v: F commit %d beyond its log %d", m, fs.HardState.Commit, fs.LastIndex)
				}
				for i := raftpb.Index(1); i <= fs.HardState.Commit; i++ {
					ft, ok := erDurableTerm(fr, i)
					lt, lok := erDurableTerm(c.R(L), i)
					if !ok || !lok || ft != lt {
						t.Fatalf("after %v: F commit %d covers index %d where F has term %d, leader %d",
							m, fs.HardState.Commit, i, ft, lt)
					}
					if prev, seen := committedAtF[i]; seen && prev != ft {
						t.Fatalf("after %v: F's committed entry %d changed term %d -> %d", m, i, prev, ft)
					}
					committedAtF[i] = ft
				}
				for i, tm := range committedAtF {
					if ft, ok := erDurableTerm(fr, i); !ok || ft != tm {
						t.Fatalf("after %v: F lost committed entry %d (term %d)", m, i, tm)
					}
				}
				ls := c.R(L).G.Status()
				if ls.Role != group.Leader || ls.HardState.Term != term {
					t.Fatalf("after %v: leader lost: %+v", m, ls.BasicStatus)
				}
				pr := ls.Progress[F]
				if pr.Match < lastMatch {
					t.Fatalf("after %v: leader's match for F went back %d -> %d", m, lastMatch, pr.Match)
				}
				if pr.Next <= pr.Match {
					t.Fatalf("after %v: next %d <= match %d", m, pr.Next, pr.Match)
				}
				lastMatch = pr.Match
			}

			c.Net.Heal()
			c.Net.MaxDelay, c.Net.DupRate = 2*erStepsPerTick, 0.2
			for step := 0; step < 100*erStepsPerTick; step++ {
				erStep(c, check)
				if step < 40*erStepsPerTick && step%13 == 0 {
					_ = c.Propose(L, EncodePut("c", fmt.Sprint(step)))
				}
				if t.Failed() {
					t.FailNow()
				}
			}
			c.Net.Filter = nil
			erQuiesceNet(c, 3)
			check(&raftpb.Message{})
			erSameLog(t, c, F, L)
			if fc, lc := erStatus(c, F).HardState.Commit, erStatus(c, L).HardState.Commit; fc != lc {
				t.Fatalf("F commit %d, leader %d", fc, lc)
			}
			if heartbeats == 0 || lagging == 0 {
				t.Fatalf("scenario not exercised: %d heartbeats to F, %d while lagging", heartbeats, lagging)
			}
			t.Logf("%d heartbeats to F, %d while it lagged", heartbeats, lagging)
			erOracleOK(t, c)
		})
	}
}

// ---------------------------------------------------------------------------
// S13. Stale, duplicated and reordered replication responses are ignored.

// TestS13StaleAppRespIgnored: pipelined replication (8 inflight appends,
// one entry each) to F (3) over a network that delays (reorders) and
// duplicates; persistence is pipelined too. Midway the leader resets F's
// progress (ReportUnreachable), a stale rejection is injected, and F crashes
// (losing unpersisted appends, so in-flight appends get rejected) and
// restarts; the old success acks keep arriving. After every delivered
// message, in the leader's Status().Progress: match never decreases within
// the term and next > match; and the leader's commit index is durably held
// by a majority.
func TestS13StaleAppRespIgnored(t *testing.T) {
	const L, O, F = 1, 2, 3
	for seed := uint64(1); seed <= 10; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			c := erNewCluster(t, Options{Voters: erIDs(L, O, F), Seed: seed, PersistDelay: 5,
				Configure: func(cfg *group.Config) { cfg.MaxInflightMsgs = 8; cfg.MaxSizePerMsg = 1 }})
			erElect(t, c, L)
			term := erTerm(c, L)
			c.Net.MaxDelay, c.Net.DupRate = 2*erStepsPerTick, 0.3

			lastMatch := map[raftpb.NodeID]raftpb.Index{}
			staleAcks, rejections := 0, 0
			check := func(m *raftpb.Message) {
				t.Helper()
				st := c.R(L).G.Status()
				if st.Role != group.Leader || st.HardState.Term != term {
					t.Fatalf("after %v: leader lost: %+v", m, st.BasicStatus)
				}
				if m.Type == raftpb.MsgAppResp && m.To == L {
					if m.Reject {
						rejections++
					} else if m.Index <= lastMatch[m.From] {
						staleAcks++
					}
				}
				for id, pr := range st.Progress {
					if id == L {
						continue
					}
					if pr.Next <= pr.Match {
						t.Fatalf("after %v: replica %d next %d <= match %d", m, id, pr.Next, pr.Match)
					}
					if pr.Match < lastMatch[id] {
						t.Fatalf("after %v: replica %d match went back %d -> %d", m, id, lastMatch[id], pr.Match)
					}
					lastMatch[id] = pr.Match
				}
				ci := st.HardState.Commit
				votes := map[raftpb.Term]int{}
				for _, id := range c.IDs {
					if tm, ok := erDurableTerm(c.R(id), ci); ok {
						votes[tm]++
					}
				}
				best := 0
				for _, n := range votes {
					best = max(best, n)
				}
				if best < 2 {
					t.Fatalf("after %v: leader commit %d is durable on %d replicas (%v)", m, ci, best, votes)
				}
			}
			for step := 1; step <= 200*erStepsPerTick; step++ {
				if step <= 120*erStepsPerTick && step%3 == 0 {
					if err := c.Propose(L, EncodePut("k", fmt.Sprint(step))); err != nil {
						t.Fatal(err)
					}
				}
				switch step {
				case 40 * erStepsPerTick:
					c.R(L).G.ReportUnreachable(F) // progress reset to probe
					c.Process(L)
					check(&raftpb.Message{})
				case 50 * erStepsPerTick:
					// A stale rejection of an append F long since acknowledged.
					before := c.R(L).G.Status().Progress[F]
					stale := raftpb.Message{Type: raftpb.MsgAppResp, Shard: 1, From: F, To: L, Term: term,
						Index: before.Match / 2, Reject: true, RejectHint: 1, LogTerm: 1}
					if err := c.R(L).G.Step(stale); err != nil {
						t.Fatal(err)
					}
					c.Process(L)
					after := c.R(L).G.Status().Progress[F]
					if after.Match != before.Match {
						t.Fatalf("stale rejection moved match %d -> %d", before.Match, after.Match)
					}
					check(&stale)
				case 70 * erStepsPerTick:
					c.Crash(F)
				case 75 * erStepsPerTick:
					if err := c.Restart(F); err != nil {
						t.Fatal(err)
					}
				}
				erStep(c, check)
			}
			erQuiesceNet(c, 3)
			check(&raftpb.Message{})
			erSameLog(t, c, F, L)
			erSameLog(t, c, O, L)
			if staleAcks == 0 || rejections == 0 {
				t.Fatalf("scenario not exercised: %d stale acks, %d rejections", staleAcks, rejections)
			}
			t.Logf("%d stale or duplicate acks and %d rejections ignored or handled; last index %d",
				staleAcks, rejections, erStatus(c, L).LastIndex)
			erOracleOK(t, c)
		})
	}
}

// ---------------------------------------------------------------------------
// S14. A purged prev_log_id is a match, not a conflict.

// erSnapFollower builds follower 2 restarted with a snapshot at 100 (term 2)
// and its log purged through 100; its persisted commit is 0.
func erSnapFollower(t *testing.T) (*erNode, *group.MemoryLog) {
	t.Helper()
	voters := erIDs(1, 2, 3)
	l := erMemLog(t, voters, true, erRun(2, 99, 2), raftpb.HardState{Term: 2})
	if err := l.SetSnapshot(raftpb.SnapshotMeta{Index: 100, Term: 2, ConfState: raftpb.ConfState{Voters: voters}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Compact(100); err != nil {
		t.Fatal(err)
	}
	f := erNewNode(t, 2, l, nil)
	st := f.status()
	if st.FirstIndex != 101 || st.LastIndex != 100 {
		t.Fatalf("setup: %+v", st)
	}
	return f, l
}

// TestS14PurgedPrevIsMatch: the follower has a snapshot at 100 and no log
// entries; the leader sends AE(prev=(2,80), entries 81..120). The follower
// treats the purged prev as matching, skips 81..100, appends 101..120
// (writing nothing at or below 100), reports match 120 and deletes nothing.
// Answering "conflict at 80" or truncating fails.
func TestS14PurgedPrevIsMatch(t *testing.T) {
	f, l := erSnapFollower(t)
	ents := append(erRun(81, 20, 2), erRun(101, 20, 3)...)
	out := f.mustStep(raftpb.Message{Type: raftpb.MsgApp, From: 1, Term: 3, Index: 80, LogTerm: 2,
		Entries: ents, Commit: 110})
	resp := erOnly(t, out, raftpb.MsgAppResp)
	if resp.Reject || resp.Index != 120 {
		t.Fatalf("response %v, want success with match 120", resp)
	}
	for _, rd := range f.readys {
		if rd.Snapshot != nil || rd.CompactTo != 0 {
			t.Fatalf("Ready installs or compacts: %+v", rd)
		}
		if len(rd.Entries) > 0 && rd.Entries[0].Index != 101 {
			t.Fatalf("Ready rewrites the log from %d (nothing at or below 100 may be written)", rd.Entries[0].Index)
		}
	}
	if s, err := l.Snapshot(); err != nil || s.Index != 100 {
		t.Fatalf("snapshot %+v %v", s, err)
	}
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	if first != 101 || last != 120 {
		t.Fatalf("log [%d, %d], want [101, 120]", first, last)
	}
	for i := raftpb.Index(101); i <= 120; i++ {
		if tm, _ := l.Term(i); tm != 3 {
			t.Fatalf("entry %d term %d", i, tm)
		}
	}
	if st := f.status(); st.HardState.Commit != 110 || st.HardState.Term != 3 {
		t.Fatalf("status %+v, want commit 110 at term 3", st)
	}
	if n := len(f.applied); n != 10 || f.applied[0].Index != 101 {
		t.Fatalf("applied %d entries starting at %v", n, f.applied)
	}
}

// TestS14PrevBelowSnapshotAllCovered: an AE lying wholly at or below the
// snapshot (prev=(2,50), entries 51..90) is acknowledged with the
// snapshot index, without a rejection and without writing anything.
func TestS14PrevBelowSnapshotAllCovered(t *testing.T) {
	f, l := erSnapFollower(t)
	n := len(f.readys)
	out := f.mustStep(raftpb.Message{Type: raftpb.MsgApp, From: 1, Term: 3, Index: 50, LogTerm: 2,
		Entries: erRun(51, 40, 2), Commit: 100})
	resp := erOnly(t, out, raftpb.MsgAppResp)
	if resp.Reject || resp.Index != 100 {
		t.Fatalf("response %v, want success at 100", resp)
	}
	for _, rd := range f.readys[n:] {
		if len(rd.Entries) > 0 || rd.Snapshot != nil || rd.CompactTo != 0 {
			t.Fatalf("Ready writes the log: %+v", rd)
		}
	}
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	if first != 101 || last != 100 {
		t.Fatalf("log [%d, %d] changed", first, last)
	}
}

// ---------------------------------------------------------------------------
// S16. Entries appended while a follower catches up all reach it.

// TestS16CatchUpGetsEverything: F (3) is down while the leader commits 300
// entries; it restarts and catches up through probe and replicate (small
// messages, 4 inflight) over a delaying, duplicating network, or (variant
// "snapshot") through a snapshot because the leader compacted its log.
// Proposals continue throughout the catch-up. After quiescence F's log
// equals the leader's and its state machine matches.
func TestS16CatchUpGetsEverything(t *testing.T) {
	const L, O, F = 1, 2, 3
	for _, snap := range []bool{false, true} {
		for seed := uint64(1); seed <= 5; seed++ {
			t.Run(fmt.Sprintf("snapshot=%v/seed%d", snap, seed), func(t *testing.T) {
				c := erNewCluster(t, Options{Voters: erIDs(L, O, F), Seed: seed, PersistDelay: 3,
					Configure: func(cfg *group.Config) { cfg.MaxInflightMsgs = 4; cfg.MaxSizePerMsg = 200 }})
				erElect(t, c, L)
				c.Crash(F)
				for i := range 300 {
					if err := c.Propose(L, EncodePut(fmt.Sprint("k", i%17), fmt.Sprint(i))); err != nil {
						t.Fatal(err)
					}
					if i%50 == 0 {
						c.Stabilize()
					}
				}
				c.Stabilize()
				erTicks(c, 2)
				if snap {
					if err := c.TakeSnapshot(L, 0); err != nil {
						t.Fatal(err)
					}
					c.Flush(L)
					if first := erStatus(c, L).FirstIndex; first < 300 {
						t.Fatalf("leader log not compacted: first %d", first)
					}
				}
				if err := c.Restart(F); err != nil {
					t.Fatal(err)
				}
				c.Net.MaxDelay, c.Net.DupRate = erStepsPerTick, 0.1
				for step := 1; step <= 150*erStepsPerTick; step++ {
					if step <= 80*erStepsPerTick && step%4 == 0 {
						_ = c.Propose(L, EncodePut("late", fmt.Sprint(step)))
					}
					erStep(c, nil)
				}
				erQuiesceNet(c, 3)
				if l := c.Leader(); l != L {
					t.Fatalf("leader changed to %d", l)
				}
				erSameLog(t, c, F, L)
				lr, fr := c.R(L), c.R(F)
				if lr.SM.Applied != fr.SM.Applied || lr.SM.Hash != fr.SM.Hash || lr.SM.Values["late"] != fr.SM.Values["late"] {
					t.Fatalf("state machines differ: leader applied %d, F applied %d", lr.SM.Applied, fr.SM.Applied)
				}
				t.Logf("F caught up to %d (first %d)", erStatus(c, F).LastIndex, erStatus(c, F).FirstIndex)
				erOracleOK(t, c)
			})
		}
	}
}
