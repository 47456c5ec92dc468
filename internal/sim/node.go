package sim

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/shardd/shardd/batchio"
	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
	"github.com/shardd/shardd/shard"
	"github.com/shardd/shardd/snapstore"
	"github.com/shardd/shardd/transport"
)

// A simulated node is what engine.Node is, driven by the simulation's one
// goroutine instead of workers: its own crash-simulating file system, a
// batchio store and a snapshot store on it, the shard.Replicas placed on
// it, a transport on the manual in-memory network and a handler routing
// arrivals to the replicas' inboxes. The step pass (step) follows the
// engine's stepWorker and flushed in order: step the replicas with work,
// send their messages, persist every Ready of the pass with one store
// write, then send the acknowledgements, hand the Readys back (Persisted)
// and apply.

// maxPasses bounds the step passes of one node in one driver step; work
// left over (a replica made ready by its own flush) waits for the next.
const maxPasses = 8

// errCrashed stops the replicas of a crashed node.
var errCrashed = errors.New("sim: node crashed")

type node struct {
	s  *Sim
	id raftpb.NodeID
	// fs is the node's crash-simulating file system; vfs wraps it with
	// the disk fault injector, and is what the stores use.
	fs    *vfs.MemFS
	vfs   vfs.FS
	disk  diskFault
	store *batchio.Store
	snaps *snapstore.Store
	tr    transport.Transport
	reps  []*replica // by shard id - 1; nil where the node hosts no replica

	up          bool
	incarnation uint64
	downUntil   time.Duration // when a crashed node restarts
	pausedUntil time.Duration
	tickEvery   time.Duration
	nextTick    time.Duration
	// crashMid: crash in the next pass that persists something, before
	// its write (1) or after it and before the acknowledgements (2).
	crashMid      int
	crashMidUntil time.Duration

	// Scratch of a step pass, reused.
	rds     []group.Ready
	items   []item
	updates []batchio.Update
	msgs    []raftpb.Message
	acks    []raftpb.Message
}

// item is one Ready of a pass waiting for the pass's flush.
type item struct {
	r  *replica
	rd group.Ready
	// lastPersist marks the replica's last Ready of the pass that
	// persists something: the store must then hold what it says.
	lastPersist bool
}

// replica is a shard.Replica hosted by a simulated node, with the
// driver's scheduling flags and the oracle's view of it.
type replica struct {
	*shard.Replica
	shard raftpb.ShardID
	node  *node
	log   *batchio.ShardLog
	track *track
	// dirty: something was queued for the replica since its last step
	// (the engine's step scheduler flag).
	dirty bool
	// applyDirty: Persisted queued work for Apply.
	applyDirty bool
	// quiesced caches Quiesced after each step, for the ticker.
	quiesced bool
	// stopped: the driver stopped the replica (crash, removal, end).
	stopped bool
	traced  string // last status line traced (Options.TraceShard)
}

// open opens the node's store (and snapshot directory) on its file system.
func (n *node) open() error {
	s := n.s
	n.disk.armed.Store(false)
	n.vfs = errorfs.Wrap(n.fs, &n.disk)
	snaps, err := snapstore.New(n.vfs, "snapshots")
	if err != nil {
		return err
	}
	n.snaps = snaps
	store, err := batchio.Open(batchio.Options{
		Dir:             "store",
		FS:              n.vfs,
		Logger:          s.storeLogger,
		CacheBytes:      s.f.CacheBytes,
		BlockCacheBytes: 1 << 20,
		MemTableBytes:   1 << 20,
	})
	if err != nil {
		return fmt.Errorf("node %d: opening the store: %w", n.id, err)
	}
	n.store = store
	return nil
}

// create writes the replica records of the shards first placed on the
// node, as engine.StartShard does, in one write.
func (n *node) create(shards []raftpb.ShardID) error {
	var req batchio.Request
	for _, id := range shards {
		cs := raftpb.ConfState{Voters: append([]raftpb.NodeID(nil), n.s.placement[id-1]...)}
		st, boot, err := group.Bootstrap(cs)
		if err != nil {
			return err
		}
		req.Updates = append(req.Updates, batchio.Update{
			Shard:     id,
			Create:    &batchio.ReplicaRecord{Initial: st.ConfState},
			Entries:   []raftpb.Entry{boot},
			HardState: st.HardState,
			ConfState: &st.ConfState, ConfIndex: st.ConfIndex,
		})
	}
	return n.store.Write(&req)
}

