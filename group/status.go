package group

import (
	"github.com/shardd/shardd/group/tracker"
	"github.com/shardd/shardd/raftpb"
)

// Brief is the part of a replica's state read after every step: it comes
// from the core's own fields and touches no storage, so polling it across
// 100000s of replicas costs no lock and no cache miss in the log.
type Brief struct {
	HardState raftpb.HardState
	SoftState
	LastIndex raftpb.Index
	Quiesced  bool
	// ConfIndex is the index of the membership change in force.
	ConfIndex raftpb.Index
}

// BasicStatus is a cheap snapshot of a replica's state.
type BasicStatus struct {
	Brief
	ID    raftpb.NodeID
	Shard raftpb.ShardID
	// Applying is the highest index released for applying.
	Applying       raftpb.Index
	FirstIndex     raftpb.Index
	LeadTransferee raftpb.NodeID
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
		Brief:          g.Brief(),
		ID:             g.id,
		Shard:          g.shard,
		Applying:       g.log.applying,
		FirstIndex:     g.log.firstIndex(),
		LeadTransferee: g.leadTransferee,
	}
}

// Brief returns the replica's term, vote, commit, role, leader, last index,
// quiescence and membership index without reading storage.
func (g *Group) Brief() Brief {
	return Brief{
		HardState: g.hardState(),
		SoftState: g.softState(),
		LastIndex: g.log.lastIndex(),
		Quiesced:  g.quiesced,
		ConfIndex: g.confIndex,
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
