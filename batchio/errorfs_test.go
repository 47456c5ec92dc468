package batchio

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"go.uber.org/goleak"

	"github.com/shardd/shardd/raftpb"
)

// Error injection on the WAL (TESTING.md: never retry an fsync). Once a
// WAL write or sync fails, whether the flush is durable is unknown: every
// request of that flush and after it must fail with ErrFailed, nothing may
// be acknowledged any more, Close must return, and the store reopened from
// the same files must hold everything acknowledged before.

var (
	walSyncOps  = []errorfs.OpKind{errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo}
	walWriteOps = []errorfs.OpKind{errorfs.OpFileWrite, errorfs.OpFileWriteAt}
)

// walFault is an errorfs injector for the WAL (files ending in ".log").
// Armed, it fails every op of its kinds; with a countdown k it arms itself
// at the k-th such op. It can also hold the next WAL sync until released.
type walFault struct {
	kinds []errorfs.OpKind

	countdown atomic.Int64 // > 0: ops of kinds left before arming
	armed     atomic.Bool
	ops       atomic.Int64 // ops of kinds seen
	fired     atomic.Int64 // errors injected

	mu      sync.Mutex
	hold    bool
	entered chan struct{}
	release chan struct{}
}

func (f *walFault) MaybeError(op errorfs.Op) error {
	if !strings.HasSuffix(op.Path, ".log") {
		return nil
	}
	if op.Kind == errorfs.OpFileSync || op.Kind == errorfs.OpFileSyncData || op.Kind == errorfs.OpFileSyncTo {
		f.mu.Lock()
		hold := f.hold
		f.hold = false
		f.mu.Unlock()
		if hold {
			// The held op itself succeeds, whatever is armed meanwhile.
			f.entered <- struct{}{}
			<-f.release
			return nil
		}
	}
	for _, k := range f.kinds {
		if op.Kind != k {
			continue
		}
		f.ops.Add(1)
		if f.countdown.Load() > 0 && f.countdown.Add(-1) == 0 {
			f.armed.Store(true)
		}
		if f.armed.Load() {
			f.fired.Add(1)
			return errorfs.ErrInjected
		}
	}
	return nil
}

func (f *walFault) String() string { return "walFault" }

// holdNextSync makes the next WAL sync wait: entered receives when it
// starts, and it proceeds when release receives.
func (f *walFault) holdNextSync() (entered, release chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold = true
	f.entered, f.release = make(chan struct{}, 1), make(chan struct{})
	return f.entered, f.release
}

// completions records Done calls in the order the writer makes them.
type completions struct {
	mu   sync.Mutex
	errs []error
	tags []string
	wg   sync.WaitGroup
}

func (c *completions) done(tag string) func(error) {
	c.wg.Add(1)
	return func(err error) {
		c.mu.Lock()
		c.errs = append(c.errs, err)
		c.tags = append(c.tags, tag)
		c.mu.Unlock()
		c.wg.Done()
	}
}

// cancel accounts for a request whose Submit failed (its Done is never
// called).
func (c *completions) cancel() { c.wg.Done() }

// check verifies the failure rules over the completions so far: every
// error wraps ErrFailed, and no request is acknowledged after one failed.
// It returns the number of acknowledged requests.
func (c *completions) check(t *testing.T, tag string) int {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	acked, failedAt := 0, -1
	for i, err := range c.errs {
		switch {
		case err == nil && failedAt >= 0:
			t.Errorf("%s: request %s acknowledged after request %s failed: %v", tag, c.tags[i], c.tags[failedAt], c.errs[failedAt])
		case err == nil:
			acked++
		case !errors.Is(err, ErrFailed):
			t.Errorf("%s: request %s failed with %v, want an error wrapping ErrFailed", tag, c.tags[i], err)
		case failedAt < 0:
			failedAt = i
		}
	}
	return acked
}

// wait waits for every Done, failing the test if one never comes.
func (c *completions) wait(t *testing.T, tag string) {
	t.Helper()
	ch := make(chan struct{})
	go func() { c.wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: a request was never completed", tag)
	}
}

// closeWithin closes s, failing the test if Close does not return.
func closeWithin(t *testing.T, s *Store, d time.Duration) error {
	t.Helper()
	ch := make(chan error, 1)
	go func() { ch <- s.Close() }()
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		t.Fatalf("Close did not return within %v", d)
		return nil
	}
}

func TestErrorFSWALFailure(t *testing.T) {
	for _, tc := range []struct {
		name  string
		kinds []errorfs.OpKind
	}{
		{"sync", walSyncOps},
		{"write", walWriteOps},
	} {
		t.Run(tc.name, func(t *testing.T) { walFailure(t, tc.kinds) })
	}
}

