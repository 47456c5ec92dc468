package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardd/shardd/engine"
)

// kvStore is what the load generator drives: a sharded key-value store in
// this process (localStore) or a remote cluster (remoteStore). k.shard is
// a hint an in-process store uses directly; a remote cluster maps the key
// to its shard itself.
type kvStore interface {
	Put(ctx context.Context, k key, value []byte) error
	Get(ctx context.Context, k key) ([]byte, error)
}

// key is one key of the workload.
type key struct {
	shard uint64
	name  []byte
}

// errRetry marks an error after which the same operation may simply be
// tried again (a full queue, no leader yet).
var errRetry = errors.New("retry")

// keyGen draws keys (a key's name is valid until the next draw: stores
// copy what they keep): a global rank r in [0, keys*shards), uniform or Zipf,
// is key r/shards of shard 1+r%shards, named "k<r>" (unique across
// shards, so a remote cluster spreads them over its own shards too).
type keyGen struct {
	rnd    *rand.Rand
	zipf   *rand.Zipf
	shards uint64
	n      uint64
	buf    []byte // the last key's name
}

func newKeyGen(shards, keys int, s float64, seed uint64) *keyGen {
	g := &keyGen{
		rnd:    rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d)),
		shards: uint64(shards),
		n:      uint64(shards) * uint64(keys),
	}
	if s > 1 {
		g.zipf = rand.NewZipf(g.rnd, s, 1, g.n-1)
	}
	return g
}

func (g *keyGen) next() key {
	var r uint64
	if g.zipf != nil {
		r = g.zipf.Uint64()
	} else {
		r = g.rnd.Uint64N(g.n)
	}
	g.buf = strconv.AppendUint(append(g.buf[:0], 'k'), r, 10)
	return key{shard: 1 + r%g.shards, name: g.buf}
}

// localStore drives an in-process cluster: each operation goes to the
// node that leads its shard (as the shard's first replica knows it), or to
// that replica when no leader is known (followers forward proposals).
type localStore struct {
	c       *cluster
	payload int
}

func (s *localStore) route(shard uint64) *engine.Node {
	if l := s.c.leaderOf(shard); l != 0 {
		if n := s.c.node(l); n != nil {
			return n
		}
	}
	for _, id := range s.c.place[shard] {
		if n := s.c.node(id); n != nil {
			return n
		}
	}
	return nil
}

func (s *localStore) Put(ctx context.Context, k key, value []byte) error {
	n := s.route(k.shard)
	if n == nil {
		return fmt.Errorf("%w: no open replica of shard %d", errRetry, k.shard)
	}
	_, err := n.Propose(ctx, k.shard, encodePut(k.name, value, s.payload))
	return localError(err)
}

func (s *localStore) Get(ctx context.Context, k key) ([]byte, error) {
	n := s.route(k.shard)
	if n == nil {
		return nil, fmt.Errorf("%w: no open replica of shard %d", errRetry, k.shard)
	}
	v, err := n.Read(ctx, k.shard, k.name)
	return v, localError(err)
}

func localError(err error) error {
	if err == nil {
		return nil
	}
	var nl *engine.NotLeaderError
	if errors.Is(err, engine.ErrBusy) || errors.As(err, &nl) {
		return fmt.Errorf("%w: %w", errRetry, err)
	}
	return err
}

// loadConfig is what a load run needs from the options.
type loadConfig struct {
	clients, payload, shards, keys int
	readRatio, zipf, rate          float64
	warmup, duration, opTimeout    time.Duration
	progress                       time.Duration
	seed                           uint64
	cpuProfile                     string // profile of the measured window
	memProfile                     string // heap profile at the window's end
}

func loadConfigOf(o *options) loadConfig {
	return loadConfig{
		clients: o.clients, payload: o.payload, shards: o.shards, keys: o.keys,
		readRatio: o.readRatio, zipf: o.zipf, rate: o.rate,
		warmup: o.warmup, duration: o.duration, opTimeout: o.opTimeout,
		progress: o.progress, seed: o.seed, cpuProfile: o.cpuProfile, memProfile: o.memProfile,
	}
}

// Phases of a load run.
const (
	phaseWarmup = iota
	phaseMeasure
	phaseDone
)

// loadRunner runs clients against a kvStore and counts what completes in
// the measured window.
type loadRunner struct {
	cfg   loadConfig
	st    kvStore
	base  time.Time // of clock
	phase atomic.Int32

	completed atomic.Uint64 // successful operations in any phase (progress)

	writes, reads        atomic.Uint64
	errs, unknown, retry atomic.Uint64
	wHist, rHist         hist
	firstErr             atomic.Pointer[error]
}

// loadStats are a load run's outcome.
type loadStats struct {
	start, end             sample
	writes, reads          uint64
	errs, unknown, retries uint64
	all, writeLat, readLat *histSnapshot
	firstErr               error
}

