package main

import (
	"context"
	"fmt"
	"io"
	"time"
)

// runIdle measures the cost of idle shards: once every shard is led and
// every replica has quiesced (each node's shardd_quiesced_shards equals
// the replicas it hosts), CPU, RSS and the traffic between nodes over
// --duration with no load.
func runIdle(ctx context.Context, o *options, stderr io.Writer) (*Result, error) {
	c, startup, stop, err := startCluster(ctx, o, stderr, false, false)
	if err != nil {
		return nil, err
	}
	defer stop()
	res := newResult(o, "idle")
	res.Loop, res.Clients, res.Payload, res.Keys, res.ReadRatio, res.WarmupS = "none", 0, 0, 0, 0, 0
	res.StartupS = round(startup.Seconds(), 3)
	res.setLeaders(c.leaderCounts())

	quiesceStart := time.Now()
	if err := c.waitQuiesced(ctx, 120*time.Second+time.Duration(o.shards)*10*time.Millisecond); err != nil {
		return nil, err
	}
	res.QuiesceS = round(time.Since(quiesceStart).Seconds(), 3)
	fmt.Fprintf(stderr, "every replica quiesced after %.2fs more; measuring %v idle\n", res.QuiesceS, o.duration)

	a := takeSample(c.counters(), c.disk())
	// The progress line reads only the process's CPU time: scraping the
	// nodes' metrics walks every replica and would be measured as well.
	lastCPU, lastAt := a.cpu, a.at
	if err := sleepCtx(ctx, o.duration, func(elapsed time.Duration) {
		cpu, now := cpuTime(), time.Now()
		fmt.Fprintf(stderr, "%7.1fs  idle  CPU %.1f%% of one core\n", elapsed.Seconds(),
			100*(cpu-lastCPU).Seconds()/now.Sub(lastAt).Seconds())
		lastCPU, lastAt = cpu, now
	}, o.progress); err != nil {
		return nil, err
	}
	b := takeSample(c.counters(), c.disk())
	res.fillWindow(a, b)
	res.setLeaders(c.leaderCounts())
	return res, nil
}

// waitQuiesced waits until every open node reports all its replicas
// quiesced.
func (c *cluster) waitQuiesced(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		missing := ""
		for id, n := range c.nodeList() {
			q := scrape(n)[famQuiesced]
			if want := c.shardsPerNode(id); int(q) != want && missing == "" {
				missing = fmt.Sprintf("node %d: %d of %d replicas quiesced", id, int(q), want)
			}
		}
		if missing == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for quiescence: %w (%s)", ctx.Err(), missing)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// sleepCtx sleeps for d, calling tick every period (if > 0) with the time
// elapsed.
func sleepCtx(ctx context.Context, d time.Duration, tick func(time.Duration), period time.Duration) error {
	start := time.Now()
	end := time.After(d)
	var tc <-chan time.Time
	if period > 0 {
		t := time.NewTicker(period)
		defer t.Stop()
		tc = t.C
	}
	for {
		select {
		case <-end:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tc:
			tick(time.Since(start))
		}
	}
}
