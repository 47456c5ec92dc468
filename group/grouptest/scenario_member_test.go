package grouptest

// Membership scenarios of SCENARIOS.md (S17–S24, S47) and learner / joint
// consensus sequences, driven by hand over the simulated network.
//
// A note on semantics: in this core a membership change takes effect when
// its entry is released for applying (membership.go), so the entry that
// enters a joint configuration is itself committed under the configuration
// before it, and every entry after it — the leave entry first — needs a
// majority of both halves. Where a scenario (written for openraft, where a
// membership takes effect when appended) says "the joint entry never
// commits", the tests below assert the equivalent here: no entry governed
// by the joint configuration commits.

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

const mbET = 10 // the harness's default ElectionTicks

func mbNew(t *testing.T, o Options) *Cluster {
	t.Helper()
	c, err := NewCluster(o)
	if err != nil {
		t.Fatal(err)
	}
	c.Trace = t.Logf
	return c
}

func mbIDs(ids ...raftpb.NodeID) []raftpb.NodeID { return ids }

func mbVoter(id raftpb.NodeID) raftpb.ConfChangeSingle {
	return raftpb.ConfChangeSingle{Type: raftpb.AddVoter, Node: id}
}

func mbLearner(id raftpb.NodeID) raftpb.ConfChangeSingle {
	return raftpb.ConfChangeSingle{Type: raftpb.AddLearner, Node: id}
}

func mbRemove(id raftpb.NodeID) raftpb.ConfChangeSingle {
	return raftpb.ConfChangeSingle{Type: raftpb.RemoveNode, Node: id}
}

func mbCC(tr raftpb.ConfChangeTransition, chs ...raftpb.ConfChangeSingle) raftpb.ConfChange {
	return raftpb.ConfChange{Transition: tr, Changes: chs}
}

// mbConf is a non-joint membership.
func mbConf(voters, learners []raftpb.NodeID) raftpb.ConfState {
	return raftpb.ConfState{Voters: voters, Learners: learners}
}

func mbStatus(c *Cluster, id raftpb.NodeID) group.BasicStatus { return c.R(id).G.BasicStatus() }

func mbCommit(c *Cluster, id raftpb.NodeID) raftpb.Index {
	return c.R(id).G.BasicStatus().HardState.Commit
}

func mbLast(c *Cluster, id raftpb.NodeID) raftpb.Index { return c.R(id).G.BasicStatus().LastIndex }

func mbHasConf(c *Cluster, id raftpb.NodeID, want raftpb.ConfState) bool {
	r := c.R(id)
	if r.Down {
		return false
	}
	cs := r.G.ConfState()
	return cs.Equal(&want)
}

// mbTickUntil stabilizes, then ticks every live replica and stabilizes
// until cond holds, at most max times. It returns the ticks used.
func mbTickUntil(c *Cluster, max int, cond func() bool) (int, bool) {
	c.Stabilize()
	for i := 0; ; i++ {
		if cond() {
			return i, true
		}
		if i == max {
			return i, false
		}
		c.TickAll()
		c.Stabilize()
	}
}

// mbElect waits (bounded) for a leader and returns it.
func mbElect(t *testing.T, c *Cluster, max int) raftpb.NodeID {
	t.Helper()
	if _, ok := mbTickUntil(c, max, func() bool { return c.Leader() != 0 }); !ok {
		t.Fatalf("no leader within %d ticks", max)
	}
	return c.Leader()
}

// mbMakeLeader elects a leader and transfers leadership to id.
func mbMakeLeader(t *testing.T, c *Cluster, id raftpb.NodeID) {
	t.Helper()
	for try := 0; try < 5; try++ {
		lead := mbElect(t, c, 10*mbET)
		if lead == id {
			return
		}
		if err := c.R(lead).G.TransferLeader(id); err != nil {
			t.Fatalf("transfer %d -> %d: %v", lead, id, err)
		}
		c.Process(lead)
		mbTickUntil(c, 2*mbET, func() bool { return c.Leader() == id })
	}
	if c.Leader() != id {
		t.Fatalf("could not make %d leader (leader %d)", id, c.Leader())
	}
}

// mbCaughtUp: id has applied everything the leader has applied.
func mbCaughtUp(c *Cluster, id raftpb.NodeID) bool {
	lead := c.Leader()
	if lead == 0 || c.R(id).Down {
		return false
	}
	return mbStatus(c, id).Applying >= mbStatus(c, lead).Applying
}

// mbAddLearner adds id as a learner at the current leader and waits until it
// holds and has applied the leader's log.
func mbAddLearner(t *testing.T, c *Cluster, id raftpb.NodeID) {
	t.Helper()
	lead := mbElect(t, c, 10*mbET)
	if err := c.ProposeConfChange(lead, mbCC(raftpb.TransitionAuto, mbLearner(id))); err != nil {
		t.Fatalf("add learner %d: %v", id, err)
	}
	ok := func() bool {
		cs := c.R(id).G.ConfState()
		return slices.Contains(cs.Learners, id) && mbCaughtUp(c, id)
	}
	if _, done := mbTickUntil(c, 5*mbET, ok); !done {
		t.Fatalf("learner %d not caught up: %v applying %d", id, c.R(id).G.ConfState(), mbStatus(c, id).Applying)
	}
}

// mbTap records every message sent and drops those drop selects.
type mbTap struct {
	msgs []raftpb.Message
	drop func(m *raftpb.Message) bool
}

func mbInstallTap(c *Cluster) *mbTap {
	tap := &mbTap{}
	c.Net.Filter = func(m *raftpb.Message) bool {
		tap.msgs = append(tap.msgs, *m)
		return tap.drop == nil || !tap.drop(m)
	}
	return tap
}

func (tap *mbTap) count(match func(m *raftpb.Message) bool) int {
	n := 0
	for i := range tap.msgs {
		if match(&tap.msgs[i]) {
			n++
		}
	}
	return n
}

func mbIsCampaign(m *raftpb.Message) bool {
	return m.Type == raftpb.MsgPreVote || m.Type == raftpb.MsgVote
}

func mbPut(i int) []byte { return EncodePut(fmt.Sprintf("k%d", i%7), fmt.Sprintf("v%d", i)) }

func mbCheck(t *testing.T, c *Cluster) {
	t.Helper()
	if err := c.Err(); err != nil {
		t.Fatalf("oracle: %v", err)
	}
}

// S17: a learner outside the joint configuration cannot block commits.
func TestS17LearnerOutsideJointCannotBlockCommit(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			c := mbNew(t, Options{Voters: mbIDs(1, 2, 3), Learners: mbIDs(5), Spare: mbIDs(4), Seed: seed})
			c.Net.Isolate(5, c.IDs) // learner 5 hears nothing and says nothing
			mbMakeLeader(t, c, 1)
			mbAddLearner(t, c, 4)
			g := c.R(1).G
			j := mbLast(c, 1) + 1
			if err := c.ProposeConfChange(1, mbCC(raftpb.TransitionAuto, mbVoter(4), mbRemove(3))); err != nil {
				t.Fatal(err)
			}
			// No ticks: the joint entry (majority of {1,2,3}) and the leave
			// entry (majorities of {1,2,4} and {1,2,3}) commit through the
			// message exchange alone. A commit rule waiting on learner 5 would
			// stall here forever.
			c.Stabilize()
			if got := mbCommit(c, 1); got < j+1 {
				t.Fatalf("joint %d and leave %d should be committed; commit %d, config %v", j, j+1, got, g.ConfState())
			}
			want := mbConf(mbIDs(1, 2, 4), mbIDs(5))
			for _, id := range mbIDs(1, 2, 4) {
				if !mbHasConf(c, id, want) {
					t.Fatalf("replica %d config %v, want %v", id, c.R(id).G.ConfState(), want)
				}
			}
			if last, _ := c.R(5).Log.LastIndex(); last >= j {
				t.Fatalf("isolated learner 5 has index %d", last)
			}
			if pr := g.Status().Progress[5]; pr.Match >= j {
				t.Fatalf("learner 5 match %d", pr.Match)
			}
			// The new configuration commits on its own, 5 still cut off.
			idx := mbLast(c, 1) + 1
			if err := c.Propose(1, mbPut(1)); err != nil {
				t.Fatal(err)
			}
			c.Stabilize()
			if mbCommit(c, 1) < idx {
				t.Fatalf("entry %d not committed in {1,2,4}: commit %d", idx, mbCommit(c, 1))
			}
			// Once 5 is reachable it catches up and holds the final membership.
			c.Net.Heal()
			if _, ok := mbTickUntil(c, 3*mbET, func() bool { return mbHasConf(c, 5, want) && mbCaughtUp(c, 5) }); !ok {
				t.Fatalf("learner 5 did not catch up: %v", c.R(5).G.ConfState())
			}
			mbCheck(t, c)
		})
	}
}

