package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	sharddv1 "github.com/shardd/shardd/api/shardd/v1"
)

// The nemesis injects one fault at a time, drawn from a seeded source:
// every gap (3–8 s by default) a fault for a hold time (2–6 s), then it
// heals that fault. The run is bounded in time (the context) and in count
// (maxFaults). Node faults strike a random node or, half of the time, the
// node leading the most shards.
//
//	kill       SIGKILL the node, restart it on its data dir after the hold
//	term       SIGTERM (graceful drain and close), restart after the hold
//	pause      SIGSTOP, SIGCONT after the hold
//	partition  blackhole every link from and to the node (both directions)
//	oneway     blackhole one directed link i -> j (j stops hearing i; i
//	           still hears j)
//	mute       blackhole every link from the node (it hears, nobody
//	           hears it: a leader that cannot reach its followers)
//	refuse     reset every connection from and to the node and refuse new
//	           ones (dials fail fast, unlike partition)
//	delay      every link of the node delays each chunk 20–800 ms (+ up
//	           to 50 ms jitter): below and above shardd's election
//	           timeout (50 ticks of 10 ms by default)
//	drop       every link resets its connection with probability 0.5–5 %
//	           per forwarded chunk
//	transfers  a leader-transfer storm: 20 TransferLeader calls on
//	           random shards (written ones first), 4 at a time
//	membership demote one voter of a written shard to learner, promote
//	           it back after the hold
//	remove     remove one voter of a written shard from its membership
//	           altogether (its replica lives on, cut off, and may campaign);
//	           after the hold add it back as a learner, then as a voter
//	snapshot   every replica of every written shard snapshots now
//	           (Admin.RequestSnapshot), so later restarts start from a
//	           snapshot; the log is kept 5000 entries behind it, so this
//	           does not make followers install snapshots
type faultKind string

const (
	faultKill       faultKind = "kill"
	faultTerm       faultKind = "term"
	faultPause      faultKind = "pause"
	faultPartition  faultKind = "partition"
	faultOneWay     faultKind = "oneway"
	faultMute       faultKind = "mute"
	faultRefuse     faultKind = "refuse"
	faultDelay      faultKind = "delay"
	faultDrop       faultKind = "drop"
	faultTransfers  faultKind = "transfers"
	faultMembership faultKind = "membership"
	faultRemove     faultKind = "remove"
	faultSnapshot   faultKind = "snapshot"
)

var allFaults = []faultKind{faultKill, faultTerm, faultPause, faultPartition, faultOneWay, faultMute, faultRefuse,
	faultDelay, faultDrop, faultTransfers, faultMembership, faultRemove, faultSnapshot}

func parseFaults(s string) ([]faultKind, error) {
	if s == "" || s == "all" {
		return allFaults, nil
	}
	var out []faultKind
	for _, name := range strings.Split(s, ",") {
		k := faultKind(strings.TrimSpace(name))
		if !slices.Contains(allFaults, k) {
			return nil, fmt.Errorf("unknown fault %q (known: %v)", k, allFaults)
		}
		out = append(out, k)
	}
	return out, nil
}

// nemesis runs the faults on a cluster.
type nemesis struct {
	c       *cluster
	rec     *recorder
	rnd     *rand.Rand
	faults  []faultKind
	gap     [2]time.Duration
	hold    [2]time.Duration
	max     int
	logf    func(format string, args ...any)
	hosting map[uint64][]uint64

	adminMu sync.Mutex
	admins  map[uint64]sharddv1.AdminClient
	conns   []*grpc.ClientConn

	mu       sync.Mutex
	events   []nemesisEvent
	demoted  map[uint64]uint64 // shard -> node demoted and not yet promoted
	counts   map[string]int
	failures []string
}

func newNemesis(c *cluster, rec *recorder, seed uint64, faults []faultKind, hosting map[uint64][]uint64,
	logf func(string, ...any)) *nemesis {
	return &nemesis{c: c, rec: rec, rnd: rand.New(rand.NewPCG(seed, 0x6e656d)), faults: faults,
		gap: [2]time.Duration{3 * time.Second, 8 * time.Second}, hold: [2]time.Duration{2 * time.Second, 6 * time.Second},
		logf: logf, hosting: hosting, admins: map[uint64]sharddv1.AdminClient{},
		demoted: map[uint64]uint64{}, counts: map[string]int{}}
}

func (n *nemesis) between(r [2]time.Duration) time.Duration {
	return r[0] + time.Duration(n.rnd.Int64N(int64(r[1]-r[0])+1))
}

