// Package engine is the Node: it hosts thousands of shards on one Pebble
// store (batchio) and one transport, steps them on a fixed pool of step
// workers, applies committed entries on a fixed pool of apply workers,
// ticks the active ones from one ticker goroutine and lets idle ones
// quiesce. It wires shard, batchio and transport; the protocol is in group.
//
// Data flow of one write (DESIGN.md): Propose queues the command in the
// replica's inbox and marks it ready; a step worker takes a batch of ready
// replicas, steps each and collects their Readys; it sends the messages
// that may leave at once (a leader's appends), and hands everything to
// persist to the store as ONE request, so a step pass costs one fsync
// whatever the number of shards in it. When the flush is durable the store
// calls back: acknowledgements leave, committed entries go to the apply
// pool, and the replicas are marked ready again for their Advance.
package engine

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/shardd/shardd/batchio"
	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
	"github.com/shardd/shardd/shard"
	"github.com/shardd/shardd/snapstore"
	"github.com/shardd/shardd/transport"
)

// Node is one shardd process's engine.
type Node struct {
	cfg   Config
	id    raftpb.NodeID
	lg    *slog.Logger
	store *batchio.Store
	tr    transport.Transport
	snaps *snapstore.Store
	m     *metrics

	mu       sync.RWMutex
	replicas map[raftpb.ShardID]*replica
	list     []*replica // for the ticker; rebuilt on change
	closed   bool

	stepSched  *scheduler
	awake      *awakeSet // the replicas the ticker ticks
	applySched *scheduler
	events     *eventQueue

	keySeq atomic.Uint64
	keyHi  uint64

	stop    chan struct{}
	workers sync.WaitGroup
	failed  atomic.Pointer[error]
	once    sync.Once
}

// replica is the engine's wrapper of a shard.Replica: scheduling slots and
// what the ticker and the API read without touching the core.
type replica struct {
	*shard.Replica
	id  raftpb.ShardID
	cfg ShardConfig

	step, apply schedSlot
	awake       awakeSlot // guarded by Node.awake's mutex
	onDisk      bool      // its state machine keeps durable state (S41)
	// quiesced is the step worker's view (the scheduler orders the
	// workers that step one replica); the ticker reads the awake set.
	quiesced     bool
	reportedStop atomic.Bool
	// applyBarrier counts this replica's Readys whose apply waits for their
	// flush; while any is outstanding, later committed entries wait too.
	applyBarrier atomic.Int32
}

// Open opens the node's store, starts its transport, workers and ticker,
// and restarts every shard found in the data dir.
func Open(cfg Config) (*Node, error) {
	cfg.ensureDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := checkIdentity(cfg.FS, cfg.DataDir, cfg.ClusterID, cfg.NodeID); err != nil {
		return nil, err
	}
	n := &Node{
		cfg:      cfg,
		id:       raftpb.NodeID(cfg.NodeID),
		lg:       cfg.Logger.With("node", cfg.NodeID),
		replicas: map[raftpb.ShardID]*replica{},
		stop:     make(chan struct{}),
	}
	n.m = newMetrics(n)
	var hi [8]byte
	_, _ = rand.Read(hi[:])
	n.keyHi = binary.BigEndian.Uint64(hi[:])
	n.stepSched = newScheduler(func(r *replica) *schedSlot { return &r.step })
	n.awake = newAwakeSet(cfg.tickChunk())
	n.applySched = newScheduler(func(r *replica) *schedSlot { return &r.apply })
	n.events = newEventQueue(cfg.Events)
	snaps, err := snapstore.New(cfg.FS, cfg.FS.PathJoin(cfg.DataDir, "snapshots"))
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	n.snaps = snaps
	store, err := batchio.Open(batchio.Options{
		Dir:        cfg.FS.PathJoin(cfg.DataDir, "store"),
		FS:         cfg.FS,
		Logger:     n.lg,
		CacheBytes: cfg.CacheBytes,
	})
	if err != nil {
		return nil, err
	}
	n.store = store
	if cfg.OnStoreOpen != nil {
		if err := cfg.OnStoreOpen(store.DB()); err != nil {
			_ = store.Close()
			return nil, fmt.Errorf("engine: OnStoreOpen: %w", err)
		}
	}
	if err := n.startTransport(); err != nil {
		_ = store.Close()
		return nil, err
	}
	for _, ri := range store.Replicas() {
		if err := n.restart(ri); err != nil {
			n.lg.Error("shard not restarted", "shard", uint64(ri.Shard), "err", err)
			n.events.shardStopped(uint64(ri.Shard), err)
		}
	}
	n.events.start()
	for i := 0; i < cfg.StepWorkers; i++ {
		n.workers.Add(1)
		go n.stepWorker()
	}
	for i := 0; i < cfg.ApplyWorkers; i++ {
		n.workers.Add(1)
		go n.applyWorker()
	}
	n.workers.Add(1)
	go n.ticker()
	return n, nil
}

