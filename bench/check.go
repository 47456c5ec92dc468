package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/shardd/shardd/internal/linz"

	"github.com/shardd/shardd/engine"
)

// notLinearizableError is returned by a --check run whose history is not
// linearizable (or could not be checked in time, which counts as a
// failure: TESTING.md).
type notLinearizableError struct{ result, html string }

func (e notLinearizableError) Error() string {
	s := fmt.Sprintf("history not linearizable (porcupine: %s)", e.result)
	if e.html != "" {
		s += "; visualization in " + e.html
	}
	return s
}

// checkInput and checkOutput are one operation of the history: a put of
// Value, or a get that returned Value ("" = never written; every put
// writes a value unique in the run, never "").
type checkInput struct {
	Put   bool
	Key   string
	Value string
}

type checkOutput struct{ Value string }

// kvModel is a register per key; the history is partitioned by key.
var kvModel = porcupine.Model{
	Partition: linz.PartitionByKey(func(in any) string { return in.(checkInput).Key }),
	Init:      func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(checkInput)
		if in.Put {
			return true, in.Value
		}
		return output.(checkOutput).Value == state.(string), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(checkInput)
		if in.Put {
			return fmt.Sprintf("put(%s, %q)", in.Key, in.Value)
		}
		return fmt.Sprintf("get(%s) -> %q", in.Key, output.(checkOutput).Value)
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%q", state) },
}

// history records operations with their invoke and return times, in
// nanoseconds since the run began.
type history struct {
	epoch     time.Time
	mu        sync.Mutex
	ops       []porcupine.Operation
	ambiguous int
	notes     []porcupine.Annotation
}

func (h *history) now() int64 { return int64(time.Since(h.epoch)) }

func (h *history) add(op porcupine.Operation) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	if op.Return == math.MaxInt64 {
		h.ambiguous++
	}
	h.mu.Unlock()
}

// note adds a fault to the visualization's timeline.
func (h *history) note(start, end int64, what string) {
	h.mu.Lock()
	h.notes = append(h.notes, porcupine.Annotation{Tag: "faults", Start: start, End: end,
		Description: what, BackgroundColor: "#f6c6c6"})
	h.mu.Unlock()
}

// definitelyNotApplied reports errors after which a proposal cannot have
// been applied: refused before it reached Raft. Every other failure
// (ErrResultUnknown, a timeout, a storage failure) may have been applied.
func definitelyNotApplied(err error) bool {
	return errors.Is(err, engine.ErrBusy) || errors.Is(err, engine.ErrShardNotFound) ||
		errors.Is(err, engine.ErrClosed)
}

// maxCheckNodes bounds --nodes in --check (per-node counters).
const maxCheckNodes = 16

// checker is one --check run.
type checker struct {
	o     *options
	c     *cluster
	h     *history
	lat   hist
	stop  atomic.Bool
	puts  atomic.Uint64
	gets  atomic.Uint64
	fails atomic.Uint64
	// failsOn counts failed operations by the node they were sent to.
	failsOn [maxCheckNodes + 1]atomic.Uint64

	faultsMu sync.Mutex
	faults   []string
	// recovery is the longest time, after a fault ended, until every
	// replica knew a leader again.
	recovery atomic.Int64
}

func (ch *checker) keyName(s uint64, k int) string { return fmt.Sprintf("s%d-k%d", s, k) }

// pickNode returns a random open replica node of shard s.
func (ch *checker) pickNode(rnd *rand.Rand, s uint64) (uint64, *engine.Node) {
	place := ch.c.place[s]
	off := rnd.IntN(len(place))
	for i := range place {
		id := place[(off+i)%len(place)]
		if n := ch.c.node(id); n != nil {
			return id, n
		}
	}
	return 0, nil
}

