// Package group is the Raft core of one replica of one shard.
//
// It is a pure, deterministic state machine: no goroutines, no clock, no
// I/O, no global state. Time arrives as Tick, messages as Step, requests as
// Propose, ProposeConfChange, ReadIndex, TransferLeader, Compact and the
// Report* calls. Everything the core decides leaves as data in a Ready —
// entries and hard state to persist, messages to send now, acknowledgements
// to send only after the persist, committed entries to apply, read states,
// a snapshot to install — and the caller acknowledges each Ready with
// Advance once its persist is durable. Randomness comes from an injected
// seeded source, so a run is reproducible from its seed.
//
// It implements: elections with randomized timeouts, pre-vote and
// check-quorum; log freshness compared as (term, index) in dictionary order;
// pipelined replication with an inflight window per follower and
// probe/replicate/snapshot states; fast conflict back-off; commit by
// counting only entries of the leader's term; joint-consensus membership
// with learners; leadership transfer; ReadIndex (leader and follower) and
// lease reads; snapshots and log compaction; proposal forwarding;
// quiescence.
//
// Persistence is asynchronous and pipelined: several Readys may be
// outstanding, persists complete in order, and the core tracks which of its
// entries are durable. It never releases an entry for applying, nor sends an
// acknowledgement, before the write that makes it true is durable; a leader
// sends its appends before its own write and counts itself only afterwards.
//
// The durable log is read through LogReader; MemoryLog implements it in
// memory for tests, and batchio on Pebble for nodes.
package group
