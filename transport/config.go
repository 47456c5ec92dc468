package transport

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/shardd/shardd/raftpb"
)

// ErrInvalidConfig is wrapped by every error Config.Validate reports.
var ErrInvalidConfig = errors.New("transport: invalid config")

// Config configures a GRPC transport. Zero fields take the documented
// defaults (EnsureDefaults); Validate reports every invalid field at once.
type Config struct {
	// NodeID is this node. Required; it must be a key of Peers.
	NodeID raftpb.NodeID
	// ClusterID names the cluster. Every frame carries it and a frame of
	// another cluster is refused. Required (non-zero).
	ClusterID uint64
	// ListenAddr is the host:port the transport serves on; port 0 picks a
	// free port (GRPC.Addr reports it). Required unless Listener is set.
	ListenAddr string
	// Listener, when set, is served instead of listening on ListenAddr. The
	// transport owns it from New on and closes it in Close. It lets a caller
	// learn every node's address before building the Peers maps.
	Listener net.Listener
	// Peers maps every node of the cluster, this one included, to the
	// address other nodes dial. Frames from nodes not listed are refused.
	Peers map[raftpb.NodeID]string
	// TLS, when set, turns on mutual TLS: the same configuration serves as
	// the server's (peers must present a certificate that verifies against
	// ClientCAs, or RootCAs when ClientCAs is nil) and as the client's (the
	// peer's certificate must verify against RootCAs; this node presents
	// Certificates). Nil means plaintext.
	TLS *tls.Config
	// Handler receives what arrives. Required.
	Handler Handler
	// Logger receives the transport's log lines. The default value is
	// slog.Default().
	Logger *slog.Logger

	// MaxFrameBytes bounds one encoded frame, in both directions: a larger
	// incoming frame is refused before it is allocated, and a single
	// message that cannot fit a frame is dropped at the sender. The Raft
	// core's per-message size limit must stay well below it. Every node of
	// a cluster must use the same value. The default value is 4 MiB.
	MaxFrameBytes int
	// SendQueueBytes and SendQueueMessages bound what waits for one peer
	// (approximate in-memory bytes, and messages including heartbeats);
	// beyond either, Send drops and counts. The default values are 16 MiB
	// and 65536.
	SendQueueBytes    int
	SendQueueMessages int

	// PingInterval is how often a peer that has not been heard from is
	// pinged. The default value is 100ms.
	PingInterval time.Duration
	// MissedPings is how many PingIntervals of silence make a peer
	// unreachable. The default value is 5.
	MissedPings int
	// DialTimeout bounds one connection attempt (TCP and TLS). The default
	// value is 2s.
	DialTimeout time.Duration
	// DialBackoffMin and DialBackoffMax bound the wait between connection
	// attempts to a peer, which grows exponentially with ±50% jitter. Keep
	// the maximum below the election timeout so that a restarted node hears
	// from its leader before it campaigns. The default values are 50ms and
	// 1s.
	DialBackoffMin time.Duration
	DialBackoffMax time.Duration
	// JitterSeed seeds the backoff jitter. The default value is derived
	// from the clock; tests set it for repeatable waits.
	JitterSeed uint64

	// SnapshotChunkBytes is the size of one snapshot chunk frame. The
	// default value is 1 MiB; it may not exceed MaxFrameBytes.
	SnapshotChunkBytes int
	// SnapshotTimeout bounds the time a snapshot transfer may go without
	// progress (one chunk) before it is abandoned. The default value is
	// 10s.
	SnapshotTimeout time.Duration
	// SnapshotRetries is how many more times a snapshot whose stream broke
	// is sent again from the start. The default value is 3; a negative
	// value means no retry.
	SnapshotRetries int
	// MaxSnapshotBytes refuses announced snapshots larger than this. The
	// default value is 64 GiB.
	MaxSnapshotBytes int64
	// MaxConcurrentSnapshots bounds the snapshots sent at once and,
	// separately, those received at once (a receive beyond it is refused
	// and retried by its sender). The default value is 4.
	MaxConcurrentSnapshots int
}

// Defaults of Config, filled in by EnsureDefaults.
const (
	DefaultMaxFrameBytes          = 4 << 20
	DefaultSendQueueBytes         = 16 << 20
	DefaultSendQueueMessages      = 65536
	DefaultPingInterval           = 100 * time.Millisecond
	DefaultMissedPings            = 5
	DefaultDialTimeout            = 2 * time.Second
	DefaultDialBackoffMin         = 50 * time.Millisecond
	DefaultDialBackoffMax         = time.Second
	DefaultSnapshotChunkBytes     = 1 << 20
	DefaultSnapshotTimeout        = 10 * time.Second
	DefaultSnapshotRetries        = 3
	DefaultMaxSnapshotBytes       = 64 << 30
	DefaultMaxConcurrentSnapshots = 4
)

