package group

import (
	"fmt"

	"github.com/shardd/shardd/group/tracker"
	"github.com/shardd/shardd/raftpb"
)

// Step hands the core a message received from another replica of the
// shard. A message that can never be valid returns ErrInvalidMessage and
// changes nothing; a message that is merely stale is dropped silently.
func (g *Group) Step(m raftpb.Message) error {
	if g.log.err != nil {
		return g.log.err
	}
	if err := g.validate(&m); err != nil {
		return err
	}
	if err := g.checkAgainstLog(&m); err != nil {
		return err
	}
	if g.quiesced && !g.benignWhileQuiesced(&m) {
		g.wake()
	}
	if !g.stepTerm(&m) {
		return nil
	}
	var err error
	switch {
	case m.Type == raftpb.MsgVote || m.Type == raftpb.MsgPreVote:
		g.handleVoteRequest(&m)
	case g.role == Leader:
		err = g.stepLeader(&m)
	case g.role == Candidate || g.role == PreCandidate:
		err = g.stepCandidate(&m)
	default:
		err = g.stepFollower(&m)
	}
	// A storage failure during the step wins over anything else.
	if g.log.err != nil {
		return g.log.err
	}
	return err
}

func invalidMsg(m *raftpb.Message, format string, args ...any) error {
	return fmt.Errorf("%w: %s from %d: %s", ErrInvalidMessage, m.Type, m.From, fmt.Sprintf(format, args...))
}

// validate rejects messages no correct peer sends: the fuzz target's
// guarantee is that whatever passes here cannot break the core's safety.
func (g *Group) validate(m *raftpb.Message) error {
	if !m.Type.Valid() {
		return invalidMsg(m, "unknown type %d", uint8(m.Type))
	}
	if m.Shard != g.shard {
		return invalidMsg(m, "for shard %d, this is shard %d", m.Shard, g.shard)
	}
	if m.To != g.id {
		return invalidMsg(m, "addressed to %d, this is %d", m.To, g.id)
	}
	if m.From == raftpb.None || m.From == g.id {
		return invalidMsg(m, "bad sender")
	}
	if m.Term >= maxSaneValue || uint64(m.Index) >= maxSaneValue || uint64(m.Commit) >= maxSaneValue ||
		uint64(m.LogTerm) >= maxSaneValue || uint64(m.RejectHint) >= maxSaneValue {
		return invalidMsg(m, "term or index out of range")
	}
	termless := m.Type == raftpb.MsgProp || m.Type == raftpb.MsgReadIndex || m.Type == raftpb.MsgWake
	if termless != (m.Term == 0) {
		return invalidMsg(m, "term %d", m.Term)
	}
	if m.LogTerm > m.Term && (m.Type == raftpb.MsgApp || m.Type == raftpb.MsgVote ||
		m.Type == raftpb.MsgPreVote || m.Type == raftpb.MsgQuiesce) {
		return invalidMsg(m, "log term %d above message term %d", m.LogTerm, m.Term)
	}
	if len(m.Entries) > 0 {
		switch m.Type {
		case raftpb.MsgApp:
			if err := validateAppend(m); err != nil {
				return err
			}
		case raftpb.MsgProp:
			for i := range m.Entries {
				if t := m.Entries[i].Type; t != raftpb.EntryNormal && t != raftpb.EntryConfChange {
					return invalidMsg(m, "entry type %d", t)
				}
			}
		default:
			return invalidMsg(m, "carries entries")
		}
	}
	if (m.Type == raftpb.MsgSnap) != (m.Snapshot != nil) {
		return invalidMsg(m, "snapshot presence")
	}
	if s := m.Snapshot; s != nil {
		if s.Index == 0 || s.Term == 0 || s.Term > m.Term || uint64(s.Index) >= maxSaneValue {
			return invalidMsg(m, "snapshot %d/%d", s.Term, s.Index)
		}
		if len(s.ConfState.Voters) == 0 {
			return invalidMsg(m, "snapshot without voters")
		}
	}
	return nil
}

// checkAgainstLog refuses, before anything changes (the term included),
// appends and snapshots that contradict our committed log or carry an
// impossible membership: no correct leader sends them (S26c).
func (g *Group) checkAgainstLog(m *raftpb.Message) error {
	l := g.log
	switch m.Type {
	case raftpb.MsgApp:
		for i := range m.Entries {
			e := &m.Entries[i]
			if e.Index > l.committed {
				break
			}
			if t, err := l.term(e.Index); err == nil && t != e.Term {
				return invalidMsg(m, "entry %d term %d rewrites committed term %d", e.Index, e.Term, t)
			}
		}
	case raftpb.MsgSnap:
		s := m.Snapshot
		if s.Index <= l.committed {
			if t, err := l.term(s.Index); err == nil && t != s.Term {
				g.lg.Error("snapshot conflicts with a committed entry", "shard", g.shard, "id", g.id,
					"index", s.Index, "snapTerm", s.Term, "ourTerm", t)
				return invalidMsg(m, "snapshot %d/%d conflicts with committed term %d", s.Term, s.Index, t)
			}
			return nil
		}
		if err := tracker.New(1, 0).Restore(s.ConfState, s.Index); err != nil {
			return invalidMsg(m, "snapshot membership: %v", err)
		}
	}
	return l.err
}

