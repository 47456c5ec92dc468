package group

import "github.com/shardd/shardd/raftpb"

// stepCandidate handles a message at our term while (pre-)campaigning.
func (g *Group) stepCandidate(m *raftpb.Message) error {
	switch m.Type {
	case raftpb.MsgApp, raftpb.MsgHeartbeat, raftpb.MsgSnap, raftpb.MsgQuiesce:
		// A leader exists in our term: follow it. MsgQuiesce too: the
		// transport hands coalesced heartbeats on after the other messages
		// of their frame, so the quiesce message can arrive before the
		// heartbeat that would have made us a follower; dropping it left a
		// pre-candidate awake next to a quiesced leader, calling elections
		// nobody answered, for ever (bench, 10000 idle shards, quiescing
		// after one heartbeat).
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