// start connects the node to the network and starts every replica found
// in its store, as engine.Open does.
func (n *node) start() error {
	s := n.s
	n.incarnation++
	n.reps = make([]*replica, s.opts.Shards)
	n.tr = s.net.Transport(n.id, &handler{n: n, inc: n.incarnation})
	for _, ri := range n.store.Replicas() {
		var ref []byte
		var idx raftpb.Index
		if ri.Snapshot != nil {
			ref, idx = ri.Snapshot.Data, ri.Snapshot.Meta.Index
		}
		if err := n.launch(ri.Shard, ref, idx); err != nil {
			return err
		}
	}
	n.up = true
	n.nextTick = s.now + n.tickEvery
	return nil
}

// launch builds a replica over its stored log (engine.launch).
func (n *node) launch(id raftpb.ShardID, ref []byte, idx raftpb.Index) error {
	s := n.s
	log, err := n.store.Shard(id)
	if err != nil {
		return err
	}
	seed := s.opts.Seed ^ uint64(id)<<32 ^ uint64(n.id)<<16 ^ n.incarnation
	rep, err := shard.New(shard.Config{
		NodeID:  n.id,
		ShardID: id,
		Core: group.Config{
			ID:              n.id,
			Shard:           id,
			Log:             log,
			ElectionTicks:   s.opts.ElectionTicks,
			HeartbeatTicks:  s.opts.HeartbeatTicks,
			MaxSizePerMsg:   s.f.MaxSizePerMsg,
			MaxInflightMsgs: s.f.MaxInflightMsgs,
			Rand:            rand.New(rand.NewPCG(seed, 0x5eed)),
		},
		SM:                  newKVSM(),
		Snapshots:           n.snaps,
		Persister:           n,
		SnapshotEvery:       s.f.SnapshotEvery,
		CompactionLag:       s.f.CompactionLag,
		MaxPendingProposals: maxPendingProposals,
		Logger:              s.replicaLogger,
	}, ref, idx)
	if err != nil {
		return fmt.Errorf("node %d: replica of shard %d does not start: %w", n.id, id, err)
	}
	key := [2]uint64{uint64(id), uint64(n.id)}
	t := s.tracks[key]
	if t == nil {
		t = &track{}
		s.tracks[key] = t
	}
	r := &replica{Replica: rep, shard: id, node: n, log: log, track: t, dirty: true}
	n.reps[id-1] = r
	return s.onStart(r)
}

// maxPendingProposals bounds each replica's proposals (ErrBusy beyond).
const maxPendingProposals = 1024

// SaveSnapshot implements shard.Persister (engine.Node.SaveSnapshot).
func (n *node) SaveSnapshot(id raftpb.ShardID, meta raftpb.SnapshotMeta, ref []byte, compactTo raftpb.Index) error {
	err := n.store.Write(&batchio.Request{Updates: []batchio.Update{{
		Shard:        id,
		SaveSnapshot: &batchio.SnapshotRecord{Meta: meta, Data: ref},
		CompactTo:    compactTo,
	}}})
	if err == nil {
		n.snaps.RemoveOlder(id, meta.Index)
		n.s.stats.SnapshotsTaken++
	}
	return err
}

// crash stops the node as a kill -9 would: its in-memory state is dropped,
// and its file system keeps what was synced (plus some unsynced blocks).
func (n *node) crash() {
	s := n.s
	s.stats.Crashes++
	fmt.Fprintf(s.opts.Log, "t=%v crash node %d (mid=%d)\n", s.now, n.id, n.crashMid)
	var crng *rand.Rand
	if s.f.UnsyncedPercent > 0 {
		crng = rand.New(rand.NewPCG(s.rnd.Uint64(), 0xc4a54))
	}
	clone := n.fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: s.f.UnsyncedPercent, RNG: crng})
	_ = n.tr.Close()
	for _, r := range n.reps {
		if r != nil {
			r.stopped = true
			r.Stop(errCrashed)
		}
	}
	_ = n.store.Close()
	n.fs, n.store, n.reps = clone, nil, nil
	n.up = false
	n.crashMid = 0
	n.pausedUntil = 0
	n.downUntil = s.now + s.expDur(s.f.DownFor)
}

// restart reopens a crashed node from its file system.
func (n *node) restart() {
	s := n.s
	s.stats.Restarts++
	fmt.Fprintf(s.opts.Log, "t=%v restart node %d\n", s.now, n.id)
	if err := n.open(); err != nil {
		s.failf("%v", err)
		return
	}
	if err := n.start(); err != nil {
		s.failf("%v", err)
	}
}

// tick ticks the node's active replicas when its (skewed) clock says so;
// quiesced replicas are skipped, as by the engine's ticker.
func (n *node) tick() {
	now := n.s.now
	if now < n.nextTick {
		return
	}
	for n.nextTick <= now {
		n.nextTick += n.tickEvery
	}
	for _, r := range n.reps {
		if r != nil && !r.quiesced {
			r.Tick()
			r.dirty = true
		}
	}
}

