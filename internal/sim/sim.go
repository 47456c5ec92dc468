package sim

import (
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/shardd/shardd/raftpb"
	"github.com/shardd/shardd/shard"
	"github.com/shardd/shardd/transport/transporttest"
)

// Sim is one simulated run. Everything happens on the goroutine that
// calls Run (batchio's writer and Pebble's background work run beside it,
// but the simulation waits for every write, so what matters is
// reproducible).
type Sim struct {
	opts Options
	f    Faults

	// Independent random streams, so that a change in one kind of draw
	// does not shift the others.
	rnd  *rand.Rand // nemesis
	crnd *rand.Rand // clients

	net       *transporttest.Network
	nodes     []*node // by node id - 1
	placement [][]raftpb.NodeID
	hot       []raftpb.ShardID

	oracles map[raftpb.ShardID]*shardOracle
	tracks  map[[2]uint64]*track

	now time.Duration
	err error

	clients    []*client
	history    []porcupine.Operation
	props      []propRef       // every proposal made, until it resolves
	appended   map[uint64]bool // keys of the proposals some replica appended
	keySeq     uint64
	valueSeq   uint64
	quietUntil time.Duration
	nextQuiet  time.Duration

	nem nemesis

	events        *events
	replicaLogger *slog.Logger
	storeLogger   *slog.Logger

	stats Stats
}

// Stats are a run's counters. Everything but the wall time is a function
// of the seed.
type Stats struct {
	Steps          int
	Elections      int // distinct (shard, term) leaders
	LeaderChanges  int
	Committed      int // committed entries over all shards
	Messages       int
	Flushes        int
	Crashes        int
	DiskErrors     int
	Restarts       int
	Partitions     int
	Pauses         int
	ConfChanges    int // proposed
	ConfApplied    int
	Transfers      int
	SnapshotsTaken int
	SnapshotsSent  int
	// SnapshotsFailed counts transfers that failed (a dropped transfer, a
	// receiver down or cut off).
	SnapshotsFailed int
	UnknownShard    int
	Writes          int
	WritesUnknown   int
	Reads           int
	OpsFailed       int
	Timeouts        int
	// Converged is the simulated time the liveness phase took to converge,
	// Quiesced the time the idle cluster then took to quiesce every replica.
	Converged, Quiesced time.Duration
}

// Result is what Run reports.
type Result struct {
	Seed   uint64
	Faults Faults
	Stats
	// Simulated is the simulated time of the whole run (liveness phase
	// included); Wall the wall time it took.
	Simulated, Wall time.Duration
	// Digest hashes every shard's committed entries count and final state
	// hash, the elections and the operations: two runs of one seed have
	// the same digest.
	Digest uint64
}

// Speed is simulated seconds per wall second.
func (r Result) Speed() float64 {
	if r.Wall <= 0 {
		return 0
	}
	return r.Simulated.Seconds() / r.Wall.Seconds()
}

func (r Result) String() string {
	return fmt.Sprintf("seed=%d digest=%016x sim=%v wall=%v speed=%.1fx elections=%d committed=%d writes=%d/%d? reads=%d failed=%d "+
		"crashes=%d (disk %d) partitions=%d pauses=%d conf=%d/%d transfers=%d snaps=%d sent=%d/%d failed flushes=%d msgs=%d converged=%v quiesced=%v",
		r.Seed, r.Digest, r.Simulated, r.Wall.Round(time.Millisecond), r.Speed(), r.Elections, r.Committed,
		r.Writes, r.WritesUnknown, r.Reads, r.OpsFailed, r.Crashes, r.DiskErrors, r.Partitions, r.Pauses, r.ConfApplied,
		r.ConfChanges, r.Transfers, r.SnapshotsTaken, r.SnapshotsSent, r.SnapshotsFailed, r.Flushes, r.Messages, r.Converged, r.Quiesced)
}

// propRef is a proposal and the replica it was made to.
type propRef struct {
	p   *shard.Proposal
	r   *replica
	key uint64
	at  time.Duration
}

// resolved reports whether the proposal has an outcome, or its replica is
// gone (a crash loses what the replica held).
func (p propRef) resolved() bool {
	if p.r.stopped {
		return true
	}
	select {
	case <-p.p.Done():
		return true
	default:
		return false
	}
}

