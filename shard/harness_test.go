package shard

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

// This file holds the test harness: an in-memory SnapshotStore, a recording
// Persister, a KV state machine (and an on-disk variant), recording Events,
// a single replica driven like the engine drives it (tnode) and a
// hand-routed cluster of replicas.

const testShard raftpb.ShardID = 7

var discardLogger = slog.New(slog.DiscardHandler)

// ---- SnapshotStore ----

type memSnapStore struct {
	mu   sync.Mutex
	data map[string][]byte
	seq  int
	// Fault injection.
	createErr error
	commitErr error
	aborts    int
}

func newMemSnapStore() *memSnapStore { return &memSnapStore{data: map[string][]byte{}} }

func (s *memSnapStore) ReceivedRef(shard raftpb.ShardID, index raftpb.Index) []byte {
	return fmt.Appendf(nil, "recv/%d/%d", shard, index)
}

func (s *memSnapStore) Create(shard raftpb.ShardID, index raftpb.Index) (SnapshotWriter, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.createErr != nil {
		return nil, s.createErr
	}
	s.seq++
	return &memSnapWriter{s: s, ref: fmt.Sprintf("snap/%d/%d/%d", shard, index, s.seq)}, nil
}

func (s *memSnapStore) Open(ref []byte) (SnapshotReader, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.data[string(ref)]
	if !ok {
		return nil, fmt.Errorf("snapshot %q not found", ref)
	}
	return io.NopCloser(bytes.NewReader(d)), nil
}

func (s *memSnapStore) put(ref []byte, d []byte) {
	s.mu.Lock()
	s.data[string(ref)] = bytes.Clone(d)
	s.mu.Unlock()
}

func (s *memSnapStore) get(ref []byte) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.data[string(ref)]
	return d, ok
}

type memSnapWriter struct {
	s      *memSnapStore
	ref    string
	buf    bytes.Buffer
	closed bool
}

func (w *memSnapWriter) Write(p []byte) (int, error) {
	if w.closed {
		return 0, errors.New("write after close")
	}
	return w.buf.Write(p)
}

func (w *memSnapWriter) Commit() ([]byte, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if w.s.commitErr != nil {
		return nil, w.s.commitErr
	}
	w.closed = true
	w.s.data[w.ref] = bytes.Clone(w.buf.Bytes())
	return []byte(w.ref), nil
}

func (w *memSnapWriter) Abort() error {
	w.s.mu.Lock()
	w.s.aborts++
	w.s.mu.Unlock()
	w.closed = true
	return nil
}

// ---- Persister ----

type saveCall struct {
	meta      raftpb.SnapshotMeta
	ref       []byte
	compactTo raftpb.Index
}

// recPersister records SaveSnapshot calls and applies them to the replica's
// MemoryLog, as the engine does to its store.
type recPersister struct {
	mu    sync.Mutex
	log   *group.MemoryLog
	calls []saveCall
	err   error
}

func (p *recPersister) SaveSnapshot(shard raftpb.ShardID, meta raftpb.SnapshotMeta, ref []byte, compactTo raftpb.Index) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	if shard != testShard {
		return fmt.Errorf("wrong shard %d", shard)
	}
	if err := p.log.SetSnapshot(meta); err != nil {
		return err
	}
	if compactTo > 0 {
		if err := p.log.Compact(compactTo); err != nil {
			return err
		}
	}
	p.calls = append(p.calls, saveCall{meta: meta, ref: bytes.Clone(ref), compactTo: compactTo})
	return nil
}

func (p *recPersister) saves() []saveCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls)
}

func (p *recPersister) refFor(index raftpb.Index) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.calls) - 1; i >= 0; i-- {
		if p.calls[i].meta.Index == index {
			return p.calls[i].ref
		}
	}
	return nil
}

// ---- State machines ----

// kvSM is a key-value state machine; commands are "key=value". Update sets
// Result.Value to the number of keys and Result.Data to the key.
type kvSM struct {
	mu      sync.Mutex
	kv      map[string]string
	batches [][]uint64 // indexes of each Update call
	failCmd string     // Update fails on this command
	saveErr error
	recErr  error
	closed  bool
}

func newKV() *kvSM { return &kvSM{kv: map[string]string{}} }

func (s *kvSM) Update(ents []Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var idx []uint64
	for i := range ents {
		e := &ents[i]
		cmd := string(e.Cmd)
		if s.failCmd != "" && cmd == s.failCmd {
			return fmt.Errorf("kv: refusing %q", cmd)
		}
		k, v, _ := strings.Cut(cmd, "=")
		s.kv[k] = v
		e.Result = Result{Value: uint64(len(s.kv)), Data: []byte(k)}
		idx = append(idx, e.Index)
	}
	s.batches = append(s.batches, idx)
	return nil
}

