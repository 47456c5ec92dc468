package group

import (
	"errors"

	"github.com/shardd/shardd/raftpb"
)

// stepFollower handles a message at our term as a follower (or learner).
func (g *Group) stepFollower(m *raftpb.Message) error {
	switch m.Type {
	case raftpb.MsgApp:
		g.heardFromLeader(m.From)
		return g.handleAppendEntries(m)
	case raftpb.MsgHeartbeat:
		g.heardFromLeader(m.From)
		g.handleHeartbeat(m)
	case raftpb.MsgSnap:
		g.heardFromLeader(m.From)
		return g.handleSnapshot(m)
	case raftpb.MsgQuiesce:
		// Only a leader of our term sends it: it names the leader as well
		// as an append would (a follower that restarted, or lost track,
		// may know none).
		g.heardFromLeader(m.From)
		g.handleQuiesce(m)
	case raftpb.MsgTimeoutNow:
		if g.promotable() && !g.log.hasUnreleasedConfChange(g.confIndex) {
			g.lg.Info("campaigning on leadership transfer", "shard", g.shard, "id", g.id, "term", g.term)
			g.campaign(campaignTransfer)
		} else {
			// S24: not ready (not a voter here yet, or installing a
			// snapshot): say so, so the leader resumes at once.
			g.send(raftpb.Message{Type: raftpb.MsgTimeoutNowResp, To: m.From, Reject: true})
		}
	case raftpb.MsgTransferLeader:
		if g.lead != raftpb.None {
			g.send(raftpb.Message{Type: raftpb.MsgTransferLeader, To: g.lead, Context: m.Context})
		}
	case raftpb.MsgReadIndex:
		// Not the leader (a stale forward): refuse so the requester retries.
		g.send(raftpb.Message{Type: raftpb.MsgReadIndexResp, To: m.From, Context: m.Context, Reject: true})
	case raftpb.MsgReadIndexResp:
		if m.Reject {
			g.readStates = append(g.readStates, ReadState{ID: m.Context, Dropped: true})
		} else {
			g.readStates = append(g.readStates, ReadState{ID: m.Context, Index: m.Index})
		}
	}
	// MsgProp at a follower is a stale forward: dropped rather than
	// forwarded again, so proposals cannot loop.
	return nil
}

func (g *Group) heardFromLeader(from raftpb.NodeID) {
	g.electionElapsed = 0
	g.lead = from
}

// handleAppendEntries appends what matches, replacing only a conflicting
// suffix, and answers (after the persist) with the last index this request
// proved, or a rejection with a hint for the leader's next probe.
func (g *Group) handleAppendEntries(m *raftpb.Message) error {
	l := g.log
	prevIndex, prevTerm, ents := m.Index, m.LogTerm, m.Entries
	if prevIndex < l.committed {
		// S14: everything up to our commit (and so up to any snapshot or
		// purge point) matches the leader. Skip that part instead of
		// rejecting a prev we no longer hold.
		skip := 0
		for skip < len(ents) && ents[skip].Index <= l.committed {
			skip++
		}
		if skip == len(ents) {
			g.send(raftpb.Message{Type: raftpb.MsgAppResp, To: m.From, Index: l.committed})
			return nil
		}
		t, err := l.term(l.committed)
		if err != nil {
			return err
		}
		if ents[skip].Index != l.committed+1 {
			return invalidMsg(m, "entries do not reach our commit %d", l.committed)
		}
		prevIndex, prevTerm, ents = l.committed, t, ents[skip:]
	}
	lastNew, ok, err := l.maybeAppend(prevIndex, prevTerm, m.Commit, ents)
	if err != nil {
		if errors.Is(err, errConflictCommitted) {
			g.lg.Error("append rewrites a committed entry: refused", "shard", g.shard, "id", g.id,
				"from", m.From, "err", err)
			return invalidMsg(m, "%v", err)
		}
		return err
	}
	if ok {
		g.send(raftpb.Message{Type: raftpb.MsgAppResp, To: m.From, Index: lastNew})
		return nil
	}
	// Reject with a hint: the largest index at or below the probe whose term
	// is at most the leader's term there. The leader jumps straight past a
	// whole divergent term per round trip (S10).
	hintIndex := min(prevIndex, l.lastIndex())
	hintIndex, hintTerm := l.findConflictByTerm(hintIndex, prevTerm)
	g.send(raftpb.Message{
		Type:       raftpb.MsgAppResp,
		To:         m.From,
		Index:      m.Index,
		Reject:     true,
		RejectHint: hintIndex,
		LogTerm:    hintTerm,
	})
	return nil
}

// handleHeartbeat takes the commit index a heartbeat carries (the leader
// never sends more than our known match, S12) and echoes the read round.
func (g *Group) handleHeartbeat(m *raftpb.Message) {
	if c := m.Commit; c > g.log.committed {
		if c > g.log.lastIndex() {
			// Only possible if our log lost acknowledged entries or the
			// leader is wrong; take what we can prove.
			g.lg.Warn("heartbeat commit beyond our log", "shard", g.shard, "id", g.id,
				"commit", c, "last", g.log.lastIndex())
			c = g.log.lastIndex()
		}
		g.log.commitTo(c)
	}
	g.send(raftpb.Message{Type: raftpb.MsgHeartbeatResp, To: m.From, Context: m.Context})
}

// handleSnapshot installs a snapshot if it moves us forward, and answers
// with our commit index either way. A snapshot contradicting our committed
// log was refused before anything changed (checkAgainstLog).
func (g *Group) handleSnapshot(m *raftpb.Message) error {
	taken, err := g.restore(*m.Snapshot)
	if err != nil {
		return invalidMsg(m, "%v", err)
	}
	if taken {
		g.send(raftpb.Message{Type: raftpb.MsgAppResp, To: m.From, Index: g.log.lastIndex()})
		return nil
	}
	// S26(a): stale snapshot ignored; the reply reports how far we are.
	g.send(raftpb.Message{Type: raftpb.MsgAppResp, To: m.From, Index: g.log.committed})
	return nil
}

// restore installs snapshot s unless we already have what it covers. It
// reports whether the snapshot was taken.
func (g *Group) restore(s raftpb.SnapshotMeta) (bool, error) {
	l := g.log
	if s.Index <= l.committed || g.role != Follower {
		return false, nil
	}
	if l.matchTerm(s.Index, s.Term) {
		// We hold the snapshot's last entry: our log up to it matches the
		// leader's, so just move the commit.
		l.commitTo(s.Index)
		return false, nil
	}
	// The membership goes first: Restore changes nothing if it is invalid.
	if err := g.trk.Restore(s.ConfState, s.Index); err != nil {
		return false, err
	}
	g.configChanged()
	// S26(b): the whole log goes, conflicting suffix included, in the same
	// persist that records the snapshot.
	l.restore(s)
	g.confIndex = s.Index
	g.confChanged = true
	g.lg.Info("installing snapshot", "shard", g.shard, "id", g.id, "index", s.Index, "term", s.Term)
	return true, nil
}
