package batchio

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"go.uber.org/goleak"

	"github.com/shardd/shardd/raftpb"
)

// Storage sweeps (TESTING.md, "Storage crash sweep ... error sweep over
// every op index"). One deterministic multi-shard workload (sweepPlan:
// appends, hard states, conflicting suffixes, membership changes, saved
// and installed snapshots, compactions, replica creation and removal) is
// run once to count the write operations it makes on the file system, then
// once per op index k:
//
//   - TestCrashSweep: a crash just before the k-th write op (a CrashClone
//     of Pebble's crash-simulating MemFS keeping the synced data, and for
//     some k part of the unsynced data); the clone is reopened and must
//     hold every acknowledged request (see workload.verify) with each
//     shard's log one contiguous key range after its truncation point and
//     no key left of a removed replica (checkRawKeys).
//   - TestErrorFSSweep/ops: the k-th write op fails once (errorfs): the
//     flush it belongs to fails whole, nothing after is acknowledged, the
//     store refuses further writes naming the cause, and the files reopened
//     without injection hold every acknowledged request. Ops of Open are
//     swept too: Open fails naming the error (or, for a failed directory
//     sync, Pebble panics by design) and the directory still opens.
//
// Op indexes count from the first op of Open to the last of Close. Both
// sweeps go through faultFS, which also covers the WAL files Pebble
// recycles (plain errorfs does not see their writes).
//
// The op order is deterministic: a round's requests are queued behind a
// gate (an empty request whose Done waits) so each round is exactly one
// flush, and with the default memtable nothing runs in the background.
// The small-memtable crash variant adds memtable flushes, WAL rotation and
// sstables, whose timing (and so the op count) may vary a little.
//
// -sweep.stride=1 (or SHARDD_SWEEP_STRIDE=1) runs every op index; the
// default stride keeps `go test -race ./batchio` short.

var sweepStride = flag.Int("sweep.stride", 0, "run the crash and error sweeps at every k-th op index (0: default stride; 1: every index; env SHARDD_SWEEP_STRIDE)")

const (
	sweepShards    = 32 // 8 per writer
	sweepWriters   = 4
	sweepRounds    = 48
	sweepSeed      = 7
	sweepPerWriter = sweepShards / sweepWriters

	// Default strides (crash, error), chosen to keep the sweeps a few
	// seconds each under -race on two cores.
	defaultCrashStride = 4
	defaultErrorStride = 2
)

func stride(def int) int {
	if *sweepStride > 0 {
		return *sweepStride
	}
	if v := os.Getenv("SHARDD_SWEEP_STRIDE"); v != "" {
		var n int
		if _, err := fmt.Sscan(v, &n); err == nil && n > 0 {
			return n
		}
	}
	if testing.Short() {
		return 3 * def
	}
	return def
}

// sweepPlan is the workload: rounds of requests, each a list of updates to
// distinct shards, generated once from a fixed seed (the generators run
// ahead of any store, so the plan does not depend on timing).
type sweepPlan struct {
	rounds [][][]Update
	gens   []*shardGen // shard i+1 is gens[i]

	removed     []raftpb.ShardID
	confChanges int
	pureSnaps   int // snapshot + compaction updates without entries
}

// newSweepPlan generates the plan. Writer w owns sweepPerWriter shards from
// w*sweepPerWriter+1; each round it sends one request updating 1-3 of its
// live shards (through shardGen, plus membership changes and
// snapshot-and-compact updates). At the half-way round each writer creates
// its last shard and, in a second request of the same flush, removes it
// together with its first shard; at three quarters it removes its second
// shard. Removed shards are never touched again.
func newSweepPlan(seed uint64) *sweepPlan {
	p := &sweepPlan{}
	for i := range sweepShards {
		p.gens = append(p.gens, &shardGen{id: raftpb.ShardID(i + 1)})
	}
	dead := map[raftpb.ShardID]bool{}
	half, threeQ := sweepRounds/2, 3*sweepRounds/4
	for r := range sweepRounds {
		var round [][]Update
		for w := range sweepWriters {
			rng := rand.New(rand.NewPCG(seed, uint64(r*sweepWriters+w)))
			own := p.gens[w*sweepPerWriter : (w+1)*sweepPerWriter]
			late := own[sweepPerWriter-1]
			var live []*shardGen
			for _, g := range own[:sweepPerWriter-1] {
				if !dead[g.id] {
					live = append(live, g)
				}
			}
			n := 1 + rng.IntN(min(3, len(live)))
			var us []Update
			for _, k := range rng.Perm(len(live))[:n] {
				us = append(us, p.update(live[k], rng))
			}
			switch r {
			case half:
				// Created and removed in one flush, by two requests.
				us = append(us, late.next(rng))
				round = append(round, us)
				us = []Update{p.remove(late, dead), p.remove(own[0], dead)}
			case threeQ:
				// Its last update in this round's first request, removal
				// in the second.
				round = append(round, us)
				us = []Update{p.remove(own[1], dead)}
			}
			round = append(round, us)
		}
		p.rounds = append(p.rounds, round)
	}
	return p
}

