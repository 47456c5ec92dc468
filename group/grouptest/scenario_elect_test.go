package grouptest

// Election scenarios of SCENARIOS.md (S01, S02, S03, S04, S05, S07), at the
// pure-core layer: single groups stepped by hand, and the simulated cluster.
// Every bound is in simulated ticks. Helpers shared with
// scenario_repl_test.go carry the prefix "er".

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

// ---------------------------------------------------------------------------
// Helpers.

const erElection = 10 // ElectionTicks used by these tests (the default)

// erMaxTimeout is the largest randomized election timeout: [E, 2E).
const erMaxTimeout = 2 * erElection

func erNewCluster(t *testing.T, opts Options) *Cluster {
	t.Helper()
	c, err := NewCluster(opts)
	if err != nil {
		t.Fatalf("NewCluster: %v", err)
	}
	return c
}

func erOracleOK(t *testing.T, c *Cluster) {
	t.Helper()
	if err := c.Err(); err != nil {
		t.Fatalf("oracle: %v", err)
	}
}

func erIDs(ids ...raftpb.NodeID) []raftpb.NodeID { return ids }

// erStatus is replica id's BasicStatus (zero for no replica or a down one).
func erStatus(c *Cluster, id raftpb.NodeID) group.BasicStatus {
	r := c.R(id)
	if r == nil || r.Down {
		return group.BasicStatus{}
	}
	return r.G.BasicStatus()
}

func erTerm(c *Cluster, id raftpb.NodeID) raftpb.Term { return erStatus(c, id).HardState.Term }

// erEnts returns entries at indexes from, from+1, ... with the given terms.
func erEnts(from raftpb.Index, terms ...raftpb.Term) []raftpb.Entry {
	ents := make([]raftpb.Entry, len(terms))
	for i, t := range terms {
		ents[i] = raftpb.Entry{Index: from + raftpb.Index(i), Term: t}
	}
	return ents
}

// erRun returns n entries of term t starting at index from.
func erRun(from raftpb.Index, n int, t raftpb.Term) []raftpb.Entry {
	terms := make([]raftpb.Term, n)
	for i := range terms {
		terms[i] = t
	}
	return erEnts(from, terms...)
}

