// Package tracker keeps a leader's view of its shard: the membership
// (possibly joint) and the replication progress of every member. It also
// applies membership changes to that view (changer.go).
//
// Everything is plain data. Members are kept in a slice sorted by id, never
// in a map, so that every iteration (and so every message the core sends) is
// in a deterministic order.
package tracker

import (
	"slices"
	"strings"

	"github.com/shardd/shardd/group/quorum"
	"github.com/shardd/shardd/raftpb"
)

// Config is a shard's membership as the tracker uses it.
type Config struct {
	Voters quorum.JointConfig
	// AutoLeave: leave the joint configuration as soon as it is applied.
	AutoLeave bool
	// Learners receive the log but never vote. Disjoint from Voters[0].
	Learners []raftpb.NodeID
	// LearnersNext become learners when the joint configuration is left;
	// each is a voter of Voters[1] (and not of Voters[0]).
	LearnersNext []raftpb.NodeID
}

// Clone returns a deep copy.
func (c Config) Clone() Config {
	return Config{
		Voters:       quorum.JointConfig{slices.Clone(c.Voters[0]), slices.Clone(c.Voters[1])},
		AutoLeave:    c.AutoLeave,
		Learners:     slices.Clone(c.Learners),
		LearnersNext: slices.Clone(c.LearnersNext),
	}
}

// ConfState converts c to its persisted form.
func (c Config) ConfState() raftpb.ConfState {
	return raftpb.ConfState{
		Voters:         nilIfEmpty(c.Voters[0]),
		VotersOutgoing: nilIfEmpty(c.Voters[1]),
		Learners:       nilIfEmpty(c.Learners),
		LearnersNext:   nilIfEmpty(c.LearnersNext),
		AutoLeave:      c.AutoLeave,
	}
}

func nilIfEmpty(ids []raftpb.NodeID) []raftpb.NodeID {
	if len(ids) == 0 {
		return nil
	}
	return slices.Clone(ids)
}

func (c Config) String() string {
	var b strings.Builder
	b.WriteString("voters=")
	b.WriteString(c.Voters.String())
	if len(c.Learners) > 0 {
		b.WriteString(" learners=")
		b.WriteString(quorum.MajorityConfig(c.Learners).String())
	}
	if len(c.LearnersNext) > 0 {
		b.WriteString(" learners_next=")
		b.WriteString(quorum.MajorityConfig(c.LearnersNext).String())
	}
	if c.AutoLeave {
		b.WriteString(" autoleave")
	}
	return b.String()
}

// IsLearner reports whether id is a learner or about to become one.
func (c Config) IsLearner(id raftpb.NodeID) bool {
	return contains(c.Learners, id) || contains(c.LearnersNext, id)
}

// IsMember reports whether id appears anywhere in c.
func (c Config) IsMember(id raftpb.NodeID) bool {
	return c.Voters.Contains(id) || c.IsLearner(id)
}

func contains(ids []raftpb.NodeID, id raftpb.NodeID) bool {
	_, ok := slices.BinarySearch(ids, id)
	return ok
}

// ProgressTracker is the membership plus one Progress per member.
type ProgressTracker struct {
	Config
	// progress holds one entry per member, sorted by id.
	progress []*Progress

	MaxInflight      int
	MaxInflightBytes uint64
}

// New returns an empty tracker whose windows hold maxInflight messages and
// maxInflightBytes bytes (0 = no byte bound).
func New(maxInflight int, maxInflightBytes uint64) *ProgressTracker {
	return &ProgressTracker{MaxInflight: maxInflight, MaxInflightBytes: maxInflightBytes}
}

// Progress returns the progress of id, or nil if id is not a member.
func (t *ProgressTracker) Progress(id raftpb.NodeID) *Progress {
	i, ok := slices.BinarySearchFunc(t.progress, id, cmpProgress)
	if !ok {
		return nil
	}
	return t.progress[i]
}

func cmpProgress(p *Progress, id raftpb.NodeID) int {
	switch {
	case p.ID < id:
		return -1
	case p.ID > id:
		return 1
	}
	return 0
}

// Each calls f for every member in ascending id order.
func (t *ProgressTracker) Each(f func(pr *Progress)) {
	for _, pr := range t.progress {
		f(pr)
	}
}

// Members returns the progress entries in ascending id order. The slice
// belongs to the tracker.
func (t *ProgressTracker) Members() []*Progress { return t.progress }

// AckedIndex implements quorum.AckedIndexer over the members' Match.
func (t *ProgressTracker) AckedIndex(id raftpb.NodeID) (raftpb.Index, bool) {
	pr := t.Progress(id)
	if pr == nil {
		return 0, false
	}
	return pr.Match, true
}

// Committed is the highest index held by a quorum of every configuration.
func (t *ProgressTracker) Committed() raftpb.Index {
	return t.Voters.CommittedIndex(t)
}

// IsSingleton reports whether the voters are exactly one node in every half.
func (t *ProgressTracker) IsSingleton(id raftpb.NodeID) bool {
	return t.Voters.IsSingleVoter(id)
}

// QuorumActive reports whether a quorum of voters was recently active (as
// RecentActive records it) — the check-quorum test.
func (t *ProgressTracker) QuorumActive() bool {
	return t.Voters.VoteResult(func(id raftpb.NodeID) quorum.Vote {
		pr := t.Progress(id)
		if pr == nil || !pr.RecentActive {
			return quorum.VoteRejected
		}
		return quorum.VoteGranted
	}) == quorum.VoteWon
}

// ResetVotes forgets every vote.
func (t *ProgressTracker) ResetVotes() {
	for _, pr := range t.progress {
		pr.Vote = quorum.VoteMissing
	}
}

// RecordVote records id's answer; a second answer from the same voter in
// one election is ignored.
func (t *ProgressTracker) RecordVote(id raftpb.NodeID, granted bool) {
	pr := t.Progress(id)
	if pr == nil || pr.Vote != quorum.VoteMissing {
		return
	}
	if granted {
		pr.Vote = quorum.VoteGranted
	} else {
		pr.Vote = quorum.VoteRejected
	}
}

// TallyVotes returns the number of granted and rejected votes among voters
// and the election's result.
func (t *ProgressTracker) TallyVotes() (granted, rejected int, result quorum.VoteResult) {
	for _, pr := range t.progress {
		if pr.IsLearner {
			continue
		}
		switch pr.Vote {
		case quorum.VoteGranted:
			granted++
		case quorum.VoteRejected:
			rejected++
		}
	}
	result = t.Voters.VoteResult(func(id raftpb.NodeID) quorum.Vote {
		if pr := t.Progress(id); pr != nil {
			return pr.Vote
		}
		return quorum.VoteMissing
	})
	return granted, rejected, result
}

// ReadQuorum reports whether a quorum acknowledged read round r.
func (t *ProgressTracker) ReadQuorum(r uint64) bool {
	return t.Voters.VoteResult(func(id raftpb.NodeID) quorum.Vote {
		if pr := t.Progress(id); pr != nil && pr.ReadAck >= r {
			return quorum.VoteGranted
		}
		return quorum.VoteMissing
	}) == quorum.VoteWon
}

// IsVoter reports whether id votes in the current configuration.
func (t *ProgressTracker) IsVoter(id raftpb.NodeID) bool { return t.Voters.Contains(id) }
