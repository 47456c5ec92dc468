// Command bench measures shardd: throughput, latency, batching efficiency,
// the cost of idle shards, and linearizability under faults.
//
//	go run ./bench --nodes 3 --shards 1000 --clients 512 --payload 16 --duration 20s [--json FILE]
//	go run ./bench --idle --shards 10000 --duration 20s
//	go run ./bench --check --shards 8 --duration 20s
//	go run ./bench --targets 127.0.0.1:8001,... [--metrics 127.0.0.1:9001,...]
//	go run ./bench --suite --json bench/results/latest.json
//	go run ./bench ... --compare OLD.json
//
// # Modes
//
// In-process (the default): --nodes real engine nodes in this process, each
// with its own Pebble store on disk (fsync on) under a temporary directory
// and real gRPC on loopback; --shards shards, each replicated on --replicas
// nodes (rendezvous hashing over node ids when --nodes > --replicas) and
// running a small in-memory KV state machine (kvsm.go). Once every shard
// has a leader, leadership is moved so that each node leads about
// shards/nodes of them; the spread is reported.
//
// Load: --clients closed-loop clients (each waits for its result), or with
// --rate an open loop: operations are due at a fixed rate, --clients
// workers take them in order, and latency is measured from the time an
// operation was due, so queueing is not hidden (no coordinated omission).
// --read-ratio mixes linearizable reads in; --keys keys per shard, --zipf s
// skews the choice (s > 1; rank r is key r/shards of shard 1+r%shards, so
// low shard ids are hot too). A --warmup precedes the measured --duration.
// In-process clients send each operation to the node that leads its shard.
//
// Remote (--targets): the same load through the client package against a
// running shardd cluster. Node figures (fsyncs, entries per fsync,
// messages) come from the nodes' /metrics when --metrics lists them.
//
// Idle (--idle): start the shards, wait until every one has a leader and
// every replica has quiesced, then measure the process's CPU and RSS and
// the traffic between nodes over --duration with no load.
//
// Check (--check): 3 nodes whose every link goes through a TCP proxy owned
// by the tool; clients put and get a few keys per shard on random
// replicas while a fault schedule alternates killing the node that leads
// the most shards (Close, reopened --fault-for later) and isolating it
// through the proxies. Every operation is recorded and the history is
// checked with porcupine, per key; writes whose outcome is unknown are
// maybe-applied (return time +infinity). It prints "linearizable:
// true/false"; on false it writes porcupine's visualization to --html.
//
// Suite (--suite): the fixed suite of `make bench` — 1, 100 and 1000 shards
// under load and 10000 idle shards, each in a fresh child process of this
// binary (so RSS and CPU do not leak from one run to the next) for
// --duration each; --json gets one file {"suite": true, "runs": [...]}
// holding each run's figures.
//
// # Output
//
// A progress line every second on stderr, then a table on stdout; --json
// FILE writes the same figures (report.go lists the fields; the contract
// ones are in ../shared/API.md). --compare FILE prints, for each figure,
// the earlier value, this run's, and their ratio; --new FILE compares an
// existing result instead of running.
//
// # Profiles
//
// --cpuprofile FILE profiles the measured window (with --idle, the wait for
// quiescence too); --memprofile FILE writes a heap profile at its end;
// --pprof host:port serves net/http/pprof for the whole run, to look at a
// run that misbehaves while it does.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runContext(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		var nl notLinearizableError
		if errors.As(err, &nl) {
			os.Exit(3)
		}
		os.Exit(1)
	}
}

// run is the whole tool: it parses args, runs the selected mode and writes
// the table to stdout and progress to stderr.
func run(args []string, stdout, stderr io.Writer) error {
	return runContext(context.Background(), args, stdout, stderr)
}

// options are the parsed flags.
type options struct {
	nodes, shards, replicas int
	clients, payload, keys  int
	readRatio, zipf, rate   float64
	duration, warmup        time.Duration
	tick, opTimeout         time.Duration
	progress                time.Duration

	idle, check, suite bool
	targets, metrics   []string

	faultEvery, faultFor time.Duration
	faults               []string
	checkTimeout         time.Duration
	html                 string

	jsonPath, compare, newPath string
	dir                        string
	keep                       bool
	name                       string
	seed                       uint64
	logLevel                   string
	cpuProfile                 string
	memProfile                 string
	pprofAddr                  string
}

