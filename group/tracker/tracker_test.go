package tracker

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/shardd/shardd/group/quorum"
	"github.com/shardd/shardd/raftpb"
)

// nids is shorthand for a list of node ids.
func nids(ids ...raftpb.NodeID) []raftpb.NodeID { return ids }

// describe renders the configuration and every member's progress, one per
// line, so that a failing comparison shows what differs.
func describe(t *ProgressTracker) string {
	var b strings.Builder
	b.WriteString(t.Config.String())
	for _, pr := range t.progress {
		fmt.Fprintf(&b, "\n%d: %s", pr.ID, pr)
	}
	return b.String()
}

// restored returns a tracker restored from cs at lastIndex, failing the
// test on error.
func restored(t *testing.T, cs raftpb.ConfState, lastIndex raftpb.Index) *ProgressTracker {
	t.Helper()
	trk := New(8, 0)
	if err := trk.Restore(cs, lastIndex); err != nil {
		t.Fatalf("Restore(%v): %v", cs, err)
	}
	return trk
}

// progressIDs lists the ids that have a progress, in tracker order.
func progressIDs(t *ProgressTracker) []raftpb.NodeID {
	var out []raftpb.NodeID
	t.Each(func(pr *Progress) { out = append(out, pr.ID) })
	return out
}

func TestRestoreSimple(t *testing.T) {
	trk := restored(t, raftpb.ConfState{Voters: nids(3, 1, 2), Learners: nids(5, 4)}, 10)
	want := `voters=(1 2 3) learners=(4 5)
1: StateProbe match=0 next=11
2: StateProbe match=0 next=11
3: StateProbe match=0 next=11
4: StateProbe match=0 next=11 learner
5: StateProbe match=0 next=11 learner`
	if got := describe(trk); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	for _, pr := range trk.Members() {
		if pr.Inflights == nil || pr.Inflights.maxCount != 8 || !pr.RecentActive {
			t.Fatalf("member %d: %+v", pr.ID, pr)
		}
	}
	if trk.Voters.Joint() {
		t.Fatal("simple ConfState restored as joint")
	}
}

func TestRestoreJoint(t *testing.T) {
	cs := raftpb.ConfState{
		Voters:         nids(1, 2, 4),
		VotersOutgoing: nids(1, 2, 3),
		Learners:       nids(5),
		LearnersNext:   nids(3),
		AutoLeave:      true,
	}
	trk := restored(t, cs, 7)
	want := `voters=(1 2 4)&&(1 2 3) learners=(5) learners_next=(3) autoleave
1: StateProbe match=0 next=8
2: StateProbe match=0 next=8
3: StateProbe match=0 next=8
4: StateProbe match=0 next=8
5: StateProbe match=0 next=8 learner`
	if got := describe(trk); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	// 3 still votes in the outgoing half: its progress is a voter's.
	if !trk.IsVoter(3) || !trk.IsLearner(3) || trk.Progress(3).IsLearner {
		t.Fatalf("learner-next 3: IsVoter=%v IsLearner=%v progress learner=%v",
			trk.IsVoter(3), trk.IsLearner(3), trk.Progress(3).IsLearner)
	}
}

