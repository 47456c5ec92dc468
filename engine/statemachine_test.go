package engine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardd/shardd/raftpb"
)

// diskKV is an OnDiskStateMachine for tests: its data and last applied
// index live in a file rewritten (with fsync and rename) on Sync.
type diskKV struct {
	kvSM
	path    string
	applied uint64
	synced  uint64
}

func newDiskKV(dir string) func(shardID, nodeID uint64) StateMachine {
	return func(shardID, nodeID uint64) StateMachine {
		return &diskKV{kvSM: kvSM{data: map[string]string{}},
			path: filepath.Join(dir, fmt.Sprintf("sm-%d-%d", nodeID, shardID))}
	}
}

func (d *diskKV) Open() (uint64, error) {
	b, err := os.ReadFile(d.path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	if !sc.Scan() {
		return 0, errors.New("empty state file")
	}
	d.applied, err = strconv.ParseUint(sc.Text(), 10, 64)
	if err != nil {
		return 0, err
	}
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		d.data[k] = v
	}
	d.synced = d.applied
	return d.applied, nil
}

func (d *diskKV) Update(ents []Entry) error {
	if err := d.kvSM.Update(ents); err != nil {
		return err
	}
	d.applied = ents[len(ents)-1].Index
	return nil
}

func (d *diskKV) Sync() error {
	d.mu.Lock()
	var b strings.Builder
	fmt.Fprintf(&b, "%d\n", d.applied)
	for k, v := range d.data {
		fmt.Fprintf(&b, "%s=%s\n", k, v)
	}
	d.mu.Unlock()
	tmp := d.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	f, err := os.Open(tmp)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	f.Close()
	return os.Rename(tmp, d.path)
}

func (d *diskKV) Close() error { return d.Sync() }

// An OnDiskStateMachine keeps its state across restarts: the engine
// replays the log only after what it says it applied.
func TestOnDiskStateMachineRestart(t *testing.T) {
	smDir := t.TempDir()
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.NewStateMachine = newDiskKV(smDir) })
	c.startShards(1, 3, []uint64{1, 2, 3})
	c.waitLeaders(1, 3, 20*time.Second, 1, 2, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < 30; i++ {
		proposeRetry(t, ctx, c.node(uint64(1+i%3)), uint64(1+i%3), fmt.Sprintf("k%d=%d", i, i))
	}
	c.closeAll()
	for id := uint64(1); id <= 3; id++ {
		c.reopen(id)
	}
	for s := uint64(1); s <= 3; s++ {
		for id := uint64(1); id <= 3; id++ {
			i := int(s - 1)
			v, err := c.node(id).Read(ctx, s, []byte(fmt.Sprintf("k%d", i)))
			if err != nil || string(v) != fmt.Sprint(i) {
				t.Fatalf("shard %d node %d after restart: %q %v", s, id, v, err)
			}
		}
	}
}

// S02: the whole cluster restarted elects a leader promptly.
func TestRestartAllElectsPromptly(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.startShards(1, 10, []uint64{1, 2, 3})
	c.waitLeaders(1, 10, 20*time.Second, 1, 2, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for s := uint64(1); s <= 10; s++ {
		proposeRetry(t, ctx, c.node(1), s, "a=1")
	}
	c.closeAll()
	start := time.Now()
	for id := uint64(1); id <= 3; id++ {
		c.reopen(id)
	}
	c.waitLeaders(1, 10, 20*time.Second, 1, 2, 3)
	// 2 x the maximum election timeout (2 x 10 ticks x 10ms), plus the
	// time to open three stores.
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("leaders %v after the restart", d)
	}
	for s := uint64(1); s <= 10; s++ {
		if v, err := c.node(2).Read(ctx, s, []byte("a")); err != nil || string(v) != "1" {
			t.Fatalf("shard %d after restart: %q %v", s, v, err)
		}
	}
}

// failingSM fails its Update on a poison command.
type failingSM struct{ kvSM }

func (f *failingSM) Update(ents []Entry) error {
	for _, e := range ents {
		if string(e.Cmd) == "poison=1" {
			return errors.New("poisoned")
		}
	}
	return f.kvSM.Update(ents)
}

type recorder struct {
	mu      sync.Mutex
	stopped map[uint64]error
	leaders map[uint64]uint64
	members int
}

func (r *recorder) LeaderChanged(shard, leader, term uint64) {
	r.mu.Lock()
	r.leaders[shard] = leader
	r.mu.Unlock()
}
func (r *recorder) MembershipChanged(uint64, []uint64, []uint64) {
	r.mu.Lock()
	r.members++
	r.mu.Unlock()
}
func (r *recorder) ShardStopped(shard uint64, err error) {
	r.mu.Lock()
	r.stopped[shard] = err
	r.mu.Unlock()
}

