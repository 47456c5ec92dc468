// Package kv is shardd's built-in key-value state machine. It keeps each
// shard's data in the node's own Pebble store (the one batchio writes the
// Raft logs to), under batchio.StateMachinePrefix, as a
// shard.OnDiskStateMachine:
//
//   - Update applies a call's entries in one Pebble batch that also
//     records the last applied index, committed without fsync: the Raft
//     log is durable and the engine replays it from Open's lastApplied+1,
//     so a crash loses nothing the log does not give back. Sync makes it
//     durable when the engine is about to compact the log behind it.
//   - Lookup reads the latest value with a point Get.
//   - SaveSnapshot streams the shard's data from a Pebble snapshot through
//     an iterator; RecoverFromSnapshot replaces the shard's data range in
//     bounded batches and records the snapshot's applied index last, after
//     checking the stream's checksum. Neither holds the state in memory.
//
// Commands (Put, Delete, CompareAndSwap) and the Get query have
// hand-written, versioned binary encodings (codec.go). Each applied command
// reports its outcome in Result.Value (CodeApplied, CodeCASFailed,
// CodeInvalid) and, for a failed CompareAndSwap, the current value in
// Result.Data. A Get answers with a status byte then the value, so an
// absent key differs from an empty value (DecodeLookup).
//
// The keys (keys.go) and the snapshot stream (snapshot.go) are documented
// where they are built.
//
// Wiring, one Store per node:
//
//	st := kv.NewStore()
//	node, err := engine.Open(engine.Config{...,
//		OnStoreOpen:     st.OnStoreOpen,
//		NewStateMachine: st.NewStateMachine,
//	})
//	res, err := node.Propose(ctx, shardID, kv.EncodeCAS(key, old, true, new))
//	if errors.Is(kv.ResultError(res), kv.ErrCASFailed) { cur, found, _ := kv.CASCurrent(res); ... }
//	out, err := node.Read(ctx, shardID, kv.EncodeGet(key))
//	value, found, err := kv.DecodeLookup(out)
package kv
