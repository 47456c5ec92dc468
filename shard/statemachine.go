// Package shard is one replica of one shard: the Raft core, the state
// machine, and the proposals and reads waiting on them. It decides nothing
// about threads or I/O: the engine calls Step from a step worker, persists
// and sends what comes out, and calls Apply from an apply worker.
//
// It also declares the state machine interfaces users implement.
package shard

import "io"

// Result is what applying a command produced.
type Result struct {
	// Index is the log index the command was applied at.
	Index uint64
	// Value and Data are set by the state machine.
	Value uint64
	Data  []byte
}

// Entry is a committed command handed to the state machine.
type Entry struct {
	Index uint64
	Cmd   []byte
	// Result is set by StateMachine.Update.
	Result Result
}

// StateMachine is a replicated state machine kept in memory; the engine
// snapshots it through SaveSnapshot and restores it through
// RecoverFromSnapshot. Update is never called concurrently with itself or
// with snapshot calls; Lookup may run concurrently with Lookup only.
type StateMachine interface {
	// Update applies entries in log order and sets each entry's Result. An
	// error stops the replica (the entry is never skipped). The slice is
	// reused once Update returns: keep no reference to it (the Cmd bytes
	// stay valid).
	Update(entries []Entry) error
	// Lookup answers a read query against the current state.
	Lookup(query []byte) ([]byte, error)
	// SaveSnapshot writes the whole state.
	SaveSnapshot(w io.Writer) error
	// RecoverFromSnapshot replaces the whole state with a snapshot's.
	RecoverFromSnapshot(r io.Reader) error
	// Close releases the state machine's resources.
	Close() error
}

// OnDiskStateMachine owns its durable state (the built-in Pebble KV, say).
// The engine replays the log from Open's lastApplied+1 instead of
// restoring a snapshot at every start.
type OnDiskStateMachine interface {
	StateMachine
	// Open prepares the state machine and returns the index of the last
	// entry it applied durably.
	Open() (lastApplied uint64, err error)
	// Sync makes everything applied so far durable.
	Sync() error
}
