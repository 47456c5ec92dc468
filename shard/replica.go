package shard

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

// SnapshotStore keeps state machine snapshots as files; the engine
// implements it on the node's file system.
type SnapshotStore interface {
	// ReceivedRef is the reference of the snapshot of shard at index
	// received from a leader (the engine stores it there as it arrives).
	ReceivedRef(shard raftpb.ShardID, index raftpb.Index) []byte
	// Create returns a writer for the snapshot of shard at index; Commit
	// makes it durable and returns the reference to record.
	Create(shard raftpb.ShardID, index raftpb.Index) (SnapshotWriter, error)
	// Open opens a snapshot by the reference Commit (or a received
	// snapshot) returned.
	Open(ref []byte) (SnapshotReader, error)
}

// SnapshotWriter receives a snapshot's data.
type SnapshotWriter interface {
	Write(p []byte) (int, error)
	// Commit makes the data durable and returns its reference.
	Commit() (ref []byte, err error)
	Abort() error
}

// SnapshotReader reads a snapshot's data.
type SnapshotReader interface {
	Read(p []byte) (int, error)
	Close() error
}

// Persister records a snapshot taken by the state machine and compacts the
// log behind it (the engine writes both through the node's store).
type Persister interface {
	SaveSnapshot(shard raftpb.ShardID, meta raftpb.SnapshotMeta, ref []byte, compactTo raftpb.Index) error
}

// Config configures a Replica.
type Config struct {
	NodeID  raftpb.NodeID
	ShardID raftpb.ShardID
	// Core is the Raft core's configuration (ID, Shard and Log set).
	Core group.Config
	// SM is the state machine; it may also be an OnDiskStateMachine.
	SM StateMachine
	// Snapshots stores state machine snapshots; Persister records them.
	Snapshots SnapshotStore
	Persister Persister
	// SnapshotEvery is the number of applied entries between automatic
	// snapshots; CompactionLag the entries kept behind a snapshot.
	SnapshotEvery uint64
	CompactionLag uint64
	// MaxPendingProposals bounds the proposals accepted and not yet
	// completed (ErrBusy beyond).
	MaxPendingProposals int
	// ForwardTimeoutTicks is how long a proposal forwarded to the leader
	// waits to show up in this replica's log before it resolves as
	// ErrResultUnknown: a lost forward (or one the leader dropped) would
	// otherwise wait for ever on a stable shard. Default 3 election
	// timeouts.
	ForwardTimeoutTicks int
	Logger              *slog.Logger
}

// Replica is one replica of one shard.
type Replica struct {
	cfg   Config
	id    raftpb.NodeID
	shard raftpb.ShardID
	lg    *slog.Logger

	// g is the core; only the step worker processing the replica uses it.
	g *group.Group

	in inbox

	// Step-worker state.
	readSeq   uint64
	idleTicks int
	ticks     uint64 // ticks stepped, for forwarded proposals' expiry
	entBuf    []raftpb.Entry
	normBuf   []*Proposal
	lastLead  raftpb.NodeID
	lastTerm  raftpb.Term

	// mu guards everything a stop must resolve, shared by the step worker,
	// the apply worker and Stop: once stopped is set, nothing is added.
	mu           sync.Mutex
	stopped      bool
	stopErr      error
	pending      map[uint64]*Proposal // in Raft, by key
	forwarded    []*Proposal          // pending ones forwarded, by expiry
	waitingProps []*Proposal          // dropped by the core (no leader yet): retried
	readRounds   []*readBatch         // ReadIndex in flight, by id
	readWait     []*readBatch         // read index known, waiting for apply

	// Apply-worker state.
	applyMu sync.Mutex // guards applyQ
	applyQ  []applyTask
	// Reused by the apply worker: the queue's other array, and the
	// slices of one applyEntries.
	spareQ    []applyTask
	updateBuf []Entry
	doneBuf   []*Proposal
	resultBuf []Result
	errBuf    []error
	smMu      sync.RWMutex // Update/Recover vs Lookup
	sm        StateMachine
	onDisk    OnDiskStateMachine
	applied   atomic.Uint64
	lastSnap  raftpb.Index
	appTerm   raftpb.Term // term of the last applied entry
	conf      raftpb.ConfState
	confIdx   raftpb.Index
	hash      atomic.Uint64 // running hash of applied entries (TESTING.md)
	maxTerm   raftpb.Term

	// outstanding counts proposals accepted and not yet completed, wherever
	// they are (inbox, waiting for a leader, in Raft): the bound behind
	// ErrBusy, released as they complete.
	outstanding atomic.Int64

	status atomic.Pointer[Status]
	// commit and last are published apart from status: they change on
	// almost every step, and a new Status each time is an allocation per
	// step.
	commit, last atomic.Uint64
	err          atomic.Pointer[error] // set when the replica stopped on an error
}