// erMemLog builds a durable log for a member of voters: with bootstrap, the
// bootstrap entry (1, term 1) followed by ents; without, only ents (which
// then start at index 1) and the membership recorded as persisted state.
func erMemLog(t *testing.T, voters []raftpb.NodeID, bootstrap bool, ents []raftpb.Entry, hs raftpb.HardState) *group.MemoryLog {
	t.Helper()
	cs := raftpb.ConfState{Voters: slices.Clone(voters)}
	var l *group.MemoryLog
	if bootstrap {
		l = group.NewMemoryLog(cs)
	} else {
		l = group.NewMemoryLog(raftpb.ConfState{})
		if err := l.Persist(&group.Ready{ConfState: &cs}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Append(ents); err != nil {
		t.Fatal(err)
	}
	if !hs.IsEmpty() {
		if err := l.Persist(&group.Ready{HardState: hs}); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// erSetLog rewrites replica id's durable state (entries after the bootstrap
// entry, and the hard state) and restarts it from there. Use it right after
// NewCluster, before anything else happened.
func erSetLog(t *testing.T, c *Cluster, id raftpb.NodeID, ents []raftpb.Entry, hs raftpb.HardState) {
	t.Helper()
	r := c.R(id)
	if err := r.Log.Append(ents); err != nil {
		t.Fatal(err)
	}
	if err := r.Log.Persist(&group.Ready{HardState: hs}); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(id); err != nil {
		t.Fatal(err)
	}
}

// erForceCampaign makes follower id campaign at once, as a leadership
// transfer does (MsgTimeoutNow: no pre-vote, not refused by a voter's
// check-quorum lease). Scripted scenarios use it to pick their leaders.
func erForceCampaign(t *testing.T, c *Cluster, id raftpb.NodeID) {
	t.Helper()
	var from raftpb.NodeID
	for _, o := range c.IDs {
		if o != id {
			from = o
			break
		}
	}
	m := raftpb.Message{Type: raftpb.MsgTimeoutNow, Shard: 1, From: from, To: id, Term: erTerm(c, id)}
	if err := c.R(id).G.Step(m); err != nil {
		t.Fatalf("timeout-now at %d: %v", id, err)
	}
	c.Process(id)
}

// erElect makes id the leader (see erForceCampaign) and stabilizes.
func erElect(t *testing.T, c *Cluster, id raftpb.NodeID) {
	t.Helper()
	erForceCampaign(t, c, id)
	c.Stabilize()
	if l := c.Leader(); l != id {
		t.Fatalf("elect %d: leader is %d", id, l)
	}
}

// erCampaignUntilLeader calls Campaign on id until it leads (several tries
// when its first term is refused as stale).
func erCampaignUntilLeader(t *testing.T, c *Cluster, id raftpb.NodeID) {
	t.Helper()
	for i := 0; i < 5; i++ {
		if err := c.R(id).G.Campaign(); err != nil {
			t.Fatal(err)
		}
		c.Process(id)
		c.Stabilize()
		if erStatus(c, id).Role == group.Leader {
			return
		}
	}
	t.Fatalf("replica %d did not become leader: %+v", id, erStatus(c, id))
}

// erTransfer hands leadership from -> to and stabilizes.
func erTransfer(t *testing.T, c *Cluster, from, to raftpb.NodeID) {
	t.Helper()
	if err := c.R(from).G.TransferLeader(to); err != nil {
		t.Fatalf("transfer %d -> %d: %v", from, to, err)
	}
	c.Process(from)
	c.Stabilize()
	if l := c.Leader(); l != to {
		t.Fatalf("transfer %d -> %d: leader is %d", from, to, l)
	}
}

// erTickUntilLeader ticks every live replica and stabilizes, up to max
// ticks, until a leader exists. It returns the number of ticks taken (or
// -1) and the leader.
func erTickUntilLeader(c *Cluster, max int) (int, raftpb.NodeID) {
	for n := 1; n <= max; n++ {
		c.TickAll()
		c.Stabilize()
		if l := c.Leader(); l != 0 {
			return n, l
		}
	}
	return -1, 0
}

// erTicks ticks every live replica and stabilizes n times.
func erTicks(c *Cluster, n int) {
	for range n {
		c.TickAll()
		c.Stabilize()
	}
}

// erRecorder records every message handed to the network (at send time).
type erRecorder struct{ msgs []raftpb.Message }

func erRecord(c *Cluster) *erRecorder {
	rec := &erRecorder{}
	prev := c.Net.Filter
	c.Net.Filter = func(m *raftpb.Message) bool {
		rec.msgs = append(rec.msgs, *m)
		return prev == nil || prev(m)
	}
	return rec
}

func (r *erRecorder) find(match func(m *raftpb.Message) bool) []raftpb.Message {
	var out []raftpb.Message
	for i := range r.msgs {
		if match(&r.msgs[i]) {
			out = append(out, r.msgs[i])
		}
	}
	return out
}

func (r *erRecorder) reset() { r.msgs = nil }

// erNode drives one group.Group by hand, persisting every Ready into its
// MemoryLog at once, in the order the Ready contract prescribes.
type erNode struct {
	t   *testing.T
	g   *group.Group
	log *group.MemoryLog
	// out is everything sent, in order; immediate are the Messages (may
	// leave before the persist) and after the AfterPersist ones.
	out, immediate, after []raftpb.Message
	applied               []raftpb.Entry
	readys                []group.Ready
	// durable is the history of persisted hard states.
	durable []raftpb.HardState
}

func erNewNode(t *testing.T, id raftpb.NodeID, l *group.MemoryLog, mod func(*group.Config)) *erNode {
	t.Helper()
	cfg := group.Config{ID: id, Shard: 1, Log: l, ElectionTicks: erElection, HeartbeatTicks: 1}
	if mod != nil {
		mod(&cfg)
	}
	g, err := group.New(cfg)
	if err != nil {
		t.Fatalf("group.New: %v", err)
	}
	n := &erNode{t: t, g: g, log: l}
	n.drain()
	return n
}

// drain handles every pending Ready and returns the messages sent.
func (n *erNode) drain() []raftpb.Message {
	n.t.Helper()
	var sent []raftpb.Message
	for i := 0; i < 100 && n.g.HasReady(); i++ {
		rd := n.g.Ready()
		n.readys = append(n.readys, rd)
		sent = append(sent, rd.Messages...)
		n.immediate = append(n.immediate, rd.Messages...)
		if err := n.log.Persist(&rd); err != nil {
			n.t.Fatalf("persist: %v", err)
		}
		n.durable = append(n.durable, n.log.HardState())
		sent = append(sent, rd.AfterPersist...)
		n.after = append(n.after, rd.AfterPersist...)
		n.applied = append(n.applied, rd.CommittedEntries...)
		if err := n.g.Advance(rd); err != nil {
			n.t.Fatalf("advance: %v", err)
		}
	}
	n.out = append(n.out, sent...)
	return sent
}

// step hands m to the group (Shard and To filled in) and drains.
func (n *erNode) step(m raftpb.Message) ([]raftpb.Message, error) {
	n.t.Helper()
	m.Shard = 1
	m.To = n.g.ID()
	err := n.g.Step(m)
	return n.drain(), err
}

func (n *erNode) mustStep(m raftpb.Message) []raftpb.Message {
	n.t.Helper()
	out, err := n.step(m)
	if err != nil {
		n.t.Fatalf("step %v: %v", m, err)
	}
	return out
}

func (n *erNode) tick() []raftpb.Message {
	n.g.Tick()
	return n.drain()
}

func (n *erNode) status() group.BasicStatus { return n.g.BasicStatus() }

// erOnly returns the single message of type typ in msgs (failing otherwise).
func erOnly(t *testing.T, msgs []raftpb.Message, typ raftpb.MessageType) raftpb.Message {
	t.Helper()
	var found []raftpb.Message
	for _, m := range msgs {
		if m.Type == typ {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %v, got %v (all: %v)", typ, found, msgs)
	}
	return found[0]
}

// erCheckDurableHS checks the persisted hard-state history: the term never
// goes back and a vote, once recorded in a term, never changes.
func erCheckDurableHS(t *testing.T, hist []raftpb.HardState) {
	t.Helper()
	for i := 1; i < len(hist); i++ {
		p, h := hist[i-1], hist[i]
		if h.Term < p.Term || h.Commit < p.Commit {
			t.Fatalf("durable hard state went back: %+v -> %+v", p, h)
		}
		if h.Term == p.Term && p.Vote != raftpb.None && h.Vote != p.Vote {
			t.Fatalf("durable vote changed within term %d: %d -> %d", h.Term, p.Vote, h.Vote)
		}
	}
}

// ---------------------------------------------------------------------------
// S01. Log freshness compares (term, index) lexicographically.

// TestS01LogFreshnessComparator is the table test of the comparator
// (compareLogID is unexported; it is exercised through vote decisions): a
// voter whose last log id is `voter` receives a MsgVote / MsgPreVote from a
// candidate whose last log id is `cand`; the vote is granted exactly when
// cand >= voter in (term, index) dictionary order. An element-wise rule
// ("term >= and index >=") fails the (2,1) vs (1,2) and (2,0) vs (1,9) rows.
func TestS01LogFreshnessComparator(t *testing.T) {
	type lid struct {
		term raftpb.Term
		idx  raftpb.Index
	}
	cases := []struct {
		cand, voter lid
		grant       bool
	}{
		{lid{2, 1}, lid{1, 2}, true},  // higher last term wins with a shorter log
		{lid{1, 2}, lid{2, 1}, false}, // longer log with a lower last term loses
		{lid{2, 0}, lid{1, 9}, true},  // (2,0) > (1,9)
		{lid{1, 9}, lid{2, 1}, false},
		{lid{3, 1}, lid{2, 5}, true},
		{lid{1, 2}, lid{1, 2}, true}, // equal: both fields equal
		{lid{1, 1}, lid{1, 2}, false},
		{lid{1, 3}, lid{1, 2}, true},
		{lid{2, 2}, lid{2, 3}, false},
		{lid{2, 2}, lid{1, 2}, true}, // same index, different terms: not equal
		{lid{1, 2}, lid{2, 2}, false},
		{lid{0, 0}, lid{0, 0}, true}, // both logs empty
		{lid{0, 0}, lid{1, 1}, false},
		{lid{1, 1}, lid{0, 0}, true},
	}
	voters := erIDs(1, 2, 3)
	for _, tc := range cases {
		for _, typ := range []raftpb.MessageType{raftpb.MsgVote, raftpb.MsgPreVote} {
			name := fmt.Sprintf("%v/cand(%d,%d)/voter(%d,%d)", typ, tc.cand.term, tc.cand.idx, tc.voter.term, tc.voter.idx)
			t.Run(name, func(t *testing.T) {
				// The voter's log: indexes 1..idx, all term 1 but the last.
				var ents []raftpb.Entry
				for i := raftpb.Index(1); i <= tc.voter.idx; i++ {
					term := min(raftpb.Term(1), tc.voter.term)
					if i == tc.voter.idx {
						term = tc.voter.term
					}
					ents = append(ents, raftpb.Entry{Index: i, Term: term})
				}
				cur := max(tc.voter.term, 3)
				l := erMemLog(t, voters, false, ents, raftpb.HardState{Term: cur})
				// Check-quorum off: a freshly started voter would otherwise
				// ignore higher-term requests for an election timeout.
				v := erNewNode(t, 3, l, func(c *group.Config) { c.DisableCheckQuorum = true })
				out := v.mustStep(raftpb.Message{Type: typ, From: 1, Term: cur + 1, LogTerm: tc.cand.term, Index: tc.cand.idx})
				respType := raftpb.MsgVoteResp
				if typ == raftpb.MsgPreVote {
					respType = raftpb.MsgPreVoteResp
				}
				resp := erOnly(t, out, respType)
				if resp.To != 1 {
					t.Fatalf("response to %d", resp.To)
				}
				if got := !resp.Reject; got != tc.grant {
					t.Fatalf("candidate (%d,%d) vs voter (%d,%d): granted=%v, want %v",
						tc.cand.term, tc.cand.idx, tc.voter.term, tc.voter.idx, got, tc.grant)
				}
				hs := v.log.HardState()
				switch {
				case typ == raftpb.MsgVote && tc.grant:
					if hs.Vote != 1 || hs.Term != cur+1 {
						t.Fatalf("granted vote not persisted: %+v", hs)
					}
				case typ == raftpb.MsgVote:
					if hs.Vote != raftpb.None {
						t.Fatalf("rejected vote recorded: %+v", hs)
					}
				default:
					// A pre-vote changes neither term nor vote.
					if hs.Term != cur || hs.Vote != raftpb.None {
						t.Fatalf("pre-vote changed the hard state: %+v", hs)
					}
				}
			})
		}
	}
}

// TestS01FresherLastTermWinsElection is S01 in the cluster, across seeds.
// The harness's bootstrap entry is (1,1), so every log id is shifted by one
// index: N1 ends at (term 2, index 2), N2 at (term 1, index 3), N3 holds
// only the bootstrap entry. All are at term 2. N3 is partitioned away during
// the election so that N1 and N2 must agree: N2 campaigns first and N1
// refuses it; then N2 must grant N1 and a leader (N1) exists within two
// election rounds. With an element-wise comparison N1 and N2 refuse each
// other forever and no leader is ever elected.
func TestS01FresherLastTermWinsElection(t *testing.T) {
	for seed := uint64(1); seed <= 40; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			c := erNewCluster(t, Options{Voters: erIDs(1, 2, 3), Seed: seed,
				Configure: func(cfg *group.Config) { cfg.DisableCheckQuorum = true }})
			erSetLog(t, c, 1, erEnts(2, 2), raftpb.HardState{Term: 2, Commit: 1})
			erSetLog(t, c, 2, erEnts(2, 1, 1), raftpb.HardState{Term: 2, Commit: 1})
			erSetLog(t, c, 3, nil, raftpb.HardState{Term: 2, Commit: 1})
			c.Net.Isolate(3, c.IDs)
			rec := erRecord(c)

			// N2 campaigns first: N1 refuses it.
			if err := c.R(2).G.Campaign(); err != nil {
				t.Fatal(err)
			}
			c.Process(2)
			c.Stabilize()
			if c.Leader() != 0 {
				t.Fatalf("N2's campaign elected %d", c.Leader())
			}
			refusals := rec.find(func(m *raftpb.Message) bool {
				return m.From == 1 && m.To == 2 && m.Reject &&
					(m.Type == raftpb.MsgPreVoteResp || m.Type == raftpb.MsgVoteResp)
			})
			if len(refusals) == 0 {
				t.Fatalf("N1 did not refuse N2: %v", rec.msgs)
			}

			// Two election rounds: 2 * max randomized timeout.
			n, lead := erTickUntilLeader(c, 2*erMaxTimeout)
			if lead != 1 {
				t.Fatalf("leader %d after %d ticks, want N1 within %d ticks", lead, n, 2*erMaxTimeout)
			}
			grants := rec.find(func(m *raftpb.Message) bool {
				return m.From == 2 && m.To == 1 && m.Type == raftpb.MsgVoteResp && !m.Reject
			})
			if len(grants) == 0 {
				t.Fatal("N2 never granted N1's vote")
			}
			// N3 comes back and follows N1.
			c.Net.Heal()
			erTicks(c, 3)
			if st := erStatus(c, 3); st.Lead != 1 || st.LastIndex != erStatus(c, 1).LastIndex {
				t.Fatalf("N3 after heal: %+v", st)
			}
			erOracleOK(t, c)
		})
	}
}

// ---------------------------------------------------------------------------
// S02. Restarted nodes elect promptly.

// erStableCluster returns a 3-voter cluster (pre-vote and check-quorum on)
// with a leader and a few committed writes.
func erStableCluster(t *testing.T, seed uint64, opts Options) (*Cluster, raftpb.NodeID) {
	t.Helper()
	opts.Voters = erIDs(1, 2, 3)
	opts.Seed = seed
	c := erNewCluster(t, opts)
	_, lead := erTickUntilLeader(c, 10*erMaxTimeout)
	if lead == 0 {
		t.Fatal("no initial leader")
	}
	for i := range 5 {
		if err := c.Propose(lead, EncodePut("k", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	c.Stabilize()
	erTicks(c, 2)
	return c, lead
}

// TestS02RestartAllElectsPromptly: S02 (a). All three replicas stop at once
// and restart; a leader exists within 2x the max election timeout (in
// ticks) after the restart. The start-up lease (a restarted replica refuses
// votes for an election timeout) must not push the election past that.
func TestS02RestartAllElectsPromptly(t *testing.T) {
	for seed := uint64(1); seed <= 30; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			c, _ := erStableCluster(t, seed, Options{})
			oldTerm := erTerm(c, c.Leader())
			for _, id := range c.IDs {
				c.Crash(id)
			}
			for _, id := range c.IDs {
				if err := c.Restart(id); err != nil {
					t.Fatal(err)
				}
			}
			bound := 2 * erMaxTimeout
			n, lead := erTickUntilLeader(c, bound)
			if lead == 0 {
				t.Fatalf("no leader within %d ticks of restarting all", bound)
			}
			if erTerm(c, lead) <= oldTerm {
				t.Fatalf("new leader at term %d <= old %d", erTerm(c, lead), oldTerm)
			}
			t.Logf("leader %d after %d ticks", lead, n)
			erOracleOK(t, c)
		})
	}
}

// TestS02RestartTwoOfThreeElectsPromptly: S02 (b). All stop; only two
// restart while the third stays down; a leader exists within 2x the max
// election timeout.
func TestS02RestartTwoOfThreeElectsPromptly(t *testing.T) {
	for seed := uint64(1); seed <= 30; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			c, oldLead := erStableCluster(t, seed, Options{})
			for _, id := range c.IDs {
				c.Crash(id)
			}
			// Keep down a different replica depending on the seed (the old
			// leader included).
			down := c.IDs[seed%3]
			for _, id := range c.IDs {
				if id != down {
					if err := c.Restart(id); err != nil {
						t.Fatal(err)
					}
				}
			}
			bound := 2 * erMaxTimeout
			n, lead := erTickUntilLeader(c, bound)
			if lead == 0 {
				t.Fatalf("no leader within %d ticks (down %d, old leader %d)", bound, down, oldLead)
			}
			t.Logf("leader %d after %d ticks (down %d)", lead, n, down)
			if err := c.Propose(lead, EncodePut("after", "restart")); err != nil {
				t.Fatal(err)
			}
			c.Stabilize()
			erTicks(c, 2)
			for _, id := range c.IDs {
				if id != down && c.R(id).SM.Values["after"] != "restart" {
					t.Fatalf("replica %d did not apply the write after restart", id)
				}
			}
			erOracleOK(t, c)
		})
	}
}