// runLoad runs the warm-up and the measured window; sampler is called at
// both ends of the window.
func runLoad(ctx context.Context, cfg loadConfig, st kvStore, stderr io.Writer, sampler func() sample) (*loadStats, error) {
	l := &loadRunner{cfg: cfg, st: st, base: time.Now()}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	workers := make([]*worker, cfg.clients)
	for i := range workers {
		workers[i] = &worker{id: i, run: ctx, l: l}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		l.watchdog(ctx, workers)
	}()
	if cfg.rate > 0 {
		l.openLoop(ctx, &wg, start, workers)
	} else {
		for _, w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l.closedClient(w)
			}()
		}
	}
	stopProgress := l.progress(stderr, start)
	defer stopProgress()

	sleep := func(d time.Duration) error {
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	stats := &loadStats{}
	err := sleep(cfg.warmup)
	if err == nil {
		var stopProfile func() error
		if stopProfile, err = startProfile(cfg.cpuProfile); err == nil {
			stats.start = sampler()
			l.phase.Store(phaseMeasure)
			err = sleep(cfg.duration)
			l.phase.Store(phaseDone)
			stats.end = sampler()
			if perr := stopProfile(); perr != nil && err == nil {
				err = perr
			}
			if perr := writeHeapProfile(cfg.memProfile); perr != nil && err == nil {
				err = perr
			}
		}
	}
	l.phase.Store(phaseDone)
	cancel()
	wg.Wait()
	if err != nil {
		return nil, err
	}
	stats.writes, stats.reads = l.writes.Load(), l.reads.Load()
	stats.errs, stats.unknown, stats.retries = l.errs.Load(), l.unknown.Load(), l.retry.Load()
	stats.writeLat, stats.readLat = l.wHist.snapshot(), l.rHist.snapshot()
	stats.all = &histSnapshot{}
	stats.all.merge(stats.writeLat)
	stats.all.merge(stats.readLat)
	if p := l.firstErr.Load(); p != nil {
		stats.firstErr = *p
	}
	return stats, nil
}

// progress prints elapsed time, operations so far and the current rate
// every cfg.progress; it returns the function that stops it.
func (l *loadRunner) progress(w io.Writer, start time.Time) func() {
	if l.cfg.progress <= 0 {
		return func() {}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(l.cfg.progress)
		defer t.Stop()
		last, lastAt := uint64(0), start
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				ops := l.completed.Load()
				rate := float64(ops-last) / now.Sub(lastAt).Seconds()
				phase := "measuring"
				switch l.phase.Load() {
				case phaseWarmup:
					phase = "warm-up"
				case phaseDone:
					phase = "done"
				}
				fmt.Fprintf(w, "%7.1fs  ops %10d  rate %10.0f/s  errors %d  [%s]\n",
					now.Sub(start).Seconds(), ops, rate, l.errs.Load()+l.unknown.Load(), phase)
				last, lastAt = ops, now
			}
		}
	}()
	return func() { close(stop); <-done }
}

func (l *loadRunner) closedClient(w *worker) {
	g := newKeyGen(l.cfg.shards, l.cfg.keys, l.cfg.zipf, l.cfg.seed+uint64(w.id)*7919)
	val := make([]byte, max(l.cfg.payload-8, 0))
	for i := range val {
		val[i] = 'a' + byte(g.rnd.IntN(26))
	}
	for w.run.Err() == nil {
		k := g.next()
		read := l.cfg.readRatio > 0 && g.rnd.Float64() < l.cfg.readRatio
		l.do(w, read, k, val, time.Now())
	}
}

// openLoop offers operations at cfg.rate: operation i is due at
// start + i/rate whatever happened before, and cfg.clients workers take
// them in order. Latency is measured from the due time, so time spent
// queued behind slow operations counts.
func (l *loadRunner) openLoop(ctx context.Context, wg *sync.WaitGroup, start time.Time, workers []*worker) {
	due := make(chan time.Time, min(int(l.cfg.rate)+1, 1<<20))
	interval := float64(time.Second) / l.cfg.rate
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(due)
		for i := 0; ; i++ {
			t := start.Add(time.Duration(float64(i) * interval))
			if d := time.Until(t); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return
				}
			}
			select {
			case due <- t:
			case <-ctx.Done():
				return
			}
		}
	}()
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := newKeyGen(l.cfg.shards, l.cfg.keys, l.cfg.zipf, l.cfg.seed+uint64(w.id)*7919)
			val := make([]byte, max(l.cfg.payload-8, 0))
			for t := range due {
				if ctx.Err() != nil {
					return
				}
				k := g.next()
				read := l.cfg.readRatio > 0 && g.rnd.Float64() < l.cfg.readRatio
				l.do(w, read, k, val, t)
			}
		}()
	}
}

