package group

import (
	"errors"

	"github.com/shardd/shardd/group/tracker"
	"github.com/shardd/shardd/raftpb"
)

// maybeSendAppend sends pr the next MsgApp if its flow allows: entries from
// pr.Next on (bounded by MaxSizePerMsg), or an empty one carrying the commit
// index when sendIfEmpty. Entries that are compacted make it send a
// snapshot instead. It reports whether a message was sent.
func (g *Group) maybeSendAppend(pr *tracker.Progress, sendIfEmpty bool) bool {
	if pr.ID == g.id || pr.IsPaused() {
		return false
	}
	l := g.log
	prevIndex := pr.Next - 1
	prevTerm, err := l.term(prevIndex)
	if err != nil {
		if errors.Is(err, ErrCompacted) {
			return g.maybeSendSnapshot(pr)
		}
		return false
	}
	var ents []raftpb.Entry
	if pr.Next <= l.lastIndex() {
		ents, err = l.entriesFrom(pr.Next, g.cfg.MaxSizePerMsg)
		if err != nil {
			if errors.Is(err, ErrCompacted) {
				return g.maybeSendSnapshot(pr)
			}
			return false
		}
	}
	if len(ents) == 0 && !sendIfEmpty {
		return false
	}
	g.send(raftpb.Message{
		Type:    raftpb.MsgApp,
		To:      pr.ID,
		Index:   prevIndex,
		LogTerm: prevTerm,
		Entries: ents,
		Commit:  l.committed,
	})
	if n := len(ents); n > 0 {
		pr.SentEntries(ents[n-1].Index, n, raftpb.EntriesSize(ents))
	} else {
		pr.SentEntries(prevIndex, 0, 0)
	}
	pr.SentCommit = l.committed
	pr.AppSinceBeat = true
	return true
}

// maybeSendSnapshot sends pr the latest snapshot: it needs entries we have
// compacted. A follower that has not been heard from recently gets nothing
// (a snapshot is expensive; it can wait until it answers).
func (g *Group) maybeSendSnapshot(pr *tracker.Progress) bool {
	if !pr.RecentActive {
		return false
	}
	meta, err := g.cfg.Log.Snapshot()
	if err != nil {
		if !errors.Is(err, ErrSnapshotTemporarilyUnavailable) {
			g.log.fail("snapshot", err)
		}
		return false
	}
	if meta.IsEmpty() || meta.Index+1 < g.log.firstIndex() {
		// Compact never passes the snapshot, so this is a storage bug.
		g.lg.Error("latest snapshot does not reach the log", "shard", g.shard,
			"snapshot", meta.Index, "first", g.log.firstIndex())
		return false
	}
	pr.BecomeSnapshot(meta.Index)
	g.send(raftpb.Message{Type: raftpb.MsgSnap, To: pr.ID, Snapshot: &meta})
	g.lg.Debug("sending snapshot", "shard", g.shard, "to", pr.ID, "index", meta.Index)
	return true
}

// bcastAppend sends every member the entries it is missing. Members that
// only need to learn a new commit index get it once per Ready (sendCommit):
// under load the commit moves with every acknowledgement, and one message
// per member per pass is enough.
func (g *Group) bcastAppend() {
	for _, pr := range g.trk.Members() {
		for g.maybeSendAppend(pr, false) {
		}
	}
	g.commitPending = true
}

// sendCommit sends an empty MsgApp to every member that has not been sent
// the current commit index.
func (g *Group) sendCommit() {
	g.commitPending = false
	for _, pr := range g.trk.Members() {
		if pr.SentCommit < g.log.committed {
			g.maybeSendAppend(pr, true)
		}
	}
}

// bcastHeartbeat starts a read round and sends every member a heartbeat
// carrying it and the commit index the member can use (never above its
// known match, S12).
func (g *Group) bcastHeartbeat() { g.heartbeat(false) }

// heartbeat sends the heartbeats of a read round; a periodic one skips the
// members that were sent an append since the last periodic heartbeat —
// the append reset their election timer and carried the commit index, so
// a busy shard does not pay for both.
func (g *Group) heartbeat(periodic bool) {
	round := g.reads.newRound(g.ticks)
	if pr := g.trk.Progress(g.id); pr != nil {
		pr.ReadAck = round
	}
	for _, pr := range g.trk.Members() {
		if pr.ID == g.id {
			continue
		}
		if periodic {
			skip := pr.AppSinceBeat
			pr.AppSinceBeat = false
			if skip {
				continue
			}
		}
		g.send(raftpb.Message{
			Type:    raftpb.MsgHeartbeat,
			To:      pr.ID,
			Commit:  min(pr.Match, g.log.committed),
			Context: round,
		})
	}
	// A single voter confirms its own rounds.
	g.confirmRounds()
}
