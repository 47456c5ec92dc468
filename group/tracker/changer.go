package tracker

import (
	"errors"
	"fmt"
	"slices"

	"github.com/shardd/shardd/group/quorum"
	"github.com/shardd/shardd/raftpb"
)

// ErrInvalidConfChange is returned (wrapped, with the reason) for a
// membership change that cannot be applied to the current configuration.
var ErrInvalidConfChange = errors.New("invalid membership change")

// Changer computes the configuration that results from a membership change,
// without touching the tracker until the caller installs the result with
// ProgressTracker.Install. LastIndex seeds the progress of new members.
type Changer struct {
	Tracker   *ProgressTracker
	LastIndex raftpb.Index
}

// Result is a configuration and the progress entries that go with it.
type Result struct {
	Config   Config
	progress []*Progress
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidConfChange, fmt.Sprintf(format, args...))
}

// Simple applies changes that alter at most one voter, without a joint
// configuration. More than one voter changed at once could let two
// disjoint majorities exist; that needs EnterJoint.
func (c Changer) Simple(ccs []raftpb.ConfChangeSingle) (Result, error) {
	if c.Tracker.Voters.Joint() {
		return Result{}, invalid("simple change while in a joint configuration")
	}
	r, err := c.apply(c.start(), ccs)
	if err != nil {
		return Result{}, err
	}
	if n := symDiff(c.Tracker.Voters[0], r.Config.Voters[0]); n > 1 {
		return Result{}, invalid("%d voters changed at once without a joint configuration", n)
	}
	return r, r.check()
}

// EnterJoint moves to the joint configuration (current voters, voters after
// ccs). With autoLeave the leader leaves it as soon as it is applied.
func (c Changer) EnterJoint(autoLeave bool, ccs []raftpb.ConfChangeSingle) (Result, error) {
	if c.Tracker.Voters.Joint() {
		return Result{}, invalid("already in a joint configuration")
	}
	if len(c.Tracker.Voters[0]) == 0 {
		return Result{}, invalid("cannot enter a joint configuration from no voters")
	}
	r := c.start()
	r.Config.Voters[1] = slices.Clone(r.Config.Voters[0])
	r, err := c.apply(r, ccs)
	if err != nil {
		return Result{}, err
	}
	r.Config.AutoLeave = autoLeave
	return r, r.check()
}

// LeaveJoint moves from a joint configuration to its incoming half; the
// LearnersNext become learners and members of only the outgoing half go.
func (c Changer) LeaveJoint() (Result, error) {
	if !c.Tracker.Voters.Joint() {
		return Result{}, invalid("not in a joint configuration")
	}
	r := c.start()
	cfg := &r.Config
	for _, id := range cfg.LearnersNext {
		cfg.Learners = insertID(cfg.Learners, id)
		r.get(id).IsLearner = true
	}
	cfg.LearnersNext = nil
	for _, id := range cfg.Voters[1] {
		if !cfg.Voters[0].Contains(id) && !contains(cfg.Learners, id) {
			r.remove(id)
		}
	}
	cfg.Voters[1] = nil
	cfg.AutoLeave = false
	return r, r.check()
}

// Bootstrap builds the first configuration of a replica that knows no
// membership yet (it joins and replays the log from its first entry, which
// records the shard's initial members). Any number of voters may be added:
// there is no previous configuration whose quorums could disagree.
func (c Changer) Bootstrap(ccs []raftpb.ConfChangeSingle) (Result, error) {
	if c.Tracker.Voters.Joint() || len(c.Tracker.Voters[0]) > 0 {
		return Result{}, invalid("bootstrap of a replica that has a membership")
	}
	r, err := c.apply(c.start(), ccs)
	if err != nil {
		return Result{}, err
	}
	return r, r.check()
}

// start copies the tracker's state so that a failed change leaves it intact.
func (c Changer) start() Result {
	r := Result{Config: c.Tracker.Config.Clone()}
	r.progress = make([]*Progress, len(c.Tracker.progress))
	for i, pr := range c.Tracker.progress {
		cp := *pr
		r.progress[i] = &cp
	}
	return r
}

func (c Changer) apply(r Result, ccs []raftpb.ConfChangeSingle) (Result, error) {
	cfg := &r.Config
	for _, cc := range ccs {
		if cc.Node == raftpb.None {
			return Result{}, invalid("node id 0")
		}
		switch cc.Type {
		case raftpb.AddVoter:
			cfg.Learners = removeID(cfg.Learners, cc.Node)
			cfg.LearnersNext = removeID(cfg.LearnersNext, cc.Node)
			cfg.Voters[0] = quorum.MajorityConfig(insertID(cfg.Voters[0], cc.Node))
			c.ensure(&r, cc.Node).IsLearner = false
		case raftpb.AddLearner:
			cfg.Voters[0] = quorum.MajorityConfig(removeID(cfg.Voters[0], cc.Node))
			cfg.Learners = removeID(cfg.Learners, cc.Node)
			cfg.LearnersNext = removeID(cfg.LearnersNext, cc.Node)
			pr := c.ensure(&r, cc.Node)
			if cfg.Voters[1].Contains(cc.Node) {
				// Still a voter of the outgoing half: it becomes a learner
				// only when the joint configuration is left.
				cfg.LearnersNext = insertID(cfg.LearnersNext, cc.Node)
			} else {
				cfg.Learners = insertID(cfg.Learners, cc.Node)
				pr.IsLearner = true
			}
		case raftpb.RemoveNode:
			cfg.Voters[0] = quorum.MajorityConfig(removeID(cfg.Voters[0], cc.Node))
			cfg.Learners = removeID(cfg.Learners, cc.Node)
			cfg.LearnersNext = removeID(cfg.LearnersNext, cc.Node)
			if !cfg.Voters[1].Contains(cc.Node) {
				r.remove(cc.Node)
			}
		default:
			return Result{}, invalid("unknown change type %d", cc.Type)
		}
	}
	if len(cfg.Voters[0]) == 0 {
		return Result{}, invalid("the change removes every voter")
	}
	return r, nil
}