// worker is one client goroutine's context. Operation deadlines are
// kept by the watchdog rather than by a context.WithTimeout per operation,
// whose timer and allocations cost several percent of the CPU at 100k
// operations/s: the worker's context lives across operations and is
// cancelled only when one overruns --op-timeout.
type worker struct {
	id  int
	run context.Context // the run's: done when it ends
	l   *loadRunner

	mu      sync.Mutex
	ctx     context.Context
	cancel  context.CancelFunc
	since   int64 // when the current operation began (l.clock); 0 = none
	expired bool  // the watchdog cancelled the current operation
}

// begin starts an operation and returns its context.
func (w *worker) begin() context.Context {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx == nil || w.ctx.Err() != nil {
		if w.cancel != nil {
			w.cancel()
		}
		w.ctx, w.cancel = context.WithCancel(w.run)
	}
	w.since = w.l.clock()
	return w.ctx
}

// end ends the operation and reports whether it overran its deadline.
func (w *worker) end() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.since = 0
	expired := w.expired
	w.expired = false
	return expired
}

// expire cancels the current operation if it began before limit.
func (w *worker) expire(limit int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.since != 0 && w.since < limit && !w.expired {
		w.expired = true
		w.cancel()
	}
}

// clock is a monotonic clock in nanoseconds (> 0).
func (l *loadRunner) clock() int64 { return int64(time.Since(l.base)) + 1 }

// watchdog cancels operations older than --op-timeout, checking a few
// times per timeout.
func (l *loadRunner) watchdog(ctx context.Context, workers []*worker) {
	t := time.NewTicker(min(l.cfg.opTimeout/4, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			for _, w := range workers {
				w.mu.Lock()
				if w.cancel != nil {
					w.cancel()
				}
				w.mu.Unlock()
			}
			return
		case <-t.C:
			limit := l.clock() - int64(l.cfg.opTimeout)
			for _, w := range workers {
				w.expire(limit)
			}
		}
	}
}

// errOpTimeout is an operation that overran --op-timeout.
var errOpTimeout = fmt.Errorf("operation timed out: %w", context.DeadlineExceeded)

// do runs one operation (retrying what may be retried until its deadline)
// and records it if it completed in the measured window; latency counts
// from since.
func (l *loadRunner) do(w *worker, read bool, k key, val []byte, since time.Time) {
	ctx := w.begin()
	var err error
	for {
		if read {
			_, err = l.st.Get(ctx, k)
		} else {
			err = l.st.Put(ctx, k, val)
		}
		if err == nil || !errors.Is(err, errRetry) || ctx.Err() != nil {
			break
		}
		l.retry.Add(1)
		select {
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
		}
	}
	if w.end() && err != nil && w.run.Err() == nil {
		err = fmt.Errorf("%w after %v: %w", errOpTimeout, l.cfg.opTimeout, err)
	}
	lat := time.Since(since)
	if err == nil {
		l.completed.Add(1)
	}
	if l.phase.Load() != phaseMeasure {
		return
	}
	switch {
	case err == nil && read:
		l.reads.Add(1)
		l.rHist.record(w.id, lat)
	case err == nil:
		l.writes.Add(1)
		l.wHist.record(w.id, lat)
	case w.run.Err() != nil:
		// The run ended under it.
	case errors.Is(err, engine.ErrResultUnknown) || errors.Is(err, errOutcomeUnknown):
		l.unknown.Add(1)
	default:
		if l.errs.Add(1) == 1 {
			first := err // a copy, so that err itself stays on the stack
			l.firstErr.Store(&first)
		}
	}
}

// fill sets a Result's load figures.
func (s *loadStats) fill(r *Result) {
	r.fillWindow(s.start, s.end)
	secs := s.end.at.Sub(s.start.at).Seconds()
	r.WritesPerSec = round(float64(s.writes)/secs, 1)
	r.ReadsPerSec = round(float64(s.reads)/secs, 1)
	r.Ops = int64(s.writes + s.reads)
	r.Errors = int64(s.errs)
	r.Unknown = int64(s.unknown)
	r.Retries = int64(s.retries)
	if s.firstErr != nil {
		r.FirstError = s.firstErr.Error()
	}
	r.P50Ms = ms(s.all.quantile(0.50))
	r.P90Ms = ms(s.all.quantile(0.90))
	r.P99Ms = ms(s.all.quantile(0.99))
	r.P999Ms = ms(s.all.quantile(0.999))
	r.MaxMs = ms(time.Duration(s.all.max))
	r.WriteP99Ms = ms(s.writeLat.quantile(0.99))
	r.ReadP99Ms = ms(s.readLat.quantile(0.99))
}

func ms(d time.Duration) float64 { return round(float64(d)/1e6, 3) }

// startProfile starts a CPU profile into path (nothing when empty) and
// returns the function that stops it.
func startProfile(path string) (func() error, error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// writeHeapProfile writes a heap profile into path (nothing when empty).
func writeHeapProfile(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