// events counts what the replicas report (shard.Events).
type events struct{ s *Sim }

func (e *events) LeaderChanged(raftpb.ShardID, raftpb.NodeID, raftpb.Term) { e.s.stats.LeaderChanges++ }
func (e *events) MembershipChanged(raftpb.ShardID, raftpb.ConfState)       {}

// splitmix derives independent seeds from one.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Run runs one simulation: the faulty phase for opts.Duration, then the
// liveness phase, then the linearizability check. The error names the
// first broken invariant (with the simulated time); the result is filled
// either way.
func Run(opts Options) (Result, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return Result{}, err
	}
	start := time.Now()
	s, err := newSim(opts)
	res := Result{Seed: opts.Seed}
	if s != nil {
		res.Faults = s.f
	}
	if err == nil {
		err = s.run()
	}
	if s != nil {
		s.close()
		res.Stats = s.stats
		res.Simulated = s.now
		res.Digest = s.digest()
	}
	res.Wall = time.Since(start)
	return res, err
}

func newSim(opts Options) (*Sim, error) {
	f := DrawFaults(opts.Seed)
	if opts.Faults != nil {
		f = *opts.Faults
	}
	fmt.Fprintf(opts.Log, "sim seed=%d nodes=%d shards=%d replicas=%d duration=%v: %v\n",
		opts.Seed, opts.Nodes, opts.Shards, opts.Replicas, opts.Duration, f)
	seed := opts.Seed
	s := &Sim{
		opts:     opts,
		f:        f,
		rnd:      rand.New(rand.NewPCG(splitmix(seed), splitmix(seed+1))),
		crnd:     rand.New(rand.NewPCG(splitmix(seed+2), splitmix(seed+3))),
		oracles:  map[raftpb.ShardID]*shardOracle{},
		tracks:   map[[2]uint64]*track{},
		appended: map[uint64]bool{},
	}
	s.events = &events{s: s}
	s.replicaLogger = slog.New(slog.DiscardHandler)
	s.storeLogger = slog.New(slog.DiscardHandler)
	if opts.Verbose {
		s.replicaLogger = slog.New(slog.NewTextHandler(opts.Log, &slog.HandlerOptions{Level: slog.LevelDebug}))
		s.storeLogger = s.replicaLogger
	}
	s.net = transporttest.New(transporttest.Config{
		Seed: splitmix(seed + 4),
		Faults: transporttest.Faults{DropRate: f.DropRate, DupRate: f.DupRate,
			MinDelay: f.MinDelay, MaxDelay: f.MaxDelay, FrameRate: f.FrameRate},
		UnreachableAfter: f.UnreachableAfter,
		Manual:           true,
	})
	// Placement: each shard on Replicas distinct nodes drawn from the seed.
	byNode := make([][]raftpb.ShardID, opts.Nodes)
	for i := 0; i < opts.Shards; i++ {
		id := raftpb.ShardID(i + 1)
		perm := s.rnd.Perm(opts.Nodes)[:opts.Replicas]
		var members []raftpb.NodeID
		for _, p := range perm {
			members = append(members, raftpb.NodeID(p+1))
			byNode[p] = append(byNode[p], id)
		}
		sortIDs(members)
		s.placement = append(s.placement, members)
		s.oracles[id] = newShardOracle(id)
	}
	for _, p := range s.rnd.Perm(opts.Shards)[:max(1, int(f.HotShards*float64(opts.Shards)+0.5))] {
		s.hot = append(s.hot, raftpb.ShardID(p+1))
	}
	for i := 0; i < opts.Clients; i++ {
		s.clients = append(s.clients, &client{id: i})
	}
	for i := 0; i < opts.Nodes; i++ {
		skew := 1 + f.TickSkew*(2*s.rnd.Float64()-1)
		n := &node{s: s, id: raftpb.NodeID(i + 1), fs: vfs.NewCrashableMem(),
			tickEvery: time.Duration(float64(opts.Tick) * skew)}
		s.nodes = append(s.nodes, n)
		if err := n.open(); err != nil {
			return s, err
		}
		if err := n.create(byNode[i]); err != nil {
			return s, fmt.Errorf("node %d: creating replicas: %w", n.id, err)
		}
		if err := n.start(); err != nil {
			return s, err
		}
		// Ticks of different nodes do not line up.
		n.nextTick = time.Duration(s.rnd.Int64N(int64(n.tickEvery))) + opts.Step
	}
	s.nem.init(s)
	s.nextQuiet = s.expDur(8 * time.Second)
	return s, nil
}