// ensure returns id's progress in r, creating it for a new member. A new
// member is probed from the leader's last index and counts as recently
// active, so check-quorum does not fire before it could have answered.
func (c Changer) ensure(r *Result, id raftpb.NodeID) *Progress {
	if pr := r.get(id); pr != nil {
		return pr
	}
	pr := &Progress{
		ID:           id,
		Next:         c.LastIndex + 1,
		Inflights:    NewInflights(c.Tracker.MaxInflight, c.Tracker.MaxInflightBytes),
		RecentActive: true,
	}
	i, _ := slices.BinarySearchFunc(r.progress, id, cmpProgress)
	r.progress = slices.Insert(r.progress, i, pr)
	return pr
}

func (r *Result) get(id raftpb.NodeID) *Progress {
	i, ok := slices.BinarySearchFunc(r.progress, id, cmpProgress)
	if !ok {
		return nil
	}
	return r.progress[i]
}

func (r *Result) remove(id raftpb.NodeID) {
	if i, ok := slices.BinarySearchFunc(r.progress, id, cmpProgress); ok {
		r.progress = slices.Delete(r.progress, i, i+1)
	}
}

// check verifies the invariants every configuration must satisfy.
func (r *Result) check() error {
	cfg := &r.Config
	for _, id := range cfg.Learners {
		if cfg.Voters.Contains(id) {
			return invalid("%d is both learner and voter", id)
		}
	}
	for _, id := range cfg.LearnersNext {
		if !cfg.Voters[1].Contains(id) || cfg.Voters[0].Contains(id) || contains(cfg.Learners, id) {
			return invalid("learner-next %d must be an outgoing-only voter", id)
		}
	}
	if !cfg.Voters.Joint() && (len(cfg.LearnersNext) > 0 || cfg.AutoLeave) {
		return invalid("joint-only state outside a joint configuration")
	}
	n := 0
	for _, pr := range r.progress {
		if !cfg.IsMember(pr.ID) {
			return invalid("progress for non-member %d", pr.ID)
		}
		if pr.IsLearner != contains(cfg.Learners, pr.ID) {
			return invalid("learner flag of %d disagrees with the configuration", pr.ID)
		}
		n++
	}
	// LearnersNext are outgoing voters, so they are counted by IDs.
	if n != len(cfg.Voters.IDs())+len(cfg.Learners) {
		return invalid("a member has no progress")
	}
	return nil
}

// Install makes r the tracker's configuration and progress.
func (t *ProgressTracker) Install(r Result) {
	t.Config = r.Config
	t.progress = r.progress
}

// Restore sets the tracker to the persisted membership cs, with fresh
// progress for every member (next = lastIndex+1).
func (t *ProgressTracker) Restore(cs raftpb.ConfState, lastIndex raftpb.Index) error {
	// cs may come from a snapshot or from disk: check what the changer
	// never produces. Only a replica that is joining knows no members.
	for _, ids := range [][]raftpb.NodeID{cs.Voters, cs.VotersOutgoing, cs.Learners, cs.LearnersNext} {
		if slices.Contains(ids, raftpb.None) {
			return invalid("node id 0 in %v", cs)
		}
	}
	if len(cs.Voters) == 0 && (len(cs.VotersOutgoing) > 0 || len(cs.Learners) > 0 || len(cs.LearnersNext) > 0) {
		return invalid("members without incoming voters: %v", cs)
	}
	r := Result{Config: Config{
		Voters: quorum.JointConfig{
			quorum.NewMajorityConfig(cs.Voters...),
			quorum.NewMajorityConfig(cs.VotersOutgoing...),
		},
		AutoLeave:    cs.AutoLeave,
		Learners:     sortedIDs(cs.Learners),
		LearnersNext: sortedIDs(cs.LearnersNext),
	}}
	if len(r.Config.Voters[1]) == 0 {
		r.Config.Voters[1] = nil
	}
	c := Changer{Tracker: t, LastIndex: lastIndex}
	for _, id := range r.Config.Voters.IDs() {
		c.ensure(&r, id)
	}
	for _, id := range r.Config.Learners {
		c.ensure(&r, id).IsLearner = true
	}
	for _, id := range r.Config.LearnersNext {
		c.ensure(&r, id)
	}
	if err := r.check(); err != nil {
		return err
	}
	t.Install(r)
	return nil
}

func sortedIDs(ids []raftpb.NodeID) []raftpb.NodeID {
	if len(ids) == 0 {
		return nil
	}
	c := slices.Clone(ids)
	slices.Sort(c)
	return slices.Compact(c)
}

func insertID(ids []raftpb.NodeID, id raftpb.NodeID) []raftpb.NodeID {
	i, ok := slices.BinarySearch(ids, id)
	if ok {
		return ids
	}
	return slices.Insert(ids, i, id)
}

func removeID(ids []raftpb.NodeID, id raftpb.NodeID) []raftpb.NodeID {
	i, ok := slices.BinarySearch(ids, id)
	if !ok {
		return ids
	}
	return slices.Delete(ids, i, i+1)
}

// symDiff counts ids in exactly one of a and b.
func symDiff(a, b []raftpb.NodeID) int {
	n := 0
	for _, id := range a {
		if !contains(b, id) {
			n++
		}
	}
	for _, id := range b {
		if !contains(a, id) {
			n++
		}
	}
	return n
}
