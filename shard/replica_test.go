package shard

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

func TestNewFreshReplicaStatus(t *testing.T) {
	n := newNode(t, 1, nodeOpts{})
	r := n.r
	if r.Shard() != testShard {
		t.Fatalf("Shard() = %d", r.Shard())
	}
	st := r.Status()
	if st.Shard != testShard || st.Node != 1 || st.Role != group.Follower || st.Term != 1 ||
		st.Leader != raftpb.None || st.Commit != 1 || st.Applied != 0 || st.LastIndex != 1 ||
		st.Quiesced || st.Err != nil {
		t.Fatalf("fresh status: %+v", st)
	}
	if !slices.Equal(st.Members.Voters, []raftpb.NodeID{1}) {
		t.Fatalf("members: %v", st.Members)
	}
	if r.Err() != nil {
		t.Fatalf("Err: %v", r.Err())
	}
	if lead, term := r.Leader(); lead != raftpb.None || term != 1 {
		t.Fatalf("Leader() = %d, %d", lead, term)
	}
	if r.HasWork() {
		t.Fatal("HasWork on a fresh replica")
	}
}

func TestSingleVoterElectsItself(t *testing.T) {
	n := newNode(t, 1, nodeOpts{})
	n.electSingle()
	st := n.r.Status()
	// Bootstrap entry (1) and the leader's empty entry (2).
	if st.Role != group.Leader || st.Leader != 1 || st.Term != 2 || st.Commit != 2 ||
		st.Applied != 2 || st.LastIndex != 2 {
		t.Fatalf("status after election: %+v", st)
	}
	if lead, term := n.r.Leader(); lead != 1 || term != 2 {
		t.Fatalf("Leader() = %d, %d", lead, term)
	}
	evs := n.ev.leaderEvents()
	if len(evs) == 0 || evs[len(evs)-1] != (leaderEvent{1, 2}) {
		t.Fatalf("LeaderChanged events: %v", evs)
	}
	if st.Hash == 0 || n.r.Status().Hash != n.hashAt[2] {
		t.Fatalf("hash not kept: %x", st.Hash)
	}
}

func TestProposalsCompleteWithResult(t *testing.T) {
	n := newLeader(t, nodeOpts{})
	p1 := n.propose(101, "a=1")
	n.settle()
	res := mustSucceed(t, p1)
	if res.Index != 3 || res.Value != 1 || string(res.Data) != "a" {
		t.Fatalf("result: %+v", res)
	}
	if v, err := n.r.Lookup([]byte("a")); err != nil || string(v) != "1" {
		t.Fatalf("Lookup = %q, %v", v, err)
	}
	if got := n.r.outstanding.Load(); got != 0 {
		t.Fatalf("outstanding = %d", got)
	}
}

func TestProposalsInOneStepAreOneBatch(t *testing.T) {
	n := newLeader(t, nodeOpts{})
	const count = 5
	props := make([]*Proposal, count)
	for i := range count {
		// Keys in no particular order: results must follow keys, not order.
		props[i] = n.propose(uint64(1000-i*7), fmt.Sprintf("k%d=v%d", i, i))
	}
	rds, res := n.r.Step(nil, n.ev, 0)
	if !res.Active {
		t.Fatal("a step with proposals is not Active")
	}
	var ents []raftpb.Entry
	for i := range rds {
		ents = append(ents, rds[i].Entries...)
	}
	if len(ents) != count {
		t.Fatalf("one step appended %d entries, want %d", len(ents), count)
	}
	for i, e := range ents {
		if e.Key != props[i].key || string(e.Data) != string(props[i].cmd) || e.Index != raftpb.Index(3+i) {
			t.Fatalf("entry %d: %+v", i, e)
		}
	}
	// Hand the Readys back the usual way and finish.
	for i := range rds {
		rd := rds[i]
		if err := n.log.Persist(&rd); err != nil {
			t.Fatal(err)
		}
		n.r.Persisted(rd)
		n.apply()
	}
	n.settle()
	calls := n.kv.updateCalls()
	last := calls[len(calls)-1]
	if !slices.Equal(last, []uint64{3, 4, 5, 6, 7}) {
		t.Fatalf("Update calls: %v", calls)
	}
	for i, p := range props {
		res := mustSucceed(t, p)
		if res.Index != uint64(3+i) || string(res.Data) != fmt.Sprintf("k%d", i) || res.Value != uint64(i+1) {
			t.Fatalf("proposal %d (key %d): %+v", i, p.key, res)
		}
	}
}

