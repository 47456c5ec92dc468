package tracker

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/shardd/shardd/raftpb"
)

func addVoter(id raftpb.NodeID) raftpb.ConfChangeSingle {
	return raftpb.ConfChangeSingle{Type: raftpb.AddVoter, Node: id}
}

func addLearner(id raftpb.NodeID) raftpb.ConfChangeSingle {
	return raftpb.ConfChangeSingle{Type: raftpb.AddLearner, Node: id}
}

func removeNode(id raftpb.NodeID) raftpb.ConfChangeSingle {
	return raftpb.ConfChangeSingle{Type: raftpb.RemoveNode, Node: id}
}

func ccs(cs ...raftpb.ConfChangeSingle) []raftpb.ConfChangeSingle { return cs }

// trackerState is a deep copy of everything a change may touch, to prove
// that a change which fails (or is not installed) touched nothing.
type trackerState struct {
	cfg  Config
	prs  []Progress // Inflights deep-copied
	ptrs []*Progress
}

func stateOf(trk *ProgressTracker) trackerState {
	s := trackerState{cfg: trk.Config.Clone(), ptrs: slices.Clone(trk.progress)}
	for _, pr := range trk.progress {
		cp := *pr
		cp.Inflights = pr.Inflights.Clone()
		s.prs = append(s.prs, cp)
	}
	return s
}

func checkUnchanged(t *testing.T, trk *ProgressTracker, before trackerState, what string) {
	t.Helper()
	after := stateOf(trk)
	if !reflect.DeepEqual(before.cfg, after.cfg) {
		t.Fatalf("%s changed the configuration: %s, was %s", what, after.cfg, before.cfg)
	}
	if !reflect.DeepEqual(before.prs, after.prs) {
		t.Fatalf("%s changed the progress:\n%s", what, describe(trk))
	}
	if !slices.Equal(before.ptrs, after.ptrs) {
		t.Fatalf("%s replaced progress entries", what)
	}
}

// base returns voters (1 2 3) and learner 4 at last index 10, with some
// replication progress so that tests can see it survive a change.
func base(t *testing.T) *ProgressTracker {
	t.Helper()
	trk := restored(t, raftpb.ConfState{Voters: nids(1, 2, 3), Learners: nids(4)}, 10)
	trk.Progress(1).MaybeUpdate(10)
	trk.Progress(1).BecomeReplicate()
	trk.Progress(1).Inflights.Add(11, 100)
	trk.Progress(2).MaybeUpdate(7)
	trk.Progress(3).RecentActive = false
	trk.Progress(4).MaybeUpdate(9)
	return trk
}

const baseDesc = `voters=(1 2 3) learners=(4)
1: StateReplicate match=10 next=11 inflight=1
2: StateProbe match=7 next=11
3: StateProbe match=0 next=11 inactive
4: StateProbe match=9 next=11 learner`

func TestBase(t *testing.T) {
	if got := describe(base(t)); got != baseDesc {
		t.Fatalf("got:\n%s\nwant:\n%s", got, baseDesc)
	}
}

