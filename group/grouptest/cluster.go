// Package grouptest runs several replicas of one shard over the pure Raft
// core with a deterministic simulated network and disk, and checks the
// protocol's invariants after every step.
//
// A Cluster is driven either by hand (scenario tests: tick this replica,
// deliver those messages, crash that one) or by Run with a seed (random
// faults and workload). Persistence is modelled faithfully: a Ready's writes
// become durable only when the harness persists it — possibly several
// steps later, with later Readys handed out meanwhile — and a crash loses
// every write not yet persisted.
package grouptest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

// Options configures a Cluster.
type Options struct {
	// Voters and Learners form the initial membership; every id gets a
	// replica. Extra replicas (not members yet) are listed in Spare.
	Voters   []raftpb.NodeID
	Learners []raftpb.NodeID
	Spare    []raftpb.NodeID

	ElectionTicks  int // default 10
	HeartbeatTicks int // default 1
	Seed           uint64
	// Configure adjusts each replica's core config before it starts.
	Configure func(c *group.Config)
	// PersistDelay > 0 keeps Readys outstanding for up to that many steps
	// before persisting them (pipelined persistence).
	PersistDelay int64
}

// Replica is one member of the simulated shard.
type Replica struct {
	ID  raftpb.NodeID
	G   *group.Group
	Log *group.MemoryLog // the durable state
	SM  StateMachine

	// Snaps is the durable snapshot data, by snapshot index.
	Snaps map[raftpb.Index]SnapshotData
	// ReadStates collects every ReadState handed out.
	ReadStates []group.ReadState
	// Applies records the index of every entry applied since creation.
	Applies []raftpb.Index

	Down bool
	// Restarts counts crash-restarts.
	Restarts int

	pending  []pendingReady
	received map[raftpb.Index]SnapshotData // arrived with MsgSnap, not installed
	mirror   mirror
}

type pendingReady struct {
	rd group.Ready
	at int64
}

// Cluster is a simulated shard.
type Cluster struct {
	Opts     Options
	Net      *Network
	Replicas map[raftpb.NodeID]*Replica
	IDs      []raftpb.NodeID // sorted
	Rand     *rand.Rand
	Now      int64

	oracle *oracle
	// Trace, if set, receives a line per notable event.
	Trace func(format string, args ...any)
}

