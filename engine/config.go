package engine

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/shardd/shardd/shard"
	"github.com/shardd/shardd/transport"
)

// Config configures a Node. Zero fields take the documented defaults,
// filled in one place (ensureDefaults); Open validates and names every bad
// field.
type Config struct {
	// NodeID identifies this node. Required, > 0.
	NodeID uint64
	// ClusterID is carried by every frame; frames of another cluster are
	// refused. A data dir created with one cluster id and node id refuses to
	// open with others.
	ClusterID uint64
	// ListenAddr is this node's Raft gRPC address, e.g. "127.0.0.1:7001".
	// Required unless NewTransport is set.
	ListenAddr string
	// Listener, when set, is used instead of listening on ListenAddr (tests
	// bind ephemeral ports first). The default value is nil.
	Listener net.Listener
	// Peers maps node id to Raft gRPC address, for every node (this one
	// included). Required unless NewTransport is set.
	Peers map[uint64]string
	// DataDir holds the node's one Pebble store and its snapshot files.
	// Required.
	DataDir string
	// TickInterval is the logical clock's period. The default value is
	// 10ms.
	TickInterval time.Duration
	// ElectionTicks is the election timeout in ticks (randomized up to
	// twice that). The default value is 50 (0.5–1 s at the default tick:
	// an fsync stall of a few hundred milliseconds does not depose
	// leaders).
	ElectionTicks int
	// HeartbeatTicks is the heartbeat period in ticks. The default value is
	// 5 (50 ms at the default tick). The ticker hands each active replica
	// its ticks in chunks of HeartbeatTicks (at most ElectionTicks/4), so
	// it is also how often an otherwise idle replica is stepped.
	HeartbeatTicks int
	// StepWorkers is the number of goroutines stepping shards. The default
	// value is GOMAXPROCS.
	StepWorkers int
	// ApplyWorkers is the number of goroutines applying committed entries.
	// The default value is GOMAXPROCS.
	ApplyWorkers int
	// QuiesceTicks is the number of idle ticks after which a shard
	// quiesces; negative disables quiescence. The default value is
	// HeartbeatTicks (50 ms at the defaults): quiescing costs one message
	// per follower and waking none (the next append wakes them), where
	// every heartbeat period awake costs two, so a shard written a few
	// times a second is cheapest asleep between writes.
	QuiesceTicks int
	// TLS, when set, enables mutual TLS for both directions of the Raft
	// transport. The default value is nil (plaintext).
	TLS *tls.Config
	// FS is the file system of the store and snapshots. The default value
	// is the real disk; tests pass an in-memory or crash-simulating FS.
	FS vfs.FS
	// Logger receives the node's log lines. The default value is
	// slog.Default().
	Logger *slog.Logger
	// Events, when set, is called from one dedicated goroutine, never from
	// a worker.
	Events EventListener

	// NewStateMachine creates the state machine of a shard the node
	// restarts from its data dir (and of StartShard calls whose
	// ShardConfig has none). Required to restart shards.
	NewStateMachine func(shardID, nodeID uint64) StateMachine
	// OnStoreOpen, when set, is called once during Open with the node's
	// Pebble database, before any shard starts: state machines that keep
	// their data in the node's store (under batchio.StateMachinePrefix)
	// take it from here. The default value is nil.
	OnStoreOpen func(db *pebble.DB) error
	// MaxPendingProposals bounds the proposals queued per shard and not yet
	// in Raft; beyond it Propose returns ErrBusy. The default value is
	// 4096.
	MaxPendingProposals int
	// CacheBytes bounds the store's entry cache shared by all shards. The
	// default value is 64 MiB.
	CacheBytes int64
	// NewTransport builds the transport instead of the gRPC one (tests and
	// the simulator pass transporttest's). The default value is nil.
	NewTransport func(h transport.Handler) (transport.Transport, error)
	// LivenessInterval is the transport's ping interval; a peer missing
	// LivenessMisses of them is reported unreachable. The default values
	// are 100ms and enough pings to cover two election timeouts (at least
	// 5; 10 with the default ticks).
	LivenessInterval time.Duration
	LivenessMisses   int
}

// ShardConfig configures one shard on this node.
type ShardConfig struct {
	ShardID uint64
	// Members are the initial voters of a new shard (every replica passes
	// the same list). Learners are its initial learners.
	Members  []uint64
	Learners []uint64
	// Join makes this replica join a running shard that already added it.
	Join bool
	// NewStateMachine creates the shard's state machine; if it also
	// implements OnDiskStateMachine it is used as one. The default value is
	// Config.NewStateMachine.
	NewStateMachine func(shardID, nodeID uint64) StateMachine
	// SnapshotEvery is the number of applied entries between automatic
	// snapshots. The default value is 10000.
	SnapshotEvery uint64
	// CompactionLag is the number of entries kept behind a snapshot for
	// slow followers. The default value is 5000.
	CompactionLag uint64
}