// TestS02RestartedReplicaElectsPromptly: S02 in the harness for one
// restarted replica. (1) The leader crashes and restarts at once while the
// two others run on: a leader exists within 2x the max election timeout.
// (2) A follower restarts under a live leader: it does not disrupt it (same
// leader, same term) and learns the leader within a few heartbeat
// intervals, so no grace period keeps it out longer than that.
func TestS02RestartedReplicaElectsPromptly(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint("leader/seed", seed), func(t *testing.T) {
			c, lead := erStableCluster(t, seed, Options{})
			c.Crash(lead)
			if err := c.Restart(lead); err != nil {
				t.Fatal(err)
			}
			bound := 2 * erMaxTimeout
			n, newLead := erTickUntilLeader(c, bound)
			if newLead == 0 {
				t.Fatalf("no leader within %d ticks of the leader's restart", bound)
			}
			t.Logf("leader %d after %d ticks", newLead, n)
			erOracleOK(t, c)
		})
		t.Run(fmt.Sprint("follower/seed", seed), func(t *testing.T) {
			c, lead := erStableCluster(t, seed, Options{})
			term := erTerm(c, lead)
			f := c.IDs[0]
			if f == lead {
				f = c.IDs[1]
			}
			c.Crash(f)
			if err := c.Restart(f); err != nil {
				t.Fatal(err)
			}
			const heartbeats = 3 // HeartbeatTicks is 1
			learned := -1
			for n := 1; n <= 5*erMaxTimeout; n++ {
				c.TickAll()
				c.Stabilize()
				if c.Leader() != lead || erTerm(c, lead) != term {
					t.Fatalf("tick %d: restarted follower disrupted the leader: leader %d term %d (was %d, %d)",
						n, c.Leader(), erTerm(c, c.Leader()), lead, term)
				}
				if learned < 0 && erStatus(c, f).Lead == lead {
					learned = n
				}
			}
			if learned < 0 || learned > heartbeats {
				t.Fatalf("restarted follower learned the leader after %d ticks, want <= %d", learned, heartbeats)
			}
			erOracleOK(t, c)
		})
	}
}

