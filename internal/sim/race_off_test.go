//go:build !race

package sim

const raceEnabled = false

// fullShards is the shard count of TestSimFull (the canonical 100).
const fullShards = 100

// raceClients is unused without the race detector (the default applies).
const raceClients = 0