// An Update error stops that shard, with the error in its status and an
// event, while the other shards go on.
func TestUpdateErrorStopsOnlyThatShard(t *testing.T) {
	rec := &recorder{stopped: map[uint64]error{}, leaders: map[uint64]uint64{}}
	c := newTestCluster(t, 1, func(cfg *Config) {
		cfg.NewStateMachine = func(s, n uint64) StateMachine {
			if s == 2 {
				return &failingSM{kvSM{data: map[string]string{}}}
			}
			return newKV(s, n)
		}
		cfg.Events = rec
	})
	c.startShards(1, 3, []uint64{1})
	c.waitLeaders(1, 3, 20*time.Second, 1)
	n := c.node(1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = n.Propose(ctx, 2, []byte("poison=1")) // never completes as success
	waitFor(t, 5*time.Second, "shard 2 stopped", func() bool {
		st, _ := n.ShardStatus(2)
		return st.Err != nil
	})
	if st, _ := n.ShardStatus(2); !strings.Contains(st.Err.Error(), "poisoned") {
		t.Fatalf("status error %v", st.Err)
	}
	for _, s := range []uint64{1, 3} {
		proposeRetry(t, ctx, n, s, "ok=1")
	}
	waitFor(t, 5*time.Second, "stop event", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.stopped[2] != nil && rec.leaders[1] == 1 && rec.members > 0
	})
}

// WritePrometheus writes parseable Prometheus text with the documented
// families.
func TestWritePrometheus(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.startShards(1, 2, []uint64{1, 2, 3})
	c.waitLeaders(1, 2, 20*time.Second, 1, 2, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	proposeRetry(t, ctx, c.node(1), 1, "a=1")
	if _, err := c.node(1).StaleRead(1, []byte("a")); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	c.node(1).WritePrometheus(&buf)
	text := buf.String()
	for _, family := range []string{"shardd_proposals_total", "shardd_applied_entries_total",
		"shardd_fsyncs_total", "shardd_entries_per_fsync", "shardd_step_batch_replicas_bucket",
		"shardd_raft_messages_sent_total", "shardd_quiesced_shards", "shardd_apply_lag_entries",
		"shardd_proposal_duration_seconds_bucket", `shardd_peer_messages_sent_total{peer="2"}`,
		"shardd_leader_changes_total"} {
		if !strings.Contains(text, family) {
			t.Errorf("%s missing", family)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			t.Fatalf("malformed line %q", line)
		}
		if _, err := strconv.ParseFloat(f[1], 64); err != nil {
			t.Fatalf("bad value in %q", line)
		}
	}
	_ = io.Discard
}

// commitCheckedKV is a diskKV that checks, on every Update, that its node
// holds the commit index releasing the entries durably: an on-disk state
// machine that got ahead of the durable commit would refuse to open after
// a crash (S41).
type commitCheckedKV struct {
	*diskKV
	durableCommit func() uint64
	violations    *atomic.Int64
}

func (d *commitCheckedKV) Update(ents []Entry) error {
	if last := ents[len(ents)-1].Index; d.durableCommit() < last {
		d.violations.Add(1)
	}
	return d.diskKV.Update(ents)
}

// S41 in the engine: committed entries reach an on-disk state machine only
// after the commit index that released them is durable — never early, and
// never after a commit index written without an fsync.
func TestOnDiskAppliesOnlyDurableCommits(t *testing.T) {
	smDir := t.TempDir()
	var violations atomic.Int64
	var c *testCluster
	newSM := newDiskKV(smDir)
	c = newTestCluster(t, 3, func(cfg *Config) {
		cfg.NewStateMachine = func(shardID, nodeID uint64) StateMachine {
			return &commitCheckedKV{diskKV: newSM(shardID, nodeID).(*diskKV), violations: &violations,
				durableCommit: func() uint64 {
					// The cluster's cleanup forgets a node before closing
					// it, and the apply workers run until the close: an
					// update then has nothing left to check against.
					n := c.node(nodeID)
					if n == nil {
						return math.MaxUint64
					}
					log, err := n.store.Shard(raftpb.ShardID(shardID))
					if err != nil {
						return 0
					}
					st, err := log.InitialState()
					if err != nil {
						return 0
					}
					return uint64(st.HardState.Commit)
				}}
		}
	})
	c.startShards(1, 2, []uint64{1, 2, 3})
	c.waitLeaders(1, 2, 20*time.Second, 1, 2, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				s := uint64(1 + (w+i)%2)
				proposeRetry(t, ctx, c.node(uint64(1+i%3)), s, fmt.Sprintf("w%d-%d=%d", w, i, i))
			}
		}()
	}
	wg.Wait()
	if v := violations.Load(); v > 0 {
		t.Fatalf("%d updates applied entries beyond the durable commit", v)
	}
}
