package chaos

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

var (
	flagDuration     = flag.Duration("chaos.duration", 5*time.Minute, "how long the nemesis and the load run")
	flagSeed         = flag.Uint64("chaos.seed", 0, "seed of the nemesis, the load and the proxies (0: from the clock; printed)")
	flagNodes        = flag.Int("chaos.nodes", 5, "shardd processes")
	flagShards       = flag.Uint64("chaos.shards", 1000, "shards of the key space")
	flagReplicas     = flag.Int("chaos.replicas", 3, "replicas per shard")
	flagWorkers      = flag.Int("chaos.workers", 16, "client goroutines")
	flagKeys         = flag.Int("chaos.keys", 64, "keys the clients use")
	flagOpTimeout    = flag.Duration("chaos.op-timeout", 2*time.Second, "deadline of one client operation")
	flagFaults       = flag.String("chaos.faults", "all", "comma-separated faults the nemesis draws from: "+faultNames())
	flagMaxFaults    = flag.Int("chaos.max-faults", 0, "stop the nemesis after this many faults (0: duration/3s)")
	flagRace         = flag.Bool("chaos.race", false, "build shardd with -race (its logs are scanned for DATA RACE)")
	flagCheckTimeout = flag.Duration("chaos.check-timeout", 5*time.Minute, "porcupine's time limit (a timeout fails the run)")
	flagLedWithin    = flag.Duration("chaos.led-within", 30*time.Second, "every shard must be led this long after healing")
	flagKeep         = flag.Bool("chaos.keep", false, "keep the data dirs and logs when the run passes")
	flagLogLevel     = flag.String("chaos.log-level", "info", "shardd --log-level")
	flagClient       = flag.String("chaos.client", "go", "the workers' client: go (package client, as users run it) or "+
		"raw (the gRPC API, retrying only what certainly did not run)")
)

func faultNames() string {
	var s []string
	for _, f := range allFaults {
		s = append(s, string(f))
	}
	return strings.Join(s, ",")
}

// TestChaos runs real shardd processes behind per-link proxies under a
// nemesis and a recorded client load, then heals everything and checks:
// every shard led again within -chaos.led-within, every acknowledged write
// present, the history linearizable (porcupine), replicas equal (commit,
// applied index, and hash when /status shows it), no panic, fatal, ERROR
// or data race in any log, no process exiting on its own, goroutines and
// open files back near their start, a clean SIGTERM shutdown, and then
// every replica's key-value state at rest equal to its peers' and to the
// final reads.
//
//	go test ./test/chaos -run TestChaos -chaos.duration=5m -timeout 20m -v
//	go test ./test/chaos -run TestChaos -chaos.shards=100 -chaos.duration=30s -chaos.seed=7 -v
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos: starts real shardd processes for minutes; run without -short (make chaos)")
	}
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	faults, err := parseFaults(*flagFaults)
	if err != nil {
		t.Fatal(err)
	}
	if *flagNodes < 3 || *flagReplicas < 1 || *flagReplicas > *flagNodes || *flagShards == 0 || *flagKeys < 1 || *flagWorkers < 1 {
		t.Fatalf("chaos: need -chaos.nodes ≥ 3, 1 ≤ -chaos.replicas ≤ nodes, and shards, keys and workers > 0")
	}
	t.Logf("chaos: seed %d (replay: -chaos.seed=%d -chaos.duration=%v -chaos.nodes=%d -chaos.shards=%d -chaos.faults=%s -chaos.client=%s)",
		seed, seed, *flagDuration, *flagNodes, *flagShards, *flagFaults, *flagClient)
	dir, err := os.MkdirTemp("", "shardd-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || *flagKeep {
			t.Logf("chaos: data dirs, logs and visualizations kept in %s (seed %d)", dir, seed)
			return
		}
		os.RemoveAll(dir)
	})
	r := &run{t: t, dir: dir, seed: seed, faults: faults}
	r.main()
}

// run is one chaos run; its phases are methods.
type run struct {
	t      *testing.T
	dir    string
	seed   uint64
	faults []faultKind

	c       *cluster
	hosting map[uint64][]uint64
	base    map[uint64]procMetrics
	rec     *recorder
	w       *workload
	nem     *nemesis
	healAt  time.Time
	final   map[string]string // each key's value read after the heal ("" = absent)

	loadWG   sync.WaitGroup
	stopLoad func()
}