func TestRestoreDeduplicatesAndReplaces(t *testing.T) {
	trk := restored(t, raftpb.ConfState{Voters: nids(1, 2)}, 5)
	trk.Progress(1).MaybeUpdate(5)
	// Restoring again gives every member fresh progress.
	if err := trk.Restore(raftpb.ConfState{Voters: nids(2, 1, 2), Learners: nids(3, 3)}, 20); err != nil {
		t.Fatal(err)
	}
	want := `voters=(1 2) learners=(3)
1: StateProbe match=0 next=21
2: StateProbe match=0 next=21
3: StateProbe match=0 next=21 learner`
	if got := describe(trk); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestRestoreEmpty(t *testing.T) {
	trk := restored(t, raftpb.ConfState{}, 0)
	if len(trk.Members()) != 0 || trk.Voters.Joint() || len(trk.Voters[0]) != 0 {
		t.Fatalf("empty restore: %s", describe(trk))
	}
	cs := trk.ConfState()
	if !cs.Equal(&raftpb.ConfState{}) {
		t.Fatalf("ConfState() = %v", cs)
	}
}

func TestRestoreInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		cs   raftpb.ConfState
	}{
		{"learner is incoming voter", raftpb.ConfState{Voters: nids(1, 2), Learners: nids(2)}},
		{"learner is outgoing voter", raftpb.ConfState{
			Voters: nids(1), VotersOutgoing: nids(1, 2), Learners: nids(2)}},
		{"learner-next not outgoing", raftpb.ConfState{
			Voters: nids(1), VotersOutgoing: nids(1, 2), LearnersNext: nids(3)}},
		{"learner-next also incoming", raftpb.ConfState{
			Voters: nids(1, 2), VotersOutgoing: nids(1, 2), LearnersNext: nids(2)}},
		{"learner-next also learner", raftpb.ConfState{
			Voters: nids(1), VotersOutgoing: nids(1, 2), Learners: nids(2), LearnersNext: nids(2)}},
		{"learner-next outside joint", raftpb.ConfState{Voters: nids(1), LearnersNext: nids(2)}},
		{"autoleave outside joint", raftpb.ConfState{Voters: nids(1, 2), AutoLeave: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			trk := restored(t, raftpb.ConfState{Voters: nids(7, 8, 9), Learners: nids(10)}, 3)
			trk.Progress(7).MaybeUpdate(3)
			before := describe(trk)
			err := trk.Restore(tc.cs, 100)
			if !errors.Is(err, ErrInvalidConfChange) {
				t.Fatalf("Restore(%v) = %v, want ErrInvalidConfChange", tc.cs, err)
			}
			// A rejected ConfState must not replace the current one.
			if after := describe(trk); after != before {
				t.Fatalf("failed Restore changed the tracker:\n%s\nwas:\n%s", after, before)
			}
		})
	}
}

// ConfState and Restore are inverse: the persisted membership restores to
// the same configuration.
func TestConfStateRoundTrip(t *testing.T) {
	for _, cs := range []raftpb.ConfState{
		{},
		{Voters: nids(1)},
		{Voters: nids(1, 2, 3), Learners: nids(4, 5)},
		{Voters: nids(1, 2, 4), VotersOutgoing: nids(1, 2, 3), LearnersNext: nids(3)},
		{Voters: nids(1, 2, 4), VotersOutgoing: nids(1, 2, 3), Learners: nids(6), LearnersNext: nids(3), AutoLeave: true},
		{Voters: nids(4), VotersOutgoing: nids(1, 2, 3), LearnersNext: nids(1, 2)},
	} {
		trk := restored(t, cs, 1)
		got := trk.ConfState()
		if !got.Equal(&cs) {
			t.Errorf("Restore(%v).ConfState() = %v", cs, got)
		}
		again := restored(t, got, 1)
		if describe(again) != describe(trk) {
			t.Errorf("second round trip differs:\n%s\n%s", describe(again), describe(trk))
		}
		if !reflect.DeepEqual(again.Config, trk.Config) {
			t.Errorf("Config differs after round trip: %#v vs %#v", again.Config, trk.Config)
		}
	}
}

// ConfState is the persisted form: it must not share memory with the live
// configuration, which later changes edit in place.
func TestConfStateDoesNotAlias(t *testing.T) {
	trk := restored(t, raftpb.ConfState{Voters: nids(1, 2, 4), VotersOutgoing: nids(1, 2, 3),
		Learners: nids(5), LearnersNext: nids(3)}, 1)
	cs := trk.ConfState()
	cs.Voters[0], cs.VotersOutgoing[0], cs.Learners[0], cs.LearnersNext[0] = 99, 99, 99, 99
	if got := trk.Config.String(); got != "voters=(1 2 4)&&(1 2 3) learners=(5) learners_next=(3)" {
		t.Fatalf("editing ConfState() changed the tracker: %s", got)
	}
}

func TestConfigClone(t *testing.T) {
	c := Config{
		Voters:       quorum.JointConfig{quorum.NewMajorityConfig(1, 2, 4), quorum.NewMajorityConfig(1, 2, 3)},
		AutoLeave:    true,
		Learners:     nids(5),
		LearnersNext: nids(3),
	}
	d := c.Clone()
	if !reflect.DeepEqual(c, d) {
		t.Fatalf("Clone() = %#v, want %#v", d, c)
	}
	d.Voters[0][0], d.Voters[1][0], d.Learners[0], d.LearnersNext[0] = 9, 9, 9, 9
	if c.String() != "voters=(1 2 4)&&(1 2 3) learners=(5) learners_next=(3) autoleave" {
		t.Fatalf("clone shares memory with the original: %s", c)
	}
	// Clone keeps an empty outgoing half empty (nil), so Joint stays false.
	if e := (Config{}).Clone(); e.Voters.Joint() || e.Voters[0] != nil || e.Learners != nil {
		t.Fatalf("Clone of zero Config = %#v", e)
	}
}

