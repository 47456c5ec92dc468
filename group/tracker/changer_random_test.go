package tracker

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/shardd/shardd/raftpb"
)

// invariantViolation restates the tracker's invariants independently of
// check(), so that a bug in check() cannot hide a bad configuration.
func invariantViolation(trk *ProgressTracker) error {
	cfg := &trk.Config
	for name, ids := range map[string][]raftpb.NodeID{
		"incoming": trk.Voters[0], "outgoing": trk.Voters[1],
		"learners": cfg.Learners, "learners_next": cfg.LearnersNext,
	} {
		for i, id := range ids {
			if id == raftpb.None {
				return fmt.Errorf("%s contains node 0", name)
			}
			if i > 0 && ids[i-1] >= id {
				return fmt.Errorf("%s not sorted and unique: %v", name, ids)
			}
		}
	}
	for _, id := range cfg.Learners {
		if trk.Voters[0].Contains(id) || trk.Voters[1].Contains(id) {
			return fmt.Errorf("learner %d is also a voter", id)
		}
	}
	for _, id := range cfg.LearnersNext {
		if !trk.Voters[1].Contains(id) || trk.Voters[0].Contains(id) {
			return fmt.Errorf("learner-next %d is not an outgoing-only voter", id)
		}
		if slices.Contains(cfg.Learners, id) {
			return fmt.Errorf("learner-next %d is already a learner", id)
		}
	}
	if !trk.Voters.Joint() && (len(cfg.LearnersNext) > 0 || cfg.AutoLeave || len(trk.Voters[1]) > 0) {
		return fmt.Errorf("joint-only state outside a joint configuration")
	}
	var members []raftpb.NodeID
	members = append(members, trk.Voters[0]...)
	members = append(members, trk.Voters[1]...)
	members = append(members, cfg.Learners...)
	members = append(members, cfg.LearnersNext...)
	slices.Sort(members)
	members = slices.Compact(members)
	var tracked []raftpb.NodeID
	for i, pr := range trk.progress {
		if i > 0 && trk.progress[i-1].ID >= pr.ID {
			return fmt.Errorf("progress not sorted and unique at %d", pr.ID)
		}
		tracked = append(tracked, pr.ID)
		if pr.IsLearner != slices.Contains(cfg.Learners, pr.ID) {
			return fmt.Errorf("progress %d: IsLearner=%v disagrees with the configuration", pr.ID, pr.IsLearner)
		}
		if pr.Inflights == nil {
			return fmt.Errorf("progress %d has no inflight window", pr.ID)
		}
		if pr.Match >= pr.Next {
			return fmt.Errorf("progress %d: match %d >= next %d", pr.ID, pr.Match, pr.Next)
		}
	}
	if !slices.Equal(members, tracked) {
		return fmt.Errorf("members %v but progress for %v", members, tracked)
	}
	return nil
}

// mustHoldInvariants checks trk both with the package's own check and the
// independent restatement above.
func mustHoldInvariants(t *testing.T, trk *ProgressTracker) {
	t.Helper()
	r := Result{Config: trk.Config, progress: trk.progress}
	if err := r.check(); err != nil {
		t.Fatalf("check(): %v\n%s", err, describe(trk))
	}
	if err := invariantViolation(trk); err != nil {
		t.Fatalf("invariant: %v\n%s", err, describe(trk))
	}
}

// randomChanges returns up to maxLen changes, mostly valid ones on nodes
// 1..6, sometimes naming node 0 or an unknown change type.
func randomChanges(rng *rand.Rand, maxLen int) []raftpb.ConfChangeSingle {
	n := rng.IntN(maxLen + 1)
	out := make([]raftpb.ConfChangeSingle, 0, n)
	for range n {
		cc := raftpb.ConfChangeSingle{
			Type: raftpb.ConfChangeType(rng.IntN(3)),
			Node: raftpb.NodeID(1 + rng.IntN(6)),
		}
		switch rng.IntN(40) {
		case 0:
			cc.Node = raftpb.None
		case 1:
			cc.Type = raftpb.ConfChangeType(3 + rng.IntN(5))
		}
		out = append(out, cc)
	}
	return out
}

// wellFormed reports whether every change names a node and a known type.
func wellFormed(ccs []raftpb.ConfChangeSingle) bool {
	for _, cc := range ccs {
		if cc.Node == raftpb.None || cc.Type > raftpb.RemoveNode {
			return false
		}
	}
	return true
}