func (o *options) mode() string {
	switch {
	case o.suite:
		return "suite"
	case o.check:
		return "check"
	case o.idle:
		return "idle"
	case len(o.targets) > 0:
		return "remote"
	}
	return "load"
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.nodes, "nodes", 3, "nodes in this process")
	fs.IntVar(&o.shards, "shards", 100, "shards (default 8 with --check, 10000 with --idle)")
	fs.IntVar(&o.replicas, "replicas", 3, "replicas of each shard")
	fs.IntVar(&o.clients, "clients", 256, "concurrent clients (open loop: workers) (default 16 with --check)")
	fs.IntVar(&o.payload, "payload", 16, "bytes per command (key and value)")
	fs.IntVar(&o.keys, "keys", 1000, "distinct keys per shard (default 2 with --check)")
	fs.Float64Var(&o.readRatio, "read-ratio", 0, "fraction of operations that are linearizable reads (default 0.5 with --check)")
	fs.Float64Var(&o.zipf, "zipf", 0, "zipf skew s (> 1) of the key choice; 0 = uniform")
	fs.Float64Var(&o.rate, "rate", 0, "open loop: operations per second offered; 0 = closed loop")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured window")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "load before the measured window")
	fs.DurationVar(&o.tick, "tick", 0, "engine tick interval (0 = the engine's default, 10ms)")
	fs.DurationVar(&o.opTimeout, "op-timeout", 10*time.Second, "deadline of one operation (default 1s with --check)")
	fs.DurationVar(&o.progress, "progress", time.Second, "progress line period on stderr (0 = none)")
	fs.BoolVar(&o.idle, "idle", false, "measure idle shards: CPU, RSS, messages with no load")
	fs.BoolVar(&o.check, "check", false, "record a history under faults and check linearizability")
	fs.BoolVar(&o.suite, "suite", false, "run the fixed suite of `make bench` (1, 100, 1000 shards; idle 10000)")
	targets := fs.String("targets", "", "comma-separated client API addresses of a running cluster")
	metrics := fs.String("metrics", "", "remote mode: comma-separated /metrics addresses (host:port) of the nodes")
	fs.DurationVar(&o.faultEvery, "fault-every", 2*time.Second, "check: period of the fault schedule")
	fs.DurationVar(&o.faultFor, "fault-for", time.Second, "check: how long a node stays killed or isolated")
	faults := fs.String("faults", "kill,partition", "check: the fault cycle, of kill (close and reopen) and partition (isolate)")
	fs.DurationVar(&o.checkTimeout, "check-timeout", 2*time.Minute, "check: porcupine's time budget (a timeout is a failure)")
	fs.StringVar(&o.html, "html", "", "check: where to write the visualization on failure (default: a file in the temp dir)")
	fs.StringVar(&o.jsonPath, "json", "", "write the figures as JSON to this file")
	fs.StringVar(&o.compare, "compare", "", "print the ratio of each figure against this earlier JSON result")
	fs.StringVar(&o.newPath, "new", "", "with --compare: compare this JSON result instead of running")
	fs.StringVar(&o.dir, "dir", "", "where the in-process nodes' data directory is created (default: the temp dir); it is removed after the run")
	fs.BoolVar(&o.keep, "keep", false, "keep the nodes' data directory")
	fs.StringVar(&o.name, "name", "", "name of the run in JSON and comparisons (default from mode and size)")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the clients' random choices")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the measured window (idle: also the wait for quiescence) to this file")
	fs.StringVar(&o.pprofAddr, "pprof", "", "serve net/http/pprof on this address (host:port) while the run lasts")
	fs.StringVar(&o.memProfile, "memprofile", "", "write a heap profile at the end of the measured window (load modes) to this file")
	fs.StringVar(&o.logLevel, "log", "error", "engine log level on stderr: debug, info, warn, error, none")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	o.targets = splitList(*targets)
	o.metrics = splitList(*metrics)
	o.faults = splitList(*faults)
	switch {
	case o.check:
		defaultInt(set, "shards", &o.shards, 8)
		defaultInt(set, "clients", &o.clients, 16)
		defaultInt(set, "keys", &o.keys, 2)
		if !set["read-ratio"] {
			o.readRatio = 0.5
		}
		if !set["op-timeout"] {
			o.opTimeout = time.Second
		}
	case o.idle:
		defaultInt(set, "shards", &o.shards, 10000)
	}
	return o, o.validate()
}

