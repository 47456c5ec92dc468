//go:build race

package sim

const raceEnabled = true

// fullShards is the shard count of TestSimFull: the race detector slows
// the simulation about tenfold, so the canonical 100 shards would not fit
// make test's budget.
const fullShards = 10

// raceClients (plus one per five shards) is the clients' count under the
// race detector, half the default: the race detector makes every flush
// (goroutine hand-offs inside batchio and Pebble) about ten times dearer.
const raceClients = 4