// TestS02RestartKeepsTermVoteCommit: a replica restarted from its persisted
// state comes back with the same term, vote and commit, replays its state
// machine up to the commit without any help, and still refuses a second
// vote in the term it voted in.
func TestS02RestartKeepsTermVoteCommit(t *testing.T) {
	for seed := uint64(1); seed <= 10; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			c, _ := erStableCluster(t, seed, Options{})
			for _, id := range c.IDs {
				c.Flush(id)
			}
			before := map[raftpb.NodeID]raftpb.HardState{}
			applied := map[raftpb.NodeID]raftpb.Index{}
			for _, id := range c.IDs {
				hs := erStatus(c, id).HardState
				if hs != c.R(id).Log.HardState() {
					t.Fatalf("replica %d: in-memory %+v != durable %+v after flush", id, hs, c.R(id).Log.HardState())
				}
				before[id] = hs
				applied[id] = c.R(id).SM.Applied
			}
			for _, id := range c.IDs {
				c.Crash(id)
				if err := c.Restart(id); err != nil {
					t.Fatal(err)
				}
				c.Process(id) // no message delivered: replay from the log only
				st := erStatus(c, id)
				if st.HardState != before[id] {
					t.Fatalf("replica %d restarted with %+v, had %+v", id, st.HardState, before[id])
				}
				if st.Role != group.Follower || st.Lead != raftpb.None {
					t.Fatalf("replica %d restarted as %v lead %d", id, st.Role, st.Lead)
				}
				if got := c.R(id).SM.Applied; got != before[id].Commit || got < applied[id] {
					t.Fatalf("replica %d replayed to %d, commit %d, applied before %d", id, got, before[id].Commit, applied[id])
				}
			}
			// The vote survives: a voter that voted in term T refuses
			// another candidate in T.
			for _, id := range c.IDs {
				hs := before[id]
				if hs.Vote == raftpb.None {
					continue
				}
				var other raftpb.NodeID
				for _, o := range c.IDs {
					if o != id && o != hs.Vote {
						other = o
					}
				}
				rec := erRecord(c)
				last := erStatus(c, id).LastIndex
				lastTerm, _ := c.R(id).Log.Term(last)
				m := raftpb.Message{Type: raftpb.MsgVote, Shard: 1, From: other, To: id, Term: hs.Term,
					LogTerm: lastTerm, Index: last + 10}
				if err := c.R(id).G.Step(m); err != nil {
					t.Fatal(err)
				}
				c.Process(id)
				c.Net.Filter = nil
				resp := rec.find(func(m *raftpb.Message) bool { return m.From == id && m.Type == raftpb.MsgVoteResp })
				if len(resp) != 1 || !resp[0].Reject {
					t.Fatalf("replica %d (voted %d in term %d) answered %v to %d", id, hs.Vote, hs.Term, resp, other)
				}
				if v := c.R(id).Log.HardState().Vote; v != hs.Vote {
					t.Fatalf("replica %d vote %d -> %d in term %d", id, hs.Vote, v, hs.Term)
				}
				c.Net.Take(func(*raftpb.Message) bool { return true })
			}
			erOracleOK(t, c)
		})
	}
}