// S18: a single voter commits alone only while it is the single voter of
// every configuration. Node 1 is the only voter; learners 2 and 3 are added,
// then partitioned; the change to voters {1,2,3} goes through a joint
// configuration ({1,2,3} && {1}).
func TestS18JointFromSingleVoterNeedsEveryConfig(t *testing.T) {
	c := mbNew(t, Options{Voters: mbIDs(1), Spare: mbIDs(2, 3), Seed: 18})
	if lead := mbElect(t, c, 5*mbET); lead != 1 {
		t.Fatalf("leader %d", lead)
	}
	mbAddLearner(t, c, 2)
	mbAddLearner(t, c, 3)
	c.Net.Isolate(2, c.IDs)
	c.Net.Isolate(3, c.IDs)
	g := c.R(1).G
	j := mbLast(c, 1) + 1
	if err := c.ProposeConfChange(1, mbCC(raftpb.TransitionAuto, mbVoter(2), mbVoter(3))); err != nil {
		t.Fatal(err)
	}
	c.Stabilize()
	// The entry entering the joint configuration is committed under {1}
	// (the membership in force before it is applied); from here on {1} is no
	// longer every quorum.
	joint := raftpb.ConfState{Voters: mbIDs(1, 2, 3), VotersOutgoing: mbIDs(1), AutoLeave: true}
	if !mbHasConf(c, 1, joint) {
		t.Fatalf("config %v, want %v (commit %d, joint entry %d)", g.ConfState(), joint, mbCommit(c, 1), j)
	}
	if last := mbLast(c, 1); last != j+1 {
		t.Fatalf("auto-leave entry not appended: last %d, joint entry %d", last, j)
	}
	if err := c.Propose(1, mbPut(1)); err != nil {
		t.Fatal(err)
	}
	// A read must not take the single-voter shortcut either.
	if err := g.ReadIndex(1801); err != nil {
		t.Fatal(err)
	}
	c.Process(1)
	c.Stabilize()
	for i := 0; i < 3*mbET; i++ {
		if got := mbCommit(c, 1); got != j {
			t.Fatalf("tick %d: commit %d: an entry governed by {1,2,3}&&{1} committed with node 1 alone", i, got)
		}
		c.TickAll()
		c.Stabilize()
	}
	for _, rs := range c.R(1).ReadStates {
		if rs.ID == 1801 && !rs.Dropped {
			t.Fatalf("read answered at %d by node 1 alone in a joint configuration", rs.Index)
		}
	}
	// Restart node 1 while joint: it must not act as a single-node cluster.
	if err := c.Restart(1); err != nil {
		t.Fatal(err)
	}
	if !mbHasConf(c, 1, joint) {
		t.Fatalf("restarted with config %v, want %v", c.R(1).G.ConfState(), joint)
	}
	for i := 0; i < 10*mbET; i++ {
		c.TickAll()
		c.Stabilize()
		st := mbStatus(c, 1)
		if st.Role == group.Leader || st.Role == group.Candidate {
			t.Fatalf("tick %d after restart: node 1 is %v with only itself reachable in {1,2,3}&&{1}", i, st.Role)
		}
		if st.HardState.Commit > j {
			t.Fatalf("tick %d after restart: commit %d > %d", i, st.HardState.Commit, j)
		}
	}
	// With 2 back (3 still away) the joint configuration has a quorum in
	// both halves: the change completes in bounded time.
	c.Net.Heal()
	c.Net.Isolate(3, c.IDs)
	final := mbConf(mbIDs(1, 2, 3), nil)
	n, ok := mbTickUntil(c, 6*mbET, func() bool {
		return c.Leader() != 0 && mbHasConf(c, 1, final) && mbHasConf(c, 2, final) && mbCommit(c, 1) >= j+2
	})
	if !ok {
		t.Fatalf("change not completed with {1,2}: leader %d config %v commit %d", c.Leader(), c.R(1).G.ConfState(), mbCommit(c, 1))
	}
	t.Logf("completed %d ticks after 2 came back", n)
	c.Net.Heal()
	if _, ok := mbTickUntil(c, 3*mbET, func() bool { return mbHasConf(c, 3, final) && mbCaughtUp(c, 3) }); !ok {
		t.Fatalf("3 did not catch up: %v", c.R(3).G.ConfState())
	}
	mbCheck(t, c)
}

// S19: joint quorums count every configuration. {1,2,3} -> {3,4,5} with 4
// and 5 (learners, caught up) unreachable: nothing governed by the joint
// configuration commits; once they are back the change completes.
func TestS19JointQuorumCountsBothConfigs(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			c := mbNew(t, Options{Voters: mbIDs(1, 2, 3), Spare: mbIDs(4, 5), Seed: 190 + seed})
			mbMakeLeader(t, c, 3)
			mbAddLearner(t, c, 4)
			mbAddLearner(t, c, 5)
			c.Net.Isolate(4, c.IDs)
			c.Net.Isolate(5, c.IDs)
			j := mbLast(c, 3) + 1
			cc := mbCC(raftpb.TransitionAuto, mbVoter(4), mbVoter(5), mbRemove(1), mbRemove(2))
			if err := c.ProposeConfChange(3, cc); err != nil {
				t.Fatal(err)
			}
			c.Stabilize()
			joint := raftpb.ConfState{Voters: mbIDs(3, 4, 5), VotersOutgoing: mbIDs(1, 2, 3), AutoLeave: true}
			if !mbHasConf(c, 3, joint) {
				t.Fatalf("leader config %v, want %v", c.R(3).G.ConfState(), joint)
			}
			if err := c.Propose(3, mbPut(1)); err != nil {
				t.Fatal(err)
			}
			c.Stabilize()
			for i := 0; i < 6*mbET; i++ {
				for _, id := range mbIDs(1, 2, 3) {
					if got := mbCommit(c, id); got > j {
						t.Fatalf("tick %d: replica %d commit %d > joint entry %d: {3,4,5} has no majority", i, id, got, j)
					}
					if cs := c.R(id).G.ConfState(); mbCaughtUp(c, id) && !cs.Joint() {
						t.Fatalf("tick %d: replica %d left the joint configuration: %v", i, id, cs)
					}
				}
				c.TickAll()
				c.Stabilize()
			}
			// 4 and 5 come back, catch up, and their matches complete {3,4,5}.
			c.Net.Heal()
			final := mbConf(mbIDs(3, 4, 5), nil)
			n, ok := mbTickUntil(c, 10*mbET, func() bool {
				lead := c.Leader()
				return lead != 0 && mbHasConf(c, lead, final) &&
					mbHasConf(c, 3, final) && mbHasConf(c, 4, final) && mbHasConf(c, 5, final)
			})
			if !ok {
				t.Fatalf("change not completed: leader %d, configs 3:%v 4:%v 5:%v", c.Leader(),
					c.R(3).G.ConfState(), c.R(4).G.ConfState(), c.R(5).G.ConfState())
			}
			t.Logf("completed %d ticks after healing", n)
			// Two of {3,4,5} commit on their own.
			lead := c.Leader()
			for _, id := range mbIDs(3, 4, 5) {
				if id != lead {
					c.Net.Isolate(id, c.IDs)
					break
				}
			}
			idx := mbLast(c, lead) + 1
			if err := c.Propose(lead, mbPut(2)); err != nil {
				t.Fatal(err)
			}
			c.Stabilize()
			if mbCommit(c, lead) < idx {
				t.Fatalf("entry %d not committed by two of {3,4,5}", idx)
			}
			mbCheck(t, c)
		})
	}
}

