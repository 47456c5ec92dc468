package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// 1000 shards elect leaders; writes on every shard through random replicas
// are applied on all three; linearizable reads from followers see the
// latest write.
func TestThousandShards(t *testing.T) {
	const shards = 1000
	c := newTestCluster(t, 3, nil)
	start := time.Now()
	c.startShards(1, shards, []uint64{1, 2, 3})
	t.Logf("%d shards started in %v", shards, time.Since(start))
	c.waitLeaders(1, shards, 30*time.Second, 1, 2, 3)
	t.Logf("%d shards started and led in %v", shards, time.Since(start))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for s := uint64(1 + w); s <= shards; s += 32 {
				n := c.node(uint64(1 + r.IntN(3)))
				proposeRetry(t, ctx, n, s, fmt.Sprintf("k=v%d", s))
			}
		}(w)
	}
	wg.Wait()
	// Every replica applies every write: equal applied index and hash.
	waitFor(t, 20*time.Second, "all replicas applied", func() bool {
		for s := uint64(1); s <= shards; s++ {
			s1, _ := c.node(1).ShardStatus(s)
			for _, id := range []uint64{2, 3} {
				sx, _ := c.node(id).ShardStatus(s)
				if sx.Applied != s1.Applied || sx.Hash != s1.Hash || s1.Applied < 3 {
					return false
				}
			}
		}
		return true
	})
	// Reads on followers see the write.
	for s := uint64(1); s <= shards; s += 7 {
		lead, _, _ := c.node(1).Leader(s)
		for _, id := range []uint64{1, 2, 3} {
			if id == lead {
				continue
			}
			v, err := c.node(id).Read(ctx, s, []byte("k"))
			if err != nil || string(v) != fmt.Sprintf("v%d", s) {
				t.Fatalf("shard %d read on follower %d: %q %v", s, id, v, err)
			}
		}
	}
}