func (p *sweepPlan) remove(g *shardGen, dead map[raftpb.ShardID]bool) Update {
	u := Update{Shard: g.id, Remove: true}
	g.n++
	g.m.apply(&u)
	dead[g.id] = true
	p.removed = append(p.removed, g.id)
	return u
}

// update is g's next update: mostly shardGen's, sometimes a snapshot of
// the committed log with a compaction below it and nothing else, and
// sometimes with a membership change riding on its entries.
func (p *sweepPlan) update(g *shardGen, rng *rand.Rand) Update {
	m := &g.m
	if m.exists && rng.IntN(6) == 0 {
		lo := max(m.snap+1, m.first, 1)
		if idx := m.hs.Commit; idx >= lo {
			g.n++
			u := Update{Shard: g.id,
				SaveSnapshot: &SnapshotRecord{Meta: raftpb.SnapshotMeta{Index: idx, Term: m.term(idx), ConfState: m.conf},
					Data: fmt.Appendf(nil, "sweep-snap-%d-%d", g.id, idx)},
				CompactTo: idx - raftpb.Index(rng.IntN(int(min(3, idx-m.first+1))))}
			g.snaps++
			g.compactions++
			p.pureSnaps++
			m.apply(&u)
			return u
		}
	}
	u := g.next(rng)
	if len(u.Entries) > 0 && u.Create == nil && rng.IntN(8) == 0 {
		confs := []raftpb.ConfState{voters3, {Voters: []raftpb.NodeID{1, 2, 3}, Learners: []raftpb.NodeID{4}},
			{Voters: []raftpb.NodeID{1, 2, 4}}}
		cs := confs[rng.IntN(len(confs))]
		u.ConfState, u.ConfIndex = &cs, u.Entries[rng.IntN(len(u.Entries))].Index
		// next applied u without it; membership is applied after the
		// entries and hard state, which it does not affect.
		m.conf, m.confIndex = cs, u.ConfIndex
		p.confChanges++
	}
	return u
}

// checkCoverage fails the test if the plan lost a feature it must sweep.
func (p *sweepPlan) checkCoverage(t *testing.T) {
	t.Helper()
	var replaced, snaps, compactions, installs, updates int
	for _, g := range p.gens {
		replaced, snaps, compactions, installs = replaced+g.replaced, snaps+g.snaps, compactions+g.compactions, installs+g.installs
		updates += g.n
	}
	requests := 0
	for _, r := range p.rounds {
		requests += len(r)
	}
	t.Logf("plan: %d rounds, %d requests, %d updates to %d shards: %d suffix replacements, %d snapshots saved "+
		"(%d alone), %d compactions, %d snapshots installed, %d membership changes, %d removals",
		len(p.rounds), requests, updates, len(p.gens), replaced, snaps, p.pureSnaps, compactions, installs,
		p.confChanges, len(p.removed))
	for what, n := range map[string]int{"suffix replacements": replaced, "snapshots saved": snaps,
		"compactions": compactions, "snapshots installed": installs, "membership changes": p.confChanges,
		"removals": len(p.removed)} {
		if n < 2 {
			t.Fatalf("the sweep plan makes %d %s: change its seed or generator", n, what)
		}
	}
}