func (r *run) logf(format string, args ...any) {
	r.t.Helper()
	r.t.Logf(format, args...)
}

func (r *run) main() {
	t := r.t
	start := time.Now()
	bin, err := buildShardd(r.dir, *flagRace)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("chaos: built shardd in %v", time.Since(start).Round(time.Millisecond))

	r.startCluster(bin)

	r.startLoad()
	r.nemesis()
	r.heal()
	r.checkLed()
	r.stopLoad()
	r.checkData()
	r.checkConverged()
	r.checkHistory()
	r.checkProcesses()
	r.shutdown()
	r.checkStores()
	t.Logf("chaos: run took %v", time.Since(start).Round(time.Second))
}

func (r *run) startCluster(bin string) {
	t := r.t
	start := time.Now()
	c, err := startCluster(clusterConfig{bin: bin, dir: r.dir, nodes: *flagNodes,
		shards: *flagShards, replicas: *flagReplicas, seed: r.seed, logLevel: *flagLogLevel, logf: r.logf})
	if err != nil {
		t.Fatal(err)
	}
	r.c = c
	t.Cleanup(func() {
		c.stop()
		httpClient.CloseIdleConnections()
	})
	// Every node answers /status with every shard placement gives it.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for {
		h, err := c.hosting(ctx)
		if err == nil && uint64(len(h)) == *flagShards && r.fullyPlaced(h) {
			r.hosting = h
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("chaos: cluster not up after 3m: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if d, ok := r.waitLed(3 * time.Minute); !ok {
		t.Fatalf("chaos: shards not all led %v after start", d)
	}
	t.Logf("chaos: %d nodes × %d shards × %d replicas up and led in %v", *flagNodes, *flagShards, *flagReplicas,
		time.Since(start).Round(time.Millisecond))
	// Let the elections' traffic settle before the baseline.
	time.Sleep(3 * time.Second)
	r.base = map[uint64]procMetrics{}
	for _, id := range c.ids() {
		m, err := c.metrics(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		r.base[id] = m
	}
	t.Logf("chaos: baseline %s", describeMetrics(r.base))
}

func (r *run) fullyPlaced(h map[uint64][]uint64) bool {
	for _, nodes := range h {
		if len(nodes) != *flagReplicas {
			return false
		}
	}
	return true
}

// waitLed waits until every shard is led on every hosting node; it
// returns how long that took.
func (r *run) waitLed(limit time.Duration) (time.Duration, bool) {
	start := time.Now()
	last := ""
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		all := r.c.allStatus(ctx)
		cancel()
		n, ex := unled(r.hosting, all)
		if n == 0 {
			return time.Since(start), true
		}
		last = fmt.Sprintf("%d shards not led, e.g. %s", n, strings.Join(ex, "; "))
		if time.Since(start) > limit {
			r.t.Logf("chaos: %s", last)
			return time.Since(start), false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startLoad starts the workload; stopLoad ends it.
func (r *run) startLoad() {
	r.rec = newRecorder()
	r.w = &workload{rec: r.rec, addrs: r.c.clientAddrs(), keys: keyNames(*flagKeys), workers: *flagWorkers,
		opTimeout: *flagOpTimeout, seed: r.seed, client: *flagClient}
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	r.stopLoad = func() {
		once.Do(func() {
			cancel()
			r.loadWG.Wait()
			r.t.Logf("chaos: load done: %s", r.rec.summary())
		})
	}
	r.t.Cleanup(r.stopLoad) // when a check fails first
	r.loadWG.Add(2)
	go func() {
		defer r.loadWG.Done()
		if err := r.w.run(ctx); err != nil {
			r.t.Errorf("chaos: workload: %v", err)
		}
	}()
	go func() {
		defer r.loadWG.Done()
		for sleep(ctx, 30*time.Second) {
			r.t.Logf("chaos: %v: %s", time.Duration(r.rec.now()).Round(time.Second), r.rec.summary())
		}
	}()
}

// nemesis runs the nemesis for -chaos.duration, then leaves a last
// fault in place for the heal: the node leading the most shards is
// partitioned and another is killed, so that the shards they share lose
// their quorum and the heal has elections to do.
func (r *run) nemesis() {
	r.nem = newNemesis(r.c, r.rec, r.seed, r.faults, r.hosting, r.logf)
	r.t.Cleanup(r.nem.close)
	r.nem.max = *flagMaxFaults
	if r.nem.max == 0 {
		r.nem.max = max(1, int(*flagDuration/(3*time.Second)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), *flagDuration)
	defer cancel()
	r.nem.run(ctx)
	r.t.Logf("chaos: nemesis: %s", r.nem.summary())
	r.nem.final(5 * time.Second)
}

// heal ends every fault: links pass, paused nodes continue, dead ones
// restart, demoted replicas are promoted back.
func (r *run) heal() {
	t := r.t
	r.c.healLinks()
	for _, id := range r.c.ids() {
		switch r.c.state(id) {
		case nodePaused:
			if err := r.c.resume(id); err != nil {
				t.Error(err)
			}
		case nodeDead:
			if err := r.c.restart(id); err != nil {
				t.Error(err)
			}
		}
	}
	r.healAt = time.Now()
	if failed := r.nem.healMembership(30 * time.Second); len(failed) > 0 {
		t.Errorf("chaos: membership not restored: %v", failed)
	}
	r.nem.close()
	for _, f := range r.nem.failures {
		t.Errorf("chaos: nemesis: %s", f)
	}
}

// checkLed: every shard led on every hosting node within the limit.
func (r *run) checkLed() {
	_, ok := r.waitLed(*flagLedWithin - time.Since(r.healAt))
	d := time.Since(r.healAt)
	if !ok {
		r.t.Errorf("chaos: shards not all led %v after healing (limit %v)", d.Round(time.Millisecond), *flagLedWithin)
		return
	}
	r.t.Logf("chaos: every shard led on every replica %v after healing", d.Round(time.Millisecond))
}

// checkData reads every key and checks the acknowledged writes.
func (r *run) checkData() {
	t := r.t
	final, failed, err := r.w.finalReads(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(failed) > 0 {
		t.Errorf("chaos: keys not readable 30s after healing: %v", failed)
	}
	r.final = final
	bad, acked := lostWrites(r.rec.history(), final)
	for _, b := range bad {
		t.Errorf("chaos: acknowledged write missing: %s", b)
	}
	t.Logf("chaos: %d acknowledged writes; final values of %d keys checked, %d bad", acked, len(final), len(bad))
}

// checkConverged: every shard's replicas reach the same commit, applied
// index (and hash, when exposed), without errors, within 60 s.
func (r *run) checkConverged() {
	start := time.Now()
	hashes := false
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		all := r.c.allStatus(ctx)
		cancel()
		n, ex := diverged(r.hosting, all)
		for id, st := range all {
			if st.Failed != "" {
				n++
				ex = append(ex, fmt.Sprintf("node %d failed: %s", id, st.Failed))
			}
		}
		if len(all) == len(r.c.nodes) && n == 0 {
			for _, st := range all {
				if len(st.LocalShards) > 0 && st.LocalShards[0].Hash != nil {
					hashes = true
				}
			}
			what := "commit and applied index (/status shows no hash)"
			if hashes {
				what = "commit, applied index and hash"
			}
			r.t.Logf("chaos: replicas equal in %s %v after the checks began", what, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > time.Minute {
			r.t.Errorf("chaos: %d shards' replicas still differ after 60s, e.g.:\n%s", n, strings.Join(ex, "\n"))
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// checkHistory runs porcupine.
func (r *run) checkHistory() {
	t := r.t
	h := r.rec.history()
	unknown := 0
	for _, op := range h {
		if op.Return == never {
			unknown++
		}
	}
	cr, err := checkLinearizable(h, *flagCheckTimeout, r.dir, r.nem.timeline())
	if err != nil {
		t.Error(err)
	}
	t.Logf("chaos: history of %d operations (%d maybe-applied writes) checked in %v: %s",
		len(h), unknown, cr.elapsed.Round(time.Millisecond), cr.result)
	if cr.result != porcupine.Ok {
		t.Errorf("chaos: history not linearizable (porcupine: %s); keys at fault: %v; visualization: %s (seed %d)",
			cr.result, cr.badKeys, cr.html, r.seed)
		for _, e := range cr.explain {
			t.Logf("chaos: %s", e)
		}
	}
}

// checkProcesses: no unexpected exit, no bad log line, no failed node,
// goroutines and open files back near their start.
func (r *run) checkProcesses() {
	t := r.t
	for _, e := range r.c.unexpectedExits() {
		t.Errorf("chaos: %s", e)
	}
	logs, err := r.c.scanLogs()
	if err != nil {
		t.Error(err)
	}
	for _, b := range logs.bad {
		t.Errorf("chaos: log: %s", b)
	}
	for _, msg := range sortedKeys(logs.warns) {
		t.Logf("chaos: log: %d WARN lines %s", logs.warns[msg], msg)
	}
	// Idle connections and finished requests let go of their goroutines
	// within a few seconds; poll for a while before judging.
	var last map[uint64]procMetrics
	var over []string
	for deadline := time.Now().Add(30 * time.Second); ; {
		last, over = r.metricsOver()
		if len(over) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	t.Logf("chaos: at the end %s", describeMetrics(last))
	for _, o := range over {
		t.Errorf("chaos: %s", o)
	}
}

// Allowed growth over the baseline: the client connections the nodes
// open to forward requests, the Admin and test clients' server sides.
const (
	goroutineSlack = 100
	fdSlack        = 40
)

func (r *run) metricsOver() (map[uint64]procMetrics, []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[uint64]procMetrics{}
	var over []string
	for _, id := range r.c.ids() {
		m, err := r.c.metrics(ctx, id)
		if err != nil {
			over = append(over, err.Error())
			continue
		}
		out[id] = m
		b := r.base[id]
		if m.goroutines > b.goroutines*1.2+goroutineSlack {
			over = append(over, fmt.Sprintf("node %d: %v goroutines, %v at the start", id, m.goroutines, b.goroutines))
		}
		if m.openFDs > b.openFDs+fdSlack {
			over = append(over, fmt.Sprintf("node %d: %v open files, %v at the start", id, m.openFDs, b.openFDs))
		}
	}
	return out, over
}

func describeMetrics(m map[uint64]procMetrics) string {
	var parts []string
	for id := uint64(1); id <= uint64(len(m)); id++ {
		parts = append(parts, fmt.Sprintf("n%d %.0f goroutines %.0f fds", id, m[id].goroutines, m[id].openFDs))
	}
	return strings.Join(parts, ", ")
}

// checkStores compares the replicas' key-value states in the stopped
// nodes' stores (datadir.go) with each other and with the final reads.
func (r *run) checkStores() {
	t := r.t
	for _, id := range r.c.ids() {
		if r.c.state(id) != nodeDead {
			t.Errorf("chaos: node %d still runs: its store is not read", id)
			return
		}
	}
	start := time.Now()
	stores := map[uint64]map[uint64]replicaData{}
	for _, id := range r.c.ids() {
		var shards []uint64
		for shard, nodes := range r.hosting {
			if slices.Contains(nodes, id) {
				shards = append(shards, shard)
			}
		}
		slices.Sort(shards)
		st, err := readStore(r.c.node(id).dataDir, shards)
		if err != nil {
			t.Errorf("chaos: node %d: %v", id, err)
			continue
		}
		stores[id] = st
	}
	bad, summary := compareStores(r.hosting, stores, r.final, r.w.keys)
	for _, b := range bad {
		t.Errorf("chaos: at rest: %s", b)
	}
	t.Logf("chaos: %s, checked in %v", summary, time.Since(start).Round(time.Millisecond))
}

// shutdown stops every node with SIGTERM: each must exit 0.
func (r *run) shutdown() {
	for _, id := range r.c.ids() {
		if r.c.state(id) == nodeDead {
			continue
		}
		if err := r.c.signal(id, syscall.SIGTERM); err != nil {
			r.t.Errorf("chaos: %v", err)
			continue
		}
		if code := r.c.exitCode(id); code != 0 {
			r.t.Errorf("chaos: node %d exited %d on SIGTERM", id, code)
		}
	}
}