func (s *kvSM) Lookup(q []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.kv[string(q)]
	if !ok {
		return nil, nil
	}
	return []byte(v), nil
}

func (s *kvSM) SaveSnapshot(w io.Writer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.saveErr != nil {
		return s.saveErr
	}
	for _, k := range slices.Sorted(maps.Keys(s.kv)) {
		if _, err := fmt.Fprintf(w, "%s=%s\n", k, s.kv[k]); err != nil {
			return err
		}
	}
	return nil
}

func (s *kvSM) RecoverFromSnapshot(r io.Reader) error {
	if s.recErr != nil {
		return s.recErr
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	kv := map[string]string{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return fmt.Errorf("kv: bad snapshot line %q", line)
		}
		kv[k] = v
	}
	s.mu.Lock()
	s.kv = kv
	s.mu.Unlock()
	return nil
}

func (s *kvSM) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

func (s *kvSM) state() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.kv)
}

func (s *kvSM) appliedIndexes() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []uint64
	for _, b := range s.batches {
		out = append(out, b...)
	}
	return out
}

func (s *kvSM) updateCalls() [][]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.batches)
}

// diskKV is an OnDiskStateMachine whose Open returns a configurable
// lastApplied.
type diskKV struct {
	*kvSM
	lastApplied uint64
	openErr     error
	syncErr     error
	syncs       int
}

func (d *diskKV) Open() (uint64, error) { return d.lastApplied, d.openErr }

func (d *diskKV) Sync() error {
	d.syncs++
	return d.syncErr
}

// ---- Events ----

type leaderEvent struct {
	leader raftpb.NodeID
	term   raftpb.Term
}

type recEvents struct {
	mu      sync.Mutex
	leaders []leaderEvent
	members []raftpb.ConfState
}

func (e *recEvents) LeaderChanged(shard raftpb.ShardID, leader raftpb.NodeID, term raftpb.Term) {
	e.mu.Lock()
	e.leaders = append(e.leaders, leaderEvent{leader, term})
	e.mu.Unlock()
}

func (e *recEvents) MembershipChanged(shard raftpb.ShardID, cs raftpb.ConfState) {
	e.mu.Lock()
	e.members = append(e.members, cs)
	e.mu.Unlock()
}

func (e *recEvents) memberships() []raftpb.ConfState {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.members)
}

func (e *recEvents) leaderEvents() []leaderEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.leaders)
}

// ---- One replica driven like the engine ----

type nodeOpts struct {
	voters     []raftpb.NodeID
	snapEvery  uint64
	lag        uint64
	maxPending int
	sm         StateMachine     // default: a new kvSM
	log        *group.MemoryLog // default: a bootstrapped MemoryLog
	snaps      *memSnapStore
	restoreRef []byte
	restoreIdx raftpb.Index
	core       func(*group.Config)
	logger     *slog.Logger // default: discards
}

type tnode struct {
	t     testing.TB
	id    raftpb.NodeID
	r     *Replica
	log   *group.MemoryLog
	kv    *kvSM
	snaps *memSnapStore
	pers  *recPersister
	ev    *recEvents
	// outbox holds messages the replica sent and that are not routed yet.
	outbox []raftpb.Message
	// hashAt records Status().Hash at every Applied value seen after Apply.
	hashAt map[raftpb.Index]uint64
	// holdApply defers Apply (entries stay queued).
	holdApply bool
	// lastRds are the Readys of the last step.
	lastRds []group.Ready
}

const electionTicks = 10

func coreConfig(id raftpb.NodeID, log group.LogReader) group.Config {
	return group.Config{ID: id, Shard: testShard, Log: log, ElectionTicks: electionTicks, HeartbeatTicks: 1}
}