// drive submits the plan to s, round by round, recording it in w and the
// completions in c. Each round is one flush: its requests queue behind a
// gate request whose Done holds the writer until they are all queued. It
// stops before a round when stop returns true, and after a round in which
// anything failed. round (if not nil) is set to each round's number before
// its flush starts.
func (p *sweepPlan) drive(t *testing.T, s *Store, w *workload, c *completions, stop func() bool, round *atomic.Int64) {
	t.Helper()
	for r, reqs := range p.rounds {
		if stop() {
			return
		}
		if round != nil {
			round.Store(int64(r))
		}
		entered, release := make(chan struct{}), make(chan struct{})
		if err := s.Submit(&Request{Done: func(error) { close(entered); <-release }}); err != nil {
			if !errors.Is(err, ErrFailed) {
				t.Errorf("round %d: Submit: %v, want ErrFailed", r, err)
			}
			return
		}
		<-entered
		failed := false
		for i, us := range reqs {
			if err := w.submit(us, c.done(fmt.Sprintf("%d.%d", r, i))); err != nil {
				c.cancel()
				if !errors.Is(err, ErrFailed) {
					t.Errorf("round %d: Submit: %v, want ErrFailed", r, err)
				}
				failed = true
				break
			}
		}
		close(release)
		c.wait(t, fmt.Sprintf("round %d", r))
		c.mu.Lock()
		for _, err := range c.errs {
			failed = failed || err != nil
		}
		c.mu.Unlock()
		if failed {
			return
		}
	}
}

// writeOpCounter is an errorfs injector that counts write ops (every op
// that changes the file system: creations, writes, syncs, renames, ...)
// and calls hit just before the at-th one (at 0: never).
type writeOpCounter struct {
	at  int64
	n   atomic.Int64
	hit func(op errorfs.Op) error
	// kinds counts ops by file kind ("log", "sst", "MANIFEST", ...).
	mu    sync.Mutex
	kinds map[string]int
	// hitOp describes the op hit, for messages.
	hitOp atomic.Pointer[errorfs.Op]
}

func (c *writeOpCounter) MaybeError(op errorfs.Op) error {
	if op.Kind.ReadOrWrite() != errorfs.OpIsWrite {
		return nil
	}
	c.mu.Lock()
	if c.kinds == nil {
		c.kinds = map[string]int{}
	}
	c.kinds[fileKind(op.Path)]++
	c.mu.Unlock()
	if c.n.Add(1) == c.at && c.hit != nil {
		c.hitOp.Store(&op)
		return c.hit(op)
	}
	return nil
}

func (c *writeOpCounter) String() string { return fmt.Sprintf("writeOpCounter(%d)", c.at) }

func (c *writeOpCounter) describe() string {
	if op := c.hitOp.Load(); op != nil {
		return fmt.Sprintf("op %d (%v %s)", c.at, opKindName(op.Kind), op.Path)
	}
	return fmt.Sprintf("op %d (not reached)", c.at)
}

// fileKind names the kind of a Pebble file for the op statistics.
func fileKind(path string) string {
	base := path[strings.LastIndex(path, "/")+1:]
	switch {
	case strings.HasSuffix(base, ".log"):
		return "wal"
	case strings.HasSuffix(base, ".sst"):
		return "sst"
	case strings.HasPrefix(base, "MANIFEST"):
		return "manifest"
	case strings.HasPrefix(base, "marker."):
		return "marker"
	case strings.HasPrefix(base, "OPTIONS") || strings.HasSuffix(base, ".dbtmp"):
		return "options"
	case !strings.Contains(base, "."):
		return "dir"
	}
	return "other"
}

func opKindName(k errorfs.OpKind) string {
	names := map[errorfs.OpKind]string{errorfs.OpCreate: "create", errorfs.OpLink: "link", errorfs.OpRemove: "remove",
		errorfs.OpRemoveAll: "removeall", errorfs.OpRename: "rename", errorfs.OpReuseForWrite: "reuse",
		errorfs.OpMkdirAll: "mkdir", errorfs.OpLock: "lock", errorfs.OpFileClose: "close", errorfs.OpFileWrite: "write",
		errorfs.OpFileWriteAt: "writeat", errorfs.OpFileSync: "sync", errorfs.OpFileSyncData: "syncdata",
		errorfs.OpFileSyncTo: "syncto", errorfs.OpFileFlush: "flush", errorfs.OpFilePreallocate: "preallocate"}
	if n, ok := names[k]; ok {
		return n
	}
	return fmt.Sprintf("op%d", k)
}