// expectRoles checks each node's role after a successful Simple, EnterJoint
// or Bootstrap against what the last change naming it asked for; nodes not
// named keep their incoming-voter and learner roles.
func expectRoles(prior, got Config, ccs []raftpb.ConfChangeSingle) error {
	last := map[raftpb.NodeID]raftpb.ConfChangeType{}
	for _, cc := range ccs {
		last[cc.Node] = cc.Type
	}
	for id := raftpb.NodeID(1); id <= 6; id++ {
		voter := got.Voters[0].Contains(id)
		learner := slices.Contains(got.Learners, id)
		next := slices.Contains(got.LearnersNext, id)
		outgoing := got.Voters[1].Contains(id)
		typ, named := last[id]
		switch {
		case !named:
			if voter != prior.Voters[0].Contains(id) || learner != slices.Contains(prior.Learners, id) ||
				next != slices.Contains(prior.LearnersNext, id) {
				return fmt.Errorf("node %d was not named but its role changed", id)
			}
		case typ == raftpb.AddVoter:
			if !voter || learner || next {
				return fmt.Errorf("node %d: AddVoter gave voter=%v learner=%v next=%v", id, voter, learner, next)
			}
		case typ == raftpb.AddLearner:
			// An outgoing voter becomes a learner only on leaving.
			if voter || learner == outgoing || next != outgoing {
				return fmt.Errorf("node %d: AddLearner gave voter=%v learner=%v next=%v outgoing=%v",
					id, voter, learner, next, outgoing)
			}
		case typ == raftpb.RemoveNode:
			if voter || learner || next {
				return fmt.Errorf("node %d: RemoveNode gave voter=%v learner=%v next=%v", id, voter, learner, next)
			}
		}
	}
	return nil
}