func TestSimple(t *testing.T) {
	for _, tc := range []struct {
		name string
		ccs  []raftpb.ConfChangeSingle
		want string // describe() after installing; "" = the change must fail
	}{
		{"add voter", ccs(addVoter(5)), `voters=(1 2 3 5) learners=(4)
1: StateReplicate match=10 next=11 inflight=1
2: StateProbe match=7 next=11
3: StateProbe match=0 next=11 inactive
4: StateProbe match=9 next=11 learner
5: StateProbe match=0 next=21`},
		{"add learner", ccs(addLearner(5)), `voters=(1 2 3) learners=(4 5)
1: StateReplicate match=10 next=11 inflight=1
2: StateProbe match=7 next=11
3: StateProbe match=0 next=11 inactive
4: StateProbe match=9 next=11 learner
5: StateProbe match=0 next=21 learner`},
		// Promotion keeps the learner's replication progress.
		{"promote learner", ccs(addVoter(4)), `voters=(1 2 3 4)
1: StateReplicate match=10 next=11 inflight=1
2: StateProbe match=7 next=11
3: StateProbe match=0 next=11 inactive
4: StateProbe match=9 next=11`},
		{"demote voter", ccs(addLearner(1)), `voters=(2 3) learners=(1 4)
1: StateReplicate match=10 next=11 learner inflight=1
2: StateProbe match=7 next=11
3: StateProbe match=0 next=11 inactive
4: StateProbe match=9 next=11 learner`},
		{"remove voter", ccs(removeNode(2)), `voters=(1 3) learners=(4)
1: StateReplicate match=10 next=11 inflight=1
3: StateProbe match=0 next=11 inactive
4: StateProbe match=9 next=11 learner`},
		{"remove learner", ccs(removeNode(4)), `voters=(1 2 3)
1: StateReplicate match=10 next=11 inflight=1
2: StateProbe match=7 next=11
3: StateProbe match=0 next=11 inactive`},
		{"remove non-member", ccs(removeNode(9)), baseDesc},
		{"re-add voter", ccs(addVoter(1)), baseDesc},
		{"re-add learner", ccs(addLearner(4)), baseDesc},
		{"no changes", nil, baseDesc},
		{"add then remove", ccs(addVoter(5), removeNode(5)), baseDesc},
		// Learners may change freely alongside one voter.
		{"one voter and learners", ccs(addVoter(5), addLearner(6), addLearner(7), removeNode(4)), `voters=(1 2 3 5) learners=(6 7)
1: StateReplicate match=10 next=11 inflight=1
2: StateProbe match=7 next=11
3: StateProbe match=0 next=11 inactive
5: StateProbe match=0 next=21
6: StateProbe match=0 next=21 learner
7: StateProbe match=0 next=21 learner`},
		// Removing then re-adding a voter is net no voter change, but the
		// member starts over with fresh progress.
		{"remove and re-add", ccs(removeNode(2), addVoter(2)), `voters=(1 2 3) learners=(4)
1: StateReplicate match=10 next=11 inflight=1
2: StateProbe match=0 next=21
3: StateProbe match=0 next=11 inactive
4: StateProbe match=9 next=11 learner`},

		{"two voters added", ccs(addVoter(5), addVoter(6)), ""},
		{"two voters removed", ccs(removeNode(1), removeNode(2)), ""},
		{"promote and demote", ccs(addVoter(4), addLearner(3)), ""},
		{"add and remove voter", ccs(addVoter(5), removeNode(1)), ""},
		{"node id 0", ccs(addVoter(0)), ""},
		{"node id 0 remove", ccs(removeNode(0)), ""},
		{"node id 0 after valid", ccs(addLearner(5), addLearner(0)), ""},
		{"unknown type", ccs(raftpb.ConfChangeSingle{Type: 3, Node: 5}), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			trk := base(t)
			before := stateOf(trk)
			r, err := Changer{Tracker: trk, LastIndex: 20}.Simple(tc.ccs)
			// Computing a change never touches the tracker.
			checkUnchanged(t, trk, before, "Simple")
			if tc.want == "" {
				if !errors.Is(err, ErrInvalidConfChange) {
					t.Fatalf("Simple(%v) = %v, want ErrInvalidConfChange", tc.ccs, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Simple(%v): %v", tc.ccs, err)
			}
			trk.Install(r)
			if got := describe(trk); got != tc.want {
				t.Fatalf("got:\n%s\nwant:\n%s", got, tc.want)
			}
			mustHoldInvariants(t, trk)
		})
	}
}

func TestSimpleRemoveLastVoter(t *testing.T) {
	trk := restored(t, raftpb.ConfState{Voters: nids(1), Learners: nids(2)}, 1)
	for _, cs := range [][]raftpb.ConfChangeSingle{
		ccs(removeNode(1)),
		ccs(addLearner(1)),
	} {
		before := stateOf(trk)
		_, err := Changer{Tracker: trk, LastIndex: 1}.Simple(cs)
		if !errors.Is(err, ErrInvalidConfChange) || !strings.Contains(err.Error(), "every voter") {
			t.Fatalf("Simple(%v) = %v, want the every-voter error", cs, err)
		}
		checkUnchanged(t, trk, before, "failed Simple")
	}
	// Swapping the only voter is two voter changes: it needs joint consensus.
	if _, err := (Changer{Tracker: trk, LastIndex: 1}).Simple(ccs(addVoter(2), removeNode(1))); !errors.Is(err, ErrInvalidConfChange) {
		t.Fatalf("swapping the only voter = %v", err)
	}
}

func TestSimpleRefusedInJoint(t *testing.T) {
	trk := restored(t, raftpb.ConfState{Voters: nids(1, 2), VotersOutgoing: nids(1, 2, 3)}, 1)
	before := stateOf(trk)
	if _, err := (Changer{Tracker: trk}).Simple(ccs(addLearner(5))); !errors.Is(err, ErrInvalidConfChange) {
		t.Fatalf("Simple in joint = %v", err)
	}
	checkUnchanged(t, trk, before, "Simple in joint")
}

// New members are probed from the leader's last index and count as active,
// so that check-quorum does not step the leader down before they answered.
func TestNewMemberProgress(t *testing.T) {
	trk := New(5, 1000)
	r, err := Changer{Tracker: trk, LastIndex: 41}.Bootstrap(ccs(addVoter(1), addLearner(2)))
	if err != nil {
		t.Fatal(err)
	}
	trk.Install(r)
	r, err = Changer{Tracker: trk, LastIndex: 55}.Simple(ccs(addVoter(3)))
	if err != nil {
		t.Fatal(err)
	}
	trk.Install(r)
	for _, tc := range []struct {
		id   raftpb.NodeID
		next raftpb.Index
	}{{1, 42}, {2, 42}, {3, 56}} {
		pr := trk.Progress(tc.id)
		if pr.Next != tc.next || pr.Match != 0 || !pr.RecentActive || pr.State != StateProbe ||
			pr.MsgAppFlowPaused || pr.Vote != 0 || pr.Inflights == nil || pr.Inflights.Count() != 0 {
			t.Errorf("new member %d: %+v, want next %d", tc.id, pr, tc.next)
		}
		if pr.Inflights.maxCount != 5 || pr.Inflights.maxBytes != 1000 {
			t.Errorf("new member %d: window %d/%d, want the tracker's 5/1000",
				tc.id, pr.Inflights.maxCount, pr.Inflights.maxBytes)
		}
	}
	// Each member has its own window.
	if trk.Progress(1).Inflights == trk.Progress(3).Inflights {
		t.Fatal("members share an inflight window")
	}
}

func TestEnterLeaveJoint(t *testing.T) {
	trk := base(t)
	c := Changer{Tracker: trk, LastIndex: 30}
	// Replace voter 2 by 5, demote 3 and drop learner 4, all at once.
	before := stateOf(trk)
	r, err := c.EnterJoint(false, ccs(addVoter(5), removeNode(2), addLearner(3), removeNode(4)))
	if err != nil {
		t.Fatal(err)
	}
	checkUnchanged(t, trk, before, "EnterJoint before Install")
	trk.Install(r)
	mustHoldInvariants(t, trk)
	// 2 and 3 keep voting in the outgoing half, so their progress stays;
	// 3 is no learner until the joint configuration is left. 4 was only a
	// learner: it goes at once.
	want := `voters=(1 5)&&(1 2 3) learners_next=(3)
1: StateReplicate match=10 next=11 inflight=1
2: StateProbe match=7 next=11
3: StateProbe match=0 next=11 inactive
5: StateProbe match=0 next=31`
	if got := describe(trk); got != want {
		t.Fatalf("after EnterJoint got:\n%s\nwant:\n%s", got, want)
	}
	if !trk.IsVoter(2) || !trk.IsVoter(3) || !trk.IsLearner(3) || trk.IsMember(4) {
		t.Fatal("membership predicates disagree with the joint configuration")
	}

	// No other change while joint.
	for name, f := range map[string]func() (Result, error){
		"EnterJoint": func() (Result, error) { return c.EnterJoint(true, ccs(addLearner(9))) },
		"Simple":     func() (Result, error) { return c.Simple(ccs(addLearner(9))) },
		"Bootstrap":  func() (Result, error) { return c.Bootstrap(ccs(addVoter(9))) },
	} {
		before := stateOf(trk)
		if _, err := f(); !errors.Is(err, ErrInvalidConfChange) {
			t.Fatalf("%s while joint = %v", name, err)
		}
		checkUnchanged(t, trk, before, name+" while joint")
	}

	r, err = c.LeaveJoint()
	if err != nil {
		t.Fatal(err)
	}
	trk.Install(r)
	mustHoldInvariants(t, trk)
	want = `voters=(1 5) learners=(3)
1: StateReplicate match=10 next=11 inflight=1
3: StateProbe match=0 next=11 learner inactive
5: StateProbe match=0 next=31`
	if got := describe(trk); got != want {
		t.Fatalf("after LeaveJoint got:\n%s\nwant:\n%s", got, want)
	}

	before = stateOf(trk)
	if _, err := c.LeaveJoint(); !errors.Is(err, ErrInvalidConfChange) {
		t.Fatalf("LeaveJoint when not joint = %v", err)
	}
	checkUnchanged(t, trk, before, "LeaveJoint when not joint")
}

func TestEnterJointAutoLeave(t *testing.T) {
	trk := base(t)
	c := Changer{Tracker: trk, LastIndex: 10}
	r, err := c.EnterJoint(true, ccs(addVoter(5), addVoter(6)))
	if err != nil {
		t.Fatal(err)
	}
	trk.Install(r)
	if got := trk.Config.String(); got != "voters=(1 2 3 5 6)&&(1 2 3) learners=(4) autoleave" {
		t.Fatalf("after EnterJoint: %s", got)
	}
	r, err = c.LeaveJoint()
	if err != nil {
		t.Fatal(err)
	}
	trk.Install(r)
	if got := trk.Config.String(); got != "voters=(1 2 3 5 6) learners=(4)" {
		t.Fatalf("after LeaveJoint: %s", got)
	}
	if trk.AutoLeave || trk.Voters[1] != nil {
		t.Fatalf("joint state left behind: %#v", trk.Config)
	}
}

func TestEnterJointCases(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ccs   []raftpb.ConfChangeSingle
		joint string // Config after EnterJoint; "" = must fail
		left  string // Config after LeaveJoint
	}{
		{"no changes", nil, "voters=(1 2 3)&&(1 2 3) learners=(4)", "voters=(1 2 3) learners=(4)"},
		{"promote learner", ccs(addVoter(4)), "voters=(1 2 3 4)&&(1 2 3)", "voters=(1 2 3 4)"},
		{"demote all but one", ccs(addLearner(1), addLearner(2)),
			"voters=(3)&&(1 2 3) learners=(4) learners_next=(1 2)", "voters=(3) learners=(1 2 4)"},
		// Demoting and then re-promoting leaves no learner-next behind.
		{"demote then promote", ccs(addLearner(1), addVoter(1)),
			"voters=(1 2 3)&&(1 2 3) learners=(4)", "voters=(1 2 3) learners=(4)"},
		{"demote then remove", ccs(addLearner(1), removeNode(1)),
			"voters=(2 3)&&(1 2 3) learners=(4)", "voters=(2 3) learners=(4)"},
		{"remove then demote", ccs(removeNode(1), addLearner(1)),
			"voters=(2 3)&&(1 2 3) learners=(4) learners_next=(1)", "voters=(2 3) learners=(1 4)"},
		{"remove then re-add", ccs(removeNode(1), addVoter(1)),
			"voters=(1 2 3)&&(1 2 3) learners=(4)", "voters=(1 2 3) learners=(4)"},
		// A brand-new learner promoted in the same change.
		{"new learner promoted", ccs(addLearner(7), addVoter(7)),
			"voters=(1 2 3 7)&&(1 2 3) learners=(4)", "voters=(1 2 3 7) learners=(4)"},
		{"replace all voters", ccs(addVoter(5), addVoter(6), addVoter(7), removeNode(1), removeNode(2), removeNode(3)),
			"voters=(5 6 7)&&(1 2 3) learners=(4)", "voters=(5 6 7) learners=(4)"},

		{"remove every voter", ccs(removeNode(1), removeNode(2), removeNode(3)), "", ""},
		{"demote every voter", ccs(addLearner(1), addLearner(2), addLearner(3)), "", ""},
		{"node id 0", ccs(addVoter(5), addVoter(0)), "", ""},
		{"unknown type", ccs(raftpb.ConfChangeSingle{Type: 200, Node: 5}), "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			trk := base(t)
			c := Changer{Tracker: trk, LastIndex: 10}
			before := stateOf(trk)
			r, err := c.EnterJoint(false, tc.ccs)
			checkUnchanged(t, trk, before, "EnterJoint")
			if tc.joint == "" {
				if !errors.Is(err, ErrInvalidConfChange) {
					t.Fatalf("EnterJoint(%v) = %v, want ErrInvalidConfChange", tc.ccs, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("EnterJoint(%v): %v", tc.ccs, err)
			}
			trk.Install(r)
			mustHoldInvariants(t, trk)
			if got := trk.Config.String(); got != tc.joint {
				t.Fatalf("after EnterJoint: %s, want %s", got, tc.joint)
			}
			r, err = c.LeaveJoint()
			if err != nil {
				t.Fatalf("LeaveJoint: %v", err)
			}
			trk.Install(r)
			mustHoldInvariants(t, trk)
			if got := trk.Config.String(); got != tc.left {
				t.Fatalf("after LeaveJoint: %s, want %s", got, tc.left)
			}
		})
	}
}

// Progress of a removed voter stays while it votes in the outgoing half and
// is dropped when the joint configuration is left.
func TestRemovedVoterProgressKeptUntilLeave(t *testing.T) {
	trk := base(t)
	c := Changer{Tracker: trk, LastIndex: 10}
	r, err := c.EnterJoint(false, ccs(removeNode(1)))
	if err != nil {
		t.Fatal(err)
	}
	trk.Install(r)
	pr := trk.Progress(1)
	if pr == nil || pr.Match != 10 || pr.IsLearner {
		t.Fatalf("outgoing voter 1 progress: %v", pr)
	}
	// It still counts: with 1 at 10 and 2 at 7, the outgoing (1 2 3) has
	// committed 7, and the incoming (2 3) only 0.
	if got := trk.Committed(); got != 0 {
		t.Fatalf("Committed() = %d, want 0", got)
	}
	trk.Progress(3).MaybeUpdate(8)
	if got := trk.Committed(); got != 7 {
		t.Fatalf("Committed() = %d, want 7", got)
	}
	r, err = c.LeaveJoint()
	if err != nil {
		t.Fatal(err)
	}
	trk.Install(r)
	if trk.Progress(1) != nil || trk.IsMember(1) {
		t.Fatalf("removed voter 1 still tracked after LeaveJoint:\n%s", describe(trk))
	}
	if got := trk.Committed(); got != 7 {
		t.Fatalf("Committed() after leaving = %d, want 7", got)
	}
}

func TestEnterJointFromNoVoters(t *testing.T) {
	trk := New(4, 0)
	before := stateOf(trk)
	if _, err := (Changer{Tracker: trk}).EnterJoint(false, ccs(addVoter(1), addVoter(2))); !errors.Is(err, ErrInvalidConfChange) {
		t.Fatalf("EnterJoint from no voters = %v", err)
	}
	checkUnchanged(t, trk, before, "EnterJoint from no voters")
}

func TestBootstrap(t *testing.T) {
	trk := New(4, 0)
	r, err := Changer{Tracker: trk, LastIndex: 0}.Bootstrap(ccs(
		addVoter(3), addVoter(1), addVoter(2), addLearner(5), addLearner(4)))
	if err != nil {
		t.Fatal(err)
	}
	trk.Install(r)
	mustHoldInvariants(t, trk)
	want := `voters=(1 2 3) learners=(4 5)
1: StateProbe match=0 next=1
2: StateProbe match=0 next=1
3: StateProbe match=0 next=1
4: StateProbe match=0 next=1 learner
5: StateProbe match=0 next=1 learner`
	if got := describe(trk); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}

	// The replica now has a membership: a second bootstrap is refused.
	before := stateOf(trk)
	if _, err := (Changer{Tracker: trk}).Bootstrap(ccs(addVoter(9))); !errors.Is(err, ErrInvalidConfChange) {
		t.Fatalf("second Bootstrap = %v", err)
	}
	checkUnchanged(t, trk, before, "second Bootstrap")
}

func TestBootstrapInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		ccs  []raftpb.ConfChangeSingle
	}{
		{"nothing", nil},
		{"learners only", ccs(addLearner(1), addLearner(2))},
		{"voter removed again", ccs(addVoter(1), removeNode(1))},
		{"node id 0", ccs(addVoter(1), addVoter(0))},
		{"unknown type", ccs(addVoter(1), raftpb.ConfChangeSingle{Type: 3, Node: 2})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			trk := New(4, 0)
			before := stateOf(trk)
			if _, err := (Changer{Tracker: trk}).Bootstrap(tc.ccs); !errors.Is(err, ErrInvalidConfChange) {
				t.Fatalf("Bootstrap(%v) = %v, want ErrInvalidConfChange", tc.ccs, err)
			}
			checkUnchanged(t, trk, before, "failed Bootstrap")
		})
	}
}

// A change computed but not installed leaves the tracker as it was, and
// the result does not share the members' mutable fields with it.
func TestResultIndependentUntilInstalled(t *testing.T) {
	trk := base(t)
	before := stateOf(trk)
	r, err := Changer{Tracker: trk, LastIndex: 10}.Simple(ccs(addLearner(2)))
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range r.progress {
		pr.Match = 99
		pr.IsLearner = !pr.IsLearner
	}
	r.Config.Voters[0][0] = 42
	r.Config.Learners[0] = 42
	checkUnchanged(t, trk, before, "editing an uninstalled Result")
}