// faultFS is errorfs.Wrap(fs, inj), and also injects into the files
// errorfs.FS.ReuseForWrite returns: errorfs (Pebble v2.1.7) hands back a
// recycled WAL file unwrapped, so once Pebble recycles a WAL the writes and
// syncs of every later WAL would go uncounted and could not fail.
func faultFS(fs vfs.FS, inj errorfs.Injector) vfs.FS {
	return reuseWrappingFS{FS: errorfs.Wrap(fs, inj), inj: inj}
}

type reuseWrappingFS struct {
	*errorfs.FS
	inj errorfs.Injector
}

func (fs reuseWrappingFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	if err != nil {
		return nil, err
	}
	return reusedFile{File: f, path: newname, inj: fs.inj}, nil
}

// reusedFile injects into the write ops of a recycled file (reads need
// no injection here: the sweeps count write ops).
type reusedFile struct {
	vfs.File
	path string
	inj  errorfs.Injector
}

func (f reusedFile) op(k errorfs.OpKind) error {
	return f.inj.MaybeError(errorfs.Op{Kind: k, Path: f.path})
}

func (f reusedFile) Write(p []byte) (int, error) {
	if err := f.op(errorfs.OpFileWrite); err != nil {
		return 0, err
	}
	return f.File.Write(p)
}

func (f reusedFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.op(errorfs.OpFileWriteAt); err != nil {
		return 0, err
	}
	return f.File.WriteAt(p, off)
}

func (f reusedFile) Preallocate(off, n int64) error {
	if err := f.op(errorfs.OpFilePreallocate); err != nil {
		return err
	}
	return f.File.Preallocate(off, n)
}

func (f reusedFile) Sync() error {
	if err := f.op(errorfs.OpFileSync); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f reusedFile) SyncData() error {
	if err := f.op(errorfs.OpFileSyncData); err != nil {
		return err
	}
	return f.File.SyncData()
}

func (f reusedFile) SyncTo(n int64) (bool, error) {
	if err := f.op(errorfs.OpFileSyncTo); err != nil {
		return false, err
	}
	return f.File.SyncTo(n)
}

func (f reusedFile) Close() error {
	if err := f.op(errorfs.OpFileClose); err != nil {
		return err
	}
	return f.File.Close()
}

// sweepOptions are the store options of a sweep run.
func sweepOptions(fs vfs.FS, smallMemTable bool) Options {
	o := Options{Dir: "db", FS: fs, Logger: quiet}
	if smallMemTable {
		// A few memtable flushes and WAL rotations over the plan, and
		// flushes large enough to go to Pebble as flushable batches.
		o.MemTableBytes = 24 << 10
	}
	return o
}