// sleep waits d or until ctx is done; false if ctx is done.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// run injects faults until ctx is done or max faults ran; a fault under
// way when ctx ends is healed at once.
func (n *nemesis) run(ctx context.Context) {
	for i := 0; n.max == 0 || i < n.max; i++ {
		if !sleep(ctx, n.between(n.gap)) {
			return
		}
		kind := n.faults[n.rnd.IntN(len(n.faults))]
		hold := n.between(n.hold)
		start := n.rec.now()
		what, heal := n.inject(ctx, kind)
		n.logf("nemesis %3d at %6.1fs: %s for %v", i+1, time.Duration(start).Seconds(), what, hold)
		sleep(ctx, hold)
		if heal != nil {
			heal()
		}
		n.mu.Lock()
		n.events = append(n.events, nemesisEvent{start: start, end: n.rec.now(), what: what})
		n.counts[string(kind)]++
		n.mu.Unlock()
	}
}

// final partitions the node leading the most shards and kills another,
// holds that for d and returns, leaving both faults for the heal.
func (n *nemesis) final(d time.Duration) {
	ctx := context.Background()
	part := n.leaderHeavy(ctx)
	victim := uint64(1 + n.rnd.IntN(len(n.c.nodes)-1))
	if victim >= part {
		victim++
	}
	start := n.rec.now()
	n.c.isolate(part, linkFault{Blackhole: true})
	if n.c.state(victim) != nodeDead {
		if err := n.c.kill(victim); err != nil {
			n.fail("kill %d: %v", victim, err)
		}
	}
	what := fmt.Sprintf("final: blackhole every link of node %d, kill -9 node %d, until the heal", part, victim)
	n.logf("nemesis  at %6.1fs: %s (%v before it)", time.Duration(start).Seconds(), what, d)
	time.Sleep(d)
	n.mu.Lock()
	n.events = append(n.events, nemesisEvent{start: start, end: n.rec.now(), what: what})
	n.mu.Unlock()
}

// inject starts one fault and returns its description and its heal.
func (n *nemesis) inject(ctx context.Context, kind faultKind) (string, func()) {
	switch kind {
	case faultKill:
		id := n.target(ctx)
		if err := n.c.kill(id); err != nil {
			n.fail("kill %d: %v", id, err)
		}
		return fmt.Sprintf("kill -9 node %d", id), func() {
			if err := n.c.restart(id); err != nil {
				n.fail("restart %d: %v", id, err)
			}
		}
	case faultTerm:
		id := n.target(ctx)
		if err := n.c.signal(id, syscall.SIGTERM); err != nil {
			n.fail("SIGTERM %d: %v", id, err)
		} else if code := n.c.exitCode(id); code != 0 {
			n.fail("node %d exited %d on SIGTERM", id, code)
		}
		return fmt.Sprintf("SIGTERM node %d", id), func() {
			if err := n.c.restart(id); err != nil {
				n.fail("restart %d: %v", id, err)
			}
		}
	case faultPause:
		id := n.target(ctx)
		if err := n.c.pause(id); err != nil {
			n.fail("pause %d: %v", id, err)
		}
		return fmt.Sprintf("SIGSTOP node %d", id), func() {
			if err := n.c.resume(id); err != nil {
				n.fail("resume %d: %v", id, err)
			}
		}
	case faultPartition, faultRefuse:
		id := n.target(ctx)
		f := linkFault{Blackhole: kind == faultPartition, Refuse: kind == faultRefuse}
		n.c.isolate(id, f)
		return fmt.Sprintf("%s every link of node %d", f, id), func() { n.c.isolate(id, linkFault{}) }
	case faultOneWay:
		from := uint64(1 + n.rnd.IntN(len(n.c.nodes)))
		to := uint64(1 + n.rnd.IntN(len(n.c.nodes)-1))
		if to >= from {
			to++
		}
		n.c.setLink(from, to, linkFault{Blackhole: true})
		return fmt.Sprintf("blackhole link %d -> %d", from, to), func() { n.c.setLink(from, to, linkFault{}) }
	case faultMute:
		id := n.target(ctx)
		for _, to := range n.c.ids() {
			if to != id {
				n.c.setLink(id, to, linkFault{Blackhole: true})
			}
		}
		return fmt.Sprintf("blackhole every link from node %d", id), func() {
			for _, to := range n.c.ids() {
				if to != id {
					n.c.setLink(id, to, linkFault{})
				}
			}
		}
	case faultDelay:
		id := n.target(ctx)
		f := linkFault{Delay: time.Duration(20+n.rnd.IntN(781)) * time.Millisecond, Jitter: 50 * time.Millisecond}
		n.c.isolate(id, f)
		return fmt.Sprintf("%s on every link of node %d", f, id), func() { n.c.isolate(id, linkFault{}) }
	case faultDrop:
		f := linkFault{DropRate: 0.005 + 0.045*n.rnd.Float64()}
		for _, p := range n.c.links {
			p.set(f)
		}
		return fmt.Sprintf("%s on every link", f), n.c.healLinks
	case faultTransfers:
		ok, tried := n.transferStorm(ctx, 20, 4)
		return fmt.Sprintf("leader-transfer storm (%d of %d done)", ok, tried), nil
	case faultMembership:
		return n.demote(ctx, false)
	case faultRemove:
		return n.demote(ctx, true)
	case faultSnapshot:
		ok, tried := n.snapshots(ctx)
		return fmt.Sprintf("snapshot every replica of the written shards (%d of %d done)", ok, tried), nil
	}
	panic(fmt.Sprintf("chaos: unknown fault %q", kind))
}