// S20: the leader commits C(old,new), then crashes before its leave entry
// reaches anyone; the next leader finishes the change in bounded time.
func TestS20InterruptedJointFinishedByNextLeader(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			c := mbNew(t, Options{Voters: mbIDs(1, 2, 3), Learners: mbIDs(4), Seed: 200 + seed})
			mbMakeLeader(t, c, 1)
			c.Stabilize()
			j := mbLast(c, 1) + 1
			tap := mbInstallTap(c)
			tap.drop = func(m *raftpb.Message) bool {
				if m.From != 1 || m.Type != raftpb.MsgApp {
					return false
				}
				for i := range m.Entries {
					if m.Entries[i].Index > j {
						return true
					}
				}
				return false
			}
			cc := mbCC(raftpb.TransitionAuto, mbVoter(4), mbRemove(3))
			if err := c.ProposeConfChange(1, cc); err != nil {
				t.Fatal(err)
			}
			c.Stabilize()
			if cs := c.R(1).G.ConfState(); !cs.Joint() || mbCommit(c, 1) < j {
				t.Fatalf("leader did not commit and apply the joint entry: %v commit %d", cs, mbCommit(c, 1))
			}
			if mbLast(c, 1) != j+1 {
				t.Fatalf("leader should have appended its leave entry at %d: last %d", j+1, mbLast(c, 1))
			}
			for _, id := range mbIDs(2, 3, 4) {
				if last, _ := c.R(id).Log.LastIndex(); last != j {
					t.Fatalf("replica %d last %d, want %d", id, last, j)
				}
			}
			c.Crash(1)
			tap.drop = nil
			want := mbConf(mbIDs(1, 2, 4), nil)
			electTicks, ok := mbTickUntil(c, 4*mbET, func() bool { return c.Leader() != 0 })
			if !ok {
				t.Fatalf("no leader among 2,3,4 within %d ticks", 4*mbET)
			}
			// The new leader proposes the leave itself: no client request, and
			// no more than an election timeout (and a re-election if it was 3,
			// which the change removes).
			leaveTicks, ok := mbTickUntil(c, 3*mbET, func() bool {
				lead := c.Leader()
				return lead != 0 && mbHasConf(c, lead, want) && mbHasConf(c, 2, want) && mbHasConf(c, 4, want)
			})
			if !ok {
				t.Fatalf("group stays joint: leader %d configs 2:%v 4:%v", c.Leader(),
					c.R(2).G.ConfState(), c.R(4).G.ConfState())
			}
			t.Logf("elected after %d ticks, left joint %d ticks later", electTicks, leaveTicks)
			// Repeating the original request: refused, or it ends at the same
			// configuration (without staying joint).
			lead := c.Leader()
			if err := c.ProposeConfChange(lead, cc); err != nil {
				t.Logf("repeated change refused: %v", err)
			} else {
				from := mbLast(c, lead)
				if _, ok := mbTickUntil(c, 3*mbET, func() bool {
					l := c.Leader()
					return l != 0 && mbHasConf(c, l, want) && mbHasConf(c, 2, want) && mbHasConf(c, 4, want) &&
						mbStatus(c, l).Applying == mbLast(c, l)
				}); !ok {
					t.Fatalf("repeated change did not end at %v: 2:%v 4:%v", want, c.R(2).G.ConfState(), c.R(4).G.ConfState())
				}
				confs := 0
				if l := c.Leader(); l != 0 {
					ents, err := c.R(l).Log.Entries(from, mbLast(c, l)+1, 1<<62)
					if err != nil {
						t.Fatal(err)
					}
					for _, e := range ents {
						if e.Type == raftpb.EntryConfChange {
							confs++
						}
					}
				}
				t.Logf("repeated change accepted; %d membership entries appended for it (2 = a trivial joint and its leave)", confs)
			}
			// The old leader comes back, drops its stale leave entry and ends
			// in the same configuration.
			if err := c.Restart(1); err != nil {
				t.Fatal(err)
			}
			if _, ok := mbTickUntil(c, 4*mbET, func() bool { return mbHasConf(c, 1, want) && mbCaughtUp(c, 1) }); !ok {
				t.Fatalf("old leader 1 did not converge: %v", c.R(1).G.ConfState())
			}
			mbCheck(t, c)
		})
	}
}

// S21: a restarted learner stays a learner: it never campaigns, and votes
// from it never count.
func TestS21RestartedLearnerStaysLearner(t *testing.T) {
	for _, preVote := range []bool{true, false} {
		t.Run(fmt.Sprint("prevote=", preVote), func(t *testing.T) {
			c := mbNew(t, Options{Voters: mbIDs(1, 2, 3), Spare: mbIDs(4), Seed: 21,
				Configure: func(cfg *group.Config) { cfg.DisablePreVote = !preVote }})
			mbElect(t, c, 10*mbET)
			mbAddLearner(t, c, 4)
			lead := c.Leader()
			for i := 0; i < 3; i++ {
				if err := c.Propose(lead, mbPut(i)); err != nil {
					t.Fatal(err)
				}
			}
			c.Stabilize()
			if err := c.Restart(4); err != nil {
				t.Fatal(err)
			}
			if cs := c.R(4).G.ConfState(); !slices.Contains(cs.Learners, 4) || cs.IsVoter(4) {
				t.Fatalf("restarted learner has config %v", cs)
			}
			term := mbStatus(c, 4).HardState.Term
			tap := mbInstallTap(c)
			c.Net.Isolate(4, c.IDs)
			for i := 0; i < 20*mbET; i++ {
				c.TickAll()
				c.Stabilize()
				if st := mbStatus(c, 4); st.Role != group.Follower || st.HardState.Term != term {
					t.Fatalf("tick %d: isolated learner is %v at term %d (was %d)", i, st.Role, st.HardState.Term, term)
				}
			}
			if n := tap.count(func(m *raftpb.Message) bool { return m.From == 4 && mbIsCampaign(m) }); n > 0 {
				t.Fatalf("learner 4 sent %d vote requests", n)
			}
			// Votes from the learner never count: with only voter v and
			// learner 4 alive, v never wins, even if 4 grants it.
			c.Net.Heal()
			c.Net.Filter = nil
			mbTickUntil(c, 3*mbET, func() bool { return mbCaughtUp(c, 4) })
			lead = mbElect(t, c, 10*mbET)
			var v raftpb.NodeID
			for _, id := range mbIDs(1, 2, 3) {
				if id != lead && v == 0 {
					v = id
				} else {
					c.Crash(id)
				}
			}
			injected := 0
			for i := 0; i < 10*mbET; i++ {
				c.TickAll()
				c.Stabilize()
				st := mbStatus(c, v)
				switch st.Role {
				case group.Leader:
					t.Fatalf("tick %d: %d leads with only learner 4 besides it", i, v)
				case group.PreCandidate:
					// A granted pre-vote from the learner (as it would grant).
					m := raftpb.Message{Type: raftpb.MsgPreVoteResp, Shard: 1, From: 4, To: v, Term: st.HardState.Term + 1}
					if err := c.R(v).G.Step(m); err != nil {
						t.Fatal(err)
					}
					injected++
				case group.Candidate:
					m := raftpb.Message{Type: raftpb.MsgVoteResp, Shard: 1, From: 4, To: v, Term: st.HardState.Term}
					if err := c.R(v).G.Step(m); err != nil {
						t.Fatal(err)
					}
					injected++
				}
				c.Process(v)
				if st := mbStatus(c, v); st.Role == group.Leader || (preVote && st.Role == group.Candidate) {
					t.Fatalf("tick %d: the learner's vote was counted: %d is %v", i, v, st.Role)
				}
			}
			if injected == 0 {
				t.Fatalf("voter %d never campaigned", v)
			}
			mbCheck(t, c)
		})
	}
}