// sweepCountOps runs the plan without a fault on a (crash-simulating) MemFS
// wrapped in a counter and returns the number of write ops up to and
// including Close; it also checks the plan's own final state.
func sweepCountOps(t *testing.T, p *sweepPlan, smallMemTable bool) int {
	t.Helper()
	mem := vfs.NewCrashableMem()
	cnt := &writeOpCounter{}
	s, err := Open(sweepOptions(faultFS(mem, cnt), smallMemTable))
	if err != nil {
		t.Fatal(err)
	}
	opened := cnt.n.Load()
	w := newWorkload(s, sweepShards)
	var c completions
	p.drive(t, s, w, &c, func() bool { return false }, nil)
	if acked := c.check(t, "no fault"); acked != w.submitted {
		t.Fatalf("no fault: %d of %d requests acknowledged", acked, w.submitted)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	n := int(cnt.n.Load())
	w.mu.Lock()
	cut := w.cutLocked()
	w.mu.Unlock()
	s2, err := Open(sweepOptions(mem.CrashClone(vfs.CrashCloneCfg{}), smallMemTable))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	w.verify(t, s2, cut, "no fault")
	checkRawKeys(t, s2, "no fault")
	for _, id := range p.removed {
		if _, err := s2.Shard(id); !errors.Is(err, ErrUnknownShard) {
			t.Fatalf("removed shard %d: %v", id, err)
		}
	}
	t.Logf("%d write ops: %d opening, %d for the plan and Close; by file: %v", n, opened, n-int(opened), cnt.kinds)
	return n
}

// checkRawKeys reads the store's keys directly: every shard it lists has
// its log as one contiguous run of keys from its truncation point + 1 to
// its last index; every other shard id in the sweep's range has no key at
// all (a removed replica leaves nothing behind, not even a log entry the
// loader would not see).
func checkRawKeys(t *testing.T, s *Store, tag string) {
	t.Helper()
	db := s.DB()
	for id := raftpb.ShardID(1); id <= sweepShards; id++ {
		start, end := logSpan(id)
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: end})
		if err != nil {
			t.Fatal(err)
		}
		var keys []raftpb.Index
		for it.First(); it.Valid(); it.Next() {
			_, idx, ok := parseLogKey(it.Key())
			if !ok {
				t.Errorf("%s: shard %d: bad log key %x", tag, id, it.Key())
			}
			keys = append(keys, idx)
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
		l, err := s.Shard(id)
		if errors.Is(err, ErrUnknownShard) {
			if len(keys) > 0 {
				t.Errorf("%s: shard %d has no replica but %d log keys (%d..%d)", tag, id, len(keys), keys[0], keys[len(keys)-1])
			}
			for _, kind := range []byte{kindHardState, kindSnapshot, kindReplica} {
				if _, closer, err := db.Get(shardKey(kind, id)); err == nil {
					closer.Close()
					t.Errorf("%s: shard %d has no replica but a %q record", tag, id, kind)
				} else if !errors.Is(err, pebble.ErrNotFound) {
					t.Fatal(err)
				}
			}
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		first, _ := l.FirstIndex()
		last, _ := l.LastIndex()
		var rec ReplicaRecord
		for _, ri := range s.Replicas() {
			if ri.Shard == id {
				rec = ri.Record
			}
		}
		if first != rec.TruncIndex+1 {
			t.Errorf("%s: shard %d: first index %d, truncation point %d", tag, id, first, rec.TruncIndex)
		}
		if n := raftpb.Index(len(keys)); n != last+1-first {
			t.Errorf("%s: shard %d: %d log keys for the log [%d, %d]", tag, id, n, first, last)
			continue
		}
		for i, idx := range keys {
			if idx != first+raftpb.Index(i) {
				t.Errorf("%s: shard %d: log key %d at position %d of the log [%d, %d]", tag, id, idx, i, first, last)
				break
			}
		}
	}
}

func TestCrashSweep(t *testing.T) {
	p := newSweepPlan(sweepSeed)
	p.checkCoverage(t)
	for _, small := range []bool{false, true} {
		t.Run(fmt.Sprintf("smallmemtable=%v", small), func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			n := sweepCountOps(t, p, small)
			st := stride(defaultCrashStride)
			runs, crashed := 0, 0
			// Every st-th index from the first, and the last.
			for k := 1; k <= n && !t.Failed(); k += st {
				runs++
				if crashSweepRun(t, p, small, k) {
					crashed++
				}
			}
			if !t.Failed() && (n-1)%st != 0 {
				runs++
				if crashSweepRun(t, p, small, n) {
					crashed++
				}
			}
			t.Logf("%d write ops, stride %d: %d crash runs (%d reached their op)", n, st, runs, crashed)
		})
	}
}