// step runs step passes until no replica of the node has work (or
// maxPasses).
func (n *node) step() {
	for pass := 0; pass < maxPasses && n.up && n.s.err == nil; pass++ {
		if !n.pass() {
			return
		}
	}
}

// pass is one step pass (engine stepWorker + flushed + applyWorker). It
// reports whether any replica had work.
func (n *node) pass() bool {
	s := n.s
	n.items, n.updates, n.msgs, n.acks = n.items[:0], n.updates[:0], n.msgs[:0], n.acks[:0]
	any := false
	for _, r := range n.reps {
		if r == nil || !r.dirty {
			continue
		}
		any = true
		r.dirty = false
		var res shard.StepResult
		n.rds, res = r.Step(n.rds[:0], s.events, s.opts.QuiesceTicks)
		r.quiesced = res.Skip
		lastPersist := -1
		for i := range n.rds {
			rd := &n.rds[i]
			s.onReady(r, rd)
			n.msgs = n.routeMessages(r, rd.Messages, n.msgs)
			if rd.MustPersist() {
				n.updates = append(n.updates, toUpdate(r.shard, rd, n.snaps))
				lastPersist = len(n.items)
			}
			n.items = append(n.items, item{r: r, rd: *rd})
		}
		if lastPersist >= 0 {
			n.items[lastPersist].lastPersist = true
		}
		s.onStatus(r)
	}
	if !any {
		return false
	}
	if len(n.msgs) > 0 {
		n.tr.Send(n.msgs)
		s.stats.Messages += len(n.msgs)
	}
	if len(n.items) == 0 {
		return true
	}
	// As the engine: a pass that only moves commit indexes is written
	// without an fsync, so a crash may lose it.
	lazy := true
	for i := range n.items {
		lazy = lazy && !n.items[i].rd.NeedsAdvance()
	}
	if len(n.updates) > 0 {
		if n.crashMid == 1 {
			n.crash()
			return false
		}
		if !lazy {
			s.stats.Flushes++
		}
		if err := n.store.Write(&batchio.Request{Updates: n.updates, Lazy: lazy}); err != nil {
			n.storageFailed(err)
			return false
		}
		if n.crashMid == 2 {
			n.crash()
			return false
		}
	}
	for i := range n.items {
		it := &n.items[i]
		if it.lastPersist {
			s.onPersisted(it.r, &it.rd, !lazy)
		}
		n.acks = append(n.acks, it.rd.AfterPersist...)
		if it.r.Persisted(it.rd) {
			it.r.applyDirty = true
		}
		it.r.dirty = true
	}
	if len(n.acks) > 0 {
		n.tr.Send(n.acks)
		s.stats.Messages += len(n.acks)
	}
	for i := range n.items {
		r := n.items[i].r
		if r.applyDirty {
			r.applyDirty = false
			r.Apply(s.events)
			s.onStatus(r)
		}
	}
	clear(n.items)
	return true
}

// storageFailed fail-stops the node after a failed write (TESTING.md:
// never retry an fsync): it crashes and restarts from disk. A failure
// without an injected disk fault is a bug.
func (n *node) storageFailed(err error) {
	if !n.disk.armed.Load() {
		n.s.failf("node %d: write failed without a disk fault: %v", n.id, err)
		return
	}
	n.s.stats.DiskErrors++
	fmt.Fprintf(n.s.opts.Log, "t=%v node %d fail-stops: %v\n", n.s.now, n.id, err)
	n.crash()
}

// diskFault fails every write and sync of the node's WAL once armed: the
// store's next flush fails and the node must fail-stop.
type diskFault struct{ armed atomic.Bool }

func (d *diskFault) String() string { return "sim disk fault" }

// MaybeError implements errorfs.Injector.
func (d *diskFault) MaybeError(op errorfs.Op) error {
	if !d.armed.Load() || !strings.HasSuffix(op.Path, ".log") {
		return nil
	}
	switch op.Kind {
	case errorfs.OpFileWrite, errorfs.OpFileWriteAt, errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
		return errorfs.ErrInjected
	}
	return nil
}

// routeMessages appends msgs for the transport; snapshots go through their
// own stream (engine.routeMessages).
func (n *node) routeMessages(r *replica, msgs, out []raftpb.Message) []raftpb.Message {
	for i := range msgs {
		m := &msgs[i]
		if m.Type == raftpb.MsgSnap {
			n.sendSnapshot(r, *m)
			continue
		}
		out = append(out, *m)
	}
	return out
}