// S21: a removed node restarted comes back as a non-voter and never
// campaigns. In the plain flow the leader stops sending to the removed
// node as soon as it applies its removal, so the node never learns that the
// removal committed.
func TestS21RemovedNodeRestartsAsNonVoter(t *testing.T) {
	c := mbNew(t, Options{Voters: mbIDs(1, 2, 3, 4), Seed: 211})
	mbMakeLeader(t, c, 1)
	r := mbLast(c, 1) + 1
	if err := c.ProposeConfChange(1, mbCC(raftpb.TransitionAuto, mbRemove(3))); err != nil {
		t.Fatal(err)
	}
	if _, ok := mbTickUntil(c, 2*mbET, func() bool {
		return mbHasConf(c, 1, mbConf(mbIDs(1, 2, 4), nil)) && mbCaughtUp(c, 2) && mbCaughtUp(c, 4)
	}); !ok {
		t.Fatalf("removal not applied: %v", c.R(1).G.ConfState())
	}
	if last, _ := c.R(3).Log.LastIndex(); last < r {
		t.Fatalf("3 never received its removal entry %d (last %d)", r, last)
	}
	t.Logf("removed node 3: commit %d, removal entry %d, config %v", mbCommit(c, 3), r, c.R(3).G.ConfState())
	if err := c.Restart(3); err != nil {
		t.Fatal(err)
	}
	tap := mbInstallTap(c)
	terms := map[raftpb.NodeID]raftpb.Term{}
	for _, id := range mbIDs(1, 2, 4) {
		terms[id] = mbStatus(c, id).HardState.Term
	}
	lead := c.Leader()
	if cs := c.R(3).G.ConfState(); cs.IsVoter(3) {
		t.Errorf("restarted removed node 3 is a voter of its config %v (commit %d, removal at %d)", cs, mbCommit(c, 3), r)
	}
	for i := 0; i < 10*mbET; i++ {
		c.TickAll()
		c.Stabilize()
	}
	if n := tap.count(func(m *raftpb.Message) bool { return m.From == 3 && mbIsCampaign(m) }); n > 0 {
		t.Errorf("removed node 3 sent %d vote requests after restart", n)
	}
	// Whatever it does, it never disturbs the members.
	if c.Leader() != lead {
		t.Errorf("leader changed from %d to %d", lead, c.Leader())
	}
	for _, id := range mbIDs(1, 2, 4) {
		if got := mbStatus(c, id).HardState.Term; got != terms[id] {
			t.Errorf("member %d term %d -> %d", id, terms[id], got)
		}
	}
	mbCheck(t, c)
}

// S21: when the removed node did learn that its removal committed (here a
// heartbeat sent between the leader's commit and its apply carries the
// commit index, as with an asynchronous apply), it comes back as a
// non-member and never campaigns.
func TestS21RemovedNodeThatLearnedRemovalNeverCampaigns(t *testing.T) {
	c := mbNew(t, Options{Voters: mbIDs(1, 2, 3, 4), Seed: 212})
	mbMakeLeader(t, c, 1)
	r := mbLast(c, 1) + 1
	if err := c.ProposeConfChange(1, mbCC(raftpb.TransitionAuto, mbRemove(3))); err != nil {
		t.Fatal(err)
	}
	c.Stabilize()
	if last, _ := c.R(3).Log.LastIndex(); last < r || mbCommit(c, 1) < r {
		t.Fatalf("removal entry %d: 3 last %d, leader commit %d", r, last, mbCommit(c, 1))
	}
	term := mbStatus(c, 1).HardState.Term
	hb := raftpb.Message{Type: raftpb.MsgHeartbeat, Shard: 1, From: 1, To: 3, Term: term, Commit: r}
	if err := c.R(3).G.Step(hb); err != nil {
		t.Fatal(err)
	}
	c.Process(3)
	c.Stabilize()
	if cs := c.R(3).G.ConfState(); cs.IsMember(3) {
		t.Fatalf("3 applied its removal but has config %v", cs)
	}
	if err := c.Restart(3); err != nil {
		t.Fatal(err)
	}
	if cs := c.R(3).G.ConfState(); cs.IsMember(3) {
		t.Fatalf("restarted with config %v", cs)
	}
	tap := mbInstallTap(c)
	for i := 0; i < 20*mbET; i++ {
		c.TickAll()
		c.Stabilize()
		if st := mbStatus(c, 3); st.Role != group.Follower {
			t.Fatalf("tick %d: removed node is %v", i, st.Role)
		}
	}
	if n := tap.count(func(m *raftpb.Message) bool { return m.From == 3 }); n > 0 {
		t.Fatalf("removed node 3 sent %d messages", n)
	}
	mbCheck(t, c)
}

// S22: remove a follower, then the leader itself, in a five-voter group.
func TestS22RemoveFollowerThenLeader(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			c := mbNew(t, Options{Voters: mbIDs(1, 2, 3, 4, 5), Seed: 220 + seed})
			mbMakeLeader(t, c, 1)
			tap := mbInstallTap(c)
			if err := c.ProposeConfChange(1, mbCC(raftpb.TransitionAuto, mbRemove(5))); err != nil {
				t.Fatal(err)
			}
			c.Stabilize()
			if !mbHasConf(c, 1, mbConf(mbIDs(1, 2, 3, 4), nil)) {
				t.Fatalf("removal of 5 not in effect: %v", c.R(1).G.ConfState())
			}
			// From here the leader sends 5 nothing, whatever happens.
			tap.msgs = nil
			for i := 0; i < 3*mbET; i++ {
				if err := c.Propose(1, mbPut(i)); err != nil {
					t.Fatal(err)
				}
				c.TickAll()
				c.Stabilize()
			}
			if c.Leader() != 1 {
				t.Fatalf("leader changed to %d", c.Leader())
			}
			if n := tap.count(func(m *raftpb.Message) bool { return m.From == 1 && m.To == 5 }); n > 0 {
				t.Fatalf("leader sent %d messages to removed follower 5", n)
			}
			// Remove the leader itself.
			rl := mbLast(c, 1) + 1
			if err := c.ProposeConfChange(1, mbCC(raftpb.TransitionAuto, mbRemove(1))); err != nil {
				t.Fatal(err)
			}
			c.Stabilize()
			rest := mbConf(mbIDs(2, 3, 4), nil)
			// It hands leadership to a voter and, not hearing from the
			// members any more, steps down within an election timeout.
			if _, ok := mbTickUntil(c, 3*mbET, func() bool { return mbStatus(c, 1).Role != group.Leader }); !ok ||
				!mbHasConf(c, 1, rest) {
				t.Fatalf("removed leader is %v with config %v", mbStatus(c, 1).Role, c.R(1).G.ConfState())
			}
			// It told the others the removal committed before stepping down.
			for _, id := range mbIDs(2, 3, 4) {
				if got := mbCommit(c, id); got < rl || !mbHasConf(c, id, rest) {
					t.Fatalf("replica %d commit %d (removal at %d) config %v", id, got, rl, c.R(id).G.ConfState())
				}
			}
			tap.msgs = nil
			n, ok := mbTickUntil(c, 4*mbET, func() bool { return c.Leader() != 0 })
			if !ok {
				t.Fatalf("no leader among 2,3,4 within %d ticks", 4*mbET)
			}
			lead := c.Leader()
			if !slices.Contains(rest.Voters, lead) {
				t.Fatalf("leader %d is not a member", lead)
			}
			t.Logf("leader %d after %d ticks", lead, n)
			for i := 0; i < 3*mbET; i++ {
				if err := c.Propose(lead, mbPut(100+i)); err != nil {
					t.Fatal(err)
				}
				c.TickAll()
				c.Stabilize()
				for _, id := range rest.Voters {
					l := mbStatus(c, id).Lead
					if l != 0 && !slices.Contains(rest.Voters, l) {
						t.Fatalf("tick %d: replica %d names non-member %d as leader", i, id, l)
					}
				}
			}
			if n := tap.count(func(m *raftpb.Message) bool { return m.From == 1 && mbIsCampaign(m) }); n > 0 {
				t.Fatalf("removed leader 1 campaigned (%d requests)", n)
			}
			mbCheck(t, c)
		})
	}
}