func TestEmptyCommandIsNotGivenToStateMachine(t *testing.T) {
	n := newLeader(t, nodeOpts{})
	before := len(n.kv.updateCalls())
	p := n.propose(5, "")
	n.settle()
	res := mustSucceed(t, p)
	if res.Index != 3 || res.Value != 0 || res.Data != nil {
		t.Fatalf("result of an empty command: %+v", res)
	}
	if got := len(n.kv.updateCalls()); got != before {
		t.Fatalf("Update called for an empty command")
	}
	if n.r.Applied() != 3 {
		t.Fatalf("applied %d", n.r.Applied())
	}
}

func TestErrBusy(t *testing.T) {
	n := newLeader(t, nodeOpts{maxPending: 3})
	var props []*Proposal
	for i := range 3 {
		props = append(props, n.propose(uint64(i+1), "x=1"))
	}
	if _, err := n.r.Propose(99, []byte("y=1")); !errors.Is(err, ErrBusy) {
		t.Fatalf("4th proposal: %v, want ErrBusy", err)
	}
	if _, err := n.r.ProposeConfChange(98, raftpb.ConfChange{}); !errors.Is(err, ErrBusy) {
		t.Fatalf("conf change beyond the bound: %v, want ErrBusy", err)
	}
	// Handed to Raft but not applied: still outstanding.
	n.holdApply = true
	n.settle()
	if _, err := n.r.Propose(97, []byte("y=1")); !errors.Is(err, ErrBusy) {
		t.Fatalf("proposal while 3 are in Raft: %v, want ErrBusy", err)
	}
	n.holdApply = false
	n.apply()
	n.settle()
	for _, p := range props {
		mustSucceed(t, p)
	}
	// Completed proposals free their slots.
	var again []*Proposal
	for i := range 3 {
		again = append(again, n.propose(uint64(10+i), "z=1"))
	}
	n.settle()
	for _, p := range again {
		mustSucceed(t, p)
	}
	if got := n.r.outstanding.Load(); got != 0 {
		t.Fatalf("outstanding = %d", got)
	}
}

func TestErrBusyDefaultBound(t *testing.T) {
	n := newNode(t, 1, nodeOpts{})
	if n.r.cfg.MaxPendingProposals != 4096 {
		t.Fatalf("default MaxPendingProposals = %d", n.r.cfg.MaxPendingProposals)
	}
}

func TestProposalWithoutLeaderWaits(t *testing.T) {
	n := newNode(t, 1, nodeOpts{maxPending: 2})
	p := n.propose(1, "a=1")
	cc, err := n.r.ProposeConfChange(2, raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.AddLearner, Node: 9}}})
	if err != nil {
		t.Fatal(err)
	}
	n.settle()
	mustPending(t, p)
	mustPending(t, cc)
	if len(n.r.waitingProps) != 2 {
		t.Fatalf("waiting proposals: %d", len(n.r.waitingProps))
	}
	// Waiting proposals count against the bound.
	if _, err := n.r.Propose(3, []byte("b=1")); !errors.Is(err, ErrBusy) {
		t.Fatalf("Propose while 2 wait: %v, want ErrBusy", err)
	}
	// A replica with proposals waiting does not quiesce.
	if n.r.TryQuiesce() {
		t.Fatal("TryQuiesce with waiting proposals")
	}
	n.electSingle()
	res := mustSucceed(t, p)
	if res.Index < 3 || string(res.Data) != "a" {
		t.Fatalf("result: %+v", res)
	}
	if _, err := mustResult(t, cc); err != nil {
		t.Fatalf("conf change: %v", err)
	}
	if ms := n.ev.memberships(); len(ms) == 0 || !slices.Equal(ms[len(ms)-1].Learners, []raftpb.NodeID{9}) {
		t.Fatalf("MembershipChanged: %v", ms)
	}
	if st := n.r.Status(); !slices.Equal(st.Members.Learners, []raftpb.NodeID{9}) {
		t.Fatalf("Status().Members = %v", st.Members)
	}
	if len(n.r.waitingProps) != 0 {
		t.Fatalf("waiting proposals left: %d", len(n.r.waitingProps))
	}
}

func TestConfChangeWhileOneIsPendingFails(t *testing.T) {
	n := newLeader(t, nodeOpts{})
	add := func(key uint64, node raftpb.NodeID) *Proposal {
		p, err := n.r.ProposeConfChange(key, raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.AddLearner, Node: node}}})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b := add(1, 4), add(2, 5)
	n.settle()
	if _, err := mustResult(t, a); err != nil {
		t.Fatalf("first change: %v", err)
	}
	if _, err := mustResult(t, b); !errors.Is(err, group.ErrMembershipChangeInProgress) {
		t.Fatalf("second change: %v, want ErrMembershipChangeInProgress", err)
	}
	if st := n.r.Status(); !slices.Equal(st.Members.Learners, []raftpb.NodeID{4}) {
		t.Fatalf("members: %v", st.Members)
	}
}