// client puts and gets random keys on random replicas until stopped;
// each operation is recorded.
func (ch *checker) client(ctx context.Context, client int) {
	rnd := rand.New(rand.NewPCG(ch.o.seed, uint64(client)))
	for seq := 0; !ch.stop.Load() && ctx.Err() == nil; seq++ {
		s := uint64(1 + rnd.IntN(ch.o.shards))
		k := ch.keyName(s, rnd.IntN(ch.o.keys))
		id, n := ch.pickNode(rnd, s)
		if n == nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		opCtx, cancel := context.WithTimeout(ctx, ch.o.opTimeout)
		if rnd.Float64() < ch.o.readRatio {
			ch.get(opCtx, client, id, n, s, k)
		} else {
			ch.put(opCtx, client, id, n, s, k, fmt.Sprintf("c%d-%d", client, seq))
		}
		cancel()
	}
}

func (ch *checker) put(ctx context.Context, client int, node uint64, n *engine.Node, s uint64, k, v string) {
	start := time.Now()
	call := ch.h.now()
	_, err := n.Propose(ctx, s, encodePut([]byte(k), []byte(v), 0))
	ret := ch.h.now()
	op := porcupine.Operation{ClientId: client, Input: checkInput{Put: true, Key: k, Value: v},
		Call: call, Output: checkOutput{}, Return: ret}
	switch {
	case err == nil:
		ch.puts.Add(1)
		ch.lat.record(client, time.Since(start))
	case definitelyNotApplied(err):
		ch.fail(node)
		return
	default:
		// Maybe applied, at any time from now on: porcupine may place it
		// anywhere after its call, including after everything else.
		ch.fail(node)
		op.Return = math.MaxInt64
	}
	ch.h.add(op)
}

func (ch *checker) get(ctx context.Context, client int, node uint64, n *engine.Node, s uint64, k string) bool {
	start := time.Now()
	call := ch.h.now()
	v, err := n.Read(ctx, s, []byte(k))
	ret := ch.h.now()
	if err != nil {
		// A failed read changed nothing: not recorded.
		ch.fail(node)
		return false
	}
	ch.gets.Add(1)
	ch.lat.record(client, time.Since(start))
	ch.h.add(porcupine.Operation{ClientId: client, Input: checkInput{Key: k},
		Call: call, Output: checkOutput{Value: string(v)}, Return: ret})
	return true
}

func (ch *checker) fail(node uint64) {
	ch.fails.Add(1)
	ch.failsOn[node].Add(1)
}

// failsByNode formats the failed operations per node.
func (ch *checker) failsByNode() string {
	var parts []string
	for id := 1; id <= ch.o.nodes; id++ {
		parts = append(parts, fmt.Sprintf("%d:%d", id, ch.failsOn[id].Load()))
	}
	return strings.Join(parts, " ")
}

func (ch *checker) logFault(stderr io.Writer, format string, args ...any) {
	s := fmt.Sprintf("%.1fs ", time.Since(ch.h.epoch).Seconds()) + fmt.Sprintf(format, args...)
	fmt.Fprintln(stderr, "fault:", s)
	ch.faultsMu.Lock()
	ch.faults = append(ch.faults, s)
	ch.faultsMu.Unlock()
}

// mostLeading is the open node leading the most shards.
func (ch *checker) mostLeading() uint64 {
	counts := ch.c.leaderCounts()
	best := uint64(0)
	for id := uint64(1); id <= uint64(ch.o.nodes); id++ {
		if ch.c.node(id) == nil {
			continue
		}
		if best == 0 || counts[id] > counts[best] {
			best = id
		}
	}
	return best
}