// TestChangerRandom applies random sequences of valid and invalid changes
// and checks after each one that the tracker holds its invariants, that a
// refused change touched nothing and was refused for a reason the
// protocol gives, and that an accepted one did what it said.
func TestChangerRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	counts := map[string]int{}
	for round := range 400 {
		trk := New(1+rng.IntN(4), uint64(rng.IntN(2)*100))
		var lastIndex raftpb.Index
		for step := range 40 {
			lastIndex += raftpb.Index(rng.IntN(3))
			// Replication goes on between changes; existing members must
			// keep what it recorded.
			for _, pr := range trk.progress {
				switch rng.IntN(4) {
				case 0:
					if pr.MaybeUpdate(pr.Match + raftpb.Index(rng.IntN(3))) {
						pr.BecomeReplicate()
					}
				case 1:
					if pr.State == StateReplicate && !pr.Inflights.Full() {
						pr.SentEntries(pr.Next, 1, 10)
					}
				case 2:
					pr.RecentActive = !pr.RecentActive
				}
			}

			prior := trk.Config.Clone()
			priorProgress := map[raftpb.NodeID]Progress{}
			for _, pr := range trk.progress {
				cp := *pr
				cp.Inflights = pr.Inflights.Clone()
				priorProgress[pr.ID] = cp
			}
			before := stateOf(trk)
			c := Changer{Tracker: trk, LastIndex: lastIndex}
			joint := prior.Voters.Joint()
			hasVoters := len(prior.Voters[0]) > 0

			var (
				op      string
				changes []raftpb.ConfChangeSingle
				r       Result
				err     error
				valid   bool // whether the protocol allows the change
			)
			// Without voters every kind of change is tried too, but mostly
			// Bootstrap, so that rounds move on to a membership.
			switch k := rng.IntN(10); {
			case k == 9, !hasVoters && k < 2:
				op = "Bootstrap"
				changes = randomChanges(rng, 5)
				r, err = c.Bootstrap(changes)
				valid = !joint && !hasVoters && wellFormed(changes)
			case k < 4:
				op = "Simple"
				changes = randomChanges(rng, 2)
				r, err = c.Simple(changes)
				valid = !joint && wellFormed(changes)
			case k < 6:
				op = "EnterJoint"
				changes = randomChanges(rng, 4)
				r, err = c.EnterJoint(rng.IntN(2) == 0, changes)
				valid = !joint && hasVoters && wellFormed(changes)
			case k < 8:
				op = "LeaveJoint"
				r, err = c.LeaveJoint()
				valid = joint
			default:
				op = "Restore"
				cs := trk.ConfState()
				err = trk.Restore(cs, lastIndex)
				if err != nil {
					t.Fatalf("round %d step %d: Restore of the tracker's own ConfState %v: %v", round, step, cs, err)
				}
				if pcs := prior.ConfState(); !pcs.Equal(&cs) || trk.Config.String() != prior.String() {
					t.Fatalf("round %d step %d: Restore changed the membership to %s, was %s", round, step, trk.Config, prior)
				}
				mustHoldInvariants(t, trk)
				continue
			}
			// Computing a change never touches the tracker.
			checkUnchanged(t, trk, before, op)

			if err != nil {
				if !errors.Is(err, ErrInvalidConfChange) {
					t.Fatalf("round %d step %d: %s(%v) = %v, not ErrInvalidConfChange", round, step, op, changes, err)
				}
				// Refused although the protocol allows it: only the
				// membership-size rules may explain that.
				if valid && !refusedForSize(op, prior, changes) {
					t.Fatalf("round %d step %d: %s(%v) from %s refused: %v", round, step, op, changes, prior, err)
				}
				counts[op+" refused"]++
				continue
			}
			if !valid {
				t.Fatalf("round %d step %d: %s(%v) from %s accepted: %s", round, step, op, changes, prior, r.Config)
			}
			counts[op]++
			trk.Install(r)
			mustHoldInvariants(t, trk)
			got := trk.Config
			if len(got.Voters[0]) == 0 {
				t.Fatalf("round %d step %d: %s left no incoming voter: %s", round, step, op, got)
			}

			switch op {
			case "Simple":
				if got.Voters.Joint() {
					t.Fatalf("round %d step %d: Simple made a joint configuration: %s", round, step, got)
				}
				if n := symDiff(prior.Voters[0], got.Voters[0]); n > 1 {
					t.Fatalf("round %d step %d: Simple changed %d voters: %s -> %s", round, step, n, prior, got)
				}
			case "EnterJoint":
				if !got.Voters.Joint() || !slices.Equal(got.Voters[1], prior.Voters[0]) {
					t.Fatalf("round %d step %d: EnterJoint from %s gave %s", round, step, prior, got)
				}
			case "LeaveJoint":
				wantLearners := slices.Concat(prior.Learners, prior.LearnersNext)
				slices.Sort(wantLearners)
				if got.Voters.Joint() || got.AutoLeave || len(got.LearnersNext) > 0 ||
					!slices.Equal(got.Voters[0], prior.Voters[0]) || !slices.Equal(got.Learners, wantLearners) {
					t.Fatalf("round %d step %d: LeaveJoint from %s gave %s", round, step, prior, got)
				}
			}
			if op != "LeaveJoint" {
				if err := expectRoles(prior, got, changes); err != nil {
					t.Fatalf("round %d step %d: %s(%v) from %s gave %s: %v", round, step, op, changes, prior, got, err)
				}
			}

			// Members that stayed keep their progress; new ones start fresh.
			outgoing := prior.Voters[1]
			if op == "EnterJoint" {
				outgoing = prior.Voters[0]
			}
			for _, pr := range trk.progress {
				old, ok := priorProgress[pr.ID]
				if ok && !droppedDuring(changes, pr.ID, outgoing) {
					old.IsLearner = pr.IsLearner
					if !reflect.DeepEqual(old, *pr) {
						t.Fatalf("round %d step %d: %s changed the progress of %d: %+v -> %+v", round, step, op, pr.ID, old, *pr)
					}
					continue
				}
				if pr.Next != lastIndex+1 || pr.Match != 0 || !pr.RecentActive || pr.State != StateProbe ||
					pr.Inflights.Count() != 0 || pr.Inflights.maxCount != trk.MaxInflight {
					t.Fatalf("round %d step %d: new member %d: %+v (last index %d)", round, step, pr.ID, *pr, lastIndex)
				}
			}
		}
	}
	t.Logf("counts: %v", counts)
	// The generator must reach every kind of change, accepted and refused.
	for _, k := range []string{"Bootstrap", "Simple", "EnterJoint", "LeaveJoint",
		"Bootstrap refused", "Simple refused", "EnterJoint refused", "LeaveJoint refused"} {
		if counts[k] < 20 {
			t.Errorf("only %d cases of %s: %v", counts[k], k, counts)
		}
	}
}

// refusedForSize reports whether a well-formed change from prior may be
// refused for changing too many voters at once (Simple) or for leaving no
// incoming voter.
func refusedForSize(op string, prior Config, ccs []raftpb.ConfChangeSingle) bool {
	incoming := slices.Clone(prior.Voters[0])
	for _, cc := range ccs {
		i, ok := slices.BinarySearch(incoming, cc.Node)
		switch {
		case cc.Type == raftpb.AddVoter && !ok:
			incoming = slices.Insert(incoming, i, cc.Node)
		case cc.Type != raftpb.AddVoter && ok:
			incoming = slices.Delete(incoming, i, i+1)
		}
	}
	if len(incoming) == 0 {
		return true
	}
	return op == "Simple" && symDiff(prior.Voters[0], incoming) > 1
}

// droppedDuring reports whether ccs drops id's progress on the way: a
// removal does so unless id votes in the outgoing half. If id has progress
// afterwards, it was added back and starts over like any new member.
func droppedDuring(ccs []raftpb.ConfChangeSingle, id raftpb.NodeID, outgoing []raftpb.NodeID) bool {
	if slices.Contains(outgoing, id) {
		return false
	}
	for _, cc := range ccs {
		if cc.Node == id && cc.Type == raftpb.RemoveNode {
			return true
		}
	}
	return false
}