// S23: no fast commit for a batch that changes the quorum. Single voter {1}
// proposes [normal entries..., enter joint to add voters 2 and 3] while 2
// and 3 are unreachable. The batch commits only once durable on 1 (under
// {1}, the membership it is proposed in); from the applied joint
// configuration on, every entry needs majorities of {1,2,3} and {1}.
func TestS23NoFastCommitForQuorumChangingBatch(t *testing.T) {
	c := mbNew(t, Options{Voters: mbIDs(1), Spare: mbIDs(2, 3), Seed: 23})
	if lead := mbElect(t, c, 5*mbET); lead != 1 {
		t.Fatalf("leader %d", lead)
	}
	c.Net.Isolate(2, c.IDs)
	c.Net.Isolate(3, c.IDs)
	g := c.R(1).G
	base := mbLast(c, 1)
	if mbCommit(c, 1) != base {
		t.Fatalf("commit %d last %d", mbCommit(c, 1), base)
	}
	if err := g.Propose([]raftpb.Entry{{Data: mbPut(1)}, {Data: mbPut(2)}, {Data: mbPut(3)}}); err != nil {
		t.Fatal(err)
	}
	if err := g.ProposeConfChange(0, mbCC(raftpb.TransitionAuto, mbVoter(2), mbVoter(3))); err != nil {
		t.Fatal(err)
	}
	k := base + 4
	if last := mbLast(c, 1); last != k {
		t.Fatalf("batch should end at %d: last %d", k, last)
	}
	// Nothing is durable yet: the leader's own append is no vote.
	if got := mbCommit(c, 1); got != base {
		t.Fatalf("commit %d before the batch is durable (base %d)", got, base)
	}
	c.Process(1)
	c.Stabilize()
	joint := raftpb.ConfState{Voters: mbIDs(1, 2, 3), VotersOutgoing: mbIDs(1), AutoLeave: true}
	if got := mbCommit(c, 1); got != k || !mbHasConf(c, 1, joint) {
		t.Fatalf("commit %d config %v; want the batch (to %d) committed under {1} and %v applied",
			got, g.ConfState(), k, joint)
	}
	if err := c.Propose(1, mbPut(4)); err != nil {
		t.Fatal(err)
	}
	c.Stabilize()
	// Heartbeats only (fewer ticks than check-quorum needs): nothing after
	// the batch commits with node 1 alone.
	for i := 0; i < mbET-1; i++ {
		c.TickAll()
		c.Stabilize()
		if got := mbCommit(c, 1); got != k {
			t.Fatalf("tick %d: commit %d > %d with only node 1 of {1,2,3}&&{1}", i, got, k)
		}
	}
	// A slow follower arrives: 2 of {1,2,3} and 1 of {1}.
	c.Net.Heal()
	c.Net.Isolate(3, c.IDs)
	final := mbConf(mbIDs(1, 2, 3), nil)
	if _, ok := mbTickUntil(c, 3*mbET, func() bool {
		return mbHasConf(c, 1, final) && mbCommit(c, 1) >= k+2 && mbCaughtUp(c, 2)
	}); !ok {
		t.Fatalf("not completed with {1,2}: commit %d config %v", mbCommit(c, 1), g.ConfState())
	}
	c.Net.Heal()
	if _, ok := mbTickUntil(c, 3*mbET, func() bool { return mbHasConf(c, 3, final) && mbCaughtUp(c, 3) }); !ok {
		t.Fatalf("3 did not catch up: %v", c.R(3).G.ConfState())
	}
	mbCheck(t, c)
}

// S23/S18 liveness: same batch, but 2 and 3 (fresh replicas that hold no
// membership yet) stay away long enough for check-quorum to depose node 1.
// Once everything is healed the group must elect a leader and finish the
// change within the liveness bound of TESTING.md (10 election timeouts).
func TestS23JointAddOfFreshVotersLiveAfterStepDown(t *testing.T) {
	c := mbNew(t, Options{Voters: mbIDs(1), Spare: mbIDs(2, 3), Seed: 231})
	if lead := mbElect(t, c, 5*mbET); lead != 1 {
		t.Fatalf("leader %d", lead)
	}
	c.Net.Isolate(2, c.IDs)
	c.Net.Isolate(3, c.IDs)
	if err := c.ProposeConfChange(1, mbCC(raftpb.TransitionAuto, mbVoter(2), mbVoter(3))); err != nil {
		t.Fatal(err)
	}
	c.Stabilize()
	if cs := c.R(1).G.ConfState(); !cs.Joint() {
		t.Fatalf("config %v", cs)
	}
	for i := 0; i < 3*mbET; i++ {
		c.TickAll()
		c.Stabilize()
	}
	t.Logf("node 1 is %v after %d ticks without a quorum of {1,2,3}", mbStatus(c, 1).Role, 3*mbET)
	c.Net.Heal()
	final := mbConf(mbIDs(1, 2, 3), nil)
	if _, ok := mbTickUntil(c, 10*mbET, func() bool {
		lead := c.Leader()
		return lead != 0 && mbHasConf(c, lead, final)
	}); !ok {
		t.Fatalf("no leader within %d ticks after healing: node 1 %v %v, node 2 config %v, node 3 config %v",
			10*mbET, mbStatus(c, 1).Role, c.R(1).G.ConfState(), c.R(2).G.ConfState(), c.R(3).G.ConfState())
	}
	mbCheck(t, c)
}

// S24(a): a transfer to a learner is refused at once.
func TestS24aTransferToLearnerRefused(t *testing.T) {
	c := mbNew(t, Options{Voters: mbIDs(1, 2, 3), Learners: mbIDs(4), Seed: 24})
	lead := mbElect(t, c, 10*mbET)
	if err := c.R(lead).G.TransferLeader(4); !errors.Is(err, group.ErrTransferTarget) {
		t.Fatalf("transfer to learner: %v, want ErrTransferTarget", err)
	}
	if err := c.R(lead).G.TransferLeader(9); !errors.Is(err, group.ErrTransferTarget) {
		t.Fatalf("transfer to a non-member: %v, want ErrTransferTarget", err)
	}
	if err := c.Propose(lead, mbPut(1)); err != nil {
		t.Fatalf("proposal after refused transfer: %v", err)
	}
	c.Stabilize()
	mbCheck(t, c)
}

