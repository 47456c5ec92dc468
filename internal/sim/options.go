package sim

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/shardd/shardd/raftpb"
)

// Options configure one simulated run. Zero fields take the documented
// defaults (EnsureDefaults); Validate reports every invalid field.
type Options struct {
	// Seed determines everything: the fault options (unless Faults is set),
	// placement, every random draw of the nemesis, the clients, the network
	// and the Raft cores. The default value is 1.
	Seed uint64
	// Nodes is the number of simulated nodes. The default value is 3.
	Nodes int
	// Shards is the number of shards. The default value is 4.
	Shards int
	// Replicas is the number of replicas per shard (at most Nodes). The
	// default value is 3.
	Replicas int
	// Duration is the simulated time of the faulty phase; the liveness
	// phase follows it. The default value is 60s.
	Duration time.Duration
	// Tick is the nominal tick interval of every node (each node's own rate
	// is skewed by Faults.TickSkew). The default value is 10ms, the
	// engine's.
	Tick time.Duration
	// Step is the simulated time of one driver step: the network advances
	// by it, then every node runs its step passes. The default value is
	// 1ms.
	Step time.Duration
	// ElectionTicks and HeartbeatTicks configure the cores. The default
	// values are 10 and 1, the engine's.
	ElectionTicks  int
	HeartbeatTicks int
	// QuiesceTicks is the number of idle ticks after which a leader
	// quiesces its shard; negative disables quiescence. The default value
	// is 2*ElectionTicks, the engine's.
	QuiesceTicks int
	// Clients is the number of simulated closed-loop clients. The default
	// value is 8 + Shards/5.
	Clients int
	// KeysPerShard is the number of keys each shard's clients write. The
	// default value is 3.
	KeysPerShard int
	// LivenessTimeouts is the number of election timeouts
	// (ElectionTicks*Tick) the liveness phase may take. The default value
	// is 10.
	LivenessTimeouts int
	// Faults are the fault and workload options. The default (nil) draws
	// them from Seed with DrawFaults.
	Faults *Faults
	// Log receives the fault line, the progress of the run and, with
	// Verbose, every replica's log lines. The default value discards them.
	Log io.Writer
	// Verbose sends the replicas' and stores' debug logs to Log.
	Verbose bool
	// TraceShard, when set, logs every status change of the shard's
	// replicas to Log; TraceKey the life of the proposal with that key
	// (the "proposal N" of an error). The default values trace nothing.
	TraceShard raftpb.ShardID
	TraceKey   uint64
	// HistoryDir is where a failed linearizability check writes its
	// porcupine visualization. The default value is os.TempDir().
	HistoryDir string
	// CheckTimeout bounds each porcupine check (wall time); a check that
	// times out fails the run. The default value is 60s.
	CheckTimeout time.Duration
}

