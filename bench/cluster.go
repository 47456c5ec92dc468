package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/shardd/shardd/engine"
)

// clusterOptions configure an in-process cluster.
type clusterOptions struct {
	nodes, replicas, shards int
	dir                     string
	tick                    time.Duration
	// proxied puts a linkProxy on every directed link (--check).
	proxied bool
	logger  *slog.Logger
}

// link is a directed link between two nodes.
type link struct{ from, to uint64 }

// cluster is --nodes engine nodes in this process on real Pebble stores and
// real gRPC on loopback.
type cluster struct {
	o     clusterOptions
	addrs map[uint64]string            // node -> its listen address
	peers map[uint64]map[uint64]string // node -> the Peers map it is given
	links map[link]*linkProxy          // with proxied
	// place[s] are the nodes of shard s (index 0 unused); onNode the
	// reverse.
	place  [][]uint64
	onNode map[uint64][]uint64

	mu    sync.RWMutex
	nodes map[uint64]*engine.Node // nil while closed
	dbs   map[uint64]*pebble.DB
	// retired adds up the counters of node incarnations already closed, so
	// that sums over the cluster only grow.
	retired   map[string]float64
	retiredDB diskCounters

	elections *electionCounter
}

// electionCounter is every node's engine.EventListener: it counts leader
// elections, each (shard, term) once however many replicas report it.
type electionCounter struct {
	mu    sync.Mutex
	terms map[uint64]uint64
	n     uint64
}

func (e *electionCounter) LeaderChanged(shardID, leaderID, term uint64) {
	if leaderID == 0 {
		return
	}
	e.mu.Lock()
	if term > e.terms[shardID] {
		e.terms[shardID] = term
		e.n++
	}
	e.mu.Unlock()
}

func (e *electionCounter) MembershipChanged(shardID uint64, voters, learners []uint64) {}
func (e *electionCounter) ShardStopped(shardID uint64, err error)                      {}

func (e *electionCounter) count() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n
}

// newCluster binds every node's address (and proxies), then opens the
// nodes. It starts no shard.
func newCluster(o clusterOptions) (*cluster, error) {
	c := &cluster{
		o:         o,
		addrs:     map[uint64]string{},
		peers:     map[uint64]map[uint64]string{},
		links:     map[link]*linkProxy{},
		onNode:    map[uint64][]uint64{},
		nodes:     map[uint64]*engine.Node{},
		dbs:       map[uint64]*pebble.DB{},
		retired:   map[string]float64{},
		elections: &electionCounter{terms: map[uint64]uint64{}},
	}
	c.place = placement(o.shards, o.nodes, o.replicas)
	for s := 1; s <= o.shards; s++ {
		for _, id := range c.place[s] {
			c.onNode[id] = append(c.onNode[id], uint64(s))
		}
	}
	lns := map[uint64]net.Listener{}
	for id := uint64(1); id <= uint64(o.nodes); id++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			c.closeListeners(lns)
			return nil, err
		}
		lns[id] = ln
		c.addrs[id] = ln.Addr().String()
	}
	for id := range c.addrs {
		c.peers[id] = map[uint64]string{}
		for to, addr := range c.addrs {
			if o.proxied && to != id {
				p, err := newLinkProxy(addr)
				if err != nil {
					c.closeListeners(lns)
					c.closeProxies()
					return nil, err
				}
				c.links[link{id, to}] = p
				addr = p.addr()
			}
			c.peers[id][to] = addr
		}
	}
	for id := uint64(1); id <= uint64(o.nodes); id++ {
		if err := c.open(id, lns[id]); err != nil {
			delete(lns, id)
			c.closeListeners(lns)
			c.closeAll()
			return nil, err
		}
		delete(lns, id)
	}
	return c, nil
}

func (c *cluster) closeListeners(lns map[uint64]net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}

func (c *cluster) closeProxies() {
	for _, p := range c.links {
		p.close()
	}
}

func (c *cluster) open(id uint64, ln net.Listener) error {
	cfg := engine.Config{
		NodeID:          id,
		ClusterID:       0xbe4c,
		ListenAddr:      c.addrs[id],
		Listener:        ln,
		Peers:           c.peers[id],
		DataDir:         filepath.Join(c.o.dir, fmt.Sprint("node", id)),
		TickInterval:    c.o.tick,
		Logger:          c.o.logger, // the engine attaches node=<id>
		NewStateMachine: newKV,
		Events:          c.elections,
		OnStoreOpen: func(db *pebble.DB) error {
			c.mu.Lock()
			c.dbs[id] = db
			c.mu.Unlock()
			return nil
		},
	}
	n, err := engine.Open(cfg)
	if err != nil {
		ln.Close()
		return fmt.Errorf("open node %d: %w", id, err)
	}
	c.mu.Lock()
	c.nodes[id] = n
	c.mu.Unlock()
	return nil
}