func walFailure(t *testing.T, kinds []errorfs.OpKind) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	mem := vfs.NewMem()
	fault := &walFault{kinds: kinds}
	s := openMem(t, errorfs.Wrap(mem, fault))

	// Acknowledged before anything fails.
	const shards = 4
	want := map[raftpb.ShardID][]raftpb.Entry{}
	for id := raftpb.ShardID(1); id <= shards; id++ {
		write(t, s, create(id), Update{Shard: id, Entries: mkEnts(2, 1, 10)})
		want[id] = append(mkEnts(1, 1, 1), mkEnts(2, 1, 10)...)
	}

	// Request A's flush holds in its sync while B, C and D queue behind it;
	// then the WAL fails, so the flush carrying B, C and D fails as a whole.
	var c completions
	entered, release := fault.holdNextSync()
	if err := s.Submit(&Request{Updates: []Update{{Shard: 1, Entries: mkEnts(12, 1, 1)}}, Done: c.done("A")}); err != nil {
		t.Fatal(err)
	}
	want[1] = append(want[1], mkEnts(12, 1, 1)...)
	<-entered
	failing := map[raftpb.ShardID][]raftpb.Entry{}
	for i, id := range []raftpb.ShardID{2, 3, 4} {
		ents := mkEnts(12, 1, 3)
		failing[id] = ents
		u := []Update{{Shard: id, Entries: ents, HardState: raftpb.HardState{Term: 1, Commit: 14}}}
		if err := s.Submit(&Request{Updates: u, Done: c.done(string(rune('B' + i)))}); err != nil {
			t.Fatal(err)
		}
	}
	fault.armed.Store(true)
	close(release)
	c.wait(t, "the failing flush")
	c.check(t, "after the failure")
	c.mu.Lock()
	if len(c.errs) != 4 || c.errs[0] != nil {
		t.Fatalf("completions %v %v: want A acknowledged, B, C and D failed", c.tags, c.errs)
	}
	for _, err := range c.errs[1:] {
		if !strings.Contains(err.Error(), errorfs.ErrInjected.Error()) {
			t.Errorf("failure %q does not name its cause %q", err, errorfs.ErrInjected)
		}
	}
	c.mu.Unlock()
	if fault.fired.Load() == 0 {
		t.Fatal("no error injected")
	}

	// The store refuses everything from now on, and acknowledges nothing.
	for i := range 3 {
		err := s.Submit(&Request{Updates: []Update{{Shard: 1, Entries: mkEnts(13, 1, 1)}}, Done: func(err error) {
			t.Errorf("Done(%v) called for a request Submit refused", err)
		}})
		if !errors.Is(err, ErrFailed) {
			t.Fatalf("Submit %d after the failure: %v, want ErrFailed", i, err)
		}
	}
	if err := s.Write(&Request{Updates: []Update{{Shard: 1, Entries: mkEnts(13, 1, 1)}}}); !errors.Is(err, ErrFailed) {
		t.Fatalf("Write after the failure: %v, want ErrFailed", err)
	}
	// Reads still work on what is known to be durable.
	checkLog(t, s, 1, 1, want[1])
	closeErr := closeWithin(t, s, 10*time.Second)
	t.Logf("Close after the failure: %v", closeErr)
	if err := s.Close(); fmt.Sprint(err) != fmt.Sprint(closeErr) {
		t.Fatalf("second Close: %v, first: %v", err, closeErr)
	}

	// Pebble reopens the same files (the failed WAL included): everything
	// acknowledged is there; the failed flush is there entirely or not at all.
	s = openMem(t, mem, func(o *Options) { o.CacheBytes = -1 })
	checkLog(t, s, 1, 1, want[1])
	l2 := mustLog(t, s, 2)
	last, _ := l2.LastIndex()
	present := last == 14
	if !present && last != 11 {
		t.Fatalf("shard 2 ends at %d after reopening: want 11 (failed flush lost) or 14 (kept)", last)
	}
	t.Logf("the failed flush was recovered: %v", present)
	for id := raftpb.ShardID(2); id <= shards; id++ {
		w := want[id]
		if present {
			w = append(slices.Clone(w), failing[id]...)
		}
		checkLog(t, s, id, 1, w)
		st, _ := mustLog(t, s, id).InitialState()
		if wantCommit := map[bool]raftpb.Index{false: 1, true: 14}[present]; st.HardState.Commit != wantCommit {
			t.Fatalf("shard %d: hard state %+v, want commit %d", id, st.HardState, wantCommit)
		}
	}
	// The reopened store works.
	write(t, s, Update{Shard: 1, Entries: mkEnts(13, 2, 2), HardState: raftpb.HardState{Term: 2, Commit: 13}})
	checkLog(t, s, 1, 1, append(want[1], mkEnts(13, 2, 2)...))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// The sweep: the k-th WAL sync (or write) of a small multi-shard workload