func newNodeErr(t testing.TB, id raftpb.NodeID, o nodeOpts) (*tnode, error) {
	t.Helper()
	if len(o.voters) == 0 {
		o.voters = []raftpb.NodeID{id}
	}
	n := &tnode{t: t, id: id, ev: &recEvents{}, hashAt: map[raftpb.Index]uint64{}}
	n.log = o.log
	if n.log == nil {
		n.log = group.NewMemoryLog(raftpb.ConfState{Voters: o.voters})
	}
	n.snaps = o.snaps
	if n.snaps == nil {
		n.snaps = newMemSnapStore()
	}
	n.pers = &recPersister{log: n.log}
	sm := o.sm
	if sm == nil {
		n.kv = newKV()
		sm = n.kv
	} else if kv, ok := sm.(*kvSM); ok {
		n.kv = kv
	} else if d, ok := sm.(*diskKV); ok {
		n.kv = d.kvSM
	}
	if o.logger == nil {
		o.logger = discardLogger
	}
	cc := coreConfig(id, n.log)
	if o.core != nil {
		o.core(&cc)
	}
	r, err := New(Config{
		NodeID:              id,
		ShardID:             testShard,
		Core:                cc,
		SM:                  sm,
		Snapshots:           n.snaps,
		Persister:           n.pers,
		SnapshotEvery:       o.snapEvery,
		CompactionLag:       o.lag,
		MaxPendingProposals: o.maxPending,
		Logger:              o.logger,
	}, o.restoreRef, o.restoreIdx)
	if err != nil {
		return nil, err
	}
	n.r = r
	return n, nil
}

func newNode(t testing.TB, id raftpb.NodeID, o nodeOpts) *tnode {
	t.Helper()
	n, err := newNodeErr(t, id, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return n
}

// step runs one Step and handles its Readys as the engine does: persist,
// collect messages, Persisted, Apply. It returns the number of Readys.
func (n *tnode) step(quiesceTicks int) (int, StepResult) {
	n.t.Helper()
	rds, res := n.r.Step(nil, n.ev, quiesceTicks)
	n.lastRds = rds
	for i := range rds {
		rd := rds[i]
		if err := n.log.Persist(&rd); err != nil {
			n.t.Fatalf("node %d: persist: %v", n.id, err)
		}
		n.outbox = append(n.outbox, rd.Messages...)
		n.outbox = append(n.outbox, rd.AfterPersist...)
		n.r.Persisted(rd)
		if !n.holdApply {
			n.apply()
		}
	}
	return len(rds), res
}

func (n *tnode) apply() {
	n.t.Helper()
	before := n.r.Applied()
	n.r.Apply(n.ev)
	after := n.r.Applied()
	if after < before {
		n.t.Errorf("node %d: applied went back from %d to %d", n.id, before, after)
	}
	n.hashAt[after] = n.r.Status().Hash
}

// settle steps until a step returns no Ready. It reports how many Readys it
// handled.
func (n *tnode) settle() int {
	n.t.Helper()
	total := 0
	for range 100 {
		k, _ := n.step(0)
		if k == 0 {
			return total
		}
		total += k
	}
	n.t.Fatalf("node %d: does not settle", n.id)
	return total
}

// tickSettle ticks once and settles.
func (n *tnode) tickSettle() {
	n.r.Tick()
	n.settle()
}

// electSingle makes a single-voter replica elect itself.
func (n *tnode) electSingle() {
	n.t.Helper()
	for range 2 * electionTicks {
		n.tickSettle()
	}
	if st := n.r.Status(); st.Role != group.Leader || st.Leader != n.id {
		n.t.Fatalf("node %d: not leader after %d ticks: %+v", n.id, 2*electionTicks, st)
	}
	n.outbox = nil
}

func newLeader(t testing.TB, o nodeOpts) *tnode {
	t.Helper()
	n := newNode(t, 1, o)
	n.electSingle()
	return n
}

func (n *tnode) propose(key uint64, cmd string) *Proposal {
	n.t.Helper()
	p, err := n.r.Propose(key, []byte(cmd))
	if err != nil {
		n.t.Fatalf("node %d: Propose(%d): %v", n.id, key, err)
	}
	return p
}

func (n *tnode) read() *ReadRequest {
	n.t.Helper()
	rr, err := n.r.Read()
	if err != nil {
		n.t.Fatalf("node %d: Read: %v", n.id, err)
	}
	return rr
}

// ---- Completion helpers ----

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func mustResult(t testing.TB, p *Proposal) (Result, error) {
	t.Helper()
	if !isDone(p.Done()) {
		t.Fatalf("proposal %d not completed", p.key)
	}
	return p.Result()
}

func mustSucceed(t testing.TB, p *Proposal) Result {
	t.Helper()
	res, err := mustResult(t, p)
	if err != nil {
		t.Fatalf("proposal %d: %v", p.key, err)
	}
	return res
}

func mustPending(t testing.TB, p *Proposal) {
	t.Helper()
	if isDone(p.Done()) {
		res, err := p.Result()
		t.Fatalf("proposal %d completed early: %+v, %v", p.key, res, err)
	}
}

func waitDone(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not completed", what)
	}
}