// Close stops everything; nothing acknowledged is lost (it is durable).
// It is safe to call twice.
func (n *Node) Close() error {
	var err error
	n.once.Do(func() {
		n.mu.Lock()
		n.closed = true
		reps := n.list
		n.mu.Unlock()
		close(n.stop)
		// No more incoming messages; outgoing sends become no-ops.
		if terr := n.tr.Close(); terr != nil {
			err = terr
		}
		n.stepSched.close()
		n.applySched.close()
		n.workers.Wait()
		// Stop every replica and close its state machine before the store:
		// closing waits for lookups in flight, and state machines may keep
		// their data in the store.
		for _, r := range reps {
			r.Stop(ErrClosed)
			_ = r.CloseStateMachine()
		}
		// Flushes still queued complete (their callbacks find the
		// schedulers closed and the replicas stopped).
		if serr := n.store.Close(); serr != nil && err == nil {
			err = serr
		}
		n.events.close()
	})
	return err
}

// nextKey returns a proposal key unique in the cluster: a random prefix per
// process start plus a counter.
func (n *Node) nextKey() uint64 {
	k := n.keyHi + n.keySeq.Add(1)
	if k == 0 {
		k = n.keyHi + n.keySeq.Add(1)
	}
	return k
}

func (n *Node) get(id uint64) (*replica, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.closed {
		return nil, ErrClosed
	}
	r, ok := n.replicas[raftpb.ShardID(id)]
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrShardNotFound, id)
	}
	return r, nil
}

// StartShard starts this node's replica of a shard: a new shard (Members),
// or a replica joining a running one (Join).
func (n *Node) StartShard(sc ShardConfig) error {
	sc.ensureDefaults(&n.cfg)
	if err := sc.validate(); err != nil {
		return err
	}
	id := raftpb.ShardID(sc.ShardID)
	n.mu.RLock()
	_, exists := n.replicas[id]
	closed := n.closed
	n.mu.RUnlock()
	switch {
	case closed:
		return ErrClosed
	case exists:
		return fmt.Errorf("%w: %d", ErrShardExists, sc.ShardID)
	}
	u := batchio.Update{Shard: id, Create: &batchio.ReplicaRecord{Join: sc.Join, AppData: encodeShardSettings(sc)}}
	if !sc.Join {
		cs := raftpb.ConfState{Voters: toNodeIDs(sc.Members), Learners: toNodeIDs(sc.Learners)}
		st, boot, err := group.Bootstrap(normalize(cs))
		if err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
		}
		u.Create.Initial = st.ConfState
		u.Entries = []raftpb.Entry{boot}
		u.HardState = st.HardState
		u.ConfState, u.ConfIndex = &st.ConfState, st.ConfIndex
	}
	if err := n.store.Write(&batchio.Request{Updates: []batchio.Update{u}}); err != nil {
		if errors.Is(err, batchio.ErrShardExists) {
			return fmt.Errorf("%w: %d", ErrShardExists, sc.ShardID)
		}
		return err
	}
	return n.launch(id, sc, nil, 0)
}