func TestConfigString(t *testing.T) {
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{}, "voters=()"},
		{Config{Voters: quorum.JointConfig{quorum.NewMajorityConfig(1, 2)}}, "voters=(1 2)"},
		{Config{Voters: quorum.JointConfig{quorum.NewMajorityConfig(1)}, Learners: nids(2, 3)}, "voters=(1) learners=(2 3)"},
		{Config{
			Voters:       quorum.JointConfig{quorum.NewMajorityConfig(1), quorum.NewMajorityConfig(2)},
			LearnersNext: nids(2), AutoLeave: true,
		}, "voters=(1)&&(2) learners_next=(2) autoleave"},
	} {
		if got := tc.c.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}

func TestIsMemberIsLearnerIsVoter(t *testing.T) {
	trk := restored(t, raftpb.ConfState{Voters: nids(1, 2, 4), VotersOutgoing: nids(1, 2, 3),
		Learners: nids(5), LearnersNext: nids(3)}, 1)
	for _, tc := range []struct {
		id                     raftpb.NodeID
		member, learner, voter bool
	}{
		{0, false, false, false},
		{1, true, false, true},
		{3, true, true, true}, // outgoing voter, learner after leaving
		{4, true, false, true},
		{5, true, true, false},
		{6, false, false, false},
	} {
		if m, l, v := trk.IsMember(tc.id), trk.IsLearner(tc.id), trk.IsVoter(tc.id); m != tc.member || l != tc.learner || v != tc.voter {
			t.Errorf("%d: IsMember=%v IsLearner=%v IsVoter=%v, want %v %v %v",
				tc.id, m, l, v, tc.member, tc.learner, tc.voter)
		}
	}
}

func TestProgressLookup(t *testing.T) {
	trk := restored(t, raftpb.ConfState{Voters: nids(30, 10, 20), Learners: nids(25, 5)}, 1)
	if got := progressIDs(trk); !slices.Equal(got, nids(5, 10, 20, 25, 30)) {
		t.Fatalf("Each order = %v", got)
	}
	var members []raftpb.NodeID
	for _, pr := range trk.Members() {
		members = append(members, pr.ID)
	}
	if !slices.Equal(members, nids(5, 10, 20, 25, 30)) {
		t.Fatalf("Members order = %v", members)
	}
	for _, id := range members {
		if pr := trk.Progress(id); pr == nil || pr.ID != id {
			t.Fatalf("Progress(%d) = %v", id, pr)
		}
	}
	for _, id := range nids(0, 1, 15, 26, 31) {
		if pr := trk.Progress(id); pr != nil {
			t.Fatalf("Progress(%d) of a non-member = %v", id, pr)
		}
		if _, ok := trk.AckedIndex(id); ok {
			t.Fatalf("AckedIndex(%d) of a non-member reported", id)
		}
	}
	trk.Progress(20).MaybeUpdate(7)
	if idx, ok := trk.AckedIndex(20); !ok || idx != 7 {
		t.Fatalf("AckedIndex(20) = %d, %v", idx, ok)
	}
	if idx, ok := trk.AckedIndex(10); !ok || idx != 0 {
		t.Fatalf("AckedIndex(10) = %d, %v", idx, ok)
	}
}

func TestCommitted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cs    raftpb.ConfState
		match map[raftpb.NodeID]raftpb.Index
		want  raftpb.Index
	}{
		{"single", raftpb.ConfState{Voters: nids(1)}, map[raftpb.NodeID]raftpb.Index{1: 4}, 4},
		{"three", raftpb.ConfState{Voters: nids(1, 2, 3)}, map[raftpb.NodeID]raftpb.Index{1: 9, 2: 5, 3: 7}, 7},
		// Learners hold the log but do not count toward commitment.
		{"learners ignored", raftpb.ConfState{Voters: nids(1, 2, 3), Learners: nids(4, 5)},
			map[raftpb.NodeID]raftpb.Index{1: 9, 4: 9, 5: 9}, 0},
		// The incoming half alone would commit 9; the outgoing half holds it at 5.
		{"joint outgoing lags", raftpb.ConfState{Voters: nids(1, 2, 3), VotersOutgoing: nids(3, 4, 5)},
			map[raftpb.NodeID]raftpb.Index{1: 9, 2: 9, 3: 5, 4: 5, 5: 1}, 5},
		{"joint incoming lags", raftpb.ConfState{Voters: nids(1, 2, 3), VotersOutgoing: nids(3, 4, 5)},
			map[raftpb.NodeID]raftpb.Index{1: 2, 2: 1, 3: 8, 4: 8, 5: 8}, 2},
		{"joint learner-next still votes", raftpb.ConfState{Voters: nids(1, 2), VotersOutgoing: nids(1, 2, 3),
			LearnersNext: nids(3)}, map[raftpb.NodeID]raftpb.Index{1: 6, 2: 4, 3: 6}, 4},
		// An empty configuration commits nothing it could limit.
		{"no voters", raftpb.ConfState{}, nil, raftpb.Index(1<<64 - 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			trk := restored(t, tc.cs, 10)
			for id, m := range tc.match {
				trk.Progress(id).MaybeUpdate(m)
			}
			if got := trk.Committed(); got != tc.want {
				t.Fatalf("Committed() = %d, want %d\n%s", got, tc.want, describe(trk))
			}
		})
	}
}