// S24(b,c,d): a voter T that has not applied its promotion refuses
// TimeoutNow and the leader takes writes again at once; retried after T
// applied it, the transfer completes without pre-vote; a transfer to a dead
// target is abandoned after an election timeout of leader ticks.
func TestS24TransferTargetMustBeReady(t *testing.T) {
	c := mbNew(t, Options{Voters: mbIDs(1, 2, 3), Spare: mbIDs(4), Seed: 241})
	mbMakeLeader(t, c, 1)
	mbAddLearner(t, c, 4)
	g := c.R(1).G
	p := mbLast(c, 1) + 1
	tap := mbInstallTap(c)
	// 4 gets the promotion entry but never the commit index that covers it.
	tap.drop = func(m *raftpb.Message) bool {
		return m.From == 1 && m.To == 4 && (m.Type == raftpb.MsgApp || m.Type == raftpb.MsgHeartbeat) && m.Commit >= p
	}
	if err := c.ProposeConfChange(1, mbCC(raftpb.TransitionAuto, mbVoter(4))); err != nil {
		t.Fatal(err)
	}
	c.Stabilize()
	if cs := g.ConfState(); !slices.Contains(cs.Voters, 4) {
		t.Fatalf("leader has not applied the promotion: %v", cs)
	}
	if cs := c.R(4).G.ConfState(); !slices.Contains(cs.Learners, 4) || mbLast(c, 4) < p {
		t.Fatalf("4 should hold entry %d unapplied: config %v last %d", p, cs, mbLast(c, 4))
	}
	if pr := g.Status().Progress[4]; pr.Match != mbLast(c, 1) {
		t.Fatalf("4 match %d, leader last %d", pr.Match, mbLast(c, 1))
	}
	// (b)
	term4 := mbStatus(c, 4).HardState.Term
	if err := g.TransferLeader(4); err != nil {
		t.Fatalf("transfer to 4: %v", err)
	}
	if err := g.Propose([]raftpb.Entry{{Data: mbPut(1)}}); !errors.Is(err, group.ErrProposalDropped) {
		t.Fatalf("proposal during the transfer: %v, want ErrProposalDropped", err)
	}
	c.Process(1)
	c.Stabilize() // TimeoutNow to 4, its refusal back; no ticks
	if n := tap.count(func(m *raftpb.Message) bool { return m.From == 4 && m.Type == raftpb.MsgTimeoutNowResp && m.Reject }); n != 1 {
		t.Fatalf("4 sent %d refusals", n)
	}
	if st := mbStatus(c, 4); st.Role != group.Follower || st.HardState.Term != term4 {
		t.Fatalf("4 campaigned without having applied its promotion: %v term %d", st.Role, st.HardState.Term)
	}
	if st := g.BasicStatus(); st.Role != group.Leader || st.LeadTransferee != 0 {
		t.Fatalf("leader state after refusal: %v transferee %d", st.Role, st.LeadTransferee)
	}
	if err := c.Propose(1, mbPut(2)); err != nil {
		t.Fatalf("proposal right after the refusal: %v", err)
	}
	c.Stabilize()
	// (c) 4 learns the commit and applies its promotion; pre-vote is on.
	tap.drop = nil
	if _, ok := mbTickUntil(c, 2*mbET, func() bool {
		cs := c.R(4).G.ConfState()
		return cs.IsVoter(4) && mbCaughtUp(c, 4)
	}); !ok {
		t.Fatalf("4 did not apply its promotion: %v", c.R(4).G.ConfState())
	}
	tap.msgs = nil
	if err := g.TransferLeader(4); err != nil {
		t.Fatalf("retried transfer: %v", err)
	}
	c.Process(1)
	c.Stabilize() // no ticks: TimeoutNow, the campaign and the votes
	if c.Leader() != 4 {
		t.Fatalf("retried transfer did not complete: leader %d", c.Leader())
	}
	if n := tap.count(func(m *raftpb.Message) bool { return m.From == 4 && m.Type == raftpb.MsgPreVote }); n > 0 {
		t.Fatalf("transfer target ran %d pre-votes", n)
	}
	// (d) transfer to a crashed target.
	c.Crash(3)
	g4 := c.R(4).G
	if err := g4.TransferLeader(3); err != nil {
		t.Fatalf("transfer to 3: %v", err)
	}
	c.Process(4)
	c.Stabilize()
	if err := g4.Propose([]raftpb.Entry{{Data: mbPut(3)}}); !errors.Is(err, group.ErrProposalDropped) {
		t.Fatalf("proposal during transfer to dead 3: %v, want ErrProposalDropped", err)
	}
	accepted := -1
	for i := 1; i <= mbET; i++ {
		c.TickAll()
		c.Stabilize()
		if c.Leader() != 4 {
			t.Fatalf("tick %d: leader changed to %d", i, c.Leader())
		}
		if err := c.Propose(4, mbPut(10+i)); err == nil {
			accepted = i
			break
		} else if !errors.Is(err, group.ErrProposalDropped) {
			t.Fatal(err)
		}
	}
	if accepted < 0 {
		t.Fatalf("leader still refuses writes %d ticks after a transfer to a dead target", mbET)
	}
	t.Logf("writes accepted %d leader ticks after the transfer to dead 3", accepted)
	c.Stabilize()
	mbCheck(t, c)
}

// mbEngineTick ticks like the engine: quiesced replicas are skipped, and an
// idle leader is asked to quiesce.
func mbEngineTick(c *Cluster) {
	for _, id := range c.IDs {
		r := c.R(id)
		if r.Down || r.G.Quiesced() {
			continue
		}
		c.Tick(id)
	}
	c.Stabilize()
	if lead := c.Leader(); lead != 0 && c.R(lead).G.Quiesce() {
		c.Process(lead)
		c.Stabilize()
	}
}

// S47: a joint change demotes the leader to learner while the followers
// are quiesced: a voter leader exists again within bounded time.
func TestS47JointDemotesQuiescedLeader(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			c := mbNew(t, Options{Voters: mbIDs(1, 2, 3), Learners: mbIDs(4), Seed: 470 + seed})
			mbMakeLeader(t, c, 1)
			for i := 0; i < 3; i++ {
				if err := c.Propose(1, mbPut(i)); err != nil {
					t.Fatal(err)
				}
			}
			quiet := func() bool {
				for _, id := range c.IDs {
					if !c.R(id).G.Quiesced() {
						return false
					}
				}
				return true
			}
			for i := 0; i < 3*mbET && !quiet(); i++ {
				mbEngineTick(c)
			}
			if !quiet() {
				t.Fatalf("shard did not quiesce")
			}
			cc := mbCC(raftpb.TransitionAuto, mbLearner(1), mbVoter(4))
			if err := c.ProposeConfChange(1, cc); err != nil {
				t.Fatal(err)
			}
			want := mbConf(mbIDs(2, 3, 4), mbIDs(1))
			ticks := -1
			for i := 0; i <= 4*mbET; i++ {
				if i > 0 {
					mbEngineTick(c)
				} else {
					c.Stabilize()
				}
				lead := c.Leader()
				if lead != 0 && lead != 1 && mbHasConf(c, lead, want) {
					ticks = i
					break
				}
			}
			if ticks < 0 {
				var s []string
				for _, id := range c.IDs {
					st := mbStatus(c, id)
					s = append(s, fmt.Sprintf("%d:%v lead=%d quiesced=%v %v", id, st.Role, st.Lead, st.Quiesced, c.R(id).G.ConfState()))
				}
				t.Fatalf("no voter leader within %d ticks: %v", 4*mbET, s)
			}
			t.Logf("new leader %d after %d ticks", c.Leader(), ticks)
			if st := mbStatus(c, 1); st.Role != group.Follower || !mbHasConf(c, 1, want) {
				t.Fatalf("demoted leader: %v %v", st.Role, c.R(1).G.ConfState())
			}
			// And the shard keeps working (and may quiesce again).
			lead := c.Leader()
			if err := c.Propose(lead, mbPut(9)); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 2*mbET; i++ {
				mbEngineTick(c)
			}
			if c.Leader() != lead {
				t.Fatalf("leader changed %d -> %d", lead, c.Leader())
			}
			mbCheck(t, c)
		})
	}
}

