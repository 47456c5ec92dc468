package engine

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// Idle shards quiesce: the steady traffic between nodes is liveness pings
// only (no Raft message at all over a window), and a proposal to a
// quiesced shard commits. 10000 shards per node (1000 under the race
// detector, which is ~30x slower).
func TestIdleShardsQuiesce(t *testing.T) {
	shards := uint64(10000)
	if raceEnabled {
		shards = 1000
	}
	c := newTestCluster(t, 3, nil)
	start := time.Now()
	c.startShards(1, shards, []uint64{1, 2, 3})
	c.waitLeaders(1, shards, 120*time.Second, 1, 2, 3)
	t.Logf("%d shards started and led in %v", shards, time.Since(start))
	waitFor(t, 120*time.Second, "every replica quiesced", func() bool {
		for _, id := range []uint64{1, 2, 3} {
			if c.node(id).m.quiescedShards.Load() != int64(shards) {
				return false
			}
		}
		return true
	})
	t.Logf("all %d replicas quiesced %v after start", 3*shards, time.Since(start))
	sent := func() (msgs, frames uint64) {
		for _, id := range []uint64{1, 2, 3} {
			n := c.node(id)
			msgs += n.m.messagesSent.Get()
			frames += n.tr.Stats().FramesSent
		}
		return
	}
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	msgs0, frames0 := sent()
	window := time.Second
	time.Sleep(window)
	msgs1, frames1 := sent()
	t.Logf("over %v idle: %d raft messages, %d frames; heap in use %d MiB", window,
		msgs1-msgs0, frames1-frames0, m0.HeapInuse>>20)
	if msgs1 != msgs0 || frames1 != frames0 {
		t.Fatalf("%d raft messages and %d frames in %v between quiesced nodes", msgs1-msgs0, frames1-frames0, window)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	proposeRetry(t, ctx, c.node(2), shards/2, "woken=1")
	if v, err := c.node(3).Read(ctx, shards/2, []byte("woken")); err != nil || string(v) != "1" {
		t.Fatalf("read of the woken shard: %q %v", v, err)
	}
}