func defaultInt(set map[string]bool, name string, v *int, def int) {
	if !set[name] {
		*v = def
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// validate reports every bad flag at once.
func (o *options) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	modes := 0
	for _, m := range []bool{o.idle, o.check, o.suite, len(o.targets) > 0} {
		if m {
			modes++
		}
	}
	if modes > 1 {
		bad("--idle, --check, --suite and --targets exclude each other")
	}
	if o.nodes < 1 {
		bad("--nodes must be positive, got %d", o.nodes)
	}
	if o.replicas < 1 || o.replicas > o.nodes {
		bad("--replicas must be in [1, --nodes=%d], got %d", o.nodes, o.replicas)
	}
	if o.shards < 1 {
		bad("--shards must be positive, got %d", o.shards)
	}
	if o.clients < 1 {
		bad("--clients must be positive, got %d", o.clients)
	}
	if o.payload < 1 {
		bad("--payload must be positive, got %d", o.payload)
	}
	if o.keys < 1 {
		bad("--keys must be positive, got %d", o.keys)
	}
	if o.readRatio < 0 || o.readRatio > 1 {
		bad("--read-ratio must be in [0, 1], got %v", o.readRatio)
	}
	if o.zipf != 0 && o.zipf <= 1 {
		bad("--zipf must be > 1 (or 0 for uniform), got %v", o.zipf)
	}
	if o.rate < 0 {
		bad("--rate must not be negative, got %v", o.rate)
	}
	if o.duration <= 0 {
		bad("--duration must be positive, got %v", o.duration)
	}
	if o.warmup < 0 {
		bad("--warmup must not be negative, got %v", o.warmup)
	}
	if o.opTimeout <= 0 {
		bad("--op-timeout must be positive, got %v", o.opTimeout)
	}
	if o.check && o.nodes > maxCheckNodes {
		bad("--check runs at most %d nodes, got %d", maxCheckNodes, o.nodes)
	}
	if o.check && (o.faultEvery <= 0 || o.faultFor <= 0 || o.faultFor >= o.faultEvery) {
		bad("--fault-for must be positive and shorter than --fault-every (%v, %v)", o.faultFor, o.faultEvery)
	}
	if o.check && len(o.faults) == 0 {
		bad("--faults is empty")
	}
	for _, f := range o.faults {
		if f != "kill" && f != "partition" {
			bad("--faults: unknown fault %q (kill, partition)", f)
		}
	}
	if o.newPath != "" && o.compare == "" {
		bad("--new needs --compare")
	}
	if len(o.metrics) > 0 && len(o.targets) == 0 {
		bad("--metrics needs --targets")
	}
	if _, err := parseLevel(o.logLevel); err != nil {
		bad("--log: %v", err)
	}
	return errors.Join(errs...)
}

// runName is the run's name in JSON and comparisons.
func (o *options) runName() string {
	if o.name != "" {
		return o.name
	}
	switch o.mode() {
	case "idle":
		return "idle-" + plural(o.shards, "shard")
	case "check":
		return "check-" + plural(o.shards, "shard")
	case "remote":
		return fmt.Sprintf("remote-%dclients", o.clients)
	}
	return fmt.Sprintf("load-%s-%dclients", plural(o.shards, "shard"), o.clients)
}

func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	// Progress, faults and the engine's log lines come from several
	// goroutines.
	stderr = &lockedWriter{w: stderr}
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if o.newPath != "" {
		return compareFiles(stdout, o.compare, o.newPath)
	}
	// The earlier result is read first: it may be the file this run
	// overwrites, and a bad path should not wait for the run.
	var earlier []map[string]any
	if o.compare != "" {
		if earlier, err = loadRuns(o.compare); err != nil {
			return err
		}
	}
	if o.pprofAddr != "" {
		stopPprof, err := servePprof(o.pprofAddr, stderr)
		if err != nil {
			return err
		}
		defer stopPprof()
	}
	if o.suite {
		return runSuite(ctx, o, earlier, stdout, stderr)
	}
	var res *Result
	switch o.mode() {
	case "check":
		res, err = runCheck(ctx, o, stderr)
	case "idle":
		res, err = runIdle(ctx, o, stderr)
	case "remote":
		res, err = runRemote(ctx, o, stderr)
	default:
		res, err = runLoadInProcess(ctx, o, stderr)
	}
	if res == nil {
		return err
	}
	res.Name = o.runName()
	printTable(stdout, res)
	if o.jsonPath != "" {
		if werr := writeJSON(o.jsonPath, res); werr != nil && err == nil {
			err = werr
		}
	}
	if earlier != nil {
		if cerr := compareWith(stdout, earlier, res); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

// parseLevel maps --log to a slog level; "none" discards everything.
func parseLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	case "none":
		return slog.LevelError + 100, nil
	}
	return 0, fmt.Errorf("unknown level %q", s)
}

func newLogger(o *options, stderr io.Writer) *slog.Logger {
	lvl, _ := parseLevel(o.logLevel)
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1" + what
	}
	return fmt.Sprintf("%d%ss", n, what)
}