// minFrameBytes keeps MaxFrameBytes above what a frame of one ordinary
// message and the chunk header need.
const minFrameBytes = 4 << 10

// EnsureDefaults fills zero fields; it is the one place defaults live.
func (c *Config) EnsureDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxFrameBytes == 0 {
		c.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if c.SendQueueBytes == 0 {
		c.SendQueueBytes = DefaultSendQueueBytes
	}
	if c.SendQueueMessages == 0 {
		c.SendQueueMessages = DefaultSendQueueMessages
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.MissedPings == 0 {
		c.MissedPings = DefaultMissedPings
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.DialBackoffMin == 0 {
		c.DialBackoffMin = DefaultDialBackoffMin
	}
	if c.DialBackoffMax == 0 {
		c.DialBackoffMax = max(DefaultDialBackoffMax, c.DialBackoffMin)
	}
	if c.JitterSeed == 0 {
		c.JitterSeed = uint64(time.Now().UnixNano())
	}
	if c.SnapshotChunkBytes == 0 {
		c.SnapshotChunkBytes = min(DefaultSnapshotChunkBytes, c.MaxFrameBytes)
	}
	if c.SnapshotTimeout == 0 {
		c.SnapshotTimeout = DefaultSnapshotTimeout
	}
	if c.SnapshotRetries == 0 {
		c.SnapshotRetries = DefaultSnapshotRetries
	}
	if c.MaxSnapshotBytes == 0 {
		c.MaxSnapshotBytes = DefaultMaxSnapshotBytes
	}
	if c.MaxConcurrentSnapshots == 0 {
		c.MaxConcurrentSnapshots = DefaultMaxConcurrentSnapshots
	}
}

// Validate reports every invalid field, each named.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if c.NodeID == raftpb.None {
		bad("Config.NodeID is required")
	}
	if c.ClusterID == 0 {
		bad("Config.ClusterID is required")
	}
	if c.ListenAddr == "" && c.Listener == nil {
		bad("Config.ListenAddr or Config.Listener is required")
	}
	if c.Handler == nil {
		bad("Config.Handler is required")
	}
	if _, ok := c.Peers[c.NodeID]; !ok && c.NodeID != raftpb.None {
		bad("Config.Peers must list this node (%d)", c.NodeID)
	}
	for id, addr := range c.Peers {
		if id == raftpb.None {
			bad("Config.Peers has node id 0")
		}
		if addr == "" && id != c.NodeID {
			bad("Config.Peers[%d] has no address", id)
		}
	}
	if c.TLS != nil && len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil {
		bad("Config.TLS has no certificate (mutual TLS needs one on both sides)")
	}
	if c.MaxFrameBytes < minFrameBytes {
		bad("Config.MaxFrameBytes must be at least %d, got %d", minFrameBytes, c.MaxFrameBytes)
	}
	if c.SendQueueBytes <= 0 {
		bad("Config.SendQueueBytes must be positive, got %d", c.SendQueueBytes)
	}
	if c.SendQueueMessages <= 0 {
		bad("Config.SendQueueMessages must be positive, got %d", c.SendQueueMessages)
	}
	if c.PingInterval <= 0 {
		bad("Config.PingInterval must be positive, got %v", c.PingInterval)
	}
	if c.MissedPings <= 0 {
		bad("Config.MissedPings must be positive, got %d", c.MissedPings)
	}
	if c.DialTimeout <= 0 {
		bad("Config.DialTimeout must be positive, got %v", c.DialTimeout)
	}
	if c.DialBackoffMin <= 0 || c.DialBackoffMax < c.DialBackoffMin {
		bad("Config.DialBackoffMin (%v) must be positive and at most DialBackoffMax (%v)", c.DialBackoffMin, c.DialBackoffMax)
	}
	if c.SnapshotChunkBytes <= chunkHeaderBytes || c.SnapshotChunkBytes > c.MaxFrameBytes {
		bad("Config.SnapshotChunkBytes must be in (%d, MaxFrameBytes=%d], got %d", chunkHeaderBytes, c.MaxFrameBytes, c.SnapshotChunkBytes)
	}
	if c.SnapshotTimeout <= 0 {
		bad("Config.SnapshotTimeout must be positive, got %v", c.SnapshotTimeout)
	}
	if c.MaxSnapshotBytes <= 0 {
		bad("Config.MaxSnapshotBytes must be positive, got %d", c.MaxSnapshotBytes)
	}
	if c.MaxConcurrentSnapshots <= 0 {
		bad("Config.MaxConcurrentSnapshots must be positive, got %d", c.MaxConcurrentSnapshots)
	}
	return errors.Join(errs...)
}

// unreachableAfter is the silence after which a peer is unreachable.
func (c *Config) unreachableAfter() time.Duration {
	return time.Duration(c.MissedPings) * c.PingInterval
}