// crashSweepRun runs the plan on a crash-simulating MemFS, crashing just
// before the k-th write op, and checks the store reopened from the crash
// clone. It reports whether the run reached op k (with background work
// the op count varies; a run that ends first crashes after Close).
func crashSweepRun(t *testing.T, p *sweepPlan, small bool, k int) bool {
	t.Helper()
	pct := []int{0, 0, 10, 50}[k%4]
	tag := fmt.Sprintf("crash before write op %d (unsynced kept %d%%, smallmemtable=%v)", k, pct, small)
	mem := vfs.NewCrashableMem()
	w := newWorkload(nil, sweepShards)
	var (
		clone   *vfs.MemFS
		cutAt   cut
		crashed atomic.Bool
	)
	crash := func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		// Holding w.mu: no request is acknowledged or submitted between
		// the cut and the clone.
		cutAt = w.cutLocked()
		clone = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rand.New(rand.NewPCG(uint64(k), 99))})
		crashed.Store(true)
	}
	cnt := &writeOpCounter{at: int64(k), hit: func(errorfs.Op) error { crash(); return nil }}
	s, err := Open(sweepOptions(faultFS(mem, cnt), small))
	if err != nil {
		t.Fatalf("%s: open: %v", tag, err)
	}
	w.mu.Lock()
	w.s = s
	w.mu.Unlock()
	var c completions
	p.drive(t, s, w, &c, crashed.Load, nil)
	if acked := c.check(t, tag); !crashed.Load() && acked != w.submitted {
		t.Errorf("%s: %d of %d requests acknowledged", tag, acked, w.submitted)
	}
	_ = closeWithin(t, s, 10*time.Second) // after the crash, whatever it says is moot
	reached := crashed.Load()
	if !reached {
		crash()
	}
	w.mu.Lock()
	for _, err := range w.errs {
		t.Errorf("%s: %v", tag, err)
	}
	w.errs = nil
	w.mu.Unlock()
	tag = fmt.Sprintf("%s, at %s", tag, cnt.describe())

	s2, err := Open(sweepOptions(clone, small))
	if err != nil {
		t.Fatalf("%s: reopening after the crash: %v", tag, err)
	}
	defer s2.Close()
	if w.verify(t, s2, cutAt, tag) == 0 {
		checkRawKeys(t, s2, tag)
	}
	// The recovered store takes writes: a hard state for a live shard.
	if reps := s2.Replicas(); len(reps) > 0 {
		hs := reps[0].HardState
		hs.Term++
		write(t, s2, Update{Shard: reps[0].Shard, HardState: hs})
	}
	return reached
}

// errorSweep is TestErrorFSSweep's "ops" case: the sweep plan on a MemFS
// wrapped by errorfs, the k-th write op failing once, for every k (by the
// stride) from the first op of Open to the last of Close.
func errorSweep(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(), ignorePebbleOpenLeak)
	p := newSweepPlan(sweepSeed)
	p.checkCoverage(t)
	n := sweepCountOps(t, p, false)
	st := stride(defaultErrorStride)
	var runs, failedOpen, failedRounds, failedClose int
	for k := 1; k <= n && !t.Failed(); k += st {
		runs++
		switch errorSweepRun(t, p, k) {
		case "open":
			failedOpen++
		case "round":
			failedRounds++
		case "close":
			failedClose++
		}
	}
	t.Logf("%d write ops, stride %d: %d runs; the injected error failed Open in %d, a flush in %d, Close in %d",
		n, st, runs, failedOpen, failedRounds, failedClose)
	if failedRounds == 0 {
		t.Fatal("no injected error ever failed a flush")
	}
}