// EnsureDefaults fills zero fields with their defaults.
func (o *Options) EnsureDefaults() {
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Shards == 0 {
		o.Shards = 4
	}
	if o.Replicas == 0 {
		o.Replicas = min(3, o.Nodes)
	}
	if o.Duration == 0 {
		o.Duration = 60 * time.Second
	}
	if o.Tick == 0 {
		o.Tick = 10 * time.Millisecond
	}
	if o.Step == 0 {
		o.Step = time.Millisecond
	}
	if o.ElectionTicks == 0 {
		o.ElectionTicks = 10
	}
	if o.HeartbeatTicks == 0 {
		o.HeartbeatTicks = 1
	}
	if o.QuiesceTicks == 0 {
		o.QuiesceTicks = 2 * o.ElectionTicks
	}
	if o.Clients == 0 {
		o.Clients = 8 + o.Shards/5
	}
	if o.KeysPerShard == 0 {
		o.KeysPerShard = 3
	}
	if o.LivenessTimeouts == 0 {
		o.LivenessTimeouts = 10
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.CheckTimeout == 0 {
		o.CheckTimeout = 60 * time.Second
	}
}

// ErrInvalidOptions wraps every problem Validate reports.
var ErrInvalidOptions = errors.New("sim: invalid options")

// Validate reports every invalid field at once.
func (o *Options) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s %s", ErrInvalidOptions, field, fmt.Sprintf(format, args...)))
	}
	if o.Nodes < 1 || o.Nodes > 64 {
		bad("Nodes", "must be in [1, 64], got %d", o.Nodes)
	}
	if o.Shards < 1 {
		bad("Shards", "must be positive, got %d", o.Shards)
	}
	if o.Replicas < 1 || o.Replicas > o.Nodes {
		bad("Replicas", "must be in [1, Nodes=%d], got %d", o.Nodes, o.Replicas)
	}
	if o.Duration < 0 {
		bad("Duration", "must not be negative, got %v", o.Duration)
	}
	if o.Step <= 0 || o.Tick < o.Step {
		bad("Step", "must be positive and at most Tick (%v), got %v", o.Tick, o.Step)
	}
	if o.HeartbeatTicks < 1 || o.HeartbeatTicks >= o.ElectionTicks {
		bad("HeartbeatTicks", "must be in [1, ElectionTicks=%d), got %d", o.ElectionTicks, o.HeartbeatTicks)
	}
	if o.Clients < 0 || o.KeysPerShard < 1 {
		bad("Clients", "must not be negative (and KeysPerShard positive), got %d and %d", o.Clients, o.KeysPerShard)
	}
	if o.Faults != nil {
		if err := o.Faults.validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Partition kinds the nemesis may draw (Faults.PartitionKinds is a set of
// them).
const (
	// PartHalves splits the nodes into two random halves.
	PartHalves = 1 << iota
	// PartOneNode isolates one random node.
	PartOneNode
	// PartLeader isolates the node leading the most shards.
	PartLeader
	// PartOneWay cuts every link from one node to the others (it still
	// hears them).
	PartOneWay
	// PartRolling isolates the nodes one after the other.
	PartRolling
	partAll = PartHalves | PartOneNode | PartLeader | PartOneWay | PartRolling
)

var partNames = []string{"halves", "one", "leader", "oneway", "rolling"}

func partKindsString(k int) string {
	var s []string
	for i, n := range partNames {
		if k&(1<<i) != 0 {
			s = append(s, n)
		}
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, "+")
}

// Faults are the fault and workload options of one run. Rates are given as
// mean intervals between events (0 disables the event); each event's time
// and target are drawn as the run goes.
type Faults struct {
	// DropRate and DupRate are the probabilities that a message is lost or
	// delivered twice (every link).
	DropRate, DupRate float64
	// MinDelay and MaxDelay bound each message's delay; different delays
	// reorder messages.
	MinDelay, MaxDelay time.Duration
	// FrameRate is the probability that one step pass's messages to one
	// node travel as a frame of the gRPC transport: together, with the
	// coalesced heartbeats handed on after the rest
	// (transporttest.Faults.FrameRate). It is the transport's shape, not a
	// fault, so the liveness phase keeps it.
	FrameRate float64
	// PartitionEvery is the mean time between partitions, PartitionFor
	// their mean length; PartitionKinds the kinds drawn (Part* bits).
	PartitionEvery, PartitionFor time.Duration
	PartitionKinds               int
	// CrashEvery is the mean time between node crashes, DownFor the mean
	// time a crashed node stays down. A crash keeps only synced data plus
	// UnsyncedPercent of the unsynced blocks and directory entries
	// (vfs.CrashCloneCfg). MidFlush is the probability that a crash hits a
	// node between sending a step pass's messages and persisting it (or,
	// half of those times, after persisting and before acknowledging).
	CrashEvery, DownFor time.Duration
	UnsyncedPercent     int
	MidFlush            float64
	// DiskErrorEvery is the mean time between disk failures: a node's WAL
	// writes and syncs fail, its next flush fails and it fail-stops (it
	// crashes and restarts after DownFor).
	DiskErrorEvery time.Duration
	// PauseEvery is the mean time between node pauses (the node is not
	// stepped nor ticked, as in a long GC pause or SIGSTOP), PauseFor
	// their mean length.
	PauseEvery, PauseFor time.Duration
	// TickSkew bounds each node's tick-rate skew: its tick interval is
	// Tick*(1+s), s drawn in [-TickSkew, TickSkew].
	TickSkew float64
	// ConfChangeEvery is the mean time between membership changes (voters
	// demoted to learners and back, replicas moved to spare nodes);
	// TransferEvery between leadership transfers.
	ConfChangeEvery, TransferEvery time.Duration
	// SnapshotEvery and CompactionLag configure the replicas' snapshots.
	SnapshotEvery, CompactionLag uint64
	// MaxInflightMsgs and MaxSizePerMsg configure the cores' flow control.
	MaxInflightMsgs int
	MaxSizePerMsg   uint64
	// UnreachableAfter is the transport's liveness bound.
	UnreachableAfter time.Duration
	// CacheBytes bounds each store's entry cache (small ones make the
	// cores read their logs from Pebble).
	CacheBytes int64
	// ThinkTime is the clients' mean pause between operations; ReadRatio
	// the share of reads; HotShards the share of shards that take 80% of
	// the load (the others go idle and quiesce).
	ThinkTime time.Duration
	ReadRatio float64
	HotShards float64
	// ClientTimeout is how long a client waits for an operation; a write
	// that times out may or may not have been applied.
	ClientTimeout time.Duration
}

func (f *Faults) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: Faults.%s %s", ErrInvalidOptions, field, fmt.Sprintf(format, args...)))
	}
	if f.DropRate < 0 || f.DropRate >= 1 || f.DupRate < 0 || f.DupRate >= 1 {
		bad("DropRate", "and DupRate must be in [0, 1), got %v and %v", f.DropRate, f.DupRate)
	}
	if f.FrameRate < 0 || f.FrameRate > 1 {
		bad("FrameRate", "must be in [0, 1], got %v", f.FrameRate)
	}
	if f.MinDelay < 0 || f.MaxDelay < f.MinDelay {
		bad("MaxDelay", "must be at least MinDelay >= 0, got %v and %v", f.MinDelay, f.MaxDelay)
	}
	if f.UnsyncedPercent < 0 || f.UnsyncedPercent > 100 {
		bad("UnsyncedPercent", "must be in [0, 100], got %d", f.UnsyncedPercent)
	}
	if f.TickSkew < 0 || f.TickSkew >= 1 {
		bad("TickSkew", "must be in [0, 1), got %v", f.TickSkew)
	}
	if f.SnapshotEvery == 0 || f.CompactionLag == 0 {
		bad("SnapshotEvery", "and CompactionLag must be positive")
	}
	if f.MaxInflightMsgs < 1 || f.MaxSizePerMsg == 0 {
		bad("MaxInflightMsgs", "and MaxSizePerMsg must be positive")
	}
	if f.CacheBytes == 0 {
		bad("CacheBytes", "must not be zero (negative disables the cache)")
	}
	if f.ClientTimeout <= 0 || f.ThinkTime < 0 || f.UnreachableAfter <= 0 {
		bad("ClientTimeout", "and UnreachableAfter must be positive, ThinkTime not negative")
	}
	return errors.Join(errs...)
}