// sendSnapshot streams the leader's latest snapshot to m.To
// (engine.sendSnapshot).
func (n *node) sendSnapshot(r *replica, m raftpb.Message) {
	s := n.s
	rec, ok := r.log.SnapshotRecord()
	if !ok || rec.Meta.Index != m.Snapshot.Index {
		r.ReportSnapshot(m.To, false)
		r.dirty = true
		return
	}
	ref, snaps := rec.Data, n.snaps
	open := func() (io.ReadCloser, int64, error) { return snaps.OpenWithSize(ref) }
	s.stats.SnapshotsSent++
	n.tr.SendSnapshot(m, open, func(err error) {
		if err != nil {
			s.stats.SnapshotsFailed++
		}
		r.ReportSnapshot(m.To, err == nil)
		r.dirty = true
	})
}

// toUpdate is what the store must write for rd (engine.toUpdate).
func toUpdate(id raftpb.ShardID, rd *group.Ready, snaps *snapstore.Store) batchio.Update {
	u := batchio.Update{Shard: id, Entries: rd.Entries, HardState: rd.HardState, CompactTo: rd.CompactTo}
	if rd.Snapshot != nil {
		u.InstallSnapshot = &batchio.SnapshotRecord{Meta: *rd.Snapshot, Data: snaps.ReceivedRef(id, rd.Snapshot.Index)}
	}
	if rd.ConfState != nil {
		u.ConfState, u.ConfIndex = rd.ConfState, rd.ConfIndex
	}
	return u
}

// removeReplica deletes the node's replica of a shard that is no longer a
// member, data and snapshots included.
func (n *node) removeReplica(id raftpb.ShardID) error {
	r := n.reps[id-1]
	if r == nil {
		return nil
	}
	r.stopped = true
	r.Stop(nil)
	n.reps[id-1] = nil
	if err := n.store.Write(&batchio.Request{Updates: []batchio.Update{{Shard: id, Remove: true}}}); err != nil {
		n.storageFailed(err)
		return nil
	}
	n.snaps.RemoveShard(id)
	delete(n.s.tracks, [2]uint64{uint64(id), uint64(n.id)})
	return nil
}

// join creates an empty replica of a running shard on the node (a
// replica the shard is about to add).
func (n *node) join(id raftpb.ShardID) error {
	if n.reps[id-1] != nil {
		return nil
	}
	err := n.store.Write(&batchio.Request{Updates: []batchio.Update{{Shard: id, Create: &batchio.ReplicaRecord{Join: true}}}})
	if err != nil {
		n.storageFailed(err)
		return nil
	}
	return n.launch(id, nil, 0)
}

// handler is a node incarnation's transport.Handler (engine/handler.go):
// it only queues work in the replicas' inboxes and marks them dirty.
type handler struct {
	n   *node
	inc uint64
}

func (h *handler) live() bool { return h.n.up && h.n.incarnation == h.inc }

// HandleMessages implements transport.Handler.
func (h *handler) HandleMessages(from raftpb.NodeID, msgs []raftpb.Message) {
	if !h.live() {
		return
	}
	n := h.n
	for i := 0; i < len(msgs); {
		j := i + 1
		for j < len(msgs) && msgs[j].Shard == msgs[i].Shard {
			j++
		}
		id := msgs[i].Shard
		for k := i; k < j; k++ {
			if msgs[k].To != n.id || msgs[k].From != from {
				n.s.failf("isolation: node %d received %v from node %d", n.id, msgs[k], from)
			}
		}
		if id >= 1 && int(id) <= len(n.reps) && n.reps[id-1] != nil {
			r := n.reps[id-1]
			r.AddMessages(msgs[i:j]...)
			r.dirty = true
		} else {
			n.s.stats.UnknownShard += j - i
		}
		i = j
	}
}

// NodeUnreachable implements transport.Handler: every replica is told.
func (h *handler) NodeUnreachable(node raftpb.NodeID) {
	if !h.live() {
		return
	}
	for _, r := range h.n.reps {
		if r != nil {
			r.ReportUnreachable(node)
			r.dirty = true
		}
	}
}

// NodeReachable implements transport.Handler.
func (h *handler) NodeReachable(raftpb.NodeID) {}

// SnapshotSink implements transport.Handler.
func (h *handler) SnapshotSink(m raftpb.Message, size int64) (transport.SnapshotSink, error) {
	n := h.n
	if !h.live() || m.Shard < 1 || int(m.Shard) > len(n.reps) || n.reps[m.Shard-1] == nil {
		return nil, fmt.Errorf("sim: node %d hosts no replica of shard %d", n.id, m.Shard)
	}
	return n.snaps.Receive(m.Shard, m.Snapshot.Index)
}
