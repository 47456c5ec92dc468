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

// The ticker hands an active replica its ticks in chunks of HeartbeatTicks
// (tickChunk), so an awake but idle shard is stepped a few times per
// heartbeat period, not on every tick; logical time still advances at the
// tick rate (the leader keeps its followers, nobody campaigns).
func TestTicksInChunks(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.QuiesceTicks = -1 })
	cfg := c.node(1).cfg
	if cfg.HeartbeatTicks != 5 || cfg.ElectionTicks != 50 || cfg.tickChunk() != 5 {
		t.Fatalf("defaults: heartbeat %d election %d chunk %d", cfg.HeartbeatTicks, cfg.ElectionTicks, cfg.tickChunk())
	}
	c.startShards(1, 1, []uint64{1, 2, 3})
	c.waitLeaders(1, 1, 30*time.Second, 1, 2, 3)
	lead, term, _ := c.node(1).Leader(1)
	steps := func() (n uint64) {
		for id := uint64(1); id <= 3; id++ {
			n += c.node(id).m.replicaSteps.Get()
		}
		return n
	}
	s0, t0 := steps(), time.Now()
	time.Sleep(time.Second)
	s1, elapsed := steps(), time.Since(t0)
	// Per second and replica, a tick per tick interval would be 100
	// steps; in chunks they are 20, plus a step per heartbeat (followers)
	// or response (leader): under 200 for three replicas, 300+ without
	// chunks.
	ticks := float64(elapsed) / float64(cfg.TickInterval)
	if got, bound := float64(s1-s0), 5*ticks/2; got > bound {
		t.Fatalf("%v steps of 3 idle replicas in %v (%.0f ticks); want at most %.0f", s1-s0, elapsed, ticks, bound)
	}
	if l, tm, _ := c.node(1).Leader(1); l != lead || tm != term {
		t.Fatalf("leader %d term %d became %d term %d while idle", lead, term, l, tm)
	}
	t.Logf("%d replica steps in %v", s1-s0, elapsed)
}