// A learner never counts toward commit; once promoted it does.
func TestLearnerCountsOnlyAfterPromotion(t *testing.T) {
	c := mbNew(t, Options{Voters: mbIDs(1, 2, 3), Spare: mbIDs(4, 5), Seed: 4})
	mbMakeLeader(t, c, 1)
	mbAddLearner(t, c, 4)
	mbAddLearner(t, c, 5)
	g := c.R(1).G
	// Only the leader and learners 4 and 5 connected (three of the five
	// members, one of the three voters): no commit.
	c.Net.Isolate(2, c.IDs)
	c.Net.Isolate(3, c.IDs)
	before := mbCommit(c, 1)
	idx := mbLast(c, 1) + 1
	if err := c.Propose(1, mbPut(1)); err != nil {
		t.Fatal(err)
	}
	c.Stabilize()
	for _, id := range mbIDs(4, 5) {
		if pr := g.Status().Progress[id]; pr.Match < idx {
			t.Fatalf("learner %d did not acknowledge %d (match %d)", id, idx, pr.Match)
		}
	}
	if got := mbCommit(c, 1); got != before {
		t.Fatalf("commit %d -> %d with the leader and learners only", before, got)
	}
	c.Net.Heal()
	if _, ok := mbTickUntil(c, mbET, func() bool { return mbCommit(c, 1) >= idx }); !ok {
		t.Fatalf("entry %d not committed after healing", idx)
	}
	// The learners partitioned: the voters commit without them.
	c.Net.Isolate(4, c.IDs)
	c.Net.Isolate(5, c.IDs)
	idx = mbLast(c, 1) + 1
	if err := c.Propose(1, mbPut(2)); err != nil {
		t.Fatal(err)
	}
	c.Stabilize()
	if mbCommit(c, 1) < idx {
		t.Fatalf("voters did not commit %d without learner 4", idx)
	}
	c.Net.Heal()
	// Promote 4.
	if err := c.ProposeConfChange(1, mbCC(raftpb.TransitionAuto, mbVoter(4))); err != nil {
		t.Fatal(err)
	}
	all := mbConf(mbIDs(1, 2, 3, 4), mbIDs(5))
	if _, ok := mbTickUntil(c, 2*mbET, func() bool { return mbHasConf(c, 1, all) && mbHasConf(c, 4, all) }); !ok {
		t.Fatalf("promotion not applied: %v / %v", g.ConfState(), c.R(4).G.ConfState())
	}
	// Voter 3 down: 1, 2 and the new voter 4 are three of four.
	c.Crash(3)
	idx = mbLast(c, 1) + 1
	if err := c.Propose(1, mbPut(3)); err != nil {
		t.Fatal(err)
	}
	c.Stabilize()
	if mbCommit(c, 1) < idx {
		t.Fatalf("entry %d not committed by 1, 2 and promoted 4", idx)
	}
	// Without 4 as well, two of four is no quorum (learner 5 still
	// acknowledging): 4 really was counted.
	c.Net.Isolate(4, c.IDs)
	idx = mbLast(c, 1) + 1
	if err := c.Propose(1, mbPut(4)); err != nil {
		t.Fatal(err)
	}
	c.Stabilize()
	if mbCommit(c, 1) >= idx {
		t.Fatalf("entry %d committed by 1 and 2 of four voters", idx)
	}
	c.Net.Heal()
	if _, ok := mbTickUntil(c, mbET, func() bool { return mbCommit(c, 1) >= idx }); !ok {
		t.Fatalf("entry %d not committed after 4 returned", idx)
	}
	mbCheck(t, c)
}

// TransitionJointExplicit stays joint until an empty ConfChange leaves.
func TestJointExplicitNeedsExplicitLeave(t *testing.T) {
	c := mbNew(t, Options{Voters: mbIDs(1, 2, 3), Spare: mbIDs(4, 5), Seed: 5})
	mbMakeLeader(t, c, 1)
	mbAddLearner(t, c, 4)
	j := mbLast(c, 1) + 1
	if err := c.ProposeConfChange(1, mbCC(raftpb.TransitionJointExplicit, mbVoter(4), mbRemove(3))); err != nil {
		t.Fatal(err)
	}
	c.Stabilize()
	joint := raftpb.ConfState{Voters: mbIDs(1, 2, 4), VotersOutgoing: mbIDs(1, 2, 3)}
	for i := 0; i < 5*mbET; i++ {
		if err := c.Propose(1, mbPut(i)); err != nil {
			t.Fatal(err)
		}
		c.TickAll()
		c.Stabilize()
		for _, id := range mbIDs(1, 2, 3, 4) {
			if !mbHasConf(c, id, joint) {
				t.Fatalf("tick %d: replica %d config %v, want %v", i, id, c.R(id).G.ConfState(), joint)
			}
		}
	}
	ents, err := c.R(1).Log.Entries(j+1, mbLast(c, 1)+1, 1<<62)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Type == raftpb.EntryConfChange {
			t.Fatalf("a membership entry at %d nobody proposed", e.Index)
		}
	}
	// No other change while joint.
	if err := c.ProposeConfChange(1, mbCC(raftpb.TransitionAuto, mbLearner(5))); !errors.Is(err, group.ErrMembershipChangeInProgress) {
		t.Fatalf("change while joint: %v, want ErrMembershipChangeInProgress", err)
	}
	if err := c.ProposeConfChange(1, raftpb.ConfChange{}); err != nil {
		t.Fatalf("leave: %v", err)
	}
	c.Stabilize()
	final := mbConf(mbIDs(1, 2, 4), nil)
	for _, id := range mbIDs(1, 2, 4) {
		if !mbHasConf(c, id, final) {
			t.Fatalf("replica %d config %v, want %v", id, c.R(id).G.ConfState(), final)
		}
	}
	// Leaving when not joint is refused.
	if err := c.ProposeConfChange(1, raftpb.ConfChange{}); err == nil {
		t.Fatalf("leave outside a joint configuration accepted")
	}
	mbCheck(t, c)
}

// mbChangeMembership moves the group to exactly voters/learners the way a
// ChangeMembership call would: new nodes join as learners first, then one
// explicit joint change, then the explicit leave. It checks the group stays
// joint until the leave is proposed.
func mbChangeMembership(t *testing.T, c *Cluster, voters, learners []raftpb.NodeID) {
	t.Helper()
	cur := c.R(mbElect(t, c, 10*mbET)).G.ConfState()
	for _, id := range append(slices.Clone(voters), learners...) {
		if !cur.IsMember(id) {
			mbAddLearner(t, c, id)
		}
	}
	lead := mbElect(t, c, 10*mbET)
	cur = c.R(lead).G.ConfState()
	var chs []raftpb.ConfChangeSingle
	for _, id := range voters {
		if !slices.Contains(cur.Voters, id) {
			chs = append(chs, mbVoter(id))
		}
	}
	for _, id := range learners {
		if !slices.Contains(cur.Learners, id) {
			chs = append(chs, mbLearner(id))
		}
	}
	for _, id := range append(slices.Clone(cur.Voters), cur.Learners...) {
		if !slices.Contains(voters, id) && !slices.Contains(learners, id) {
			chs = append(chs, mbRemove(id))
		}
	}
	if err := c.ProposeConfChange(lead, mbCC(raftpb.TransitionJointExplicit, chs...)); err != nil {
		t.Fatalf("enter joint %v: %v", chs, err)
	}
	if _, ok := mbTickUntil(c, 2*mbET, func() bool {
		l := c.Leader()
		if l == 0 {
			return false
		}
		cs := c.R(l).G.ConfState()
		return cs.Joint()
	}); !ok {
		t.Fatalf("joint configuration not applied")
	}
	for i := 0; i < 2*mbET; i++ {
		c.TickAll()
		c.Stabilize()
		if l := c.Leader(); l != 0 {
			if cs := c.R(l).G.ConfState(); !cs.Joint() || cs.AutoLeave {
				t.Fatalf("explicit joint configuration left on its own: %v", cs)
			}
		}
	}
	lead = mbElect(t, c, 10*mbET)
	if err := c.ProposeConfChange(lead, raftpb.ConfChange{}); err != nil {
		t.Fatalf("leave joint: %v", err)
	}
	want := mbConf(slices.Sorted(slices.Values(voters)), slices.Sorted(slices.Values(learners)))
	if len(want.Learners) == 0 {
		want.Learners = nil
	}
	if _, ok := mbTickUntil(c, 6*mbET, func() bool {
		l := c.Leader()
		if l == 0 || !mbHasConf(c, l, want) {
			return false
		}
		for _, id := range append(slices.Clone(voters), learners...) {
			if !mbHasConf(c, id, want) || !mbCaughtUp(c, id) {
				return false
			}
		}
		return true
	}); !ok {
		t.Fatalf("not at %v: leader %d", want, c.Leader())
	}
}

