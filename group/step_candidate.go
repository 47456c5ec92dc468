package group

import "github.com/shardd/shardd/raftpb"

// stepCandidate handles a message at our term while (pre-)campaigning.
func (g *Group) stepCandidate(m *raftpb.Message) error {
	switch m.Type {
	case raftpb.MsgApp, raftpb.MsgHeartbeat, raftpb.MsgSnap:
		// A leader exists in our term: follow it.
		g.becomeFollower(m.Term, m.From)
		return g.stepFollower(m)
	case raftpb.MsgPreVoteResp:
		if g.role == PreCandidate {
			g.trk.RecordVote(m.From, !m.Reject)
			g.pollElection()
		}
	case raftpb.MsgVoteResp:
		// A pre-vote answer arriving after we moved on is ignored, and vice
		// versa (S04).
		if g.role == Candidate {
			g.trk.RecordVote(m.From, !m.Reject)
			g.pollElection()
		}
	case raftpb.MsgReadIndex:
		g.send(raftpb.Message{Type: raftpb.MsgReadIndexResp, To: m.From, Context: m.Context, Reject: true})
	}
	// Proposals, transfers and the rest wait for a leader: dropped.
	return nil
}
