package group

import (
	"fmt"

	"github.com/shardd/shardd/group/quorum"
	"github.com/shardd/shardd/raftpb"
)

const (
	quorumWon  = quorum.VoteWon
	quorumLost = quorum.VoteLost
)

// SoftState is volatile state worth reporting: who leads and in which role
// this replica is. It is never persisted.
type SoftState struct {
	Lead raftpb.NodeID
	Role Role
}

// ReadState answers a ReadIndex request: once the state machine has applied
// Index, reading it is linearizable for request ID. Dropped means the
// request was abandoned (leadership lost or refused) and should be retried.
type ReadState struct {
	ID      uint64
	Index   raftpb.Index
	Dropped bool
}

// Ready is everything the core wants done. The caller handles it in this
// order:
//
//  1. Send Messages at once; they do not depend on this Ready's persist
//     (a leader sends its appends before its own fsync).
//  2. Persist, atomically and durably, in this order: Snapshot (replaces the
//     whole log), Entries (replace the log's suffix from Entries[0].Index in
//     the same write — never delete-then-append in two writes), HardState,
//     ConfState/ConfIndex, CompactTo. Persists complete in Ready order.
//  3. Once the persist is durable: send AfterPersist, apply the Snapshot
//     and then CommittedEntries to the state machine (in that order, after
//     everything released earlier), and call Advance. CommittedEntries are
//     durable already (only durable entries are released), so when the
//     Ready carries no Snapshot and no ConfState — and nothing released
//     earlier still waits — they may be applied without waiting for this
//     persist.
//
// Several Readys may be outstanding; they must be advanced in order. A
// Ready that only moves the commit index needs no waiting and no Advance
// (NeedsAdvance). The
// Messages and AfterPersist slices return to the core with Advance: the
// caller copies the messages out (sending does) and keeps no reference to
// the slices after Advance.
type Ready struct {
	// SoftState is set when the leader or this replica's role changed.
	SoftState *SoftState
	// HardState is set (non-zero) when term, vote or commit changed.
	HardState raftpb.HardState
	// Entries to append; they replace any stored entries from their first
	// index on.
	Entries []raftpb.Entry
	// Snapshot to install: the log restarts after it and the state machine
	// is to be restored from the snapshot data received with it.
	Snapshot *raftpb.SnapshotMeta
	// ConfState is the membership to record, in force since ConfIndex.
	ConfState *raftpb.ConfState
	ConfIndex raftpb.Index
	// CompactTo asks to delete the log up to and including this index.
	CompactTo raftpb.Index

	// Messages may be sent before the persist.
	Messages []raftpb.Message
	// AfterPersist are acknowledgements (append responses, votes) that may
	// only leave once this Ready's persist is durable.
	AfterPersist []raftpb.Message

	// CommittedEntries are to be applied, in order, after the persist.
	CommittedEntries []raftpb.Entry
	// ReadStates answer ReadIndex requests.
	ReadStates []ReadState

	seq uint64
}

// MustPersist reports whether rd carries anything to write.
func (rd *Ready) MustPersist() bool {
	return !rd.HardState.IsEmpty() || len(rd.Entries) > 0 || rd.Snapshot != nil ||
		rd.ConfState != nil || rd.CompactTo > 0
}

func (rd *Ready) isEmpty() bool {
	return rd.SoftState == nil && !rd.MustPersist() && len(rd.Messages) == 0 &&
		len(rd.AfterPersist) == 0 && len(rd.CommittedEntries) == 0 && len(rd.ReadStates) == 0
}

// HasReady reports whether Ready would return anything.
func (g *Group) HasReady() bool {
	if g.log.err != nil {
		return false
	}
	u := &g.log.unstable
	return g.softState() != g.prevSoft ||
		g.hardState() != g.prevHard ||
		len(u.nextEntries()) > 0 || u.nextSnapshot() != nil ||
		g.log.hasNextCommittedEnts() ||
		g.confChanged || g.compactTo > 0 || g.reads.roundOpen || g.commitPending ||
		len(g.msgs) > 0 || len(g.msgsPersist) > 0 || len(g.readStates) > 0
}