// errorSweepRun runs the plan with the k-th write op failing and checks
// the failure rules; it returns where the error hit: "open", "round" (a
// flush), "close" or "" (not reached).
func errorSweepRun(t *testing.T, p *sweepPlan, k int) string {
	t.Helper()
	tag := fmt.Sprintf("write op %d failing", k)
	mem := vfs.NewMem()
	var (
		round   atomic.Int64
		phase   atomic.Value // "open", "plan", "close"
		hitIn   atomic.Value
		hitRnd  atomic.Int64
		injects atomic.Int64
	)
	phase.Store("open")
	cnt := &writeOpCounter{at: int64(k), hit: func(errorfs.Op) error {
		injects.Add(1)
		hitIn.Store(phase.Load())
		hitRnd.Store(round.Load())
		return errorfs.ErrInjected
	}}
	s, err, panicked := openRecover(sweepOptions(faultFS(mem, cnt), false))
	if err != nil || panicked != nil {
		tag = fmt.Sprintf("%s (%s)", tag, cnt.describe())
		if injects.Load() == 0 {
			t.Fatalf("%s: Open failed without an injected error: %v %v", tag, err, panicked)
		}
		if panicked != nil {
			// Pebble panics on a failed directory sync when it moves a
			// marker file (vfs/atomicfs.Marker.Move: "fsync errors are
			// unrecoverable"); batchio lets that crash the node.
			perr, _ := panicked.(error)
			if op := cnt.hitOp.Load(); !errors.Is(perr, errorfs.ErrInjected) || op.Kind != errorfs.OpFileSync {
				t.Fatalf("%s: Open panicked: %v", tag, panicked)
			}
		} else if !strings.Contains(err.Error(), errorfs.ErrInjected.Error()) {
			t.Errorf("%s: Open failed with %q, which does not name the injected error", tag, err)
		}
		// Nothing was acknowledged; the directory must still open.
		s2, err := Open(sweepOptions(mem, false))
		if err != nil {
			t.Fatalf("%s: reopening after a failed Open: %v", tag, err)
		}
		if reps := s2.Replicas(); len(reps) != 0 {
			t.Errorf("%s: %d replicas in a store never written", tag, len(reps))
		}
		if err := s2.Close(); err != nil {
			t.Fatal(err)
		}
		return "open"
	}
	if injects.Load() > 0 {
		t.Fatalf("%s: Open succeeded despite the injected error at %s", tag, cnt.describe())
	}
	phase.Store("plan")
	w := newWorkload(s, sweepShards)
	round.Store(-1)
	var c completions
	p.drive(t, s, w, &c, func() bool { return false }, &round)
	phase.Store("close")
	tag = fmt.Sprintf("%s (%s)", tag, cnt.describe())
	acked := c.check(t, tag)
	where, _ := hitIn.Load().(string)
	if where == "plan" {
		// The flush of round r failed whole; every request before it was
		// acknowledged, none after.
		r := int(hitRnd.Load())
		before := 0
		for _, reqs := range p.rounds[:r] {
			before += len(reqs)
		}
		if acked != before {
			t.Errorf("%s: in round %d's flush, %d requests acknowledged, want the %d of the rounds before", tag, r, acked, before)
		}
		c.mu.Lock()
		for i := before; i < len(c.errs); i++ {
			if err := c.errs[i]; err == nil || !strings.Contains(err.Error(), errorfs.ErrInjected.Error()) {
				t.Errorf("%s: request %s completed with %v, want a failure naming the injected error", tag, c.tags[i], err)
			}
		}
		c.mu.Unlock()
		// The store refuses further writes, naming the cause.
		err := s.Write(&Request{Updates: []Update{{Shard: 3, HardState: raftpb.HardState{Term: 99}}}})
		if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), errorfs.ErrInjected.Error()) {
			t.Errorf("%s: Write after the failure: %v, want ErrFailed naming the injected error", tag, err)
		}
		if err := s.Submit(&Request{Done: func(error) { t.Errorf("%s: Done called for a refused request", tag) }}); !errors.Is(err, ErrFailed) {
			t.Errorf("%s: Submit after the failure: %v, want ErrFailed", tag, err)
		}
	} else if acked != w.submitted {
		t.Errorf("%s: %d of %d requests acknowledged without a failure in the plan", tag, acked, w.submitted)
	}
	closeErr := closeWithin(t, s, 10*time.Second)
	where, _ = hitIn.Load().(string)
	if where == "" && closeErr != nil {
		t.Errorf("%s: Close without a failure: %v", tag, closeErr)
	}
	w.mu.Lock()
	w.errs = nil // failures are checked by c.check
	cutEnd := w.cutLocked()
	w.mu.Unlock()

	// Without injection, the same files hold everything acknowledged; the
	// failed flush is there whole or not at all.
	s2, err := Open(sweepOptions(mem, false))
	if err != nil {
		t.Fatalf("%s: reopening on the underlying FS: %v", tag, err)
	}
	defer s2.Close()
	if w.verify(t, s2, cutEnd, tag) == 0 {
		checkRawKeys(t, s2, tag)
	}
	if where == "plan" {
		return "round"
	}
	return where
}

// openRecover opens a store, returning a panic of Open as panicked.
func openRecover(o Options) (s *Store, err error, panicked any) {
	defer func() {
		if r := recover(); r != nil {
			s, err, panicked = nil, nil, r
		}
	}()
	s, err = Open(o)
	return s, err, nil
}

// The sweep plan is what both sweeps replay: generating it twice must give
// the same requests, or the op indexes of a failure would not reproduce.
func TestSweepPlanDeterministic(t *testing.T) {
	a, b := newSweepPlan(sweepSeed), newSweepPlan(sweepSeed)
	if !reflect.DeepEqual(a.rounds, b.rounds) {
		t.Fatal("the sweep plan differs between two generations")
	}
}