// DrawFaults draws a run's fault and workload options from seed. The same
// seed always draws the same options; the run prints them.
func DrawFaults(seed uint64) Faults {
	r := rand.New(rand.NewPCG(seed, 0xfa0175))
	ms := func(lo, hi int) time.Duration { return time.Duration(lo+r.IntN(hi-lo+1)) * time.Millisecond }
	sec := func(lo, hi float64) time.Duration {
		return time.Duration((lo + r.Float64()*(hi-lo)) * float64(time.Second))
	}
	// off returns 0 with probability p, else v: every fault is absent from
	// some seeds, so its absence is exercised too.
	off := func(p float64, v time.Duration) time.Duration {
		if r.Float64() < p {
			return 0
		}
		return v
	}
	f := Faults{
		DropRate:         r.Float64() * 0.10,
		DupRate:          r.Float64() * 0.05,
		MinDelay:         ms(0, 1),
		PartitionEvery:   off(0.15, sec(3, 15)),
		PartitionFor:     sec(0.3, 4),
		PartitionKinds:   1 + r.IntN(partAll),
		CrashEvery:       off(0.15, sec(4, 20)),
		DownFor:          sec(0.2, 3),
		UnsyncedPercent:  []int{0, 10, 50}[r.IntN(3)],
		MidFlush:         r.Float64() * 0.5,
		DiskErrorEvery:   off(0.5, sec(10, 40)),
		PauseEvery:       off(0.3, sec(3, 15)),
		PauseFor:         sec(0.05, 1.5),
		TickSkew:         r.Float64() * 0.2,
		ConfChangeEvery:  off(0.3, sec(2, 10)),
		TransferEvery:    off(0.3, sec(1, 8)),
		SnapshotEvery:    uint64(10 + r.IntN(100)),
		CompactionLag:    []uint64{1, 4, 20, 100}[r.IntN(4)],
		MaxInflightMsgs:  []int{4, 16, 256}[r.IntN(3)],
		MaxSizePerMsg:    []uint64{256, 4096, 1 << 20}[r.IntN(3)],
		UnreachableAfter: ms(30, 500),
		CacheBytes:       []int64{16 << 10, 1 << 20, 64 << 20}[r.IntN(3)],
		ThinkTime:        ms(1, 30),
		ReadRatio:        0.2 + r.Float64()*0.4,
		HotShards:        0.05 + r.Float64()*0.3,
		ClientTimeout:    sec(1, 4),
	}
	f.MaxDelay = f.MinDelay + ms(0, 8)
	if r.IntN(8) == 0 {
		// Some seeds run on a perfect network (faults other than the
		// network's still apply).
		f.DropRate, f.DupRate = 0, 0
	}
	// Drawn last, so that every earlier option of a seed is what it was
	// before frames were modelled.
	if r.IntN(4) != 0 {
		f.FrameRate = 0.2 + 0.8*r.Float64()
	}
	return f
}

// String prints the options on one line, so a failure explains itself.
func (f Faults) String() string {
	return fmt.Sprintf("drop=%.3f dup=%.3f delay=%v-%v frames=%.2f part=every %v for %v (%s) crash=every %v down %v unsynced=%d%% midflush=%.2f disk=every %v "+
		"pause=every %v for %v skew=±%.0f%% conf=every %v transfer=every %v snap=%d lag=%d inflight=%d msgsize=%d "+
		"unreachable=%v cache=%d think=%v reads=%.0f%% hot=%.0f%% timeout=%v",
		f.DropRate, f.DupRate, f.MinDelay, f.MaxDelay, f.FrameRate, f.PartitionEvery, f.PartitionFor,
		partKindsString(f.PartitionKinds), f.CrashEvery, f.DownFor, f.UnsyncedPercent, f.MidFlush, f.DiskErrorEvery,
		f.PauseEvery, f.PauseFor, f.TickSkew*100, f.ConfChangeEvery, f.TransferEvery, f.SnapshotEvery,
		f.CompactionLag, f.MaxInflightMsgs, f.MaxSizePerMsg, f.UnreachableAfter, f.CacheBytes, f.ThinkTime,
		f.ReadRatio*100, f.HotShards*100, f.ClientTimeout)
}