// fails, and every later one too, for every k the workload reaches
// (subtests sync and write); and, over the sweep plan of sweep_test.go
// (24 shards, snapshots, compactions, removals), the k-th write op of any
// kind and on any file fails once, for every k from Open to Close (ops).
func TestErrorFSSweep(t *testing.T) {
	t.Run("ops", errorSweep)
	for _, tc := range []struct {
		name  string
		kinds []errorfs.OpKind
	}{
		{"sync", walSyncOps},
		{"write", walWriteOps},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			n, _ := sweepRun(t, tc.kinds, 0)
			if n == 0 {
				t.Fatal("the workload made no WAL op of these kinds")
			}
			hit := 0
			for k := 1; k <= n+1 && !t.Failed(); k++ {
				if _, failed := sweepRun(t, tc.kinds, k); failed > 0 {
					hit++
				}
			}
			if hit == 0 {
				t.Fatal("no injected error ever failed a request")
			}
			t.Logf("%d WAL ops in the workload; failing from the k-th on, for each k, failed requests in %d runs", n, hit)
		})
	}
}

// sweepRun runs the workload failing from the k-th WAL op of kinds on (0:
// none), checks the failure rules and the reopened store, and returns the
// number of such ops seen before Close and of requests that failed.
func sweepRun(t *testing.T, kinds []errorfs.OpKind, k int) (ops, failedReqs int) {
	t.Helper()
	const (
		shards   = 4
		rounds   = 6
		perRound = 3
	)
	tag := fmt.Sprintf("failing WAL op %d", k)
	mem := vfs.NewMem()
	fault := &walFault{kinds: kinds}
	s := openMem(t, errorfs.Wrap(mem, fault))
	fault.ops.Store(0)
	fault.countdown.Store(int64(k))

	// Bursts of requests submitted together, so that flushes carry several.
	rng := rand.New(rand.NewPCG(1, 2))
	w := newWorkload(s, shards)
	var c completions
	failed := false
	for r := 0; r < rounds && !failed; r++ {
		for i := 0; i < perRound; i++ {
			err := w.submit(w.request(rng, w.gens), c.done(fmt.Sprintf("%d.%d", r, i)))
			if err != nil {
				c.cancel()
				if !errors.Is(err, ErrFailed) {
					t.Fatalf("%s: Submit: %v, want ErrFailed", tag, err)
				}
				failed = true
				break
			}
		}
		c.wait(t, tag)
		c.mu.Lock()
		for _, err := range c.errs {
			failed = failed || err != nil
		}
		c.mu.Unlock()
	}
	acked := c.check(t, tag)
	failedReqs = len(c.errs) - acked
	seen := int(fault.ops.Load())
	if k > 0 && k <= seen && !failed {
		// The failed op belonged to a flush (or to the WAL's writer, which
		// latches it): the store must now refuse writes.
		err := s.Write(&Request{Updates: []Update{{Shard: 1, HardState: raftpb.HardState{Term: 1, Commit: 1}}}})
		if !errors.Is(err, ErrFailed) {
			t.Errorf("%s: after the failure Write returned %v, want ErrFailed", tag, err)
		}
	}
	if k == 0 || k > seen {
		if acked != w.submitted {
			t.Errorf("%s: %d of %d requests acknowledged without any failure", tag, acked, w.submitted)
		}
	}
	if err := closeWithin(t, s, 10*time.Second); err != nil && (k == 0 || k > int(fault.ops.Load())) {
		t.Errorf("%s: Close without a failure: %v", tag, err)
	}
	w.mu.Lock()
	if len(w.errs) > 0 && k == 0 {
		t.Errorf("%s: %v", tag, w.errs)
	}
	// Failures are checked by c.check; verify needs only the counts.
	w.errs = nil
	cut := w.cutLocked()
	w.mu.Unlock()

	s2, err := Open(Options{Dir: "db", FS: mem, Logger: quiet, CacheBytes: -1})
	if err != nil {
		t.Fatalf("%s: reopening after the failure: %v", tag, err)
	}
	w.verify(t, s2, cut, tag)
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	return seen, failedReqs
}