func TestIsSingleton(t *testing.T) {
	for _, tc := range []struct {
		cs   raftpb.ConfState
		id   raftpb.NodeID
		want bool
	}{
		{raftpb.ConfState{Voters: nids(1)}, 1, true},
		{raftpb.ConfState{Voters: nids(1), Learners: nids(2)}, 1, true},
		{raftpb.ConfState{Voters: nids(1, 2)}, 1, false},
		{raftpb.ConfState{Voters: nids(1), VotersOutgoing: nids(1)}, 1, true},
		{raftpb.ConfState{Voters: nids(1), VotersOutgoing: nids(1, 2)}, 1, false},
		{raftpb.ConfState{Voters: nids(2)}, 1, false},
		{raftpb.ConfState{}, 1, false},
	} {
		trk := restored(t, tc.cs, 1)
		if got := trk.IsSingleton(tc.id); got != tc.want {
			t.Errorf("%v: IsSingleton(%d) = %v, want %v", tc.cs, tc.id, got, tc.want)
		}
	}
}

func TestQuorumActive(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cs     raftpb.ConfState
		active []raftpb.NodeID
		want   bool
	}{
		{"all inactive", raftpb.ConfState{Voters: nids(1, 2, 3)}, nil, false},
		{"minority", raftpb.ConfState{Voters: nids(1, 2, 3)}, nids(1), false},
		{"majority", raftpb.ConfState{Voters: nids(1, 2, 3)}, nids(1, 3), true},
		{"learners do not count", raftpb.ConfState{Voters: nids(1, 2, 3), Learners: nids(4, 5)}, nids(1, 4, 5), false},
		{"joint needs both", raftpb.ConfState{Voters: nids(1, 2, 3), VotersOutgoing: nids(3, 4, 5)}, nids(1, 2), false},
		{"joint both", raftpb.ConfState{Voters: nids(1, 2, 3), VotersOutgoing: nids(3, 4, 5)}, nids(1, 3, 4), true},
		{"no voters", raftpb.ConfState{}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			trk := restored(t, tc.cs, 1)
			trk.Each(func(pr *Progress) { pr.RecentActive = slices.Contains(tc.active, pr.ID) })
			if got := trk.QuorumActive(); got != tc.want {
				t.Fatalf("QuorumActive() = %v, want %v\n%s", got, tc.want, describe(trk))
			}
		})
	}
}

func TestRecordVoteTallyVotes(t *testing.T) {
	trk := restored(t, raftpb.ConfState{Voters: nids(1, 2, 3, 4, 5), Learners: nids(6, 7)}, 1)
	tally := func() string {
		g, r, res := trk.TallyVotes()
		return fmt.Sprintf("%d granted %d rejected %s", g, r, res)
	}
	if got := tally(); got != "0 granted 0 rejected VotePending" {
		t.Fatalf("fresh tally: %s", got)
	}
	for _, step := range []struct {
		id      raftpb.NodeID
		granted bool
		want    string
	}{
		{1, true, "1 granted 0 rejected VotePending"},
		// A second answer from the same voter is ignored either way.
		{1, false, "1 granted 0 rejected VotePending"},
		{2, false, "1 granted 1 rejected VotePending"},
		{2, true, "1 granted 1 rejected VotePending"},
		// Learners and strangers do not vote.
		{6, true, "1 granted 1 rejected VotePending"},
		{7, true, "1 granted 1 rejected VotePending"},
		{9, true, "1 granted 1 rejected VotePending"},
		{3, true, "2 granted 1 rejected VotePending"},
		{4, true, "3 granted 1 rejected VoteWon"},
		{5, false, "3 granted 2 rejected VoteWon"},
	} {
		trk.RecordVote(step.id, step.granted)
		if got := tally(); got != step.want {
			t.Fatalf("after vote of %d (%v): %s, want %s", step.id, step.granted, got, step.want)
		}
	}
	trk.ResetVotes()
	if got := tally(); got != "0 granted 0 rejected VotePending" {
		t.Fatalf("after ResetVotes: %s", got)
	}
	for _, id := range nids(1, 2, 3) {
		trk.RecordVote(id, false)
	}
	if got := tally(); got != "0 granted 3 rejected VoteLost" {
		t.Fatalf("three rejections: %s", got)
	}
}

