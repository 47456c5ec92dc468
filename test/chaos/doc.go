// Package chaos runs real shardd processes on loopback under a nemesis
// (TESTING.md, layer 5). TestChaos builds cmd/shardd once, starts
// -chaos.nodes processes with -chaos.shards shards of -chaos.replicas
// replicas, and puts a TCP proxy owned by the test on every directed peer
// link (proxy.go: blackhole, refuse, delay, drop). Clients drive get, put
// and compare-and-swap on a small key set with a recorded history
// (history.go) while the nemesis (nemesis.go) kills, pauses, partitions,
// delays, resets links, storms leader transfers, demotes and removes
// voters and snapshots. Then everything is healed and the run must show
// every shard led again within 30 s, every acknowledged write present, a
// linearizable history (porcupine), equal replicas (commit and applied
// index in /status, then, after a clean SIGTERM shutdown, the key-value
// state of every replica read from its store: datadir.go), no ERROR,
// panic or fatal line in the logs, and no leaked goroutines or files.
//
// The workers use the Go client (package client), as users do;
// -chaos.client=raw uses rawKV (kvclient.go), a bare gRPC client that
// retries a write only when the server certifies it did not run. The Go
// client used to retry writes whose reply was lost (a kill under load
// failed porcupine, seed 2): TestGoClientCASWithLostReply pins it.
//
//	go test ./test/chaos -run TestChaos -chaos.duration=5m -timeout 20m -v     # make chaos
//	go test ./test/chaos -run TestChaos -chaos.duration=60m -timeout 90m -v    # make chaos-long
//	go test ./test/chaos -run TestChaos -chaos.seed=N ...                      # replay a seed
//
// A seed fixes the nemesis schedule, the workers' choices and the
// proxies' random drops, not the processes' timing: a failing seed is a
// strong hint, not an exact replay. On failure the data dirs, the node
// logs, the history of every key at fault (text) and the porcupine
// visualization of the first are kept in the directory the test prints.
// Under -short only the proxy and model tests run.
package chaos
