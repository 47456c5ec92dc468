package grouptest

import (
	"flag"
	"testing"
)

var (
	seedFlag  = flag.Uint64("seed", 0, "replay one random seed (with -run TestRandom)")
	seedsFlag = flag.Int("seeds", 500, "number of random seeds TestRandom runs")
	ticksFlag = flag.Int("ticks", 600, "ticks per random run")
)

// TestRandom runs seeded random histories of 3- and 5-replica shards with
// drops, duplicates, delays, partitions, crash-restarts losing unpersisted
// writes, snapshots, membership changes and transfers; the oracle checks the
// invariants after every step and the run ends with a liveness phase.
func TestRandom(t *testing.T) {
	seeds := []uint64{}
	if *seedFlag != 0 {
		seeds = append(seeds, *seedFlag)
	} else {
		for i := 1; i <= *seedsFlag; i++ {
			seeds = append(seeds, uint64(i))
		}
	}
	for _, seed := range seeds {
		res, err := Run(seed, 0, *ticksFlag)
		if err != nil {
			t.Fatalf("seed %d failed: %v\nfaults: %s\nreplay: go test ./group/grouptest -run 'TestRandom$' -seed=%d -v",
				seed, err, res.Faults, seed)
		}
		if *seedFlag != 0 || testing.Verbose() {
			t.Logf("seed %d: %+v", seed, res)
		}
	}
}