// A sequence of ChangeMembership-like changes through explicit joint
// configurations: promote and demote, replace the leader, bring a demoted
// voter back.
func TestJointChangeMembershipSequence(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			c := mbNew(t, Options{Voters: mbIDs(1, 2, 3), Spare: mbIDs(4, 5), Seed: 300 + seed})
			mbMakeLeader(t, c, 1)
			mbChangeMembership(t, c, mbIDs(1, 2, 4), mbIDs(3))
			mbChangeMembership(t, c, mbIDs(2, 4, 5), mbIDs(3)) // removes leader 1
			if st := mbStatus(c, 1); st.Role == group.Leader {
				t.Fatalf("removed node 1 still leads")
			}
			mbChangeMembership(t, c, mbIDs(2, 3, 4), nil)
			lead := c.Leader()
			idx := mbLast(c, lead) + 1
			if err := c.Propose(lead, mbPut(1)); err != nil {
				t.Fatal(err)
			}
			c.Stabilize()
			if mbCommit(c, lead) < idx {
				t.Fatalf("final group does not commit")
			}
			mbCheck(t, c)
		})
	}
}

// A leader that demotes itself hands leadership to a voter instead of just
// stepping down (simulator seed 174). Here the followers that acked leaving
// the joint configuration never hear that it committed, and the leader's
// log is longer than theirs: were it to step down, they would still need
// its vote for the outgoing half (3 is down), it would refuse them, and
// as a learner it would never campaign — no leader ever.
func TestDemotedLeaderHandsOff(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			c := mbNew(t, Options{Voters: mbIDs(1, 2, 3), Learners: mbIDs(4), Seed: 1740 + seed})
			mbMakeLeader(t, c, 1)
			c.Crash(3)
			var leaveIdx raftpb.Index
			holding := true
			c.Net.Filter = func(m *raftpb.Message) bool {
				if m.From != 1 || !holding {
					return true
				}
				for _, e := range m.Entries {
					if e.Type == raftpb.EntryConfChange && leaveIdx == 0 {
						var cc raftpb.ConfChange
						if err := cc.Unmarshal(e.Data); err == nil && cc.LeaveJoint() {
							leaveIdx = e.Index
						}
					}
				}
				if leaveIdx == 0 {
					return true
				}
				// Hold back the news that leaving committed, and every
				// entry after it.
				if m.Commit >= leaveIdx {
					return false
				}
				for _, e := range m.Entries {
					if e.Index > leaveIdx {
						return false
					}
				}
				return true
			}
			if err := c.ProposeConfChange(1, mbCC(raftpb.TransitionAuto, mbLearner(1), mbVoter(4))); err != nil {
				t.Fatal(err)
			}
			extra := false
			for i := 0; i < 1000; i++ {
				c.ProcessAll()
				for _, id := range c.IDs {
					c.Flush(id)
				}
				c.ProcessAll()
				if leaveIdx != 0 && !extra {
					extra = true
					for j := 0; j < 3; j++ {
						if err := c.Propose(1, mbPut(j)); err != nil {
							t.Fatal(err)
						}
					}
					continue
				}
				if c.Net.Pending() == 0 {
					break
				}
				c.Deliver()
			}
			if leaveIdx == 0 || !extra {
				t.Fatal("the leader never proposed leaving the joint configuration")
			}
			want := mbConf(mbIDs(2, 3, 4), mbIDs(1))
			if !mbHasConf(c, 1, want) || mbLast(c, 1) <= leaveIdx {
				t.Fatalf("leader 1: config %v last %d (leave at %d)", c.R(1).G.ConfState(), mbLast(c, 1), leaveIdx)
			}
			for _, id := range mbIDs(2, 4) {
				if mbCommit(c, id) >= leaveIdx {
					t.Fatalf("replica %d learned the commit of %d too early", id, leaveIdx)
				}
			}
			holding = false
			n, ok := mbTickUntil(c, 4*mbET, func() bool {
				l := c.Leader()
				return l == 2 || l == 4
			})
			if !ok {
				t.Fatalf("no leader among 2 and 4 within %d ticks (1 is %v)", 4*mbET, mbStatus(c, 1).Role)
			}
			lead := c.Leader()
			if !mbHasConf(c, lead, want) {
				t.Fatalf("new leader %d has config %v", lead, c.R(lead).G.ConfState())
			}
			if err := c.Propose(lead, mbPut(9)); err != nil {
				t.Fatal(err)
			}
			c.Stabilize()
			t.Logf("leader %d after %d ticks", lead, n)
			mbCheck(t, c)
		})
	}
}

// A learner cannot campaign to find its leader, so it calls it (MsgWake)
// after an election timeout of silence. Here the learner missed every
// message announcing the last commit index, including the quiesce, and
// the shard quiesced without it (simulator seed 5): its call wakes the
// leader, which tells it the commit index; the shard then quiesces again.
func TestLearnerMissedQuiesceCallsLeader(t *testing.T) {
	c := mbNew(t, Options{Voters: mbIDs(1, 2, 3), Learners: mbIDs(4), Seed: 55})
	mbMakeLeader(t, c, 1)
	c.Stabilize()
	holding := true
	var last raftpb.Index
	c.Net.Filter = func(m *raftpb.Message) bool {
		if !holding || m.From != 1 || m.To != 4 {
			return true
		}
		return m.Type != raftpb.MsgQuiesce && m.Commit < last
	}
	last = mbLast(c, 1) + 1
	if err := c.Propose(1, mbPut(1)); err != nil {
		t.Fatal(err)
	}
	quiet := func(ids ...raftpb.NodeID) bool {
		for _, id := range ids {
			if !c.R(id).G.Quiesced() {
				return false
			}
		}
		return true
	}
	for i := 0; i < 3*mbET && !quiet(1, 2, 3); i++ {
		mbEngineTick(c)
	}
	if !quiet(1, 2, 3) || quiet(4) || mbCommit(c, 4) >= last || mbCommit(c, 1) < last {
		t.Fatalf("setup: quiesced %v %v %v %v, commit at 4 %d, at 1 %d, last %d",
			quiet(1), quiet(2), quiet(3), quiet(4), mbCommit(c, 4), mbCommit(c, 1), last)
	}
	holding = false
	n := 0
	for ; n < 3*mbET && mbCommit(c, 4) < last; n++ {
		mbEngineTick(c)
	}
	if mbCommit(c, 4) < last {
		t.Fatalf("learner commit %d, want %d", mbCommit(c, 4), last)
	}
	for i := 0; i < 3*mbET && !quiet(1, 2, 3, 4); i++ {
		mbEngineTick(c)
	}
	if !quiet(1, 2, 3, 4) {
		t.Fatalf("shard did not quiesce again")
	}
	t.Logf("learner caught up %d ticks after the call could go through", n)
	mbCheck(t, c)
}

// A learner restarted while its shard is quiesced knows no leader; its
// call goes to every voter and the (woken) leader answers.
func TestRestartedLearnerInQuiescedShardFindsLeader(t *testing.T) {
	c := mbNew(t, Options{Voters: mbIDs(1, 2, 3), Learners: mbIDs(4), Seed: 56})
	mbMakeLeader(t, c, 1)
	if err := c.Propose(1, mbPut(1)); err != nil {
		t.Fatal(err)
	}
	quiet := func() bool {
		for _, id := range c.IDs {
			if !c.R(id).G.Quiesced() {
				return false
			}
		}
		return true
	}
	for i := 0; i < 3*mbET && !quiet(); i++ {
		mbEngineTick(c)
	}
	if !quiet() {
		t.Fatal("setup: shard did not quiesce")
	}
	c.Crash(4)
	if err := c.Restart(4); err != nil {
		t.Fatal(err)
	}
	if l := mbStatus(c, 4).Lead; l != 0 {
		t.Fatalf("setup: restarted learner knows leader %d", l)
	}
	n := 0
	for ; n < 3*mbET && mbStatus(c, 4).Lead != 1; n++ {
		mbEngineTick(c)
	}
	if st := mbStatus(c, 4); st.Lead != 1 || st.HardState.Commit != mbCommit(c, 1) {
		t.Fatalf("restarted learner: lead %d commit %d, leader commit %d", st.Lead, st.HardState.Commit, mbCommit(c, 1))
	}
	t.Logf("learner found the leader after %d ticks", n)
	mbCheck(t, c)
}
