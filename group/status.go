package group

import (
	"github.com/shardd/shardd/group/tracker"
	"github.com/shardd/shardd/raftpb"
)

// BasicStatus is a cheap snapshot of a replica's state.
type BasicStatus struct {
	ID        raftpb.NodeID
	Shard     raftpb.ShardID
	HardState raftpb.HardState
	SoftState
	// Applying is the highest index released for applying.
	Applying       raftpb.Index
	FirstIndex     raftpb.Index
	LastIndex      raftpb.Index
	LeadTransferee raftpb.NodeID
	Quiesced       bool
	// ConfIndex is the index of the membership change in force.
	ConfIndex raftpb.Index
}

// Status adds the membership and, on the leader, every member's progress.
type Status struct {
	BasicStatus
	Config   raftpb.ConfState
	Progress map[raftpb.NodeID]tracker.Progress
}

// BasicStatus returns the replica's state without allocating.
func (g *Group) BasicStatus() BasicStatus {
	return BasicStatus{
		ID:             g.id,
		Shard:          g.shard,
		HardState:      g.hardState(),
		SoftState:      g.softState(),
		Applying:       g.log.applying,
		FirstIndex:     g.log.firstIndex(),
		LastIndex:      g.log.lastIndex(),
		LeadTransferee: g.leadTransferee,
		Quiesced:       g.quiesced,
		ConfIndex:      g.confIndex,
	}
}

// Status returns the replica's state including membership and progress.
func (g *Group) Status() Status {
	s := Status{BasicStatus: g.BasicStatus(), Config: g.trk.ConfState()}
	if g.role == Leader {
		s.Progress = make(map[raftpb.NodeID]tracker.Progress, len(g.trk.Members()))
		for _, pr := range g.trk.Members() {
			p := *pr
			p.Inflights = pr.Inflights.Clone()
			s.Progress[pr.ID] = p
		}
	}
	return s
}

// ConfState returns the membership in force.
func (g *Group) ConfState() raftpb.ConfState { return g.trk.ConfState() }