// nemesis runs the fault schedule until end: every --fault-every (the
// first after half of it) the node leading the most shards gets the next
// fault of --faults: kill (closed, reopened --fault-for later) or
// partition (isolated by its proxies for --fault-for). After each, it
// waits for every replica to know a leader again (a fault due meanwhile
// waits too).
func (ch *checker) nemesis(ctx context.Context, stderr io.Writer, end time.Time) error {
	next := time.Now().Add(ch.o.faultEvery / 2)
	for i := 0; !next.Add(ch.o.faultFor).After(end); i++ {
		if err := sleepUntil(ctx, next); err != nil {
			return err
		}
		id := ch.mostLeading()
		if id == 0 {
			return errors.New("nemesis: no open node")
		}
		led := ch.c.leaderCounts()[id]
		start := ch.h.now()
		if ch.o.faults[i%len(ch.o.faults)] == "kill" {
			ch.logFault(stderr, "kill node %d (leading %d shards)", id, led)
			if err := ch.c.closeNode(id); err != nil {
				return fmt.Errorf("nemesis: close node %d: %w", id, err)
			}
			if err := sleepUntil(ctx, time.Now().Add(ch.o.faultFor)); err != nil {
				return err
			}
			if err := ch.c.reopen(ctx, id); err != nil {
				return err
			}
			ch.logFault(stderr, "reopen node %d", id)
			ch.h.note(start, ch.h.now(), fmt.Sprintf("node %d killed", id))
			ch.awaitLeaders(ctx, stderr)
		} else {
			ch.logFault(stderr, "isolate node %d (leading %d shards)", id, led)
			ch.c.isolate(id, true)
			if err := sleepUntil(ctx, time.Now().Add(ch.o.faultFor)); err != nil {
				ch.c.isolate(id, false)
				return err
			}
			ch.c.isolate(id, false)
			ch.logFault(stderr, "heal node %d", id)
			ch.h.note(start, ch.h.now(), fmt.Sprintf("node %d isolated", id))
			ch.awaitLeaders(ctx, stderr)
		}
		next = next.Add(ch.o.faultEvery)
	}
	return nil
}

// recoveryTimeout bounds the wait for leaders after a fault; the next
// fault waits for it.
const recoveryTimeout = 10 * time.Second

// awaitLeaders waits for every replica to know a leader again, and logs
// how long that took.
func (ch *checker) awaitLeaders(ctx context.Context, stderr io.Writer) {
	start := time.Now()
	if err := ch.c.waitLeaders(ctx, recoveryTimeout); err != nil {
		ch.logFault(stderr, "not every shard led again after %v", recoveryTimeout)
		ch.recovery.Store(int64(time.Since(start)))
		return
	}
	d := time.Since(start)
	ch.logFault(stderr, "every shard led %.2fs later", d.Seconds())
	for {
		old := ch.recovery.Load()
		if int64(d) <= old || ch.recovery.CompareAndSwap(old, int64(d)) {
			return
		}
	}
}