// ---------------------------------------------------------------------------
// S03. A rejected vote must not reset the voter's election timer.

// TestS03RejectedVoteKeepsElectionDeadline: two identical replicas U (same
// log, same seeded randomness) are ticked; the reference finds U's election
// deadline D. The subject is ticked k < D ticks, then rejects a higher-term
// MsgVote from a candidate with a stale log: it adopts the term but must
// still campaign at exactly tick D. A build that restarts the timer on every
// vote request campaigns only at k + (new timeout) or never.
func TestS03RejectedVoteKeepsElectionDeadline(t *testing.T) {
	voters := erIDs(1, 2, 3)
	mkLog := func() *group.MemoryLog {
		// U holds (1,1)(2,2)(2,3): fresher than the candidate's (1,1).
		return erMemLog(t, voters, true, erEnts(2, 2, 2), raftpb.HardState{Term: 2, Commit: 1})
	}
	for _, preVote := range []bool{false, true} {
		for seed := uint64(1); seed <= 8; seed++ {
			mod := func(c *group.Config) {
				c.DisableCheckQuorum = true
				c.DisablePreVote = !preVote
				c.Rand = rand.New(rand.NewPCG(seed, 99))
			}
			ref := erNewNode(t, 3, mkLog(), mod)
			deadline := 0
			for n := 1; n <= 2*erElection; n++ {
				ref.tick()
				if ref.status().Role != group.Follower {
					deadline = n
					break
				}
			}
			if deadline < erElection {
				t.Fatalf("reference campaigned at tick %d", deadline)
			}
			for _, k := range []int{1, deadline / 2, deadline - 1} {
				t.Run(fmt.Sprintf("prevote=%v/seed%d/deadline%d/k%d", preVote, seed, deadline, k), func(t *testing.T) {
					u := erNewNode(t, 3, mkLog(), mod)
					for range k {
						u.tick()
					}
					out := u.mustStep(raftpb.Message{Type: raftpb.MsgVote, From: 2, Term: 5 + raftpb.Term(k), LogTerm: 1, Index: 1})
					if r := erOnly(t, out, raftpb.MsgVoteResp); !r.Reject {
						t.Fatal("stale candidate granted")
					}
					if st := u.status(); st.HardState.Term != 5+raftpb.Term(k) || st.HardState.Vote != raftpb.None ||
						st.Role != group.Follower {
						t.Fatalf("after the rejected vote: %+v", st)
					}
					for n := k + 1; n <= deadline; n++ {
						u.tick()
						role := u.status().Role
						if n < deadline && role != group.Follower {
							t.Fatalf("campaigned early at tick %d (deadline %d)", n, deadline)
						}
						if n == deadline && role == group.Follower {
							t.Fatalf("rejected vote at tick %d moved the election deadline: no campaign at tick %d", k, deadline)
						}
					}
				})
			}
		}
	}
}

// TestS03StaleCandidateCannotStarveFreshVoter: three voters; the leader
// dies. Follower S (2) has a stale log and the shortest timeouts
// (ElectionTicks 4: [4, 8) ticks); follower U (3) has the freshest log and
// longer timeouts ([10, 20)). S keeps campaigning at ever higher terms and U
// rejects each request. U must adopt each term but keep its deadline, time
// out, and win within 3 of its election timeouts. Pre-vote and check-quorum
// are off (pre-vote would keep S's terms down; the lease would mask the
// requests). Resetting the timer on every request starves U forever: S's
// requests arrive more often than U's shortest timeout.
func TestS03StaleCandidateCannotStarveFreshVoter(t *testing.T) {
	const sTicks, uTicks = 4, erElection
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			c := erNewCluster(t, Options{Voters: erIDs(1, 2, 3), Seed: seed,
				Configure: func(cfg *group.Config) {
					cfg.DisablePreVote = true
					cfg.DisableCheckQuorum = true
					if cfg.ID == 2 {
						cfg.ElectionTicks = sTicks
					}
				}})
			erElect(t, c, 1)
			for i := range 3 {
				_ = c.Propose(1, EncodePut("a", fmt.Sprint(i)))
			}
			c.Stabilize()
			// S stops receiving entries (heartbeats still reach it).
			c.Net.Filter = func(m *raftpb.Message) bool { return !(m.Type == raftpb.MsgApp && m.To == 2) }
			for i := range 3 {
				_ = c.Propose(1, EncodePut("b", fmt.Sprint(i)))
			}
			c.Stabilize()
			c.TickAll()
			c.Stabilize()
			c.Net.Filter = nil
			if s, u := erStatus(c, 2).LastIndex, erStatus(c, 3).LastIndex; s >= u {
				t.Fatalf("setup: S last %d, U last %d", s, u)
			}
			c.Crash(1)
			rec := erRecord(c)
			bound := 3 * 2 * uTicks
			n, lead := erTickUntilLeader(c, bound)
			if lead != 3 {
				t.Fatalf("leader %d after %d ticks; want U (3) within %d ticks (S's requests: %d)", lead, n,
					bound, len(rec.find(func(m *raftpb.Message) bool { return m.Type == raftpb.MsgVote && m.From == 2 })))
			}
			rejects := rec.find(func(m *raftpb.Message) bool {
				return m.Type == raftpb.MsgVoteResp && m.From == 3 && m.To == 2 && m.Reject
			})
			t.Logf("U won after %d ticks at term %d, having rejected S %d times", n, erTerm(c, 3), len(rejects))
			erOracleOK(t, c)
		})
	}
}