func TestTallyVotesJoint(t *testing.T) {
	trk := restored(t, raftpb.ConfState{Voters: nids(1, 2, 3), VotersOutgoing: nids(3, 4, 5),
		LearnersNext: nids(4)}, 1)
	for _, id := range nids(1, 2) {
		trk.RecordVote(id, true)
	}
	if _, _, res := trk.TallyVotes(); res != quorum.VotePending {
		t.Fatalf("incoming won, outgoing silent: %v", res)
	}
	// 4 is a learner-to-be but still votes in the outgoing half.
	trk.RecordVote(4, false)
	trk.RecordVote(5, false)
	g, r, res := trk.TallyVotes()
	if g != 2 || r != 2 || res != quorum.VoteLost {
		t.Fatalf("outgoing lost: %d %d %v", g, r, res)
	}
}

func TestReadQuorum(t *testing.T) {
	trk := restored(t, raftpb.ConfState{Voters: nids(1, 2, 3), Learners: nids(4)}, 1)
	if trk.ReadQuorum(1) {
		t.Fatal("read quorum with no acknowledgement")
	}
	trk.Progress(1).ReadAck = 5
	trk.Progress(4).ReadAck = 5 // a learner's acknowledgement does not count
	if trk.ReadQuorum(5) {
		t.Fatal("read quorum from one voter and a learner")
	}
	trk.Progress(2).ReadAck = 4
	if trk.ReadQuorum(5) {
		t.Fatal("read quorum counted an older round")
	}
	if !trk.ReadQuorum(4) {
		t.Fatal("no read quorum for round 4 acknowledged by 1 and 2")
	}
	trk.Progress(2).ReadAck = 6
	if !trk.ReadQuorum(5) {
		t.Fatal("no read quorum for round 5 acknowledged by 1 and 2 (at 6)")
	}
	if trk.ReadQuorum(6) {
		t.Fatal("read quorum for round 6 acknowledged only by 2")
	}

	joint := restored(t, raftpb.ConfState{Voters: nids(1, 2, 3), VotersOutgoing: nids(3, 4, 5)}, 1)
	for _, id := range nids(1, 2) {
		joint.Progress(id).ReadAck = 1
	}
	if joint.ReadQuorum(1) {
		t.Fatal("joint read quorum without the outgoing half")
	}
	joint.Progress(4).ReadAck = 1
	joint.Progress(5).ReadAck = 1
	if !joint.ReadQuorum(1) {
		t.Fatal("no joint read quorum with both halves")
	}
}

func TestNew(t *testing.T) {
	trk := New(16, 1<<20)
	if trk.MaxInflight != 16 || trk.MaxInflightBytes != 1<<20 || len(trk.Members()) != 0 || trk.Voters.Joint() {
		t.Fatalf("New: %+v", trk)
	}
	if trk.Progress(1) != nil {
		t.Fatal("empty tracker has a progress")
	}
}

// Restore is the gate for memberships read from snapshots and disk: it
// refuses what no membership change can produce.
func TestRestoreRefusesImpossibleMemberships(t *testing.T) {
	for name, cs := range map[string]raftpb.ConfState{
		"node id 0":              {Voters: []raftpb.NodeID{0, 1}},
		"learner id 0":           {Voters: []raftpb.NodeID{1}, Learners: []raftpb.NodeID{0}},
		"only outgoing voters":   {VotersOutgoing: []raftpb.NodeID{1}},
		"learners without voter": {Learners: []raftpb.NodeID{1}},
	} {
		tr := New(4, 0)
		if err := tr.Restore(cs, 5); !errors.Is(err, ErrInvalidConfChange) {
			t.Errorf("%s: Restore(%v) = %v", name, cs, err)
		}
	}
	// A joining replica knows no members at all: that is allowed.
	if err := New(4, 0).Restore(raftpb.ConfState{}, 0); err != nil {
		t.Fatalf("empty membership refused: %v", err)
	}
}