// Ready collects everything pending. The caller must hand every non-empty
// Ready back to Advance, in order, once its persist is durable. After a
// storage failure Ready returns nothing; see Err.
func (g *Group) Ready() Ready {
	var rd Ready
	if g.log.err != nil {
		return rd
	}
	// Release committed entries first: applying a membership change can
	// change the role and send messages, which belong in this Ready.
	if snap := g.log.unstable.nextSnapshot(); snap != nil {
		rd.Snapshot = snap
		g.log.applying = max(g.log.applying, snap.Index)
	} else if ents := g.log.nextCommittedEnts(); len(ents) > 0 {
		rd.CommittedEntries = ents
		g.releaseCommitted(ents)
	}
	if g.reads.roundOpen {
		g.bcastReadRound()
	}
	if g.commitPending {
		if g.role == Leader {
			g.sendCommit()
		}
		g.commitPending = false
	}
	if g.log.err != nil {
		return Ready{}
	}

	rd.Entries = g.log.unstable.nextEntries()
	g.log.unstable.acceptInProgress()
	commitOnly := true
	if hs := g.hardState(); hs != g.prevHard {
		rd.HardState = hs
		commitOnly = hs.Term == g.prevHard.Term && hs.Vote == g.prevHard.Vote
		g.prevHard = hs
	}
	if ss := g.softState(); ss != g.prevSoft {
		g.prevSoft = ss
		rd.SoftState = new(SoftState)
		*rd.SoftState = ss
	}
	if g.confChanged {
		cs := g.trk.ConfState()
		rd.ConfState = &cs
		rd.ConfIndex = g.confIndex
		g.confChanged = false
	}
	rd.CompactTo, g.compactTo = g.compactTo, 0
	rd.Messages, g.msgs = g.msgs, nil
	rd.AfterPersist, g.msgsPersist = g.msgsPersist, nil
	rd.ReadStates, g.readStates = g.readStates, nil
	// Only a Ready whose persist the core must hear about is numbered for
	// Advance: one that appends, installs, records a vote or membership,
	// compacts, or holds acknowledgements. The rest move at most the commit
	// index, which Raft never needs durable (a restarted replica learns it
	// again from the leader), so the caller need not wait for them.
	if len(rd.Entries) > 0 || rd.Snapshot != nil || !commitOnly || rd.ConfState != nil ||
		rd.CompactTo > 0 || len(rd.AfterPersist) > 0 {
		g.readySeq++
		rd.seq = g.readySeq
	}
	return rd
}

// NeedsAdvance reports whether the caller must wait for rd's persist and
// then hand rd to Advance. When it is false, rd changes at most the commit
// index: the caller may write its HardState without waiting for the write
// to be durable, send its Messages and apply its CommittedEntries at once
// (after everything released earlier), and skip Advance — calling it is
// harmless.
func (rd *Ready) NeedsAdvance() bool { return rd.seq != 0 }

// releaseCommitted does what applying means to the core itself: membership
// changes take effect, and the leader's uncommitted-size budget is returned.
func (g *Group) releaseCommitted(ents []raftpb.Entry) {
	var size uint64
	for i := range ents {
		e := &ents[i]
		if e.Type == raftpb.EntryConfChange {
			g.applyConfChangeEntry(e)
		}
		size += uint64(len(e.Data))
	}
	g.log.applying = ents[len(ents)-1].Index
	if g.role == Leader {
		g.uncommittedSize -= min(g.uncommittedSize, size)
	}
}

// Advance acknowledges that rd's persist is durable (and its AfterPersist
// sent). It must be called once for every non-empty Ready, in order.
func (g *Group) Advance(rd Ready) error {
	if g.log.err != nil {
		return g.log.err
	}
	// Recycle the message slices (see Ready): no allocation per pass.
	if g.msgs == nil && cap(rd.Messages) > 0 {
		g.msgs = rd.Messages[:0]
	}
	if g.msgsPersist == nil && cap(rd.AfterPersist) > 0 {
		g.msgsPersist = rd.AfterPersist[:0]
	}
	if rd.seq == 0 {
		return nil
	}
	if rd.seq != g.advanceSeq+1 {
		return fmt.Errorf("%w: got Ready %d, expected %d", ErrAdvanceOutOfOrder, rd.seq, g.advanceSeq+1)
	}
	g.advanceSeq = rd.seq
	if rd.Snapshot != nil {
		g.log.unstable.stableSnapTo(rd.Snapshot.Index)
	}
	if n := len(rd.Entries); n > 0 {
		last := rd.Entries[n-1]
		g.log.unstable.stableTo(last.Index, last.Term)
	}
	switch g.role {
	case Candidate:
		// The vote for ourselves counts once it is durable.
		if rd.HardState.Term == g.term && rd.HardState.Vote == g.id {
			g.trk.RecordVote(g.id, true)
			g.pollElection()
		}
	case Leader:
		if pr := g.trk.Progress(g.id); pr != nil {
			durable := min(g.log.unstable.offset-1, g.log.lastIndex())
			if pr.MaybeUpdate(durable) && g.maybeCommit() {
				g.bcastAppend()
			}
		}
		g.maybeAutoLeave()
	}
	return nil
}