func TestReadCompletesAfterApply(t *testing.T) {
	n := newLeader(t, nodeOpts{})
	p := n.propose(1, "a=1")
	n.holdApply = true
	// Append and persist; the commit comes with the Advance of the next step.
	n.step(0)
	rr := n.read()
	n.step(0) // Advance: entry 3 committed; the read gets index 3
	if n.r.Status().Commit != 3 || n.r.Applied() != 2 {
		t.Fatalf("status: %+v", n.r.Status())
	}
	if isDone(rr.Done()) {
		t.Fatal("read completed before its index was applied")
	}
	if len(n.r.readWait) != 1 || n.r.readWait[0].index != 3 {
		t.Fatalf("readWait: %+v", n.r.readWait)
	}
	n.apply()
	if !isDone(rr.Done()) || rr.Err() != nil {
		t.Fatalf("read after apply: done=%v err=%v", isDone(rr.Done()), rr.Err())
	}
	mustSucceed(t, p)
	if v, err := n.r.Lookup([]byte("a")); err != nil || string(v) != "1" {
		t.Fatalf("Lookup after read: %q, %v", v, err)
	}
}

func TestReadAlreadyAppliedCompletesInStep(t *testing.T) {
	n := newLeader(t, nodeOpts{})
	rr := n.read()
	_, res := n.step(0)
	if !res.Active {
		t.Fatal("a step with reads is not Active")
	}
	if !isDone(rr.Done()) || rr.Err() != nil {
		t.Fatal("read at an applied index not completed by the step")
	}
}

func TestReadsInOneStepShareOneRound(t *testing.T) {
	n := newLeader(t, nodeOpts{})
	seq := n.r.readSeq
	reads := []*ReadRequest{n.read(), n.read(), n.read()}
	n.settle()
	if n.r.readSeq != seq+1 {
		t.Fatalf("read rounds: %d, want 1", n.r.readSeq-seq)
	}
	for i, rr := range reads {
		if !isDone(rr.Done()) || rr.Err() != nil {
			t.Fatalf("read %d not completed", i)
		}
	}
}

func TestReadWithoutLeaderWaits(t *testing.T) {
	n := newNode(t, 1, nodeOpts{})
	rr := n.read()
	n.settle()
	if isDone(rr.Done()) {
		t.Fatal("read completed without a leader")
	}
	if n.r.TryQuiesce() {
		t.Fatal("TryQuiesce on a follower")
	}
	n.electSingle()
	n.settle()
	if !isDone(rr.Done()) || rr.Err() != nil {
		t.Fatalf("read after election: done=%v err=%v", isDone(rr.Done()), rr.Err())
	}
	if n.r.Applied() < 2 {
		t.Fatalf("read completed before the leader's entry was applied: %d", n.r.Applied())
	}
}

func TestStopResolvesEverything(t *testing.T) {
	n := newLeader(t, nodeOpts{})
	// In Raft, not applied.
	inRaft := n.propose(1, "a=1")
	n.holdApply = true
	n.step(0)
	// A read waiting for apply.
	rWait := n.read()
	n.step(0)
	if isDone(rWait.Done()) || len(n.r.readWait) != 1 {
		t.Fatal("setup: read not waiting for apply")
	}
	// Queued in the inbox.
	queued := n.propose(2, "b=1")
	rQueued := n.read()

	n.r.Stop(nil)

	if _, err := mustResult(t, inRaft); !errors.Is(err, ErrResultUnknown) {
		t.Fatalf("proposal in Raft: %v, want ErrResultUnknown", err)
	}
	if _, err := mustResult(t, queued); !errors.Is(err, ErrStopped) {
		t.Fatalf("queued proposal: %v, want ErrStopped", err)
	}
	for _, rr := range []*ReadRequest{rWait, rQueued} {
		if !isDone(rr.Done()) || !errors.Is(rr.Err(), ErrStopped) {
			t.Fatalf("read: done=%v err=%v", isDone(rr.Done()), rr.Err())
		}
	}
	if _, err := n.r.Propose(3, []byte("c=1")); !errors.Is(err, ErrStopped) {
		t.Fatalf("Propose after Stop: %v", err)
	}
	if _, err := n.r.ProposeConfChange(4, raftpb.ConfChange{}); !errors.Is(err, ErrStopped) {
		t.Fatalf("ProposeConfChange after Stop: %v", err)
	}
	if _, err := n.r.Read(); !errors.Is(err, ErrStopped) {
		t.Fatalf("Read after Stop: %v", err)
	}
	if got := n.r.outstanding.Load(); got != 0 {
		t.Fatalf("outstanding after Stop = %d", got)
	}
	n.r.Tick()
	if rds, _ := n.r.Step(nil, n.ev, 0); len(rds) != 0 {
		t.Fatalf("Step after Stop returned %d Readys", len(rds))
	}
	// A plain Stop is not an error of the replica.
	if n.r.Err() != nil || n.r.Status().Err != nil {
		t.Fatalf("Err after Stop: %v", n.r.Err())
	}
	if err := n.r.CloseStateMachine(); err != nil || !n.kv.closed {
		t.Fatalf("CloseStateMachine: %v closed=%v", err, n.kv.closed)
	}
}

