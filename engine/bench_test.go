package engine

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPropose measures committed-and-applied proposals per second
// through a 3-node cluster in this process (real Pebble on disk with
// fsync, real gRPC on loopback), 16-byte commands from 256 concurrent
// proposers spread over 1, 100 or 1000 shards and over all three nodes
// (followers forward to leaders). One op is one proposal. Reports
// proposals/s and entries per fsync (all nodes).
func BenchmarkPropose(b *testing.B) {
	for _, shards := range []uint64{1, 100, 1000} {
		b.Run(fmt.Sprintf("shards=%d", shards), func(b *testing.B) {
			c := newTestCluster(b, 3, nil)
			c.startShards(1, shards, []uint64{1, 2, 3})
			c.waitLeaders(1, shards, 60*time.Second, 1, 2, 3)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			cmd := []byte("k=0123456789abc") // 16 bytes
			stats := func() (flushes, entries uint64) {
				for id := uint64(1); id <= 3; id++ {
					st := c.node(id).store.Stats()
					flushes += st.Flushes
					entries += st.Entries
				}
				return
			}
			f0, e0 := stats()
			var next atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			for w := 0; w < 256; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					n := c.node(uint64(1 + w%3))
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						s := 1 + uint64(i)%shards
						if _, err := n.Propose(ctx, s, cmd); err != nil {
							b.Error(err)
							return
						}
					}
				}(w)
			}
			wg.Wait()
			b.StopTimer()
			f1, e1 := stats()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "proposals/s")
			if f1 > f0 {
				b.ReportMetric(float64(e1-e0)/float64(f1-f0), "entries/fsync")
			}
		})
	}
}
