package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/shardd/shardd/client"
)

// runDemo starts 3 nodes in this process on loopback with a temporary data
// dir, runs a mixed load through the client API with a progress bar, prints
// a summary and cleans up. It needs no flags.
func runDemo(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("shardd demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	shards := fs.Uint64("shards", 1000, "shards")
	duration := fs.Duration("duration", 10*time.Second, "length of the load")
	clients := fs.Int("clients", 128, "concurrent clients")
	readRatio := fs.Float64("read-ratio", 0.5, "fraction of reads")
	keep := fs.Bool("keep", false, "keep the data directory")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the load to this file")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	dir, err := os.MkdirTemp("", "shardd-demo-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	fmt.Fprintf(stdout, "shardd demo: 3 nodes, %d shards, data in %s\n", *shards, dir)
	servers, addrs, err := startDemoCluster(dir, *shards, stderr)
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, s := range servers {
			_ = s.stop(ctx)
		}
	}()
	start := time.Now()
	if err := waitForLeaders(servers, 60*time.Second); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "every shard has a leader after %v\n", time.Since(start).Round(time.Millisecond))
	c, err := client.New(addrs, client.Options{})
	if err != nil {
		return err
	}
	defer c.Close()
	fsyncs0, entries0 := persistTotals(servers)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	res := runDemoLoad(c, *clients, *duration, *readRatio, stdout)
	fsyncs1, entries1 := persistTotals(servers)
	printSummary(stdout, res, servers, fsyncs1-fsyncs0, entries1-entries0)
	return nil
}

// startDemoCluster binds loopback ports for 3 nodes and starts them.
func startDemoCluster(dir string, shards uint64, stderr io.Writer) ([]*server, []string, error) {
	type bound struct{ raft, client net.Listener }
	peers := map[uint64]string{}
	clientPeers := map[uint64]string{}
	bs := map[uint64]bound{}
	for id := uint64(1); id <= 3; id++ {
		rl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		cl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		bs[id] = bound{rl, cl}
		peers[id] = rl.Addr().String()
		clientPeers[id] = cl.Addr().String()
	}
	var servers []*server
	var addrs []string
	for id := uint64(1); id <= 3; id++ {
		f := &serveFlags{nodeID: id, clusterID: 1, listen: peers[id], clientListen: clientPeers[id],
			peers: peers, clientPeers: clientPeers, dataDir: fmt.Sprintf("%s/node%d", dir, id),
			shards: shards, replicas: 3, tick: 10 * time.Millisecond, logFormat: "text", logLevel: "warn"}
		s, err := newServer(f, newLogger("text", "warn", stderr),
			listeners{raft: bs[id].raft, client: bs[id].client})
		if err != nil {
			return nil, nil, err
		}
		servers = append(servers, s)
		addrs = append(addrs, clientPeers[id])
	}
	return servers, addrs, nil
}

func waitForLeaders(servers []*server, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		missing := 0
		for _, s := range servers {
			for _, id := range s.node.Shards() {
				if _, _, ok := s.node.Leader(id); !ok {
					missing++
				}
			}
		}
		if missing == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d replicas still without a leader after %v", missing, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type loadResult struct {
	writes, reads, errors int64
	lat                   []time.Duration
	elapsed               time.Duration
	errKinds              map[string]int
}

// runDemoLoad runs closed-loop clients doing puts and linearizable gets
// over random keys, drawing a progress bar.
func runDemoLoad(c *client.Client, clients int, d time.Duration, readRatio float64, out io.Writer) loadResult {
	var res loadResult
	var mu sync.Mutex
	var ops atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 7))
			var lat []time.Duration
			var writes, reads, errs int64
			kinds := map[string]int{}
			for time.Now().Before(end) {
				key := []byte(fmt.Sprintf("key-%06d", r.IntN(100000)))
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				var err error
				if r.Float64() < readRatio {
					_, _, err = c.Get(ctx, key)
					reads++
				} else {
					_, err = c.Put(ctx, key, []byte(fmt.Sprintf("value-%d", r.Uint32())))
					writes++
				}
				cancel()
				if err != nil {
					errs++
					msg := err.Error()
					if len(msg) > 60 {
						msg = msg[:60]
					}
					kinds[msg]++
					continue
				}
				lat = append(lat, time.Since(t0))
				ops.Add(1)
			}
			mu.Lock()
			res.writes += writes
			res.reads += reads
			res.errors += errs
			res.lat = append(res.lat, lat...)
			if res.errKinds == nil {
				res.errKinds = map[string]int{}
			}
			for k, v := range kinds {
				res.errKinds[k] += v
			}
			mu.Unlock()
		}(i)
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	const width = 40
	for loop := true; loop; {
		select {
		case <-done:
			loop = false
		case <-tick.C:
		}
		el := time.Since(start)
		frac := min(float64(el)/float64(d), 1)
		n := int(frac * width)
		rate := float64(ops.Load()) / el.Seconds()
		fmt.Fprintf(out, "\r[%s%s] %5.1fs %9d ops %9.0f ops/s", strings.Repeat("#", n),
			strings.Repeat(".", width-n), el.Seconds(), ops.Load(), rate)
	}
	fmt.Fprintln(out)
	res.elapsed = time.Since(start)
	return res
}

func persistTotals(servers []*server) (fsyncs, entries float64) {
	for _, s := range servers {
		var b strings.Builder
		s.node.WritePrometheus(&b)
		for _, line := range strings.Split(b.String(), "\n") {
			var v float64
			if _, err := fmt.Sscanf(line, "shardd_fsyncs_total %g", &v); err == nil {
				fsyncs += v
			}
			if _, err := fmt.Sscanf(line, "shardd_persisted_entries_total %g", &v); err == nil {
				entries += v
			}
		}
	}
	return fsyncs, entries
}

func percentile(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	return lat[min(int(p*float64(len(lat))), len(lat)-1)]
}

func printSummary(out io.Writer, res loadResult, servers []*server, fsyncs, entries float64) {
	sort.Slice(res.lat, func(i, j int) bool { return res.lat[i] < res.lat[j] })
	secs := res.elapsed.Seconds()
	leaders := map[uint64]int{}
	for _, id := range servers[0].node.Shards() {
		if l, _, ok := servers[0].node.Leader(id); ok {
			leaders[l]++
		}
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "writes/s\t%.0f\n", float64(res.writes)/secs)
	fmt.Fprintf(w, "reads/s\t%.0f\n", float64(res.reads)/secs)
	fmt.Fprintf(w, "p50\t%v\n", percentile(res.lat, 0.50).Round(10*time.Microsecond))
	fmt.Fprintf(w, "p99\t%v\n", percentile(res.lat, 0.99).Round(10*time.Microsecond))
	fmt.Fprintf(w, "errors\t%d\n", res.errors)
	for k, v := range res.errKinds {
		fmt.Fprintf(w, "  %d\t%s\n", v, k)
	}
	fmt.Fprintf(w, "leaders per node\t1:%d 2:%d 3:%d\n", leaders[1], leaders[2], leaders[3])
	if fsyncs > 0 {
		fmt.Fprintf(w, "entries per fsync\t%.1f\n", entries/fsyncs)
	}
	w.Flush()
}