// inbox is what other goroutines hand the replica; the step worker drains
// it. Swap under the lock, act outside it.
type inbox struct {
	mu          sync.Mutex
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

type snapReport struct {
	to raftpb.NodeID
	ok bool
}

// applyTask is work for the apply worker, in log order.
type applyTask struct {
	snap      *raftpb.SnapshotMeta
	snapRef   []byte
	ents      []raftpb.Entry
	conf      *raftpb.ConfState
	confIndex raftpb.Index
	// snapshotNow asks for a snapshot (RequestSnapshot).
	snapshotNow chan<- snapResult
}

type snapResult struct {
	index raftpb.Index
	err   error
}

// Status is a replica's state as ShardStatus reports it.
type Status struct {
	Shard     raftpb.ShardID
	Node      raftpb.NodeID
	Role      group.Role
	Term      raftpb.Term
	Leader    raftpb.NodeID
	Commit    raftpb.Index
	Applied   raftpb.Index
	LastIndex raftpb.Index
	Members   raftpb.ConfState
	Quiesced  bool
	// Hash is the running hash of applied entries, equal on every replica
	// that applied the same prefix.
	Hash uint64
	Err  error

	confIndex raftpb.Index
}

// New creates a replica. restoreRef, if set, is the reference of the
// snapshot to restore an in-memory state machine from (at index
// restoreIndex) before the core starts.
func New(cfg Config, restoreRef []byte, restoreIndex raftpb.Index) (*Replica, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxPendingProposals <= 0 {
		cfg.MaxPendingProposals = 4096
	}
	if cfg.ForwardTimeoutTicks <= 0 {
		et := cfg.Core.ElectionTicks
		if et <= 0 {
			et = 10
		}
		cfg.ForwardTimeoutTicks = 3 * et
	}
	r := &Replica{
		cfg:     cfg,
		id:      cfg.NodeID,
		shard:   cfg.ShardID,
		lg:      cfg.Logger.With("shard", uint64(cfg.ShardID)),
		sm:      cfg.SM,
		pending: map[uint64]*Proposal{},
	}
	r.onDisk, _ = cfg.SM.(OnDiskStateMachine)
	applied, err := r.openStateMachine(restoreRef, restoreIndex)
	if err != nil {
		return nil, err
	}
	cfg.Core.Applied = raftpb.Index(applied)
	if cfg.Core.Logger == nil {
		cfg.Core.Logger = r.lg
	}
	g, err := group.New(cfg.Core)
	if err != nil {
		return nil, fmt.Errorf("shard %d: %w", cfg.ShardID, err)
	}
	r.g = g
	r.applied.Store(uint64(applied))
	r.lastSnap = applied
	st := g.Status()
	r.conf, r.confIdx = st.Config, st.ConfIndex
	r.publishStatus()
	return r, nil
}

// CloseStateMachine closes the state machine. REQUIRES: the replica is
// stopped and no worker uses it any more.
func (r *Replica) CloseStateMachine() error {
	r.smMu.Lock()
	defer r.smMu.Unlock()
	return r.sm.Close()
}

// Shard is the replica's shard id.
func (r *Replica) Shard() raftpb.ShardID { return r.shard }

// OnDisk reports whether the state machine keeps its own durable state
// (an OnDiskStateMachine): its applied index must never get ahead of the
// durable commit index (S41), so its entries are applied only once the
// commit that releases them is durable.
func (r *Replica) OnDisk() bool { return r.onDisk != nil }

// Applied is the index the state machine has applied.
func (r *Replica) Applied() raftpb.Index { return raftpb.Index(r.applied.Load()) }

// Status returns the replica's last published status.
func (r *Replica) Status() Status {
	s := *r.status.Load()
	s.Commit = raftpb.Index(r.commit.Load())
	s.LastIndex = raftpb.Index(r.last.Load())
	s.Applied = r.Applied()
	s.Hash = r.hash.Load()
	if e := r.err.Load(); e != nil {
		s.Err = *e
	}
	return s
}

// Err is the error that stopped the replica, or nil.
func (r *Replica) Err() error {
	if e := r.err.Load(); e != nil {
		return *e
	}
	return nil
}

// fail stops the replica on an error (a storage failure, an Update error):
// nothing more is applied, and everything waiting on it is resolved.
func (r *Replica) fail(err error) {
	if r.err.CompareAndSwap(nil, &err) {
		r.lg.Error("replica stopped", "err", err)
		r.Stop(err)
	}
}

// publishStatus publishes the core's state for readers on other
// goroutines, only when it changed: it runs after every step, most of
// which (ticks) change nothing.
func (r *Replica) publishStatus() {
	st := r.g.Brief()
	// Stores only on change: an unchanged cache line stays shared with
	// the goroutines that read the status.
	if c := uint64(st.HardState.Commit); r.commit.Load() != c {
		r.commit.Store(c)
	}
	if l := uint64(st.LastIndex); r.last.Load() != l {
		r.last.Store(l)
	}
	if old := r.status.Load(); old != nil && old.Role == st.Role && old.Term == st.HardState.Term &&
		old.Leader == st.Lead && old.Quiesced == st.Quiesced && old.confIndex == st.ConfIndex {
		return
	}
	s := &Status{
		Shard:     r.shard,
		Node:      r.id,
		Role:      st.Role,
		Term:      st.HardState.Term,
		Leader:    st.Lead,
		Commit:    st.HardState.Commit,
		LastIndex: st.LastIndex,
		Quiesced:  st.Quiesced,
		confIndex: st.ConfIndex,
	}
	if old := r.status.Load(); old != nil && old.confIndex == st.ConfIndex {
		s.Members = old.Members // unchanged: share, never modified
	} else {
		s.Members = r.g.ConfState()
	}
	r.status.Store(s)
}