// ---- A hand-routed cluster ----

type cluster struct {
	t     testing.TB
	ids   []raftpb.NodeID
	nodes map[raftpb.NodeID]*tnode
	// drop, if set, drops messages it returns true for.
	drop func(m raftpb.Message) bool
	// noSnapData: MsgSnap is delivered without copying the snapshot data.
	noSnapData bool
	// delivered logs every delivered message.
	delivered []raftpb.Message
}

func newCluster(t testing.TB, n int, o nodeOpts) *cluster {
	t.Helper()
	c := &cluster{t: t, nodes: map[raftpb.NodeID]*tnode{}}
	for i := 1; i <= n; i++ {
		c.ids = append(c.ids, raftpb.NodeID(i))
	}
	o.voters = c.ids
	for _, id := range c.ids {
		c.nodes[id] = newNode(t, id, o)
	}
	return c
}

func (c *cluster) node(id raftpb.NodeID) *tnode { return c.nodes[id] }

func (c *cluster) route(m raftpb.Message) {
	if c.drop != nil && c.drop(m) {
		return
	}
	dst, ok := c.nodes[m.To]
	if !ok {
		return
	}
	if m.Type == raftpb.MsgSnap {
		src := c.nodes[m.From]
		if !c.noSnapData {
			ref := src.pers.refFor(m.Snapshot.Index)
			d, ok := src.snaps.get(ref)
			if !ok {
				c.t.Fatalf("node %d sends snapshot %d it does not have", m.From, m.Snapshot.Index)
			}
			dst.snaps.put(dst.snaps.ReceivedRef(testShard, m.Snapshot.Index), d)
		}
		defer src.r.ReportSnapshot(m.To, true)
	}
	c.delivered = append(c.delivered, m)
	dst.r.AddMessages(m)
}

// deliver steps every replica and routes messages until nothing moves.
func (c *cluster) deliver() {
	c.t.Helper()
	for range 1000 {
		moved := false
		for _, id := range c.ids {
			if c.nodes[id].settle() > 0 {
				moved = true
			}
		}
		var msgs []raftpb.Message
		for _, id := range c.ids {
			n := c.nodes[id]
			msgs = append(msgs, n.outbox...)
			n.outbox = nil
		}
		if len(msgs) == 0 && !moved {
			return
		}
		for _, m := range msgs {
			c.route(m)
		}
	}
	c.t.Fatalf("cluster does not settle")
}

// discard drops every message queued in the outboxes.
func (c *cluster) discard() {
	for _, n := range c.nodes {
		n.outbox = nil
	}
}

// tick ticks the given replicas (all if none) once and delivers.
func (c *cluster) tick(ids ...raftpb.NodeID) {
	if len(ids) == 0 {
		ids = c.ids
	}
	for _, id := range ids {
		c.nodes[id].r.Tick()
	}
	c.deliver()
}

// elect makes id the leader of a fresh cluster: every replica first lets
// its start lease run out (messages discarded), then id campaigns.
func (c *cluster) elect(id raftpb.NodeID) {
	c.t.Helper()
	for range electionTicks {
		for _, n := range c.nodes {
			n.tickSettle()
		}
	}
	c.discard()
	c.nodes[id].r.Campaign()
	c.deliver()
	c.checkLeader(id)
}

func (c *cluster) checkLeader(id raftpb.NodeID) {
	c.t.Helper()
	for _, nid := range c.ids {
		st := c.nodes[nid].r.Status()
		if st.Leader != id {
			c.t.Fatalf("node %d: leader %d, want %d (%+v)", nid, st.Leader, id, st)
		}
	}
	if st := c.nodes[id].r.Status(); st.Role != group.Leader {
		c.t.Fatalf("node %d: role %v, want Leader", id, st.Role)
	}
}

func (c *cluster) leader() raftpb.NodeID {
	for _, id := range c.ids {
		if c.nodes[id].r.Status().Role == group.Leader {
			return id
		}
	}
	return raftpb.None
}

// isolate drops every message to or from the given nodes.
func isolate(ids ...raftpb.NodeID) func(m raftpb.Message) bool {
	return func(m raftpb.Message) bool {
		return slices.Contains(ids, m.From) || slices.Contains(ids, m.To)
	}
}

func countMsgs(msgs []raftpb.Message, typ raftpb.MessageType) int {
	n := 0
	for _, m := range msgs {
		if m.Type == typ {
			n++
		}
	}
	return n
}
