package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"
)

// dataDir creates the directory the nodes' stores go under: a new one
// under --dir (default: the system's temp dir), so that no run finds
// another's shards; the returned function removes it unless --keep.
func dataDir(o *options) (string, func(), error) {
	if o.dir != "" {
		if err := os.MkdirAll(o.dir, 0o755); err != nil {
			return "", nil, err
		}
	}
	dir, err := os.MkdirTemp(o.dir, "shardd-bench-")
	if err != nil {
		return "", nil, err
	}
	if o.keep {
		return dir, func() {}, nil
	}
	return dir, func() { _ = os.RemoveAll(dir) }, nil
}

// startCluster opens the nodes, starts every shard and waits for their
// leaders; spread moves leadership so that each node leads about as many
// shards. It returns the cluster and the time all that took.
func startCluster(ctx context.Context, o *options, stderr io.Writer, proxied, spread bool) (*cluster, time.Duration, func(), error) {
	dir, cleanup, err := dataDir(o)
	if err != nil {
		return nil, 0, nil, err
	}
	start := time.Now()
	c, err := newCluster(clusterOptions{
		nodes: o.nodes, replicas: o.replicas, shards: o.shards,
		dir: dir, tick: o.tick, proxied: proxied, logger: newLogger(o, stderr),
	})
	if err != nil {
		cleanup()
		return nil, 0, nil, err
	}
	stop := func() {
		if err := c.closeAll(); err != nil {
			fmt.Fprintln(stderr, "bench: closing the cluster:", err)
		}
		cleanup()
	}
	fail := func(err error) (*cluster, time.Duration, func(), error) {
		stop()
		return nil, 0, nil, err
	}
	fmt.Fprintf(stderr, "starting %d shards x %d replicas on %d nodes in %s\n", o.shards, o.replicas, o.nodes, dir)
	if err := c.startShards(ctx); err != nil {
		return fail(err)
	}
	// Elections of thousands of shards on a loaded machine take a while;
	// the bound is generous, the time taken is reported.
	leadTimeout := 60*time.Second + time.Duration(o.shards)*20*time.Millisecond
	if err := c.waitLeaders(ctx, leadTimeout); err != nil {
		return fail(err)
	}
	fmt.Fprintf(stderr, "every shard led after %.2fs\n", time.Since(start).Seconds())
	if spread && o.nodes > 1 {
		if err := c.spreadLeaders(ctx, 60*time.Second); err != nil {
			return fail(err)
		}
		if err := c.waitLeaders(ctx, leadTimeout); err != nil {
			return fail(err)
		}
	}
	return c, time.Since(start), stop, nil
}

// runLoadInProcess is the default mode.
func runLoadInProcess(ctx context.Context, o *options, stderr io.Writer) (*Result, error) {
	c, startup, stop, err := startCluster(ctx, o, stderr, false, true)
	if err != nil {
		return nil, err
	}
	defer stop()
	res := newResult(o, "load")
	res.StartupS = round(startup.Seconds(), 3)
	res.setLeaders(c.leaderCounts())
	fmt.Fprintf(stderr, "leaders per node: %s; load for %v + %v warm-up\n",
		leadersString(res.LeadersPerNode), o.duration, o.warmup)
	st := &localStore{c: c, payload: o.payload}
	stats, err := runLoad(ctx, loadConfigOf(o), st, stderr, func() sample {
		return takeSample(c.counters(), c.disk())
	})
	if err != nil {
		return nil, err
	}
	stats.fill(res)
	res.setLeaders(c.leaderCounts())
	return res, nil
}