// Aliases so that users need one import.
type (
	Result             = shard.Result
	Entry              = shard.Entry
	StateMachine       = shard.StateMachine
	OnDiskStateMachine = shard.OnDiskStateMachine
)

// EventListener is what an embedding storage node reacts to.
type EventListener interface {
	// LeaderChanged reports a new leader (0 = no leader known).
	LeaderChanged(shardID, leaderID, term uint64)
	// MembershipChanged reports the membership in force.
	MembershipChanged(shardID uint64, voters, learners []uint64)
	// ShardStopped reports a replica that stopped (err nil on request).
	ShardStopped(shardID uint64, err error)
}

// ErrInvalidConfig wraps every configuration problem.
var ErrInvalidConfig = errors.New("engine: invalid config")

func (c *Config) ensureDefaults() {
	if c.TickInterval == 0 {
		c.TickInterval = 10 * time.Millisecond
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = 50
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = 5
	}
	if c.StepWorkers == 0 {
		c.StepWorkers = runtime.GOMAXPROCS(0)
	}
	if c.ApplyWorkers == 0 {
		c.ApplyWorkers = runtime.GOMAXPROCS(0)
	}
	if c.QuiesceTicks == 0 {
		c.QuiesceTicks = c.HeartbeatTicks
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxPendingProposals == 0 {
		c.MaxPendingProposals = 4096
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = 64 << 20
	}
	if c.LivenessInterval == 0 {
		c.LivenessInterval = 100 * time.Millisecond
	}
	if c.LivenessMisses == 0 {
		// Silence of two election timeouts: liveness must not be more
		// trigger-happy than Raft's own timers. A node stalled by load
		// (startup of 100000 shards, a GC pause) would otherwise be
		// declared unreachable, waking every quiesced shard it leads.
		et := time.Duration(c.ElectionTicks) * c.TickInterval
		c.LivenessMisses = max(5, int((2*et+c.LivenessInterval-1)/c.LivenessInterval))
	}
}

func (c *Config) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...)))
	}
	if c.NodeID == 0 {
		bad("NodeID", "is required (> 0)")
	}
	if c.DataDir == "" {
		bad("DataDir", "is required")
	}
	if c.NewTransport == nil {
		if c.ListenAddr == "" && c.Listener == nil {
			bad("ListenAddr", "is required")
		}
		if _, ok := c.Peers[c.NodeID]; !ok {
			bad("Peers", "must include this node (%d)", c.NodeID)
		}
		for id, addr := range c.Peers {
			if id == 0 || addr == "" {
				bad("Peers", "has an invalid entry %d=%q", id, addr)
			}
		}
	}
	if c.TickInterval < 0 {
		bad("TickInterval", "must be positive, got %v", c.TickInterval)
	}
	if c.ElectionTicks < 2 {
		bad("ElectionTicks", "must be at least 2, got %d", c.ElectionTicks)
	}
	if c.HeartbeatTicks < 1 || c.HeartbeatTicks >= c.ElectionTicks {
		bad("HeartbeatTicks", "must be in [1, ElectionTicks), got %d", c.HeartbeatTicks)
	}
	if c.StepWorkers < 1 {
		bad("StepWorkers", "must be positive, got %d", c.StepWorkers)
	}
	if c.ApplyWorkers < 1 {
		bad("ApplyWorkers", "must be positive, got %d", c.ApplyWorkers)
	}
	if c.MaxPendingProposals < 1 {
		bad("MaxPendingProposals", "must be positive, got %d", c.MaxPendingProposals)
	}
	return errors.Join(errs...)
}

func (s *ShardConfig) ensureDefaults(c *Config) {
	if s.NewStateMachine == nil {
		s.NewStateMachine = c.NewStateMachine
	}
	if s.SnapshotEvery == 0 {
		s.SnapshotEvery = 10000
	}
	if s.CompactionLag == 0 {
		s.CompactionLag = 5000
	}
}

func (s *ShardConfig) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: ShardConfig.%s %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...)))
	}
	if s.ShardID == 0 {
		bad("ShardID", "is required (> 0)")
	}
	if s.NewStateMachine == nil {
		bad("NewStateMachine", "is required (here or in Config)")
	}
	if !s.Join && len(s.Members) == 0 {
		bad("Members", "is required for a new shard (or set Join)")
	}
	for _, m := range append(append([]uint64(nil), s.Members...), s.Learners...) {
		if m == 0 {
			bad("Members", "contains node id 0")
		}
	}
	return errors.Join(errs...)
}

// tickChunk is how many ticks the ticker hands a replica at once.
func (c *Config) tickChunk() int {
	return max(1, min(c.HeartbeatTicks, c.ElectionTicks/4))
}
