package raftpb

import "errors"

// Errors a replica's log storage returns; shared here so that the Raft core
// (which reads the log) and the storage layer (which serves it) agree on
// them without importing each other.
var (
	// ErrCompacted: the requested index is below the log's first entry; it
	// exists only inside a snapshot.
	ErrCompacted = errors.New("requested index is compacted")
	// ErrUnavailable: the requested index is beyond the log's last entry.
	ErrUnavailable = errors.New("requested entry is unavailable")
	// ErrSnapshotTemporarilyUnavailable: there is no snapshot to offer yet.
	ErrSnapshotTemporarilyUnavailable = errors.New("snapshot temporarily unavailable")
)

// DurableState is what a replica persists beside its log: the hard state,
// and the membership in force after applying every membership change up to
// and including ConfIndex. A new replica has its initial members here.
type DurableState struct {
	HardState HardState
	ConfState ConfState
	ConfIndex Index
}