// validateAppend checks that a MsgApp's entries follow (LogTerm, Index)
// contiguously with terms that never decrease and never pass the message's.
func validateAppend(m *raftpb.Message) error {
	prevIdx, prevTerm := m.Index, m.LogTerm
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Index != prevIdx+1 {
			return invalidMsg(m, "entry %d after %d: gap or overlap", e.Index, prevIdx)
		}
		if e.Term < prevTerm || e.Term > m.Term {
			return invalidMsg(m, "entry %d has term %d (prev %d, message %d)", e.Index, e.Term, prevTerm, m.Term)
		}
		if e.Type != raftpb.EntryNormal && e.Type != raftpb.EntryConfChange {
			return invalidMsg(m, "entry %d type %d", e.Index, e.Type)
		}
		prevIdx, prevTerm = e.Index, e.Term
	}
	return nil
}

// stepTerm applies the term rules common to every role. It returns false
// when the message is to be dropped.
func (g *Group) stepTerm(m *raftpb.Message) bool {
	switch {
	case m.Term == 0:
		// Term-less: forwarded proposals and reads, learners' wake calls.
		return true
	case m.Term > g.term:
		if m.Type == raftpb.MsgVote || m.Type == raftpb.MsgPreVote {
			if g.ignoresVotesFrom(m.From) {
				// S05: a node outside the membership (removed, or not yet
				// known here) cannot make us change term.
				g.lg.Debug("ignoring vote request from a non-member", "shard", g.shard, "from", m.From)
				return false
			}
			force := m.Context == voteCtxTransfer
			inLease := !g.cfg.DisableCheckQuorum && (g.lead != raftpb.None || g.startLease) &&
				g.electionElapsed < g.cfg.ElectionTicks
			if !force && inLease {
				// Heard from a leader within the election timeout: the
				// request can only disrupt (S05).
				return false
			}
		}
		switch {
		case m.Type == raftpb.MsgPreVote:
			// Never change term for a pre-vote.
		case m.Type == raftpb.MsgPreVoteResp && !m.Reject:
			// A granted pre-vote carries the future term we asked for; the
			// term moves when the real election starts.
		case m.Type == raftpb.MsgVote:
			// S03: adopting the term of a vote request must not restart our
			// own election timer unless we grant the vote.
			elapsed, timeout := g.electionElapsed, g.randomizedElectionTimeout
			g.becomeFollower(m.Term, raftpb.None)
			g.electionElapsed, g.randomizedElectionTimeout = elapsed, timeout
		default:
			lead := raftpb.None
			if m.Type == raftpb.MsgApp || m.Type == raftpb.MsgHeartbeat || m.Type == raftpb.MsgSnap {
				lead = m.From
			}
			g.becomeFollower(m.Term, lead)
		}
		return true
	case m.Term < g.term:
		g.answerStale(m)
		return false
	}
	return true
}

// answerStale answers a message from an older term so that its sender
// learns the current term instead of waiting forever (S04, S06).
func (g *Group) answerStale(m *raftpb.Message) {
	switch m.Type {
	case raftpb.MsgApp, raftpb.MsgHeartbeat:
		if !g.cfg.DisableCheckQuorum || !g.cfg.DisablePreVote {
			// A stale leader (perhaps partitioned while we moved on) learns
			// our term and steps down.
			g.send(raftpb.Message{Type: raftpb.MsgAppResp, To: m.From})
		}
	case raftpb.MsgPreVote, raftpb.MsgVote:
		// The rejection carries our term, so the stale candidate catches up
		// without anybody granting anything.
		t := raftpb.MsgPreVoteResp
		if m.Type == raftpb.MsgVote {
			t = raftpb.MsgVoteResp
		}
		g.send(raftpb.Message{Type: t, To: m.From, Term: g.term, Reject: true})
	}
}

// ignoresVotesFrom reports whether vote requests from id are ignored: it is
// not a member of our configuration (S05: a removed node cannot disturb the
// shard). A replica that knows no membership yet (it is joining) answers
// everybody: it may already be a voter whose vote a new configuration needs.
func (g *Group) ignoresVotesFrom(id raftpb.NodeID) bool {
	known := len(g.trk.Voters[0]) > 0 || g.trk.Voters.Joint()
	return known && !g.trk.IsMember(id)
}

// handleVoteRequest decides a MsgVote or MsgPreVote at or above our term.
func (g *Group) handleVoteRequest(m *raftpb.Message) {
	if g.ignoresVotesFrom(m.From) {
		return
	}
	canVote := g.vote == m.From ||
		(g.vote == raftpb.None && g.lead == raftpb.None) ||
		(m.Type == raftpb.MsgPreVote && m.Term > g.term)
	resp := raftpb.MsgVoteResp
	if m.Type == raftpb.MsgPreVote {
		resp = raftpb.MsgPreVoteResp
	}
	if canVote && g.log.isUpToDate(m.Index, m.LogTerm) {
		// Grant with the term asked for: for a pre-vote that is the future
		// term, which the pre-candidate counts.
		g.send(raftpb.Message{Type: resp, To: m.From, Term: m.Term})
		if m.Type == raftpb.MsgVote {
			g.electionElapsed = 0
			g.vote = m.From
		}
		return
	}
	g.send(raftpb.Message{Type: resp, To: m.From, Term: g.term, Reject: true})
}

// pollElection counts votes and acts on the result.
func (g *Group) pollElection() {
	_, _, res := g.trk.TallyVotes()
	switch res {
	case quorumWon:
		if g.role == PreCandidate {
			g.campaign(campaignElection)
		} else {
			g.becomeLeader()
			g.bcastAppend()
		}
	case quorumLost:
		g.becomeFollower(g.term, raftpb.None)
	}
}
