package shard

import (
	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

// drained is what a step takes out of the inbox.
type drained struct {
	msgs        []raftpb.Message
	props       []*Proposal
	reads       []*ReadRequest
	ticks       int
	transfers   []raftpb.NodeID
	unreachable []raftpb.NodeID
	snapReports []snapReport
	persisted   []group.Ready
	campaign    bool
	stopped     bool
}

// recycle hands back the message, proposal and persisted slices a step drained, so
// the next deliveries reuse their arrays instead of growing new ones. The
// step is done with their contents (the core copied what it keeps).
func (in *inbox) recycle(d *drained) {
	clear(d.msgs)
	clear(d.persisted)
	clear(d.props)
	in.mu.Lock()
	if in.props == nil && cap(d.props) > 0 && cap(d.props) <= 4096 {
		in.props = d.props[:0]
	}
	if in.msgs == nil && cap(d.msgs) > 0 && cap(d.msgs) <= 4096 {
		in.msgs = d.msgs[:0]
	}
	if in.persisted == nil && cap(d.persisted) > 0 && cap(d.persisted) <= 1024 {
		in.persisted = d.persisted[:0]
	}
	in.mu.Unlock()
}

// take swaps everything queued out of the inbox.
func (in *inbox) take() drained {
	in.mu.Lock()
	d := drained{in.msgs, in.props, in.reads, in.ticks, in.transfers, in.unreachable,
		in.snapReports, in.persisted, in.campaign, in.stopped}
	in.msgs, in.props, in.reads = nil, nil, nil
	in.ticks, in.transfers, in.unreachable, in.snapReports = 0, nil, nil, nil
	in.persisted, in.campaign = nil, false
	in.mu.Unlock()
	return d
}

// The inbox methods may be called from any goroutine. Each returns quickly;
// the engine then marks the replica ready so a step worker drains the inbox.

// AddMessages queues messages received for this replica.
func (r *Replica) AddMessages(msgs ...raftpb.Message) {
	r.in.mu.Lock()
	r.in.msgs = append(r.in.msgs, msgs...)
	r.in.mu.Unlock()
}

// Propose queues a command; the returned proposal completes once this
// replica applied it (or its fate is decided otherwise).
func (r *Replica) Propose(key uint64, cmd []byte) (*Proposal, error) {
	return r.enqueueProposal(newProposal(key, cmd, nil))
}

// ProposeConfChange queues a membership change.
func (r *Replica) ProposeConfChange(key uint64, cc raftpb.ConfChange) (*Proposal, error) {
	return r.enqueueProposal(newProposal(key, nil, &cc))
}

func (r *Replica) enqueueProposal(p *Proposal) (*Proposal, error) {
	if r.outstanding.Add(1) > int64(r.cfg.MaxPendingProposals) {
		r.outstanding.Add(-1)
		return nil, ErrBusy
	}
	p.owner = r
	r.in.mu.Lock()
	if r.in.stopped {
		r.in.mu.Unlock()
		p.owner = nil
		r.outstanding.Add(-1)
		return nil, ErrStopped
	}
	r.in.props = append(r.in.props, p)
	r.in.mu.Unlock()
	return p, nil
}

// Read queues a linearizable read: reads queued between two steps share
// one ReadIndex round.
func (r *Replica) Read() (*ReadRequest, error) {
	rr := &ReadRequest{done: make(chan struct{})}
	r.in.mu.Lock()
	defer r.in.mu.Unlock()
	if r.in.stopped {
		return nil, ErrStopped
	}
	r.in.reads = append(r.in.reads, rr)
	return rr, nil
}

// Tick queues one tick of the replica's logical clock. Ticks do not pile
// up: while one is pending, more are dropped. When the node is overloaded
// and steps a replica less often than the ticker fires, its logical clock
// slows down instead of running ahead of the messages it waits for —
// otherwise elections time out before their votes can arrive and repeat.
func (r *Replica) Tick() { r.TickN(1) }

// TickN queues n ticks for the next step, unless ticks are queued already:
// a replica the node cannot step in time falls behind in logical time
// rather than running ahead of the messages its timers wait for.
func (r *Replica) TickN(n int) {
	r.in.mu.Lock()
	if r.in.ticks == 0 {
		r.in.ticks = n
	}
	r.in.mu.Unlock()
}

// TransferLeader asks for leadership to move to target.
func (r *Replica) TransferLeader(target raftpb.NodeID) {
	r.in.mu.Lock()
	r.in.transfers = append(r.in.transfers, target)
	r.in.mu.Unlock()
}

// ReportUnreachable tells the replica that node cannot be reached.
func (r *Replica) ReportUnreachable(node raftpb.NodeID) {
	r.in.mu.Lock()
	r.in.unreachable = append(r.in.unreachable, node)
	r.in.mu.Unlock()
}

// ReportSnapshot tells the replica how sending a snapshot to node ended.
func (r *Replica) ReportSnapshot(node raftpb.NodeID, ok bool) {
	r.in.mu.Lock()
	r.in.snapReports = append(r.in.snapReports, snapReport{to: node, ok: ok})
	r.in.mu.Unlock()
}

// Campaign asks the replica to start an election.
func (r *Replica) Campaign() {
	r.in.mu.Lock()
	r.in.campaign = true
	r.in.mu.Unlock()
}

// ApplyEarly queues committed entries for the apply worker before their
// Ready is flushed. The entries are durable already (the core releases only
// durable entries) and applying needs nothing of the flush — unless the
// Ready records a snapshot or a membership change, or an earlier Ready
// whose apply waits for its flush is still outstanding (apply order). The
// engine checks those; Persisted must then be given rd without its
// CommittedEntries.
func (r *Replica) ApplyEarly(ents []raftpb.Entry) {
	r.applyMu.Lock()
	r.applyQ = append(r.applyQ, applyTask{ents: ents})
	r.applyMu.Unlock()
}

// Persisted tells the replica that rd's persist is durable (the engine has
// sent rd.AfterPersist). It queues the Advance for the next step and the
// snapshot and committed entries for the apply worker. It reports whether
// there is something to apply.
func (r *Replica) Persisted(rd group.Ready) bool {
	r.in.mu.Lock()
	r.in.persisted = append(r.in.persisted, rd)
	r.in.mu.Unlock()
	if rd.Snapshot == nil && len(rd.CommittedEntries) == 0 && rd.ConfState == nil {
		return false
	}
	t := applyTask{snap: rd.Snapshot, ents: rd.CommittedEntries, conf: rd.ConfState, confIndex: rd.ConfIndex}
	r.applyMu.Lock()
	r.applyQ = append(r.applyQ, t)
	r.applyMu.Unlock()
	return true
}

// RequestSnapshot asks the apply worker for a snapshot now; the channel
// receives its index once it is recorded.
func (r *Replica) RequestSnapshot() <-chan snapResult {
	ch := make(chan snapResult, 1)
	r.applyMu.Lock()
	r.applyQ = append(r.applyQ, applyTask{snapshotNow: ch})
	r.applyMu.Unlock()
	return ch
}

// SnapshotResult unpacks what RequestSnapshot's channel delivers.
func SnapshotResult(v snapResult) (raftpb.Index, error) { return v.index, v.err }

// Stop marks the replica stopped: everything queued or waiting on it is
// resolved (proposals already in Raft with ErrResultUnknown, the rest with
// err), and nothing is accepted or applied afterwards.
func (r *Replica) Stop(err error) {
	if err == nil {
		err = ErrStopped
	}
	r.in.mu.Lock()
	r.in.stopped = true
	props, reads := r.in.props, r.in.reads
	r.in.props, r.in.reads = nil, nil
	r.in.mu.Unlock()
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.stopped, r.stopErr = true, err
	pending, waiting := r.pending, r.waitingProps
	rounds, waits := r.readRounds, r.readWait
	r.pending, r.waitingProps, r.readRounds, r.readWait, r.forwarded = map[uint64]*Proposal{}, nil, nil, nil, nil
	r.mu.Unlock()
	for _, p := range append(props, waiting...) {
		p.complete(Result{}, err)
	}
	for _, p := range pending {
		// Handed to Raft: it may commit without us seeing it.
		p.complete(Result{}, ErrResultUnknown)
	}
	for _, rr := range reads {
		rr.complete(err)
	}
	for _, b := range append(rounds, waits...) {
		for _, rr := range b.reads {
			rr.complete(err)
		}
	}
}

// isStopped reports whether Stop ran, and with what error.
func (r *Replica) isStopped() (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped, r.stopErr
}