// ---------------------------------------------------------------------------
// S04. Pre-vote must not deadlock a node that missed term changes.

// TestS04PreVoteStaleNodeCatchesUp: A (1), B (2), C (3) with pre-vote and
// check-quorum. C is partitioned while A and B go through elections up to
// term 5 with B leading. C heals and B crashes in the same tick. C's
// pre-vote is rejected by A with A's term, so C learns term 5 without
// anybody casting or granting a vote; A (fresher log) is elected in bounded
// time.
func TestS04PreVoteStaleNodeCatchesUp(t *testing.T) {
	const A, B, C = 1, 2, 3
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			c := erNewCluster(t, Options{Voters: erIDs(A, B, C), Seed: seed})
			c.Net.Isolate(C, c.IDs)
			erElect(t, c, A)       // term 2
			erTransfer(t, c, A, B) // term 3
			erTransfer(t, c, B, A) // term 4
			erTransfer(t, c, A, B) // term 5
			if tm := erTerm(c, B); tm != 5 {
				t.Fatalf("B leads term %d, want 5", tm)
			}
			if err := c.Propose(B, EncodePut("x", "5")); err != nil {
				t.Fatal(err)
			}
			c.Stabilize()
			// Partitioned C keeps pre-campaigning without inflating its term.
			for n := 0; n < 3*erMaxTimeout; n++ {
				c.TickAll()
				c.Stabilize()
				if c.Leader() != B || erTerm(c, B) != 5 {
					t.Fatalf("leader %d term %d while C is partitioned", c.Leader(), erTerm(c, c.Leader()))
				}
			}
			if tm := erTerm(c, C); tm != 1 {
				t.Fatalf("partitioned C at term %d: pre-vote should keep it at 1", tm)
			}
			aVote := erStatus(c, A).HardState.Vote

			// Heal C and crash B in the same tick; C times out first.
			rec := erRecord(c)
			c.Net.Heal()
			c.Crash(B)
			if err := c.R(C).G.Campaign(); err != nil {
				t.Fatal(err)
			}
			c.Process(C)
			c.Stabilize()
			rej := rec.find(func(m *raftpb.Message) bool {
				return m.Type == raftpb.MsgPreVoteResp && m.From == A && m.To == C
			})
			if len(rej) != 1 || !rej[0].Reject || rej[0].Term != 5 {
				t.Fatalf("A's answer to C's stale pre-vote: %v; want one rejection carrying term 5", rej)
			}
			if st := erStatus(c, C); st.HardState.Term != 5 || st.HardState.Vote != raftpb.None || st.Role != group.Follower {
				t.Fatalf("C after the rejection: %+v; want follower at term 5 without a vote", st)
			}
			if st := erStatus(c, A); st.HardState.Term != 5 || st.HardState.Vote != aVote {
				t.Fatalf("A after C's pre-vote: %+v (vote was %d)", st, aVote)
			}
			if v := c.R(C).Log.HardState().Vote; v != raftpb.None {
				t.Fatalf("C persisted a vote %d", v)
			}

			bound := 2 * erMaxTimeout
			n, lead := erTickUntilLeader(c, bound)
			if lead != A {
				t.Fatalf("leader %d after %d ticks; want A within %d", lead, n, bound)
			}
			if tm := erTerm(c, A); tm != 6 {
				t.Fatalf("A leads term %d, want 6", tm)
			}
			c.TickAll()
			c.Stabilize()
			if c.R(C).SM.Values["x"] != "5" || erStatus(c, C).Lead != A {
				t.Fatalf("C did not converge: %+v %v", erStatus(c, C), c.R(C).SM.Values)
			}
			erOracleOK(t, c)
		})
	}
}

// TestS04DelayedPreVoteRespAfterLeader: a pre-vote answer that arrives
// after its recipient already became leader (granted, or a rejection from
// the older term) starts no new campaign and changes nothing.
func TestS04DelayedPreVoteRespAfterLeader(t *testing.T) {
	c := erNewCluster(t, Options{Voters: erIDs(1, 2, 3), Seed: 4,
		Configure: func(cfg *group.Config) { cfg.DisableCheckQuorum = true }})
	if err := c.R(1).G.Campaign(); err != nil {
		t.Fatal(err)
	}
	c.Process(1)
	if n := c.Deliver(); n != 2 { // the pre-votes to 2 and 3
		t.Fatalf("delivered %d pre-votes", n)
	}
	held := c.Net.Take(func(m *raftpb.Message) bool { return m.Type == raftpb.MsgPreVoteResp && m.From == 3 })
	if len(held) != 1 || held[0].Reject {
		t.Fatalf("held %v", held)
	}
	c.Stabilize()
	st := erStatus(c, 1)
	if st.Role != group.Leader || st.HardState.Term != 2 {
		t.Fatalf("1 is %v at term %d", st.Role, st.HardState.Term)
	}
	c.TickAll()
	c.Stabilize()
	before := erStatus(c, 1)

	stale := held[0]
	stale.Term, stale.Reject = 1, true // a rejection from the pre-vote's time
	for _, m := range []raftpb.Message{held[0], stale} {
		rec := erRecord(c)
		if err := c.R(1).G.Step(m); err != nil {
			t.Fatalf("step %v: %v", m, err)
		}
		c.Process(1)
		c.Stabilize()
		c.Net.Filter = nil
		after := erStatus(c, 1)
		if after.Role != group.Leader || after.HardState != before.HardState {
			t.Fatalf("delayed %v changed the leader: %+v -> %+v", m, before, after)
		}
		if votes := rec.find(func(m *raftpb.Message) bool {
			return m.Type == raftpb.MsgPreVote || m.Type == raftpb.MsgVote
		}); len(votes) > 0 {
			t.Fatalf("delayed %v started a campaign: %v", m, votes)
		}
	}
	erOracleOK(t, c)
}