func (n *nemesis) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	n.logf("nemesis: %s", msg)
	n.mu.Lock()
	n.failures = append(n.failures, msg)
	n.mu.Unlock()
}

// target picks a node for a node fault: a random one, or half of the time
// the node that leads the most shards.
func (n *nemesis) target(ctx context.Context) uint64 {
	ids := n.c.ids()
	if n.rnd.IntN(2) == 0 {
		return ids[n.rnd.IntN(len(ids))]
	}
	return n.leaderHeavy(ctx)
}

// leaderHeavy returns the node that leads the most shards (a random one
// when no node answers).
func (n *nemesis) leaderHeavy(ctx context.Context) uint64 {
	ids := n.c.ids()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	best, most := ids[n.rnd.IntN(len(ids))], -1
	for id, st := range n.c.allStatus(ctx) {
		led := 0
		for _, sh := range st.LocalShards {
			if sh.Leader == id {
				led++
			}
		}
		if led > most || (led == most && id < best) {
			best, most = id, led
		}
	}
	return best
}

// admin returns an Admin client of node id (connections kept for the run).
func (n *nemesis) admin(id uint64) (sharddv1.AdminClient, error) {
	n.adminMu.Lock()
	defer n.adminMu.Unlock()
	if a, ok := n.admins[id]; ok {
		return a, nil
	}
	conn, err := grpc.NewClient(n.c.node(id).client, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	n.conns = append(n.conns, conn)
	a := sharddv1.NewAdminClient(conn)
	n.admins[id] = a
	return a, nil
}

func (n *nemesis) close() {
	n.adminMu.Lock()
	defer n.adminMu.Unlock()
	for _, c := range n.conns {
		c.Close()
	}
	n.conns, n.admins = nil, map[uint64]sharddv1.AdminClient{}
}

// pickShard returns a shard, a written one when there are any (two times
// in three), else any.
func (n *nemesis) pickShard() uint64 {
	hot := n.rec.hotShards()
	if len(hot) > 0 && n.rnd.IntN(3) > 0 {
		return hot[n.rnd.IntN(len(hot))]
	}
	return uint64(1 + n.rnd.IntN(len(n.hosting)))
}

// leaderOf asks a hosting node who leads shard (0 if none knows).
func (n *nemesis) leaderOf(ctx context.Context, shard uint64) uint64 {
	for _, id := range n.hosting[shard] {
		sctx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
		st, err := n.c.status(sctx, id)
		cancel()
		if err != nil {
			continue
		}
		for _, sh := range st.LocalShards {
			if sh.Shard == shard && sh.Leader != 0 {
				return sh.Leader
			}
		}
	}
	return 0
}

// transferStorm moves the leadership of count random shards to another
// of their replicas, par at a time, each with a 2 s deadline (errors are
// expected under faults and only counted).
func (n *nemesis) transferStorm(ctx context.Context, count, par int) (ok, tried int) {
	type job struct {
		shard, via, target uint64
		viaLeader          bool
	}
	var jobs []job
	for range count {
		shard := n.pickShard()
		nodes := n.hosting[shard]
		jobs = append(jobs, job{shard: shard, via: nodes[n.rnd.IntN(len(nodes))],
			target: nodes[n.rnd.IntN(len(nodes))], viaLeader: n.rnd.IntN(2) == 0})
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	ch := make(chan job)
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				via := j.via
				if l := n.leaderOf(ctx, j.shard); l != 0 && j.viaLeader {
					via = l // half the time through the leader, else any replica
				}
				a, err := n.admin(via)
				if err == nil {
					tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					_, err = a.TransferLeader(tctx, &sharddv1.TransferLeaderRequest{Shard: j.shard, Target: j.target})
					cancel()
				}
				mu.Lock()
				tried++
				if err == nil {
					ok++
				}
				mu.Unlock()
			}
		}()
	}
	for _, j := range jobs {
		ch <- j
	}
	close(ch)
	wg.Wait()
	return ok, tried
}