func TestStopWithError(t *testing.T) {
	n := newNode(t, 1, nodeOpts{})
	p := n.propose(1, "a=1")
	boom := errors.New("boom")
	n.r.Stop(boom)
	if _, err := mustResult(t, p); !errors.Is(err, boom) {
		t.Fatalf("queued proposal: %v, want %v", err, boom)
	}
}

func TestStatusFollowsCore(t *testing.T) {
	n := newNode(t, 1, nodeOpts{})
	s0 := n.r.status.Load()
	n.electSingle()
	st := n.r.Status()
	if st.Role != group.Leader || st.Term != 2 || st.Leader != 1 || st.Commit != 2 || st.LastIndex != 2 {
		t.Fatalf("status: %+v", st)
	}
	if n.r.status.Load() == s0 {
		t.Fatal("status not republished after a change")
	}
	// Members are shared between publications while unchanged, and a
	// step that only moves commit and last index publishes no new Status
	// (no allocation per step).
	s1 := n.r.status.Load()
	n.propose(1, "a=1")
	n.settle()
	if st := n.r.Status(); st.Commit != 3 || st.LastIndex != 3 {
		t.Fatalf("status after a proposal: %+v", st)
	}
	if n.r.status.Load() != s1 {
		t.Fatal("Status republished for a commit")
	}
	if len(s1.Members.Voters) == 0 || &s1.Members.Voters[0] != &s0.Members.Voters[0] {
		t.Fatal("unchanged members were copied")
	}
	// Nothing changes: no new publication, and no allocation.
	n.r.publishStatus()
	if n.r.status.Load() != s1 {
		t.Fatal("status republished without a change")
	}
	if allocs := testing.AllocsPerRun(100, n.r.publishStatus); allocs != 0 {
		t.Fatalf("publishStatus allocates %.0f times without a change", allocs)
	}
	if allocs := testing.AllocsPerRun(100, func() { _ = n.r.Status() }); allocs != 0 {
		t.Fatalf("Status allocates %.0f times", allocs)
	}
	// A membership change publishes new members.
	cc, err := n.r.ProposeConfChange(2, raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.AddLearner, Node: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	n.settle()
	if _, err := mustResult(t, cc); err != nil {
		t.Fatal(err)
	}
	if st := n.r.Status(); !slices.Equal(st.Members.Learners, []raftpb.NodeID{3}) ||
		!slices.Equal(st.Members.Voters, []raftpb.NodeID{1}) {
		t.Fatalf("members after change: %v", st.Members)
	}
}

func TestStepResultTicks(t *testing.T) {
	n := newNode(t, 1, nodeOpts{})
	n.r.Tick()
	n.r.Tick() // ticks do not pile up
	_, res := n.step(0)
	if res.Ticked != 1 || res.Active {
		t.Fatalf("StepResult: %+v", res)
	}
	_, res = n.step(0)
	if res.Ticked != 0 {
		t.Fatalf("StepResult without tick: %+v", res)
	}
}

func TestCampaignAndTransferOnSingleVoter(t *testing.T) {
	n := newNode(t, 1, nodeOpts{})
	n.r.Campaign()
	n.settle()
	if st := n.r.Status(); st.Role != group.Leader {
		t.Fatalf("Campaign did not elect a single voter: %+v", st)
	}
	// A transfer to a non-voter is refused; the leader stays.
	n.r.TransferLeader(5)
	n.r.ReportUnreachable(5)
	n.r.ReportSnapshot(5, false)
	_, res := n.step(0)
	if !res.Active {
		t.Fatal("a transfer is activity")
	}
	if st := n.r.Status(); st.Role != group.Leader {
		t.Fatalf("leader lost: %+v", st)
	}
}