func sleepUntil(ctx context.Context, t time.Time) error {
	select {
	case <-time.After(time.Until(t)):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runCheck records a history under the fault schedule and checks it.
func runCheck(ctx context.Context, o *options, stderr io.Writer) (*Result, error) {
	c, startup, stop, err := startCluster(ctx, o, stderr, true, true)
	if err != nil {
		return nil, err
	}
	defer stop()
	res := newResult(o, "check")
	res.StartupS = round(startup.Seconds(), 3)
	res.WarmupS = 0
	ch := &checker{o: o, c: c, h: &history{epoch: time.Now()}}

	a := takeSample(c.counters(), c.disk())
	end := time.Now().Add(o.duration)
	var wg sync.WaitGroup
	for i := range o.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch.client(ctx, i)
		}()
	}
	nemesisErr := make(chan error, 1)
	go func() { nemesisErr <- ch.nemesis(ctx, stderr, end) }()
	progressErr := sleepCtx(ctx, time.Until(end), func(elapsed time.Duration) {
		fmt.Fprintf(stderr, "%7.1fs  ops %10d  failed %d (by node %s)\n", elapsed.Seconds(),
			ch.puts.Load()+ch.gets.Load(), ch.fails.Load(), ch.failsByNode())
	}, o.progress)
	nerr := <-nemesisErr
	ch.stop.Store(true)
	wg.Wait()
	b := takeSample(c.counters(), c.disk())
	puts, gets, fails, ambiguous := ch.puts.Load(), ch.gets.Load(), ch.fails.Load(), ch.h.ambiguous
	if err := errors.Join(progressErr, nerr); err != nil {
		return nil, err
	}

	// Heal everything; every shard must be led again, and every replica
	// then reads every key (what was acknowledged must be there).
	c.healAll()
	for id := uint64(1); id <= uint64(o.nodes); id++ {
		if c.node(id) == nil {
			if err := c.reopen(ctx, id); err != nil {
				return nil, err
			}
		}
	}
	if err := c.waitLeaders(ctx, 30*time.Second); err != nil {
		return nil, fmt.Errorf("after healing: %w", err)
	}
	if err := ch.finalReads(ctx); err != nil {
		return nil, err
	}

	res.fillWindow(a, b)
	secs := b.at.Sub(a.at).Seconds()
	res.WritesPerSec = round(float64(puts)/secs, 1)
	res.ReadsPerSec = round(float64(gets)/secs, 1)
	res.Ops = int64(puts + gets)
	// Errors and Unknown as in load mode: unknown outcomes apart.
	res.Unknown = int64(ambiguous)
	res.Errors = int64(fails) - res.Unknown
	lat := ch.lat.snapshot()
	res.P50Ms, res.P90Ms = ms(lat.quantile(0.5)), ms(lat.quantile(0.9))
	res.P99Ms, res.P999Ms, res.MaxMs = ms(lat.quantile(0.99)), ms(lat.quantile(0.999)), ms(time.Duration(lat.max))
	res.setLeaders(c.leaderCounts())

	fmt.Fprintf(stderr, "checking %d operations (%d ambiguous writes) with porcupine\n", len(ch.h.ops), ch.h.ambiguous)
	report := &CheckReport{
		Operations: len(ch.h.ops), Ambiguous: ch.h.ambiguous, Keys: o.shards * o.keys,
		Faults: ch.faults, RecoveryS: round(time.Duration(ch.recovery.Load()).Seconds(), 3),
	}
	checkStart := time.Now()
	ok, result, html, cerr := checkHistory(ch.h, o.checkTimeout, o.html)
	report.Result, report.HTML = string(result), html
	report.CheckS = round(time.Since(checkStart).Seconds(), 2)
	res.Linearizable, res.Check = &ok, report
	if cerr != nil {
		return res, cerr
	}
	if !ok {
		return res, notLinearizableError{result: string(result), html: html}
	}
	return res, nil
}

// finalReads reads every key on every replica, retrying until each read
// succeeds; they are recorded as one more client.
func (ch *checker) finalReads(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	client := ch.o.clients
	for s := uint64(1); s <= uint64(ch.o.shards); s++ {
		for k := range ch.o.keys {
			for _, id := range ch.c.place[s] {
				for {
					n := ch.c.node(id)
					rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
					done := n != nil && ch.get(rctx, client, id, n, s, ch.keyName(s, k))
					rcancel()
					if done {
						break
					}
					if ctx.Err() != nil {
						return fmt.Errorf("final read of shard %d on node %d: %w", s, id, ctx.Err())
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
		}
	}
	return nil
}

// checkHistory runs porcupine over the history; unless it is Ok, it
// writes the visualization (to htmlPath, or a new file in the temp dir)
// and returns its path.
func checkHistory(h *history, timeout time.Duration, htmlPath string) (ok bool, res porcupine.CheckResult, html string, err error) {
	res, info := porcupine.CheckOperationsVerbose(kvModel, h.ops, timeout)
	if res == porcupine.Ok {
		return true, res, "", nil
	}
	if htmlPath == "" {
		f, err := os.CreateTemp("", "shardd-check-*.html")
		if err != nil {
			return false, res, "", err
		}
		htmlPath = f.Name()
		f.Close()
	}
	info.AddAnnotations(h.notes)
	if err := porcupine.VisualizePath(kvModel, info, htmlPath); err != nil {
		return false, res, "", fmt.Errorf("writing the visualization: %w", err)
	}
	if abs, err := filepath.Abs(htmlPath); err == nil {
		htmlPath = abs
	}
	return false, res, htmlPath, nil
}