// NewCluster creates the replicas and starts them as followers.
func NewCluster(opts Options) (*Cluster, error) {
	if opts.ElectionTicks == 0 {
		opts.ElectionTicks = 10
	}
	if opts.HeartbeatTicks == 0 {
		opts.HeartbeatTicks = 1
	}
	r := rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15))
	c := &Cluster{Opts: opts, Replicas: map[raftpb.NodeID]*Replica{}, Rand: r, oracle: newOracle()}
	c.Net = newNetwork(r)
	c.Net.onDrop = c.reportSnapshotLost
	cs := raftpb.ConfState{Voters: sortIDs(opts.Voters), Learners: sortIDs(opts.Learners)}
	all := append(append(append([]raftpb.NodeID(nil), opts.Voters...), opts.Learners...), opts.Spare...)
	for _, id := range sortIDs(all) {
		initial := cs
		if slices.Contains(opts.Spare, id) {
			initial = raftpb.ConfState{}
		}
		rep := &Replica{ID: id, Log: group.NewMemoryLog(initial), Snaps: map[raftpb.Index]SnapshotData{}}
		c.Replicas[id] = rep
		c.IDs = append(c.IDs, id)
		if err := c.start(rep); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func sortIDs(ids []raftpb.NodeID) []raftpb.NodeID {
	c := slices.Clone(ids)
	slices.Sort(c)
	return slices.Compact(c)
}

func (c *Cluster) tracef(format string, args ...any) {
	if c.Trace != nil {
		c.Trace(fmt.Sprintf("[%6d] ", c.Now)+format, args...)
	}
}

// start (re)creates a replica's core from its durable state.
func (c *Cluster) start(r *Replica) error {
	r.SM = StateMachine{}
	var applied raftpb.Index
	if snap, err := r.Log.Snapshot(); err == nil {
		d, ok := r.Snaps[snap.Index]
		if !ok {
			return fmt.Errorf("replica %d: no data for snapshot %d", r.ID, snap.Index)
		}
		r.SM.restore(d)
		applied = snap.Index
	}
	cfg := group.Config{
		ID:             r.ID,
		Shard:          1,
		Log:            r.Log,
		Applied:        applied,
		ElectionTicks:  c.Opts.ElectionTicks,
		HeartbeatTicks: c.Opts.HeartbeatTicks,
		Rand:           rand.New(rand.NewPCG(c.Rand.Uint64(), uint64(r.ID))),
	}
	if c.Opts.Configure != nil {
		c.Opts.Configure(&cfg)
	}
	g, err := group.New(cfg)
	if err != nil {
		return fmt.Errorf("replica %d: %w", r.ID, err)
	}
	r.G = g
	r.Down = false
	r.pending = nil
	r.received = map[raftpb.Index]SnapshotData{}
	r.mirror = mirrorFromLog(r.Log, c.oracle)
	c.oracle.onStart(r)
	return nil
}

// Err is the first invariant violation seen, or nil.
func (c *Cluster) Err() error { return c.oracle.err }

// R returns the replica id.
func (c *Cluster) R(id raftpb.NodeID) *Replica { return c.Replicas[id] }

// Process drains every Ready of replica id: messages go to the network,
// writes are persisted (now, or later with PersistDelay), applies happen
// after the persist.
func (c *Cluster) Process(id raftpb.NodeID) {
	r := c.Replicas[id]
	if r.Down {
		return
	}
	for i := 0; i < 1000 && r.G.HasReady(); i++ {
		rd := r.G.Ready()
		c.handOut(r, &rd)
		at := c.Now
		if c.Opts.PersistDelay > 0 {
			at += c.Rand.Int64N(c.Opts.PersistDelay + 1)
		}
		r.pending = append(r.pending, pendingReady{rd: rd, at: at})
		c.persistDue(r, at == c.Now && c.Opts.PersistDelay == 0)
	}
	if err := r.G.Err(); err != nil {
		c.oracle.fail("replica %d stopped: %v", id, err)
	}
}

// ProcessAll processes every replica (in id order).
func (c *Cluster) ProcessAll() {
	for _, id := range c.IDs {
		c.Process(id)
	}
}

// handOut records what a Ready reveals of the in-memory core and sends its
// immediate messages.
func (c *Cluster) handOut(r *Replica, rd *group.Ready) {
	c.oracle.onReady(r, rd)
	for i := range rd.ReadStates {
		r.ReadStates = append(r.ReadStates, rd.ReadStates[i])
	}
	for _, m := range rd.Messages {
		c.sendMsg(r, m)
	}
}

func (c *Cluster) sendMsg(r *Replica, m raftpb.Message) {
	var snap *SnapshotData
	if m.Type == raftpb.MsgSnap {
		d, ok := r.Snaps[m.Snapshot.Index]
		if !ok {
			c.oracle.fail("replica %d sends snapshot %d it does not hold", r.ID, m.Snapshot.Index)
			return
		}
		snap = &d
	}
	c.Net.send(c.Now, m, snap)
}

// persistDue persists the pending Readys that are due (all if force), in
// order: a later one never becomes durable before an earlier one.
func (c *Cluster) persistDue(r *Replica, force bool) {
	for len(r.pending) > 0 && (force || r.pending[0].at <= c.Now) {
		p := r.pending[0]
		r.pending = r.pending[1:]
		c.persist(r, &p.rd)
		if r.Down {
			return
		}
	}
}

// Flush persists every outstanding Ready of id now.
func (c *Cluster) Flush(id raftpb.NodeID) {
	r := c.Replicas[id]
	if !r.Down {
		c.persistDue(r, true)
	}
}

func (c *Cluster) persist(r *Replica, rd *group.Ready) {
	if rd.Snapshot != nil {
		d, ok := r.received[rd.Snapshot.Index]
		if !ok {
			c.oracle.fail("replica %d installs snapshot %d without its data", r.ID, rd.Snapshot.Index)
			return
		}
		r.Snaps = map[raftpb.Index]SnapshotData{rd.Snapshot.Index: d}
	}
	if err := r.Log.Persist(rd); err != nil {
		c.oracle.fail("replica %d persist: %v", r.ID, err)
		return
	}
	c.oracle.onPersist(r, rd)
	for _, m := range rd.AfterPersist {
		c.sendMsg(r, m)
	}
	if rd.Snapshot != nil {
		r.SM.restore(r.Snaps[rd.Snapshot.Index])
		c.oracle.onRestoreSM(r)
	}
	for i := range rd.CommittedEntries {
		e := &rd.CommittedEntries[i]
		if e.Index <= r.SM.Applied {
			c.oracle.fail("replica %d applies %d again (applied %d)", r.ID, e.Index, r.SM.Applied)
			return
		}
		c.oracle.beforeApply(r, e)
		r.SM.apply(e)
		r.Applies = append(r.Applies, e.Index)
		c.oracle.afterApply(r, e)
	}
	if err := r.G.Advance(*rd); err != nil {
		c.oracle.fail("replica %d advance: %v", r.ID, err)
	}
}

// Deliver hands every message due now to its recipient and processes the
// recipients. It returns the number delivered.
func (c *Cluster) Deliver() int {
	n := 0
	for _, e := range c.Net.due(c.Now) {
		if c.deliver(e) {
			n++
		}
	}
	return n
}

func (c *Cluster) deliver(e envelope) bool {
	r, ok := c.Replicas[e.m.To]
	if !ok || r.Down {
		c.reportSnapshotLost(&e.m)
		return false
	}
	if e.snap != nil {
		r.received[e.m.Snapshot.Index] = *e.snap
	}
	if err := r.G.Step(e.m); err != nil {
		c.stepError(r, &e.m, err)
	}
	c.Process(r.ID)
	if e.m.Type == raftpb.MsgSnap {
		c.reportSnapshot(&e.m, true)
	}
	return true
}

// reportSnapshotLost tells the sender of a lost MsgSnap that the transfer
// failed, as the transport does for a broken snapshot stream.
func (c *Cluster) reportSnapshotLost(m *raftpb.Message) {
	if m.Type == raftpb.MsgSnap {
		c.reportSnapshot(m, false)
	}
}

func (c *Cluster) reportSnapshot(m *raftpb.Message, ok bool) {
	if s, found := c.Replicas[m.From]; found && !s.Down {
		s.G.ReportSnapshot(m.To, ok)
		c.Process(s.ID)
	}
}

// StepErrors counts Step errors by message type (a correct run has none
// but for stale peers).
func (c *Cluster) stepError(r *Replica, m *raftpb.Message, err error) {
	c.oracle.stepErrors++
	c.tracef("replica %d step %v: %v", r.ID, *m, err)
	if r.G.Err() != nil {
		c.oracle.fail("replica %d stopped on %v: %v", r.ID, *m, err)
	}
}

// Stabilize delivers and processes until nothing is in flight (ignoring
// delays), up to a bound. Ticks do not advance.
func (c *Cluster) Stabilize() {
	for i := 0; i < 10000; i++ {
		c.ProcessAll()
		for _, id := range c.IDs {
			c.Flush(id)
		}
		c.ProcessAll()
		if c.Net.Pending() == 0 {
			return
		}
		// Everything in flight is due, whatever its delay; what this sends
		// is due by the next round.
		for _, e := range c.Net.due(math.MaxInt64) {
			c.deliver(e)
		}
	}
	c.oracle.fail("no stable state after 10000 rounds")
}

// Tick ticks replica id once and processes it.
func (c *Cluster) Tick(id raftpb.NodeID) {
	r := c.Replicas[id]
	if r.Down {
		return
	}
	r.G.Tick()
	c.Process(id)
}

// TickAll ticks every live replica once.
func (c *Cluster) TickAll() {
	for _, id := range c.IDs {
		c.Tick(id)
	}
}

// Crash stops replica id, losing every write not yet persisted. Its
// messages already in the network stay there.
func (c *Cluster) Crash(id raftpb.NodeID) {
	r := c.Replicas[id]
	if r.Down {
		return
	}
	r.Down = true
	r.pending = nil
	r.G = nil
	c.tracef("crash %d", id)
}

// Restart brings replica id back from its durable state.
func (c *Cluster) Restart(id raftpb.NodeID) error {
	r := c.Replicas[id]
	if !r.Down {
		c.Crash(id)
	}
	r.Restarts++
	c.tracef("restart %d", id)
	if err := c.start(r); err != nil {
		c.oracle.fail("%v", err)
		return err
	}
	return nil
}

// Leader returns the live replica that leads at the highest term, or 0.
func (c *Cluster) Leader() raftpb.NodeID {
	var lead raftpb.NodeID
	var term raftpb.Term
	for _, id := range c.IDs {
		r := c.Replicas[id]
		if r.Down {
			continue
		}
		st := r.G.BasicStatus()
		if st.Role == group.Leader && st.HardState.Term >= term {
			lead, term = id, st.HardState.Term
		}
	}
	return lead
}

// Propose proposes one entry with data at replica id and processes it.
func (c *Cluster) Propose(id raftpb.NodeID, data []byte) error {
	r := c.Replicas[id]
	if r.Down {
		return fmt.Errorf("replica %d is down", id)
	}
	err := r.G.Propose([]raftpb.Entry{{Data: data}})
	c.Process(id)
	return err
}

// ProposeConfChange proposes cc at replica id and processes it.
func (c *Cluster) ProposeConfChange(id raftpb.NodeID, cc raftpb.ConfChange) error {
	r := c.Replicas[id]
	if r.Down {
		return fmt.Errorf("replica %d is down", id)
	}
	err := r.G.ProposeConfChange(0, cc)
	c.Process(id)
	return err
}

// TakeSnapshot snapshots replica id's state machine at its applied index
// and compacts its log, keeping lag entries behind the snapshot.
func (c *Cluster) TakeSnapshot(id raftpb.NodeID, lag raftpb.Index) error {
	r := c.Replicas[id]
	if r.Down {
		return fmt.Errorf("replica %d is down", id)
	}
	c.Flush(id)
	st := r.G.BasicStatus()
	if r.SM.Applied == 0 || r.SM.Applied != st.Applying {
		return fmt.Errorf("replica %d: applied %d, applying %d", id, r.SM.Applied, st.Applying)
	}
	if s, err := r.Log.Snapshot(); err == nil && s.Index >= r.SM.Applied {
		return nil
	}
	meta := raftpb.SnapshotMeta{Index: r.SM.Applied, Term: r.SM.Term, ConfState: r.G.ConfState()}
	if err := r.Log.SetSnapshot(meta); err != nil {
		return err
	}
	r.Snaps[meta.Index] = r.SM.snapshot()
	for k := range r.Snaps {
		if k < meta.Index {
			delete(r.Snaps, k)
		}
	}
	if meta.Index > lag {
		if err := r.G.Compact(meta.Index - lag); err != nil {
			return err
		}
	}
	c.Process(id)
	c.tracef("snapshot %d at %d", id, meta.Index)
	return nil
}