// ---------------------------------------------------------------------------
// S05. Disruptive rejoiners and removed members cannot depose a leader.

// TestS05aIsolatedRejoinerCannotDepose: five voters with pre-vote and
// check-quorum. E is isolated for 20 election timeouts and reconnected,
// campaigning as it does: the leader keeps its term and leadership
// throughout and E learns it. In
// the "idle" variant nothing is written meanwhile, so E's log stays as fresh
// as everybody's and only check-quorum's lease (not pre-vote's log check)
// keeps E's campaigns from deposing the leader.
func TestS05aIsolatedRejoinerCannotDepose(t *testing.T) {
	for _, idle := range []bool{false, true} {
		for seed := uint64(1); seed <= 5; seed++ {
			erS05a(t, idle, seed)
		}
	}
}

func erS05a(t *testing.T, idle bool, seed uint64) {
	t.Run(fmt.Sprintf("idle=%v/seed%d", idle, seed), func(t *testing.T) {
		c := erNewCluster(t, Options{Voters: erIDs(1, 2, 3, 4, 5), Seed: seed})
		_, lead := erTickUntilLeader(c, 10*erMaxTimeout)
		if lead == 0 {
			t.Fatal("no leader")
		}
		term := erTerm(c, lead)
		e := raftpb.NodeID(5)
		if e == lead {
			e = 4
		}
		check := func(phase string, n int) {
			t.Helper()
			if l := c.Leader(); l != lead || erTerm(c, lead) != term {
				t.Fatalf("%s tick %d: leader %d term %d, want %d term %d", phase, n, l, erTerm(c, l), lead, term)
			}
		}
		c.Net.Isolate(e, c.IDs)
		for n := 1; n <= 20*erMaxTimeout; n++ {
			c.TickAll()
			c.Stabilize()
			check("isolated", n)
			if !idle && n%7 == 0 {
				_ = c.Propose(lead, EncodePut("k", fmt.Sprint(n)))
			}
		}
		// E reconnects just as its election timer fires.
		c.Net.Heal()
		if err := c.R(e).G.Campaign(); err != nil {
			t.Fatal(err)
		}
		c.Process(e)
		c.Stabilize()
		check("rejoining campaign", 0)
		for n := 1; n <= 5*erMaxTimeout; n++ {
			c.TickAll()
			c.Stabilize()
			check("healed", n)
		}
		st := erStatus(c, e)
		if st.Lead != lead || st.HardState.Term != term || st.LastIndex != erStatus(c, lead).LastIndex {
			t.Fatalf("E after rejoining: %+v; leader %d term %d", st, lead, term)
		}
		erOracleOK(t, c)
	})
}

// TestS05bRemovedMemberCannotDepose: five voters, pre-vote and
// check-quorum. A transfer to D is started and its MsgTimeoutNow held back;
// the transfer times out, D is removed, then the held TimeoutNow is
// delivered to D and D keeps running. D never leads, never panics, the
// leader keeps its term and leadership, and D's higher-term requests are
// ignored because D is no member. Variant "isolated": D is cut off while it
// is removed, so it still believes it is a voter when it comes back.
func TestS05bRemovedMemberCannotDepose(t *testing.T) {
	for _, isolated := range []bool{false, true} {
		for seed := uint64(1); seed <= 5; seed++ {
			t.Run(fmt.Sprintf("isolated=%v/seed%d", isolated, seed), func(t *testing.T) {
				c := erNewCluster(t, Options{Voters: erIDs(1, 2, 3, 4, 5), Seed: seed})
				_, lead := erTickUntilLeader(c, 10*erMaxTimeout)
				if lead == 0 {
					t.Fatal("no leader")
				}
				c.Stabilize()
				term := erTerm(c, lead)
				d := raftpb.NodeID(4)
				if d == lead {
					d = 3
				}
				// Start a transfer to D and hold its TimeoutNow back.
				if err := c.R(lead).G.TransferLeader(d); err != nil {
					t.Fatal(err)
				}
				c.Process(lead)
				held := c.Net.Take(func(m *raftpb.Message) bool { return m.Type == raftpb.MsgTimeoutNow && m.To == d })
				if len(held) != 1 {
					t.Fatalf("held %v", held)
				}
				// The transfer is abandoned after an election timeout.
				for n := 0; n < erMaxTimeout && erStatus(c, lead).LeadTransferee != raftpb.None; n++ {
					c.TickAll()
					c.Stabilize()
				}
				if st := erStatus(c, lead); st.LeadTransferee != raftpb.None || st.Role != group.Leader {
					t.Fatalf("transfer not abandoned: %+v", st)
				}
				if isolated {
					c.Net.Isolate(d, c.IDs)
				}
				cc := raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.RemoveNode, Node: d}}}
				if err := c.ProposeConfChange(lead, cc); err != nil {
					t.Fatal(err)
				}
				c.Stabilize()
				erTicks(c, 3)
				if cs := c.R(lead).G.ConfState(); cs.IsMember(d) {
					t.Fatalf("D still a member: %v", cs)
				}
				c.Net.Heal()
				t.Logf("D's own view of the membership: %v", c.R(d).G.ConfState())

				// The delayed TimeoutNow reaches the removed D.
				if err := c.R(d).G.Step(held[0]); err != nil {
					t.Logf("D refused the stale TimeoutNow: %v", err)
				}
				c.Process(d)
				c.Stabilize()
				for n := 1; n <= 10*erMaxTimeout; n++ {
					c.TickAll()
					c.Stabilize()
					if erStatus(c, d).Role == group.Leader {
						t.Fatalf("tick %d: removed D leads term %d", n, erTerm(c, d))
					}
					if l := c.Leader(); l != lead || erTerm(c, lead) != term {
						t.Fatalf("tick %d: leader %d term %d, want %d term %d (D at term %d)",
							n, l, erTerm(c, l), lead, term, erTerm(c, d))
					}
					for _, id := range c.IDs {
						if id != d && erTerm(c, id) != term {
							t.Fatalf("tick %d: member %d moved to term %d (D at %d)", n, id, erTerm(c, id), erTerm(c, d))
						}
					}
				}
				if err := c.Propose(lead, EncodePut("still", "leader")); err != nil {
					t.Fatal(err)
				}
				c.Stabilize()
				erTicks(c, 2)
				if isolated && erTerm(c, d) <= term {
					t.Fatalf("D (unaware of its removal) never campaigned: term %d, leader's %d", erTerm(c, d), term)
				}
				t.Logf("D ended at term %d as %v", erTerm(c, d), erStatus(c, d).Role)
				erOracleOK(t, c)
			})
		}
	}
}

