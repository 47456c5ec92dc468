// Package transport carries Raft messages between nodes: one long-lived
// bidirectional gRPC stream per pair of nodes for the messages of every
// shard (batched per peer, heartbeats coalesced), a separate streaming RPC
// per snapshot, node liveness, cluster and peer checks, and mutual TLS.
//
// The engine talks to it through Transport and Handler; package
// transport/transporttest implements the same interface in memory, with
// injectable faults, for tests and the simulator.
//
// It imports only raftpb of shardd.
package transport

import (
	"errors"
	"io"

	"github.com/shardd/shardd/raftpb"
)

// Transport sends messages to other nodes. Implementations are safe for
// concurrent use.
type Transport interface {
	// Send queues msgs for their recipients' nodes (m.To). It never blocks
	// on the network: a full queue drops the message and counts it (Raft
	// retransmits). Messages for one node keep their order. Messages queued
	// by one call to the same node travel together when they fit one frame;
	// heartbeats among them travel coalesced. Entries' data is referenced
	// until encoded: callers must not modify it.
	Send(msgs []raftpb.Message)
	// SendSnapshot streams a snapshot to m.To's node: m is the MsgSnap the
	// core produced; open returns the snapshot data and its size, and is
	// called again for every attempt (a broken stream restarts from the
	// beginning). done is called once with nil when the receiver has the
	// whole snapshot verified and committed, or with the error that ended
	// the transfer; normally from a transport goroutine, but synchronously
	// (ErrClosed) once the transport is closed. It returns at once.
	SendSnapshot(m raftpb.Message, open func() (io.ReadCloser, int64, error), done func(error))
	// Stats and PeerStats report the transport's counters.
	Stats() Stats
	PeerStats() []PeerStats
	// Close stops every stream and goroutine; queued messages are dropped.
	Close() error
}

// Handler receives what arrives from other nodes. Its methods are called
// from transport goroutines and must not block for long.
type Handler interface {
	// HandleMessages receives the messages of one frame from node from, in
	// the order they were sent, followed by the frame's coalesced
	// heartbeats, expanded (order holds among each kind; Raft needs no
	// more). The slice is the handler's; entries' data alias the frame
	// (not reused).
	HandleMessages(from raftpb.NodeID, msgs []raftpb.Message)
	// NodeUnreachable reports that node has not been heard from for the
	// configured number of liveness intervals (or its stream broke and
	// cannot be re-established). NodeReachable reports it is back. Both are
	// edge-triggered: each change is reported once.
	NodeUnreachable(node raftpb.NodeID)
	NodeReachable(node raftpb.NodeID)
	// SnapshotSink opens where the data of the snapshot announced by m (a
	// MsgSnap from m.From) is written as it arrives. The transport verifies
	// size and checksum, then calls Commit on the sink and, if that
	// succeeds, hands m to HandleMessages. On any failure it calls Abort.
	SnapshotSink(m raftpb.Message, size int64) (SnapshotSink, error)
}

// SnapshotSink receives one snapshot's data.
type SnapshotSink interface {
	io.Writer
	// Commit makes the data durable and available (temp file, fsync,
	// rename, directory fsync): after it the engine can install it.
	Commit() error
	// Abort discards what was written.
	Abort() error
}

// Stats are cumulative counters of a transport.
type Stats struct {
	MessagesSent, MessagesReceived uint64
	FramesSent, FramesReceived     uint64
	BytesSent, BytesReceived       uint64
	// HeartbeatsCoalesced counts heartbeats that travelled as compact
	// records.
	HeartbeatsCoalesced uint64
	// Dropped counts messages dropped because a queue was full or the peer
	// unknown or unreachable.
	Dropped uint64
	// Rejected counts frames refused: wrong cluster, unknown or wrong node,
	// malformed or oversized.
	Rejected                                          uint64
	SnapshotsSent, SnapshotsReceived, SnapshotsFailed uint64
}

// PeerStats are a transport's counters for one peer node.
type PeerStats struct {
	Node                           raftpb.NodeID
	MessagesSent, MessagesReceived uint64
	BytesSent, BytesReceived       uint64
	Dropped                        uint64
	Reachable                      bool
}

// Errors that transfers report.
var (
	// ErrClosed is returned once the transport is closed.
	ErrClosed = errors.New("transport: closed")
	// ErrUnknownNode is returned for a message or snapshot to a node that is
	// not a configured peer.
	ErrUnknownNode = errors.New("transport: unknown node")
	// ErrSnapshotRejected is returned when the receiver refused a snapshot
	// (bad size or checksum, sink error).
	ErrSnapshotRejected = errors.New("transport: snapshot rejected")
)
