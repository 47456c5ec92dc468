package group

import "github.com/shardd/shardd/raftpb"

// LogReader is the core's read access to a replica's durable log. batchio
// satisfies it on Pebble; MemoryLog does in tests. The core never writes
// through it: writes leave as Ready and come back as Advance.
//
// The log holds entries [FirstIndex, LastIndex]; index FirstIndex-1 is the
// last index of the latest snapshot (0 if none), and Term answers for it.
type LogReader interface {
	// InitialState returns the persisted hard state and membership.
	InitialState() (InitialState, error)
	// Entries returns the entries [lo, hi), stopping early once their
	// SizeBytes exceed maxBytes (but always returning at least one). It
	// returns ErrCompacted if lo < FirstIndex. The caller does not modify
	// the returned slice.
	Entries(lo, hi raftpb.Index, maxBytes uint64) ([]raftpb.Entry, error)
	// Term returns the term of entry i, for FirstIndex-1 <= i <= LastIndex;
	// ErrCompacted below that range and ErrUnavailable above it.
	Term(i raftpb.Index) (raftpb.Term, error)
	// FirstIndex is the index of the first entry held (the snapshot's index
	// plus one when everything before is compacted).
	FirstIndex() (raftpb.Index, error)
	// LastIndex is the index of the last entry held (the snapshot's index if
	// no entry follows it).
	LastIndex() (raftpb.Index, error)
	// Snapshot returns the metadata of the latest snapshot, or
	// ErrSnapshotTemporarilyUnavailable.
	Snapshot() (raftpb.SnapshotMeta, error)
}

// InitialState is a replica's persisted state at restart (an alias, so that
// storage packages implement LogReader without importing the core).
type InitialState = raftpb.DurableState
