package group

import (
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/shardd/shardd/raftpb"
)

// ReadOnlyOption chooses how the leader serves ReadIndex.
type ReadOnlyOption uint8

const (
	// ReadSafe confirms leadership with a quorum round of heartbeats for
	// every read round. Always linearizable.
	ReadSafe ReadOnlyOption = iota
	// ReadLeaseBased answers from the leader's lease: check-quorum steps a
	// leader down within an election timeout of losing its quorum, so while
	// it is leader nobody else can be. It assumes bounded clock drift
	// between nodes and stops as soon as a leadership transfer starts (S34),
	// falling back to a quorum round. Requires check-quorum.
	ReadLeaseBased
)

// Logger is what the core logs through; *slog.Logger satisfies it. The core
// does not import log/slog so that it stays free of clocks and I/O.
type Logger interface {
	Debug(msg string, args ...any)
	Info(msg string, args ...any)
	Warn(msg string, args ...any)
	Error(msg string, args ...any)
}

type nopLogger struct{}

func (nopLogger) Debug(string, ...any) {}
func (nopLogger) Info(string, ...any)  {}
func (nopLogger) Warn(string, ...any)  {}
func (nopLogger) Error(string, ...any) {}

// Config configures one replica's Raft core. Zero values take the documented
// defaults (filled by EnsureDefaults); Validate reports every problem.
type Config struct {
	// ID is this replica's node id. Required, non-zero.
	ID raftpb.NodeID
	// Shard is the shard this replica belongs to; messages for another
	// shard are refused.
	Shard raftpb.ShardID

	// Log reads the durable log. Required.
	Log LogReader

	// Applied is the index the state machine has applied (at restart). The
	// core releases committed entries after it. The default is the
	// snapshot's index.
	Applied raftpb.Index

	// ElectionTicks is the number of ticks without hearing from a leader
	// after which a follower campaigns; the actual timeout is drawn from
	// [ElectionTicks, 2*ElectionTicks). The default value is 10.
	ElectionTicks int
	// HeartbeatTicks is the number of ticks between leader heartbeats. Must
	// be below ElectionTicks. The default value is 1.
	HeartbeatTicks int

	// MaxSizePerMsg bounds the entry bytes of one MsgApp (a single larger
	// entry still goes alone). The default value is 1 MiB.
	MaxSizePerMsg uint64
	// MaxInflightMsgs bounds the unacknowledged MsgApp per follower. The
	// default value is 256.
	MaxInflightMsgs int
	// MaxInflightBytes bounds the unacknowledged entry bytes per follower.
	// The default value is 32 MiB.
	MaxInflightBytes uint64
	// MaxCommittedSizePerReady bounds the entry bytes released for applying
	// by one Ready. The default value is 16 MiB.
	MaxCommittedSizePerReady uint64
	// MaxUncommittedEntriesSize bounds the bytes of the leader's uncommitted
	// log tail; proposals beyond it are dropped (backpressure). The default
	// value is 64 MiB.
	MaxUncommittedEntriesSize uint64

	// DisablePreVote turns pre-vote off. Pre-vote (on by default) keeps a
	// partitioned node from inflating its term and deposing a healthy
	// leader when it returns.
	DisablePreVote bool
	// DisableCheckQuorum turns check-quorum off. With check-quorum (on by
	// default) a leader that has not heard from a quorum within an election
	// timeout steps down, and followers that heard from a leader within it
	// ignore vote requests.
	DisableCheckQuorum bool
	// ReadOnly chooses how ReadIndex is served. The default is ReadSafe.
	ReadOnly ReadOnlyOption
	// DisableProposalForwarding makes followers drop proposals instead of
	// forwarding them to the leader.
	DisableProposalForwarding bool

	// Rand draws the randomized election timeouts. The default is a PCG
	// source seeded from (Shard, ID), so runs are reproducible.
	Rand *rand.Rand
	// Logger receives the core's log lines. The default discards them.
	Logger Logger
}

// ErrInvalidConfig wraps every configuration problem Validate reports.
var ErrInvalidConfig = errors.New("group: invalid config")

const (
	defaultElectionTicks      = 10
	defaultHeartbeatTicks     = 1
	defaultMaxSizePerMsg      = 1 << 20
	defaultMaxInflightMsgs    = 256
	defaultMaxInflightBytes   = 32 << 20
	defaultMaxCommittedPerRdy = 16 << 20
	defaultMaxUncommitted     = 64 << 20
)

// EnsureDefaults fills zero fields with their defaults. It is the one place
// defaults are decided.
func (c *Config) EnsureDefaults() {
	if c.ElectionTicks == 0 {
		c.ElectionTicks = defaultElectionTicks
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = defaultHeartbeatTicks
	}
	if c.MaxSizePerMsg == 0 {
		c.MaxSizePerMsg = defaultMaxSizePerMsg
	}
	if c.MaxInflightMsgs == 0 {
		c.MaxInflightMsgs = defaultMaxInflightMsgs
	}
	if c.MaxInflightBytes == 0 {
		c.MaxInflightBytes = defaultMaxInflightBytes
	}
	if c.MaxCommittedSizePerReady == 0 {
		c.MaxCommittedSizePerReady = defaultMaxCommittedPerRdy
	}
	if c.MaxUncommittedEntriesSize == 0 {
		c.MaxUncommittedEntriesSize = defaultMaxUncommitted
	}
	if c.Rand == nil {
		c.Rand = rand.New(rand.NewPCG(uint64(c.Shard), uint64(c.ID)))
	}
	if c.Logger == nil {
		c.Logger = nopLogger{}
	}
}

// Validate reports every invalid field at once, each named.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...)))
	}
	if c.ID == raftpb.None {
		bad("ID", "must be non-zero")
	}
	if c.Log == nil {
		bad("Log", "is required")
	}
	if c.ElectionTicks < 1 {
		bad("ElectionTicks", "must be positive, got %d", c.ElectionTicks)
	}
	if c.HeartbeatTicks < 1 {
		bad("HeartbeatTicks", "must be positive, got %d", c.HeartbeatTicks)
	}
	if c.HeartbeatTicks >= c.ElectionTicks {
		bad("HeartbeatTicks", "must be below ElectionTicks (%d), got %d", c.ElectionTicks, c.HeartbeatTicks)
	}
	if c.MaxInflightMsgs < 1 {
		bad("MaxInflightMsgs", "must be positive, got %d", c.MaxInflightMsgs)
	}
	if c.ReadOnly > ReadLeaseBased {
		bad("ReadOnly", "unknown option %d", c.ReadOnly)
	}
	if c.ReadOnly == ReadLeaseBased && c.DisableCheckQuorum {
		bad("ReadOnly", "lease-based reads need check-quorum")
	}
	return errors.Join(errs...)
}