// ---------------------------------------------------------------------------
// S07. A higher term seen in a vote response is adopted without a phantom
// vote.

// TestS07HigherTermVoteRespNoPhantomVote: candidate C (1) at term 4 gets a
// rejection from V (2) at term 6. C steps down to follower at term 6 with no
// vote (not "voted for V"), then grants the term-6 vote a legitimate
// candidate (3) asks for, persisting that vote before answering. The
// persisted vote is never regressed and never invented.
func TestS07HigherTermVoteRespNoPhantomVote(t *testing.T) {
	voters := erIDs(1, 2, 3)
	l := erMemLog(t, voters, true, nil, raftpb.HardState{Term: 3, Commit: 1})
	cand := erNewNode(t, 1, l, func(c *group.Config) { c.DisablePreVote = true })
	if err := cand.g.Campaign(); err != nil {
		t.Fatal(err)
	}
	out := cand.drain()
	if hs := l.HardState(); hs.Term != 4 || hs.Vote != 1 {
		t.Fatalf("candidate persisted %+v", hs)
	}
	if len(out) != 2 || out[0].Type != raftpb.MsgVote || out[0].Term != 4 {
		t.Fatalf("vote requests: %v", out)
	}

	out = cand.mustStep(raftpb.Message{Type: raftpb.MsgVoteResp, From: 2, Term: 6, Reject: true})
	st := cand.status()
	if st.Role != group.Follower || st.HardState.Term != 6 || st.HardState.Vote != raftpb.None || st.Lead != raftpb.None {
		t.Fatalf("after the term-6 rejection: %+v", st)
	}
	if hs := l.HardState(); hs.Term != 6 || hs.Vote != raftpb.None {
		t.Fatalf("persisted after the rejection: %+v (a vote here is invented)", hs)
	}
	if len(out) != 0 {
		t.Fatalf("stepping down sent %v", out)
	}

	nAfter := len(cand.after)
	out = cand.mustStep(raftpb.Message{Type: raftpb.MsgVote, From: 3, Term: 6, LogTerm: 1, Index: 1})
	resp := erOnly(t, out, raftpb.MsgVoteResp)
	if resp.Reject || resp.To != 3 || resp.Term != 6 {
		t.Fatalf("term-6 vote for 3: %v", resp)
	}
	if !slices.ContainsFunc(cand.after[nAfter:], func(m raftpb.Message) bool { return m.Type == raftpb.MsgVoteResp }) {
		t.Fatal("vote grant not held until its persist (not in AfterPersist)")
	}
	if hs := l.HardState(); hs.Term != 6 || hs.Vote != 3 {
		t.Fatalf("persisted after granting: %+v", hs)
	}
	// Having voted for 3, C refuses 2 in term 6.
	out = cand.mustStep(raftpb.Message{Type: raftpb.MsgVote, From: 2, Term: 6, LogTerm: 1, Index: 1})
	if r := erOnly(t, out, raftpb.MsgVoteResp); !r.Reject {
		t.Fatalf("second vote in term 6 granted: %v", r)
	}
	erCheckDurableHS(t, append([]raftpb.HardState{{Term: 3, Commit: 1}}, cand.durable...))
	for _, hs := range cand.durable {
		if hs.Term == 6 && hs.Vote == 2 {
			t.Fatalf("phantom vote for the rejecting voter: %+v", hs)
		}
	}
}

// TestS07ClusterCandidateAdoptsHigherTerm is S07 in the cluster: candidate
// 1 at a low term hears a rejection from 2, which has moved to a higher term;
// 1 follows at that term without a vote, and 3's campaign at that term gets
// 1's vote.
func TestS07ClusterCandidateAdoptsHigherTerm(t *testing.T) {
	c := erNewCluster(t, Options{Voters: erIDs(1, 2, 3), Seed: 7,
		Configure: func(cfg *group.Config) { cfg.DisablePreVote = true; cfg.DisableCheckQuorum = true }})
	erSetLog(t, c, 1, nil, raftpb.HardState{Term: 3, Commit: 1})
	erSetLog(t, c, 2, nil, raftpb.HardState{Term: 6, Commit: 1})
	erSetLog(t, c, 3, nil, raftpb.HardState{Term: 5, Commit: 1})
	c.Net.Cut(1, 3) // 1's request reaches only 2
	if err := c.R(1).G.Campaign(); err != nil {
		t.Fatal(err)
	}
	c.Process(1)
	c.Stabilize()
	if hs := c.R(1).Log.HardState(); hs.Term != 6 || hs.Vote != raftpb.None {
		t.Fatalf("1 persisted %+v; want term 6 and no vote", hs)
	}
	c.Net.Heal()
	c.Net.Cut(3, 2) // 3's request reaches only 1
	erCampaignUntilLeader(t, c, 3)
	if tm := erTerm(c, 3); tm != 6 {
		t.Fatalf("3 leads term %d, want 6", tm)
	}
	if hs := c.R(1).Log.HardState(); hs.Term != 6 || hs.Vote != 3 {
		t.Fatalf("1 persisted %+v; want its vote for 3 in term 6", hs)
	}
	c.Net.Heal()
	erTicks(c, 2)
	erOracleOK(t, c)
}
