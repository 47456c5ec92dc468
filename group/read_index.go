package group

import "github.com/shardd/shardd/raftpb"

// readTracker is the leader's bookkeeping of ReadIndex requests and of its
// lease.
//
// A read is answered with the commit index at the time it arrived, once a
// quorum has acknowledged a heartbeat sent after it: then no other leader
// could have committed anything newer. Every heartbeat broadcast is a new
// round, numbered by the leader alone (never with the requester's id), so
// duplicated, retried or stale acknowledgements cannot confirm the wrong
// read (S33); a member's acknowledgement of round r confirms every round up
// to r. All reads that arrive between two Readys share one round.
//
// The lease: once a quorum acknowledged a round sent at leader tick t, no
// member of that quorum votes for anybody else (check-quorum) until it has
// gone an election timeout without hearing from us, so nobody else can lead
// before t + ElectionTicks on their clocks. The leader answers lease reads
// until t + ElectionTicks/2 on its own clock, which leaves room for tick
// rates that differ by up to a third. A leadership transfer voids the lease
// for the rest of the term: the target's campaign is forced past the
// followers' check, at any time its TimeoutNow arrives (S34).
type readTracker struct {
	// seq is the last round issued. It only grows, across terms too.
	seq uint64
	// roundOpen: reads wait for round seq+1, whose heartbeats are not sent.
	roundOpen bool
	// pending wait for a quorum to acknowledge their round (ascending).
	pending []readRequest
	// waiting arrived before an entry of this term committed (S32).
	waiting []readRequest

	// sent holds the rounds not yet confirmed by a quorum, with the leader
	// tick each was sent at (ascending).
	sent []roundStamp
	// leaseUntil is the leader tick the lease lasts until (exclusive).
	leaseUntil int64
	// leaseVoid is set once a TimeoutNow went out in this term.
	leaseVoid bool
}

type roundStamp struct {
	round uint64
	tick  int64
}

type readRequest struct {
	id    uint64
	from  raftpb.NodeID
	index raftpb.Index
	round uint64
}

// reset forgets the per-term part; the round counter keeps growing.
func (r *readTracker) reset() {
	r.roundOpen = false
	r.pending = r.pending[:0]
	r.waiting = r.waiting[:0]
	r.sent = r.sent[:0]
	r.leaseUntil = 0
	r.leaseVoid = false
}

// newRound starts round seq+1, sent at tick.
func (r *readTracker) newRound(tick int64) uint64 {
	r.seq++
	r.roundOpen = false
	r.sent = append(r.sent, roundStamp{round: r.seq, tick: tick})
	return r.seq
}

// ReadIndex asks for a read index for request id: a ReadState{ID: id} comes
// out of a later Ready (Dropped if it had to be abandoned). Any replica may
// ask; followers ask the leader. It returns ErrReadDropped if no leader is
// known.
func (g *Group) ReadIndex(id uint64) error {
	if g.log.err != nil {
		return g.log.err
	}
	g.wake()
	if g.role == Leader {
		g.handleReadRequest(g.id, id)
		return nil
	}
	if g.lead == raftpb.None {
		return ErrReadDropped
	}
	g.send(raftpb.Message{Type: raftpb.MsgReadIndex, To: g.lead, Context: id})
	return nil
}

// committedInTerm reports whether an entry of the current term is committed:
// until then a new leader's commit index may be behind the true one.
func (g *Group) committedInTerm() bool {
	t, err := g.log.term(g.log.committed)
	return err == nil && t == g.term
}

func (g *Group) handleReadRequest(from raftpb.NodeID, id uint64) {
	if !g.committedInTerm() {
		g.reads.waiting = append(g.reads.waiting, readRequest{id: id, from: from})
		return
	}
	if g.trk.IsSingleton(g.id) {
		g.answerRead(from, id, g.log.committed)
		return
	}
	if g.leaseValid() {
		g.answerRead(from, id, g.log.committed)
		return
	}
	g.reads.roundOpen = true
	g.reads.pending = append(g.reads.pending,
		readRequest{id: id, from: from, index: g.log.committed, round: g.reads.seq + 1})
}

// leaseValid reports whether lease reads may be answered now. The lease
// stops the moment a transfer starts (S34).
func (g *Group) leaseValid() bool {
	return g.cfg.ReadOnly == ReadLeaseBased && g.leadTransferee == raftpb.None &&
		!g.reads.leaseVoid && g.ticks < g.reads.leaseUntil
}

// bcastReadRound sends the open round's heartbeats.
func (g *Group) bcastReadRound() {
	g.reads.roundOpen = false
	if g.role == Leader {
		g.bcastHeartbeat()
	}
}

// confirmRounds records a quorum's acknowledgements: the newest round a
// quorum confirmed extends the lease from its send tick, and every read
// waiting on a confirmed round is answered.
func (g *Group) confirmRounds() {
	k := -1
	for i := len(g.reads.sent) - 1; i >= 0; i-- {
		if g.trk.ReadQuorum(g.reads.sent[i].round) {
			k = i
			break
		}
	}
	if k >= 0 {
		until := g.reads.sent[k].tick + int64(g.cfg.ElectionTicks/2)
		g.reads.leaseUntil = max(g.reads.leaseUntil, until)
		g.reads.sent = append(g.reads.sent[:0], g.reads.sent[k+1:]...)
	}
	g.advanceReads()
}

// advanceReads answers every pending read whose round a quorum confirmed.
func (g *Group) advanceReads() {
	n := 0
	for n < len(g.reads.pending) && g.trk.ReadQuorum(g.reads.pending[n].round) {
		r := g.reads.pending[n]
		g.answerRead(r.from, r.id, r.index)
		n++
	}
	if n > 0 {
		g.reads.pending = append(g.reads.pending[:0], g.reads.pending[n:]...)
	}
}

// releaseWaitingReads starts the reads that waited for the first commit of
// the term.
func (g *Group) releaseWaitingReads() {
	if len(g.reads.waiting) == 0 || !g.committedInTerm() {
		return
	}
	waiting := g.reads.waiting
	g.reads.waiting = nil
	for _, r := range waiting {
		g.handleReadRequest(r.from, r.id)
	}
}

func (g *Group) answerRead(from raftpb.NodeID, id uint64, index raftpb.Index) {
	if from == g.id {
		g.readStates = append(g.readStates, ReadState{ID: id, Index: index})
		return
	}
	g.send(raftpb.Message{Type: raftpb.MsgReadIndexResp, To: from, Index: index, Context: id})
}

// dropPendingReads abandons every read when leadership is lost: local ones
// come out as Dropped, forwarded ones are refused to their requester.
func (g *Group) dropPendingReads() {
	for _, list := range [][]readRequest{g.reads.pending, g.reads.waiting} {
		for _, r := range list {
			if r.from == g.id {
				g.readStates = append(g.readStates, ReadState{ID: r.id, Dropped: true})
			} else {
				g.send(raftpb.Message{Type: raftpb.MsgReadIndexResp, To: r.from, Context: r.id, Reject: true})
			}
		}
	}
}