func TestErrorMessages(t *testing.T) {
	trk := base(t)
	c := Changer{Tracker: trk}
	for _, tc := range []struct {
		f    func() (Result, error)
		want string
	}{
		{func() (Result, error) { return c.Simple(ccs(addVoter(5), addVoter(6))) }, "2 voters changed at once"},
		{func() (Result, error) { return c.Simple(ccs(addVoter(0))) }, "node id 0"},
		{func() (Result, error) { return c.Simple(ccs(raftpb.ConfChangeSingle{Type: 9, Node: 1})) }, "unknown change type 9"},
		{func() (Result, error) { return c.LeaveJoint() }, "not in a joint configuration"},
		{func() (Result, error) { return c.Bootstrap(ccs(addVoter(7))) }, "has a membership"},
	} {
		_, err := tc.f()
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), ErrInvalidConfChange.Error()) {
			t.Errorf("error %v, want %q wrapped in ErrInvalidConfChange", err, tc.want)
		}
	}
}

// TestCheckRejects feeds check() configurations that no change should ever
// produce, one per invariant.
func TestCheckRejects(t *testing.T) {
	good := func() Result {
		trk := restored(t, raftpb.ConfState{Voters: nids(1, 2, 4), VotersOutgoing: nids(1, 2, 3),
			Learners: nids(5), LearnersNext: nids(3)}, 1)
		return Changer{Tracker: trk}.start()
	}
	if r := good(); r.check() != nil {
		t.Fatalf("check of a valid configuration: %v", r.check())
	}
	for _, tc := range []struct {
		name   string
		mutate func(r *Result)
	}{
		{"learner votes", func(r *Result) { r.Config.Learners = nids(4, 5) }},
		{"learner-next not outgoing", func(r *Result) { r.Config.LearnersNext = nids(3, 4) }},
		{"learner-next is learner", func(r *Result) { r.Config.Learners = nids(3, 5) }},
		{"learner-next outside joint", func(r *Result) {
			r.Config.Voters[1] = nil
			r.Config.LearnersNext = nil
			r.Config.AutoLeave = true
		}},
		{"progress of non-member", func(r *Result) {
			r.progress = append(r.progress, &Progress{ID: 9, Inflights: NewInflights(1, 0)})
		}},
		{"voter flagged learner", func(r *Result) { r.get(1).IsLearner = true }},
		{"learner not flagged", func(r *Result) { r.get(5).IsLearner = false }},
		{"learner-next flagged early", func(r *Result) { r.get(3).IsLearner = true }},
		{"member without progress", func(r *Result) { r.remove(2) }},
	} {
		r := good()
		tc.mutate(&r)
		if err := r.check(); !errors.Is(err, ErrInvalidConfChange) {
			t.Errorf("%s: check() = %v", tc.name, err)
		}
	}
}

func TestSymDiff(t *testing.T) {
	for _, tc := range []struct {
		a, b []raftpb.NodeID
		want int
	}{
		{nil, nil, 0},
		{nids(1, 2), nids(1, 2), 0},
		{nids(1, 2), nids(1, 2, 3), 1},
		{nids(1, 2, 3), nids(2), 2},
		{nids(1), nids(2), 2},
		{nil, nids(1, 2, 3), 3},
	} {
		if got := symDiff(tc.a, tc.b); got != tc.want {
			t.Errorf("symDiff(%v, %v) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := symDiff(tc.b, tc.a); got != tc.want {
			t.Errorf("symDiff(%v, %v) = %d, want %d", tc.b, tc.a, got, tc.want)
		}
	}
}