// node returns node id, or nil while it is closed.
func (c *cluster) node(id uint64) *engine.Node {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.nodes[id]
}

// nodeList returns the open nodes by id.
func (c *cluster) nodeList() map[uint64]*engine.Node {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[uint64]*engine.Node, len(c.nodes))
	for id, n := range c.nodes {
		if n != nil {
			out[id] = n
		}
	}
	return out
}

// closeNode closes node id (a kill, as far as Raft can tell: nothing
// acknowledged is lost since it is durable). Its counters are retired.
func (c *cluster) closeNode(id uint64) error {
	c.mu.Lock()
	n := c.nodes[id]
	c.nodes[id] = nil
	db := c.dbs[id]
	delete(c.dbs, id)
	c.mu.Unlock()
	if n == nil {
		return nil
	}
	counters := scrape(n)
	var dc diskCounters
	if db != nil {
		dc = diskOf(db)
	}
	err := n.Close()
	c.mu.Lock()
	for k, v := range counters {
		if strings.HasSuffix(k, "_total") {
			c.retired[k] += v
		}
	}
	c.retiredDB.add(dc)
	c.mu.Unlock()
	return err
}

// reopen opens node id again on its address.
func (c *cluster) reopen(ctx context.Context, id uint64) error {
	var ln net.Listener
	var err error
	for {
		if ln, err = net.Listen("tcp", c.addrs[id]); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("reopen node %d: %w", id, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return c.open(id, ln)
}

// closeAll closes every node and proxy.
func (c *cluster) closeAll() error {
	var errs []error
	for id := uint64(1); id <= uint64(c.o.nodes); id++ {
		if err := c.closeNode(id); err != nil {
			errs = append(errs, err)
		}
	}
	c.closeProxies()
	return errors.Join(errs...)
}

// isolate blocks (or heals) every link to and from node id.
func (c *cluster) isolate(id uint64, blocked bool) {
	for l, p := range c.links {
		if l.from == id || l.to == id {
			p.setBlocked(blocked)
		}
	}
}

// healAll unblocks every link.
func (c *cluster) healAll() {
	for _, p := range c.links {
		p.setBlocked(false)
	}
}

// startShards starts every shard's replicas, many at once per node so
// that the creations share flushes.
func (c *cluster) startShards(ctx context.Context) error {
	const perNode = 128
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for id, n := range c.nodeList() {
		work := make(chan uint64)
		for range perNode {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for s := range work {
					err := n.StartShard(engine.ShardConfig{ShardID: s, Members: c.place[s]})
					if err != nil {
						mu.Lock()
						errs = append(errs, fmt.Errorf("start shard %d on node %d: %w", s, id, err))
						mu.Unlock()
					}
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(work)
			for _, s := range c.onNode[id] {
				select {
				case work <- s:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}

// waitLeaders waits until every replica on an open node knows its shard's
// leader.
func (c *cluster) waitLeaders(ctx context.Context, timeout time.Duration) error {
	return c.waitAll(ctx, timeout, "every shard led", func(n *engine.Node, id, s uint64) bool {
		_, _, ok := n.Leader(s)
		return ok
	})
}

// waitAll polls f over every replica of the open nodes until it holds for
// all of them.
func (c *cluster) waitAll(ctx context.Context, timeout time.Duration, what string, f func(n *engine.Node, id, s uint64) bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := map[uint64]int{} // node -> replicas known to hold, in onNode order
	for {
		missing := ""
		for id, n := range c.nodeList() {
			list := c.onNode[id]
			for done[id] < len(list) && f(n, id, list[done[id]]) {
				done[id]++
			}
			if done[id] < len(list) && missing == "" {
				missing = fmt.Sprintf("shard %d on node %d", list[done[id]], id)
			}
		}
		if missing == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (still missing: %s)", what, ctx.Err(), missing)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// leaderOf returns the shard's leader as its first open replica knows it.
func (c *cluster) leaderOf(s uint64) uint64 {
	for _, id := range c.place[s] {
		if n := c.node(id); n != nil {
			if l, _, ok := n.Leader(s); ok {
				return l
			}
		}
	}
	return 0
}

// leaderCounts counts the shards each node leads (0: no leader known).
func (c *cluster) leaderCounts() map[uint64]int {
	out := map[uint64]int{}
	for id := uint64(1); id <= uint64(c.o.nodes); id++ {
		out[id] = 0
	}
	for s := 1; s <= c.o.shards; s++ {
		out[c.leaderOf(uint64(s))]++
	}
	if out[0] == 0 {
		delete(out, 0)
	}
	return out
}

// spreadLeaders moves leadership so that each node leads about
// shards/nodes shards: moves are planned greedily (a shard moves from its
// leader to its replica leading fewest, while that narrows the gap by
// more than one), then run a few dozen at a time. Transfers that fail are
// left as they are; the spread is reported.
func (c *cluster) spreadLeaders(ctx context.Context, timeout time.Duration) error {
	counts := c.leaderCounts()
	leader := make([]uint64, c.o.shards+1)
	for s := 1; s <= c.o.shards; s++ {
		leader[s] = c.leaderOf(uint64(s))
	}
	type move struct{ shard, from, to uint64 }
	var moves []move
	for moved := true; moved; {
		moved = false
		for s := 1; s <= c.o.shards; s++ {
			from := leader[s]
			if from == 0 {
				continue
			}
			best := from
			for _, id := range c.place[s] {
				if counts[id] < counts[best] {
					best = id
				}
			}
			if counts[from]-counts[best] > 1 {
				counts[from]--
				counts[best]++
				leader[s] = best
				moves = append(moves, move{uint64(s), from, best})
				moved = true
			}
		}
	}
	// A shard moved twice goes straight to its final leader.
	final := map[uint64]move{}
	for _, m := range moves {
		if f, ok := final[m.shard]; ok {
			m.from = f.from
		}
		final[m.shard] = m
	}
	moves = moves[:0]
	for _, m := range final {
		if m.from != m.to {
			moves = append(moves, m)
		}
	}
	if len(moves) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for _, m := range moves {
		n := c.node(m.from)
		if n == nil {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			tctx, tcancel := context.WithTimeout(ctx, 5*time.Second)
			defer tcancel()
			_ = n.TransferLeader(tctx, m.shard, m.to)
		}()
	}
	wg.Wait()
	return nil
}

// placement assigns each shard's replicas: every node when nodes ==
// replicas, else the replicas highest random weights over node ids
// (rendezvous hashing with a stable hash of (shard, node)), so adding a
// node moves only the shards it wins. place[s] is sorted; place[0] unused.
func placement(shards, nodes, replicas int) [][]uint64 {
	place := make([][]uint64, shards+1)
	all := make([]uint64, nodes)
	for i := range all {
		all[i] = uint64(i + 1)
	}
	for s := 1; s <= shards; s++ {
		if replicas >= nodes {
			place[s] = slices.Clone(all)
			continue
		}
		cand := slices.Clone(all)
		sort.Slice(cand, func(i, j int) bool {
			wi, wj := rendezvousWeight(uint64(s), cand[i]), rendezvousWeight(uint64(s), cand[j])
			if wi != wj {
				return wi > wj
			}
			return cand[i] < cand[j]
		})
		place[s] = cand[:replicas]
		slices.Sort(place[s])
	}
	return place
}

// rendezvousWeight is a stable hash of (shard, node): splitmix64's
// finalizer over both.
func rendezvousWeight(shard, node uint64) uint64 {
	x := shard*0x9e3779b97f4a7c15 ^ (node+0x632be59bd9b4e019)*0xbf58476d1ce4e5b9
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// scrape reads a node's metrics: each family summed over its labels.
func scrape(n *engine.Node) map[string]float64 {
	var b bytes.Buffer
	n.WritePrometheus(&b)
	return parseProm(b.Bytes())
}

// counters sums the node metrics of every open node plus the retired
// counters of closed incarnations.
func (c *cluster) counters() map[string]float64 {
	out := map[string]float64{}
	c.mu.RLock()
	for k, v := range c.retired {
		out[k] += v
	}
	c.mu.RUnlock()
	for _, n := range c.nodeList() {
		for k, v := range scrape(n) {
			out[k] += v
		}
	}
	out[famElections] = float64(c.elections.count())
	return out
}

// disk sums the Pebble write counters of every store, closed ones
// included.
func (c *cluster) disk() diskCounters {
	c.mu.RLock()
	defer c.mu.RUnlock()
	d := c.retiredDB
	for _, db := range c.dbs {
		d.add(diskOf(db))
	}
	return d
}

// diskCounters are a store's cumulative write volumes.
type diskCounters struct {
	walBytes  uint64 // written to the WAL (the log entries' path)
	diskBytes uint64 // WAL plus memtable flushes plus compactions
}

func (d *diskCounters) add(o diskCounters) {
	d.walBytes += o.walBytes
	d.diskBytes += o.diskBytes
}

func diskOf(db *pebble.DB) diskCounters {
	m := db.Metrics()
	t := m.Total()
	return diskCounters{
		walBytes:  m.WAL.BytesWritten,
		diskBytes: m.WAL.BytesWritten + t.TableBytesFlushed + t.TableBytesCompacted,
	}
}

// shardsPerNode is the number of replicas each node hosts.
func (c *cluster) shardsPerNode(id uint64) int { return len(c.onNode[id]) }