// restart starts a replica found in the store at Open.
func (n *Node) restart(ri batchio.ReplicaInfo) error {
	sc := decodeShardSettings(ri.Record.AppData)
	sc.ShardID = uint64(ri.Shard)
	sc.Join = ri.Record.Join
	sc.ensureDefaults(&n.cfg)
	if sc.NewStateMachine == nil {
		return fmt.Errorf("%w: Config.NewStateMachine is needed to restart shard %d", ErrInvalidConfig, ri.Shard)
	}
	var ref []byte
	var idx raftpb.Index
	if ri.Snapshot != nil {
		ref, idx = ri.Snapshot.Data, ri.Snapshot.Meta.Index
	}
	return n.launch(ri.Shard, sc, ref, idx)
}

// launch builds the replica over its stored log and registers it.
func (n *Node) launch(id raftpb.ShardID, sc ShardConfig, snapRef []byte, snapIndex raftpb.Index) error {
	log, err := n.store.Shard(id)
	if err != nil {
		return err
	}
	sm := sc.NewStateMachine(uint64(id), uint64(n.id))
	rep, err := shard.New(shard.Config{
		NodeID:  n.id,
		ShardID: id,
		Core: group.Config{
			ID:             n.id,
			Shard:          id,
			Log:            log,
			ElectionTicks:  n.cfg.ElectionTicks,
			HeartbeatTicks: n.cfg.HeartbeatTicks,
			// Logger: the replica's own (node and shard attached once).
		},
		SM:                  sm,
		Snapshots:           n.snaps,
		Persister:           n,
		SnapshotEvery:       sc.SnapshotEvery,
		CompactionLag:       sc.CompactionLag,
		MaxPendingProposals: n.cfg.MaxPendingProposals,
		Logger:              n.lg,
	}, snapRef, snapIndex)
	if err != nil {
		_ = sm.Close()
		return err
	}
	r := &replica{Replica: rep, id: id, cfg: sc, onDisk: rep.OnDisk()}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		_ = sm.Close()
		return ErrClosed
	}
	n.replicas[id] = r
	n.list = append(n.list, r)
	n.mu.Unlock()
	n.awake.join(r)
	// The membership a replica starts with is news to the listener too.
	n.events.MembershipChanged(id, rep.Status().Members)
	n.stepSched.enqueue(r)
	return nil
}

// StopShard stops this node's replica of a shard; its data stays on disk.
func (n *Node) StopShard(shardID uint64) error {
	n.mu.Lock()
	r, ok := n.replicas[raftpb.ShardID(shardID)]
	if ok {
		delete(n.replicas, r.id)
		n.rebuildListLocked()
	}
	n.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %d", ErrShardNotFound, shardID)
	}
	n.awake.leave(r)
	r.Stop(nil)
	_ = r.CloseStateMachine()
	n.events.shardStopped(shardID, nil)
	return nil
}

func (n *Node) rebuildListLocked() {
	n.list = make([]*replica, 0, len(n.replicas))
	for _, r := range n.replicas {
		n.list = append(n.list, r)
	}
}

// SaveSnapshot implements shard.Persister: it records a snapshot the state
// machine took and compacts the log behind it, in one flush.
func (n *Node) SaveSnapshot(id raftpb.ShardID, meta raftpb.SnapshotMeta, ref []byte, compactTo raftpb.Index) error {
	err := n.store.Write(&batchio.Request{Updates: []batchio.Update{{
		Shard:        id,
		SaveSnapshot: &batchio.SnapshotRecord{Meta: meta, Data: ref},
		CompactTo:    compactTo,
	}}})
	if err == nil {
		n.snaps.RemoveOlder(id, meta.Index)
		n.m.snapshotsTaken.Inc()
	}
	return err
}

// failNode stops the node after a storage failure: nothing may be
// acknowledged any more.
func (n *Node) failNode(err error) {
	if !n.failed.CompareAndSwap(nil, &err) {
		return
	}
	n.lg.Error("node failed: storage error, restart from disk", "err", err)
	n.mu.RLock()
	reps := n.list
	n.mu.RUnlock()
	for _, r := range reps {
		r.Stop(err)
		n.events.shardStopped(uint64(r.id), err)
	}
}

func toNodeIDs(ids []uint64) []raftpb.NodeID {
	out := make([]raftpb.NodeID, len(ids))
	for i, id := range ids {
		out[i] = raftpb.NodeID(id)
	}
	return out
}

// wait blocks until ch is closed or ctx ends.
func wait(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