func sortIDs(ids []raftpb.NodeID) {
	for i := 1; i < len(ids); i++ {
		for j := i; j > 0 && ids[j] < ids[j-1]; j-- {
			ids[j], ids[j-1] = ids[j-1], ids[j]
		}
	}
}

// expDur draws an exponentially distributed duration of mean m from the
// nemesis stream.
func (s *Sim) expDur(m time.Duration) time.Duration { return s.expDurR(s.rnd, m) }

func (s *Sim) expDurR(r *rand.Rand, m time.Duration) time.Duration {
	return time.Duration(r.ExpFloat64() * float64(m))
}

func (s *Sim) run() error {
	for s.now < s.opts.Duration && s.err == nil {
		s.step(true)
	}
	defer func() {
		// Also in the result of a failed run.
		s.stats.Committed = 0
		for _, o := range s.oracles {
			s.stats.Committed += len(o.committed)
		}
	}()
	if s.err != nil {
		return s.err
	}
	if err := s.liveness(); err != nil {
		return err
	}
	return s.checkHistory()
}

// step is one driver step: the network advances (delivering what is due
// into the replicas' inboxes), the nemesis and the clients act, and every
// running node ticks and runs its step passes, in node order.
func (s *Sim) step(faulty bool) {
	s.now += s.opts.Step
	s.stats.Steps++
	s.net.Advance(s.opts.Step)
	for _, n := range s.nodes {
		if !n.up && s.now >= n.downUntil {
			n.restart()
		}
	}
	if faulty {
		s.nem.act()
		if s.now >= s.nextQuiet {
			// A quiet period: clients pause, so shards quiesce.
			s.quietUntil = s.now + s.expDur(1500*time.Millisecond)
			s.nextQuiet = s.quietUntil + s.expDur(8*time.Second)
		}
		s.issue()
	}
	for _, n := range s.nodes {
		if !n.up || s.now < n.pausedUntil {
			continue
		}
		if n.crashMid != 0 && s.now >= n.crashMidUntil {
			n.crash()
			continue
		}
		n.tick()
		n.step()
	}
	s.poll()
	if s.stats.Steps%1024 == 0 {
		s.checkBounds()
		s.pruneProps()
	}
}

// checkBounds checks that the stores' entry caches stay within their
// bound (TESTING.md invariant 10).
func (s *Sim) checkBounds() {
	for _, n := range s.nodes {
		if n.up {
			if b := n.store.Stats().CacheBytes; b > s.f.CacheBytes {
				s.failf("bounds: node %d's entry cache holds %d bytes, bound %d", n.id, b, s.f.CacheBytes)
			}
		}
	}
}

func (s *Sim) pruneProps() {
	kept := s.props[:0]
	for _, p := range s.props {
		if !p.resolved() {
			kept = append(kept, p)
		}
	}
	clear(s.props[len(kept):])
	s.props = kept
}

func (s *Sim) close() {
	for _, n := range s.nodes {
		if n.store != nil {
			for _, r := range n.reps {
				if r != nil {
					r.stopped = true
					r.Stop(nil)
				}
			}
			_ = n.store.Close()
			n.store = nil
		}
	}
	if s.net != nil {
		s.net.Close()
	}
}

// digest hashes what a run must reproduce exactly.
func (s *Sim) digest() uint64 {
	h := fnv.New64a()
	for i := 1; i <= s.opts.Shards; i++ {
		o := s.oracles[raftpb.ShardID(i)]
		if o == nil {
			continue
		}
		var last uint64
		if n := len(o.committed); n > 0 {
			last = o.committed[n-1].hash
		}
		fmt.Fprintf(h, "%d:%d:%x:%d;", i, len(o.committed), last, len(o.leaders))
	}
	st := s.stats
	fmt.Fprintf(h, "%d/%d/%d/%d/%d/%d/%d/%d", st.Writes, st.WritesUnknown, st.Reads, st.OpsFailed, st.Crashes,
		st.Messages, st.Flushes, st.SnapshotsSent)
	return h.Sum64()
}
