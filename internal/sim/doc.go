// Package sim is the deterministic simulator (TESTING.md, layer 4): many
// nodes × many shards driven from one goroutine and one seed, through the
// same code a node runs — the group core inside shard.Replica, batchio on
// Pebble's crash-simulating in-memory file system, and the in-memory
// transport (transporttest, Manual mode: virtual time) at batch level — with
// faults injected by a nemesis, TESTING.md's invariants checked after every
// step, client histories checked with porcupine, and a liveness phase at
// the end. A failing seed replays exactly with
//
//	go test ./internal/sim -run TestSimSmall -seed=N -sim-log -v
//
// (-trace-shard=S and -trace-key=K add the status changes of one shard and
// the life of one proposal; SIM_DEBUG=1 adds the replicas' debug logs).
//
// # Driver
//
// Virtual time advances in steps (Options.Step, 1ms). One step:
//
//  1. The network advances: every message due is handed to its node's
//     handler, which only queues it in the replica's inbox and marks the
//     replica dirty (engine/handler.go); snapshot transfers and liveness
//     reports (NodeUnreachable → ReportUnreachable on every replica) happen
//     here too.
//  2. Crashed nodes whose downtime is over restart; the nemesis acts; idle
//     clients issue operations (Propose, Read into the replicas' inboxes).
//  3. Every running node, in id order: ticks its non-quiesced replicas
//     when its skewed clock says so (engine ticker), then runs step passes
//     until none of its replicas has work. A pass mirrors the engine's
//     stepWorker, flushed and applyWorker (engine/workers.go): Step every
//     dirty replica in shard order, collect the Readys, send their Messages
//     (MsgSnap through SendSnapshot with the latest snapshot record, like
//     engine.sendSnapshot), persist the Readys of the whole pass with ONE
//     batchio write (toUpdate, as the engine's), then send AfterPersist,
//     call Persisted on every Ready, and Apply. The replicas are the real
//     shard.Replica; only the goroutines are replaced.
//  4. Clients collect the outcomes of their operations.
//
// batchio's writer goroutine and Pebble's background work run beside the
// driver, but the driver waits for every write, so a seed reproduces the
// same run (TestSimDeterministic). Every random draw comes from the seed:
// the fault options (DrawFaults, printed at the start), placement, the
// nemesis, the clients, the network (its own seeded source) and each
// core's election timeouts (a PCG per replica incarnation).
//
// # Nodes, crashes and faults
//
// A node owns a vfs.NewCrashableMem file system holding its store ("store")
// and snapshot files ("snapshots", package snapstore, as the engine's), the shard.Replicas placed on it, and a
// transport. A crash takes vfs.CrashClone of the file system (keeping only
// synced data plus Faults.UnsyncedPercent of the unsynced blocks and
// directory entries), drops every in-memory structure and, after a random
// downtime, reopens the store and rebuilds the replicas from it as
// engine.Open does (batchio.Replicas, then shard.New with the snapshot
// record's reference). Some crashes hit a node inside a step pass: after
// its messages left and before the flush (a leader's appends are out, its
// own copy is lost), or after the flush and before the acknowledgements.
// Faults (DrawFaults): message drop, duplication, delay and reorder;
// transport frames (three seeds in four: a step pass's messages to one
// node travel together with probability FrameRate, and the coalesced
// heartbeats are handed on after the rest, as the gRPC transport's
// receiver does — so a message can overtake the heartbeat sent before it);
// partitions (halves, one node, the node leading most shards, one-way,
// rolling); crashes of one node or of all at once; pauses (a node is
// neither stepped nor ticked while messages pile up in its inboxes);
// per-node tick skew; membership changes (voters demoted to learners and
// back, joint changes, replicas added on and removed from spare nodes) and
// leadership transfers; quiet periods so shards quiesce and wake; small
// entry caches so the cores read their logs back from Pebble.
//
// # Invariants (oracle.go), after every step (S42)
//
// 1. Election safety: at most one leader per (shard, term), from every
// replica's Status after each step. 2. Log matching: a mirror of every
// replica's log (its durable log at start plus every Ready's entries) with
// the chain hash of each prefix; equal (index, term) must mean equal hash.
// 3. Leader completeness: a new leader's log holds the last entry
// committed before its term. 4. State machine safety: every committed
// index has one chain hash per shard (the chain shard keeps in
// Status().Hash); every entry released for applying, and every replica's
// applied state, must match it. 5. Durability: after each flush the store
// holds the Ready's hard state and entries; term, vote and commit never
// regress (across restarts: the durable state read back at restart is
// checked against the last one written); a vote never changes within a
// term; commit never passes the durable log. 6. Entries are released in
// order, without gaps, never beyond commit; applied never goes back within
// an incarnation nor passes commit. 7. Membership: one configuration per
// index over all replicas. 8. Isolation: a replica's messages carry its
// shard and node, and the handler routes by shard (and checks the
// addressee). 9. Snapshots: a replica restored from a snapshot (received
// or at restart) has the committed hash of the snapshot's index. 10.
// Bounds: each store's entry cache stays within its bound. 11. Clients: porcupine checks every key's
// history (puts of unknown outcome may apply at any time after their call)
// with final reads of every key after the liveness phase, so every
// acknowledged write must be there; a failure writes porcupine's
// visualization and prints its path.
//
// Liveness phase: every fault is healed and crashed nodes restart; within
// Options.LivenessTimeouts (10) election timeouts every shard must have one
// leader followed by every member, every proposal must be resolved, and
// every member must have applied the leader's last index with the same
// hash. Then, with no client load and quiescence on, every member of every
// shard must be quiesced at once within QuiesceTicks plus the same number
// of election timeouts: an idle shard that never settles is a bug too.
//
// # Bugs found
//
// Each is pinned as a regression seed in sim_test.go (TestSimRegression)
// and fixed at its cause, with a unit test in its package:
//
//   - snapstore (then engine/snapshots.go) created dir/<shard> without
//     fsyncing dir: a crash lost the shard's directory and every snapshot
//     file in it while the store's snapshot record pointed at one, and the
//     replica could not restart. Seed 3.
//   - group: a leader that demoted (or removed) itself stepped down after
//     one best-effort commit message. Followers that did not learn that
//     leaving the joint configuration committed still needed its vote for
//     the outgoing half; it refused them (longer log) and never campaigned
//     as a learner: no leader ever. Now it hands leadership to a voter
//     (membership.go handOff). Seed 174.
//   - shard: a proposal forwarded to the leader in a MsgProp that was lost
//     (or dropped by the leader) stayed pending for ever on a stable shard,
//     and after MaxPendingProposals such losses the replica answered
//     ErrBusy for ever. Forwarded proposals now expire as ErrResultUnknown
//     after Config.ForwardTimeoutTicks; the simulator's ticker also skips
//     only replicas with StepResult.Skip, as the engine's does. Seed 1.
//   - group/quiescence and learners: a learner restarted while its shard
//     was quiesced never learned the leader, and one that missed the
//     quiesce message's commit index never applied that entry (voters
//     recover by campaigning, learners cannot). Learners now call their
//     leader with MsgWake after an election timeout of silence. Seed 5.
//   - sim itself: a disk armed to fail just before the liveness phase
//     fail-stopped its node during the phase and nothing restarted it;
//     the phase now crash-restarts nodes with a failing disk. Seed 47 of
//     120 s runs (make sim-long; also 263 and 387).
//   - group: a MsgProp the network duplicated was appended twice by the
//     leader, so one put was applied, overwritten, and applied again — a
//     read saw an older value come back (porcupine). The leader now drops
//     forwarded entries whose key is among its newest 1024 entries. Seed
//     257 with eager quiescence (TestSimEagerQuiesce; the bug does not
//     need quiescence, that run merely hit it).
//   - group: a caught-up follower put back to probing while nothing was
//     proposed (its node reported unreachable, then back) stayed probing
//     for ever: its answer to the probe carried the match the leader knew
//     already and was taken for a stale one. Its leader then refused to
//     quiesce, so the idle shard kept ticking and heartbeating. Such an
//     answer now returns it to replicating, and a probing follower's
//     heartbeat answer is probed. Found by the idle-quiescence check. Seed 22.
//   - group: a pre-candidate dropped MsgQuiesce, which with transport
//     frames can overtake the heartbeat sent before it; it kept calling
//     elections nobody answered next to a quiesced leader. Found first by
//     bench --idle at 10000 shards; the simulator finds it once frames are
//     modelled and idle shards must quiesce (eager seeds 57, 66, 86, 88
//     and 93 of 100 with the fix reverted). Seed 86 (eager).
package sim