// snapshots asks every replica of every written shard to snapshot.
func (n *nemesis) snapshots(ctx context.Context) (ok, tried int) {
	for _, shard := range n.rec.hotShards() {
		for _, id := range n.hosting[shard] {
			a, err := n.admin(id)
			if err == nil {
				sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err = a.RequestSnapshot(sctx, &sharddv1.RequestSnapshotRequest{Shard: shard})
				cancel()
			}
			tried++
			if err == nil {
				ok++
			}
		}
	}
	return ok, tried
}

// demote makes one voter of a written shard a learner, or with remove
// takes it out of the membership; the heal makes it a voter again (via
// learner). A move to a node that does not host the shard is not possible:
// the daemon starts replicas only for the shards placement gives it, and
// the Admin API cannot start one elsewhere.
func (n *nemesis) demote(ctx context.Context, remove bool) (string, func()) {
	shard := n.pickShard()
	for try := 0; n.isDemoted(shard) && try < 10; try++ {
		shard = n.pickShard() // one node out of a shard at a time
	}
	if n.isDemoted(shard) {
		return fmt.Sprintf("shard %d: membership change skipped (a node is still out)", shard), nil
	}
	nodes := n.hosting[shard]
	victim := nodes[n.rnd.IntN(len(nodes))]
	var voters []uint64
	for _, id := range nodes {
		if id != victim {
			voters = append(voters, id)
		}
	}
	learners := []uint64{victim}
	what := fmt.Sprintf("shard %d: demote node %d to learner (voters %v)", shard, victim, voters)
	if remove {
		learners = nil
		what = fmt.Sprintf("shard %d: remove node %d (voters %v)", shard, victim, voters)
	}
	err := n.changeMembership(ctx, shard, voters, learners, 5*time.Second)
	// Even a change that failed may have been applied (its outcome can be
	// unknown): the heal restores the voters either way, and a restore of
	// an unchanged membership is a no-op.
	n.mu.Lock()
	n.demoted[shard] = victim
	if err != nil {
		n.counts["membership-failed"]++
		what += fmt.Sprintf(": %v", err)
	}
	n.mu.Unlock()
	return what, func() { n.promote(shard, 10*time.Second) }
}

func (n *nemesis) isDemoted(shard uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.demoted[shard]
	return ok
}

// promote gives shard back its full voter set: the demoted node becomes
// a learner first (a no-op unless it was removed), then a voter.
func (n *nemesis) promote(shard uint64, d time.Duration) {
	n.mu.Lock()
	victim := n.demoted[shard]
	n.mu.Unlock()
	var others []uint64
	for _, id := range n.hosting[shard] {
		if id != victim {
			others = append(others, id)
		}
	}
	deadline := time.Now().Add(d)
	err := n.changeMembership(context.Background(), shard, others, []uint64{victim}, d)
	if err == nil {
		err = n.changeMembership(context.Background(), shard, n.hosting[shard], nil, max(time.Until(deadline), time.Second))
	}
	if err != nil {
		n.logf("nemesis: restoring shard %d's voters: %v (retried at heal)", shard, err)
		return
	}
	n.mu.Lock()
	delete(n.demoted, shard)
	n.mu.Unlock()
}

// changeMembership retries ChangeMembership through the shard's leader
// (or any replica) until it succeeds or d passes.
func (n *nemesis) changeMembership(ctx context.Context, shard uint64, voters, learners []uint64, d time.Duration) error {
	deadline := time.Now().Add(d)
	var err error
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		via := n.leaderOf(ctx, shard)
		if via == 0 {
			via = n.hosting[shard][attempt%len(n.hosting[shard])]
		}
		var a sharddv1.AdminClient
		if a, err = n.admin(via); err == nil {
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err = a.ChangeMembership(cctx, &sharddv1.ChangeMembershipRequest{Shard: shard, Voters: voters, Learners: learners})
			cancel()
			if err == nil {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

// healMembership promotes every shard still demoted.
func (n *nemesis) healMembership(d time.Duration) []string {
	n.mu.Lock()
	var shards []uint64
	for s := range n.demoted {
		shards = append(shards, s)
	}
	n.mu.Unlock()
	var failed []string
	for _, s := range shards {
		n.promote(s, d)
		n.mu.Lock()
		if _, still := n.demoted[s]; still {
			failed = append(failed, fmt.Sprintf("shard %d: node %d not promoted back", s, n.demoted[s]))
		}
		n.mu.Unlock()
	}
	return failed
}

func (n *nemesis) summary() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var parts []string
	for _, k := range allFaults {
		if c := n.counts[string(k)]; c > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, c))
		}
	}
	if c := n.counts["membership-failed"]; c > 0 {
		parts = append(parts, fmt.Sprintf("membership-failed=%d", c))
	}
	return strings.Join(parts, " ")
}

func (n *nemesis) timeline() []nemesisEvent {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.events)
}
