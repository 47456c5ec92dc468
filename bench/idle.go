package main

import (
	"context"
	"fmt"
	"io"
	"strings"
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

	// The profile covers the wait for quiescence as well as the window:
	// what keeps shards awake is the question it answers.
	stopProfile, err := startProfile(o.cpuProfile)
	if err != nil {
		return nil, err
	}
	defer stopProfile()
	quiesceStart := time.Now()
	if err := c.waitQuiesced(ctx, 120*time.Second+time.Duration(o.shards)*10*time.Millisecond, stderr, o.progress); err != nil {
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
// quiesced, printing how many are every progress period. It polls once a
// second: a scrape walks every replica, and at 100000s of them polling
// faster would be a load of its own.
func (c *cluster) waitQuiesced(ctx context.Context, timeout time.Duration, stderr io.Writer, progress time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start, lastPrint := time.Now(), time.Now()
	for {
		missing, quiesced, total := "", 0, 0
		for id, n := range c.nodeList() {
			q, want := int(scrape(n)[famQuiesced]), c.shardsPerNode(id)
			quiesced, total = quiesced+q, total+want
			if q != want && missing == "" {
				missing = fmt.Sprintf("node %d: %d of %d replicas quiesced", id, q, want)
			}
		}
		if missing == "" {
			return nil
		}
		if progress > 0 && time.Since(lastPrint) >= max(progress, 5*time.Second) {
			lastPrint = time.Now()
			fmt.Fprintf(stderr, "%7.1fs  %d of %d replicas quiesced\n", time.Since(start).Seconds(), quiesced, total)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for quiescence: %w (%s)%s", ctx.Err(), missing, c.awakeReplicas(5))
		case <-time.After(time.Second):
		}
	}
}

// awakeReplicas describes up to max shards with a replica that is not
// quiesced, every replica's status of each: what kept them awake.
func (c *cluster) awakeReplicas(max int) string {
	nodes := c.nodeList()
	var b strings.Builder
	found := 0
	for id, n := range nodes {
		for _, s := range c.onNode[id] {
			if found == max {
				return b.String()
			}
			st, err := n.ShardStatus(s)
			if err != nil || st.Quiesced {
				continue
			}
			found++
			fmt.Fprintf(&b, "\nshard %d awake on node %d:", s, id)
			for _, m := range c.place[s] {
				if mn := nodes[m]; mn != nil {
					if ms, err := mn.ShardStatus(s); err == nil {
						fmt.Fprintf(&b, " [node %d %s term %d lead %d commit %d applied %d last %d quiesced %v]",
							m, ms.Role, ms.Term, ms.Leader, ms.Commit, ms.Applied, ms.LastIndex, ms.Quiesced)
					}
				}
			}
		}
	}
	return b.String()
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
