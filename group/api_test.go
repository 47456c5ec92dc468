package group_test

import (
	"errors"
	"testing"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/group/grouptest"
	"github.com/shardd/shardd/raftpb"
)

func elect(t *testing.T, opts grouptest.Options) (*grouptest.Cluster, raftpb.NodeID) {
	t.Helper()
	if opts.Seed == 0 {
		opts.Seed = 3
	}
	c, err := grouptest.NewCluster(opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200 && c.Leader() == 0; i++ {
		c.TickAll()
		c.Stabilize()
	}
	if c.Leader() == 0 {
		t.Fatal("no leader")
	}
	c.TickAll()
	c.Stabilize()
	return c, c.Leader()
}

func follower(c *grouptest.Cluster, lead raftpb.NodeID) raftpb.NodeID {
	for _, id := range c.IDs {
		if id != lead {
			return id
		}
	}
	return 0
}

func TestInvalidMessagesRejectedWithoutChange(t *testing.T) {
	c, lead := elect(t, grouptest.Options{Voters: []raftpb.NodeID{1, 2, 3}})
	f := follower(c, lead)
	g := c.R(f).G
	st := g.BasicStatus()
	term := st.HardState.Term
	base := raftpb.Message{Shard: 1, From: lead, To: f, Term: term}
	with := func(mod func(m *raftpb.Message)) raftpb.Message {
		m := base
		m.Type = raftpb.MsgHeartbeat
		mod(&m)
		return m
	}
	for name, m := range map[string]raftpb.Message{
		"unknown type":      with(func(m *raftpb.Message) { m.Type = 99 }),
		"invalid type":      with(func(m *raftpb.Message) { m.Type = raftpb.MsgInvalid }),
		"other shard":       with(func(m *raftpb.Message) { m.Shard = 2 }),
		"other recipient":   with(func(m *raftpb.Message) { m.To = 9 }),
		"no sender":         with(func(m *raftpb.Message) { m.From = 0 }),
		"from itself":       with(func(m *raftpb.Message) { m.From = f }),
		"term zero":         with(func(m *raftpb.Message) { m.Term = 0 }),
		"term max":          with(func(m *raftpb.Message) { m.Term = 1<<64 - 1 }),
		"index max":         with(func(m *raftpb.Message) { m.Type = raftpb.MsgApp; m.Index = 1 << 63 }),
		"prop with term":    with(func(m *raftpb.Message) { m.Type = raftpb.MsgProp }),
		"log term > term":   with(func(m *raftpb.Message) { m.Type = raftpb.MsgApp; m.LogTerm = term + 1 }),
		"entries on beat":   with(func(m *raftpb.Message) { m.Entries = []raftpb.Entry{{Index: 1, Term: 1}} }),
		"snapshot on beat":  with(func(m *raftpb.Message) { m.Snapshot = &raftpb.SnapshotMeta{Index: 5, Term: 1} }),
		"snap without meta": with(func(m *raftpb.Message) { m.Type = raftpb.MsgSnap }),
		"snap index 0":      with(func(m *raftpb.Message) { m.Type = raftpb.MsgSnap; m.Snapshot = &raftpb.SnapshotMeta{Term: 1} }),
		"snap term > msg": with(func(m *raftpb.Message) {
			m.Type = raftpb.MsgSnap
			m.Snapshot = &raftpb.SnapshotMeta{Index: 9, Term: term + 1}
		}),
		"snap no voters": with(func(m *raftpb.Message) {
			m.Type = raftpb.MsgSnap
			m.Snapshot = &raftpb.SnapshotMeta{Index: 99, Term: 1}
		}),
		"append gap": with(func(m *raftpb.Message) {
			m.Type = raftpb.MsgApp
			m.Index = 1
			m.LogTerm = 1
			m.Entries = []raftpb.Entry{{Index: 3, Term: 1}}
		}),
		"append term down": with(func(m *raftpb.Message) {
			m.Type = raftpb.MsgApp
			m.Index = 1
			m.LogTerm = 2
			m.Entries = []raftpb.Entry{{Index: 2, Term: 1}}
		}),
		"append term > msg": with(func(m *raftpb.Message) {
			m.Type = raftpb.MsgApp
			m.Index = 1
			m.LogTerm = 1
			m.Entries = []raftpb.Entry{{Index: 2, Term: term + 1}}
		}),
		"append bad type": with(func(m *raftpb.Message) {
			m.Type = raftpb.MsgApp
			m.Index = 1
			m.LogTerm = 1
			m.Entries = []raftpb.Entry{{Index: 2, Term: 1, Type: 7}}
		}),
		"prop bad type":      with(func(m *raftpb.Message) { m.Type = raftpb.MsgProp; m.Term = 0; m.Entries = []raftpb.Entry{{Type: 9}} }),
		"second leader term": with(func(m *raftpb.Message) { m.To = lead; m.From = f }),
	} {
		if name == "second leader term" {
			// A heartbeat to the leader at its own term from a follower.
			if err := c.R(lead).G.Step(m); !errors.Is(err, group.ErrInvalidMessage) {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		if err := g.Step(m); !errors.Is(err, group.ErrInvalidMessage) {
			t.Errorf("%s: got %v, want ErrInvalidMessage", name, err)
		}
		if got := g.BasicStatus(); got != st {
			t.Fatalf("%s changed state: %+v -> %+v", name, st, got)
		}
	}
	// A response from a non-member is reported, and ignored.
	err := c.R(lead).G.Step(raftpb.Message{Type: raftpb.MsgAppResp, Shard: 1, From: 9, To: lead, Term: term, Index: 1})
	if !errors.Is(err, group.ErrStepPeerNotFound) {
		t.Fatalf("response from non-member: %v", err)
	}
	// A heartbeat whose commit is beyond the follower's log is clamped.
	err = g.Step(raftpb.Message{Type: raftpb.MsgHeartbeat, Shard: 1, From: lead, To: f, Term: term, Commit: 1 << 40})
	if err != nil || g.BasicStatus().HardState.Commit > g.BasicStatus().LastIndex {
		t.Fatalf("heartbeat commit beyond log: %v, %+v", err, g.BasicStatus())
	}
}

func TestProposalForwardingAndBackpressure(t *testing.T) {
	c, lead := elect(t, grouptest.Options{Voters: []raftpb.NodeID{1, 2, 3}})
	f := follower(c, lead)
	if err := c.Propose(f, grouptest.EncodePut("fw", "1")); err != nil {
		t.Fatal(err)
	}
	c.Stabilize()
	c.TickAll()
	c.Stabilize()
	if c.R(f).SM.Values["fw"] != "1" {
		t.Fatal("forwarded proposal not applied")
	}
	if err := c.R(f).G.Propose([]raftpb.Entry{{Type: raftpb.EntryConfChange}}); !errors.Is(err, group.ErrInvalidMessage) {
		t.Fatalf("conf change through Propose: %v", err)
	}

	// Forwarding off: dropped at the follower.
	c2, lead2 := elect(t, grouptest.Options{Voters: []raftpb.NodeID{1, 2, 3},
		Configure: func(cfg *group.Config) { cfg.DisableProposalForwarding = true }})
	if err := c2.R(follower(c2, lead2)).G.Propose([]raftpb.Entry{{Data: []byte("x")}}); !errors.Is(err, group.ErrProposalDropped) {
		t.Fatalf("forwarding disabled: %v", err)
	}

	// Backpressure on the uncommitted tail.
	c3, lead3 := elect(t, grouptest.Options{Voters: []raftpb.NodeID{1, 2, 3},
		Configure: func(cfg *group.Config) { cfg.MaxUncommittedEntriesSize = 100 }})
	c3.Net.Isolate(lead3, c3.IDs)
	g := c3.R(lead3).G
	if err := g.Propose([]raftpb.Entry{{Data: make([]byte, 80)}}); err != nil {
		t.Fatal(err)
	}
	if err := g.Propose([]raftpb.Entry{{Data: make([]byte, 80)}}); !errors.Is(err, group.ErrProposalDropped) {
		t.Fatalf("over the uncommitted bound: %v", err)
	}
	if err := g.Propose([]raftpb.Entry{{}}); err != nil {
		t.Fatalf("empty entry refused: %v", err)
	}
	c3.Net.Heal()
	for i := 0; i < 5; i++ {
		c3.TickAll()
		c3.Stabilize()
	}
	if err := g.Propose([]raftpb.Entry{{Data: make([]byte, 80)}}); err != nil {
		t.Fatalf("budget not returned after commit: %v", err)
	}
	for _, c := range []*grouptest.Cluster{c, c2, c3} {
		if err := c.Err(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRequestsWithoutLeader(t *testing.T) {
	c, err := grouptest.NewCluster(grouptest.Options{Voters: []raftpb.NodeID{1, 2, 3}, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	g := c.R(1).G
	if err := g.ReadIndex(1); !errors.Is(err, group.ErrReadDropped) {
		t.Fatalf("read without leader: %v", err)
	}
	if err := g.TransferLeader(2); !errors.Is(err, group.ErrNotLeader) {
		t.Fatalf("transfer without leader: %v", err)
	}
	if err := g.Propose([]raftpb.Entry{{}}); !errors.Is(err, group.ErrProposalDropped) {
		t.Fatalf("propose without leader: %v", err)
	}
	if err := g.Compact(1); !errors.Is(err, group.ErrCompactBeyondApplied) {
		t.Fatalf("compact without snapshot: %v", err)
	}
	if g.Quiesce() {
		t.Fatal("follower quiesced")
	}
	if err := g.Advance(group.Ready{}); err != nil {
		t.Fatalf("advancing an empty Ready: %v", err)
	}
}

func TestAdvanceOutOfOrder(t *testing.T) {
	log := group.NewMemoryLog(raftpb.ConfState{Voters: []raftpb.NodeID{1}})
	g, err := group.New(group.Config{ID: 1, Shard: 1, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Campaign(); err != nil {
		t.Fatal(err)
	}
	rd1 := g.Ready()
	if err := log.Persist(&rd1); err != nil {
		t.Fatal(err)
	}
	if err := g.Advance(rd1); err != nil {
		t.Fatal(err)
	}
	rd2 := g.Ready() // the leader's empty entry
	if err := g.Propose([]raftpb.Entry{{Data: []byte("a")}}); err != nil {
		t.Fatal(err)
	}
	rd3 := g.Ready()
	if err := g.Advance(rd3); !errors.Is(err, group.ErrAdvanceOutOfOrder) {
		t.Fatalf("advance out of order: %v", err)
	}
	for _, rd := range []*group.Ready{&rd2, &rd3} {
		if err := log.Persist(rd); err != nil {
			t.Fatal(err)
		}
		if err := g.Advance(*rd); err != nil {
			t.Fatal(err)
		}
	}
	rd := g.Ready()
	if len(rd.CommittedEntries) == 0 || rd.CommittedEntries[len(rd.CommittedEntries)-1].Index != 3 {
		t.Fatalf("single voter did not commit after its persists: %+v", rd)
	}
	st := g.Status()
	if st.Role != group.Leader || len(st.Progress) != 1 || st.Progress[1].Match != 3 {
		t.Fatalf("status %+v", st)
	}
	if g.ID() != 1 || len(g.ConfState().Voters) != 1 {
		t.Fatal("accessors")
	}
}

// A membership change forwarded by a follower that may not be made now is
// replaced by an empty entry with the same key, so its proposer sees it
// resolved.
func TestForwardedConfChangeRefusedKeepsKey(t *testing.T) {
	c, lead := elect(t, grouptest.Options{Voters: []raftpb.NodeID{1, 2, 3}})
	f := follower(c, lead)
	// Removing every voter is invalid.
	cc := raftpb.ConfChange{Transition: raftpb.TransitionJointImplicit, Changes: []raftpb.ConfChangeSingle{
		{Type: raftpb.RemoveNode, Node: 1}, {Type: raftpb.RemoveNode, Node: 2}, {Type: raftpb.RemoveNode, Node: 3}}}
	if err := c.R(f).G.ProposeConfChange(77, cc); err != nil {
		t.Fatal(err)
	}
	c.Process(f)
	c.Stabilize()
	c.TickAll()
	c.Stabilize()
	if cs := c.R(lead).G.ConfState(); len(cs.Voters) != 3 || cs.Joint() {
		t.Fatalf("invalid change applied: %v", cs)
	}
	// Locally, the leader refuses it with an error.
	if err := c.R(lead).G.ProposeConfChange(1, cc); err == nil {
		t.Fatal("leader accepted a change removing every voter")
	}
	if err := c.R(lead).G.ProposeConfChange(1, raftpb.ConfChange{}); err == nil {
		t.Fatal("leader accepted leaving a joint configuration it is not in")
	}
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
}

// A Ready that only moves the commit index needs no Advance: skipping it
// leaves the order of the others intact, and advancing it anyway is
// harmless. One that records a vote or appends does need it.
func TestCommitOnlyReadyNeedsNoAdvance(t *testing.T) {
	log := group.NewMemoryLog(raftpb.ConfState{Voters: []raftpb.NodeID{1}})
	g, err := group.New(group.Config{ID: 1, Shard: 1, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	persist := func(rd *group.Ready) {
		t.Helper()
		if err := log.Persist(rd); err != nil {
			t.Fatal(err)
		}
		if err := g.Advance(*rd); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Campaign(); err != nil {
		t.Fatal(err)
	}
	vote := g.Ready()
	if !vote.NeedsAdvance() {
		t.Fatal("a Ready recording a vote must be advanced")
	}
	persist(&vote)
	empty := g.Ready()
	if len(empty.Entries) == 0 || !empty.NeedsAdvance() {
		t.Fatalf("the leader's empty entry: %+v, needs advance %v", empty, empty.NeedsAdvance())
	}
	persist(&empty)
	commit := g.Ready()
	if commit.HardState.Commit != 2 || len(commit.CommittedEntries) != 1 || commit.NeedsAdvance() {
		t.Fatalf("commit-only Ready: commit %d, %d committed, needs advance %v",
			commit.HardState.Commit, len(commit.CommittedEntries), commit.NeedsAdvance())
	}
	// Skipped: the next Ready is still the next in order.
	if err := g.Propose([]raftpb.Entry{{Data: []byte("a")}}); err != nil {
		t.Fatal(err)
	}
	app := g.Ready()
	persist(&app)
	next := g.Ready()
	if next.HardState.Commit != 3 || next.NeedsAdvance() {
		t.Fatalf("second commit: %d, needs advance %v", next.HardState.Commit, next.NeedsAdvance())
	}
	// Late and out of order, advancing it is harmless.
	for _, rd := range []group.Ready{next, commit} {
		if err := g.Advance(rd); err != nil {
			t.Fatalf("advancing a commit-only Ready: %v", err)
		}
	}
}

// A forwarded proposal delivered twice (a duplicating network) is appended
// once: the leader finds its key among its newest entries.
func TestDuplicateForwardAppendedOnce(t *testing.T) {
	c, lead := elect(t, grouptest.Options{Voters: []raftpb.NodeID{1, 2, 3}})
	f := follower(c, lead)
	g := c.R(lead).G
	term := g.BasicStatus().HardState.Term
	prop := raftpb.Message{Type: raftpb.MsgProp, Shard: 1, From: f, To: lead,
		Entries: []raftpb.Entry{{Key: 4242, Data: grouptest.EncodePut("dup", "1")}}}
	for i := 0; i < 2; i++ {
		m := prop
		m.Entries = append([]raftpb.Entry(nil), prop.Entries...)
		if err := g.Step(m); err != nil {
			t.Fatal(err)
		}
		c.Stabilize()
	}
	last, _ := c.R(lead).Log.LastIndex()
	ents, err := c.R(lead).Log.Entries(1, last+1, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if e.Key == 4242 {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("the forwarded proposal is in the log %d times, want once (term %d)", n, term)
	}
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
}

// A quiesce message reaching a pre-candidate of the leader's term — the
// transport hands coalesced heartbeats on after the rest of their frame, so
// it can overtake the heartbeat sent before it — makes it a follower and
// quiesces it; dropping it left the replica calling elections for ever.
func TestQuiesceReachesPreCandidate(t *testing.T) {
	log := group.NewMemoryLog(raftpb.ConfState{Voters: []raftpb.NodeID{1, 2, 3}})
	g, err := group.New(group.Config{ID: 2, Shard: 1, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	hb := raftpb.Message{Type: raftpb.MsgHeartbeat, Shard: 1, From: 1, To: 2, Term: 1}
	if err := g.Step(hb); err != nil {
		t.Fatal(err)
	}
	if err := g.Campaign(); err != nil {
		t.Fatal(err)
	}
	if st := g.BasicStatus(); st.Role != group.PreCandidate || st.HardState.Term != 1 {
		t.Fatalf("want a pre-candidate at term 1, got %v at %d", st.Role, st.HardState.Term)
	}
	last, _ := log.LastIndex()
	lastTerm, _ := log.Term(last)
	q := raftpb.Message{Type: raftpb.MsgQuiesce, Shard: 1, From: 1, To: 2, Term: 1, Index: last, LogTerm: lastTerm}
	if err := g.Step(q); err != nil {
		t.Fatal(err)
	}
	if st := g.BasicStatus(); st.Role != group.Follower || st.Lead != 1 || !g.Quiesced() {
		t.Fatalf("after the quiesce message: %v lead %d quiesced %v", st.Role, st.Lead, g.Quiesced())
	}
}
