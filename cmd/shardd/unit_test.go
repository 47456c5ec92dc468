package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPlacementStableAndSpread(t *testing.T) {
	p := newPlacement(1000, 3, []uint64{5, 1, 4, 2, 3})
	q := newPlacement(1000, 3, []uint64{1, 2, 3, 4, 5}) // another node's view
	load := map[uint64]int{}
	for s := uint64(1); s <= 1000; s++ {
		r := p.replicasOf(s)
		if fmt.Sprint(r) != fmt.Sprint(q.replicasOf(s)) {
			t.Fatalf("shard %d placed differently: %v vs %v", s, r, q.replicasOf(s))
		}
		if len(r) != 3 || r[0] >= r[1] || r[1] >= r[2] {
			t.Fatalf("shard %d replicas %v", s, r)
		}
		for _, n := range r {
			load[n]++
			if !p.hosts(s, n) {
				t.Fatalf("hosts(%d, %d) false", s, n)
			}
		}
	}
	for n, l := range load {
		if l < 500 || l > 700 { // 600 each in expectation
			t.Errorf("node %d hosts %d shards", n, l)
		}
	}
	// Rendezvous: adding a node moves only the shards it wins.
	r6 := newPlacement(1000, 3, []uint64{1, 2, 3, 4, 5, 6})
	moved := 0
	for s := uint64(1); s <= 1000; s++ {
		before, after := p.replicasOf(s), r6.replicasOf(s)
		for i := range before {
			if before[i] != after[i] && !strings.Contains(fmt.Sprint(after), "6") {
				t.Fatalf("shard %d moved %v -> %v without node 6", s, before, after)
			}
		}
		if fmt.Sprint(before) != fmt.Sprint(after) {
			moved++
		}
	}
	if moved > 700 {
		t.Errorf("%d of 1000 shards moved when a node was added", moved)
	}
	if a, b := p.shardOf([]byte("x")), p.shardOf([]byte("x")); a != b || a < 1 || a > 1000 {
		t.Fatalf("shardOf %d %d", a, b)
	}
	if small := newPlacement(10, 5, []uint64{1, 2}); len(small.replicasOf(3)) != 2 {
		t.Fatal("replicas capped by nodes")
	}
}

func TestServeFlagErrorsNameTheFlag(t *testing.T) {
	for args, want := range map[string]string{
		"":            "node-id",
		"--node-id 1": "listen",
		"--node-id 1 --listen a:1 --client-listen a:2":                                                          "data-dir",
		"--node-id 1 --listen a:1 --client-listen a:2 --data-dir d --peers x":                                   "peers",
		"--node-id 1 --listen a:1 --client-listen a:2 --data-dir d --peers 2=a:1":                               "must include this node",
		"--node-id 1 --listen a:1 --client-listen a:2 --data-dir d --peers 1=a:1 --replicas 3":                  "replicas",
		"--node-id 1 --listen a:1 --client-listen a:2 --data-dir d --peers 1=a:1,2=b:1 --replicas 1":            "client-peers",
		"--node-id 1 --listen a:1 --client-listen a:2 --data-dir d --peers 1=a:1 --replicas 1 --log-format xml": "log-format",
		"--node-id 1 --listen a:1 --client-listen a:2 --data-dir d --peers 1=a:1 --replicas 1 --tls-cert c":     "tls-cert",
		"--bogus": "bogus",
	} {
		_, err := parseServeFlags(strings.Fields(args), new(bytes.Buffer))
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want a usage error naming %q", args, err, want)
		}
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"serve", "--node-id", "0"}, &out, &errOut); code != 2 {
		t.Errorf("bad flag exit code %d", code)
	}
	if code := run([]string{"nope"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "unknown command") {
		t.Errorf("unknown command: %d %q", code, errOut.String())
	}
}

func TestServeConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "shardd.conf")
	conf := "# a node\nnode-id = 2\nlisten = 127.0.0.1:7002\nclient-listen = 127.0.0.1:8002\n" +
		"peers = 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003\ndata-dir = /tmp/x\nshards = 16\n"
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := parseServeFlags([]string{"--config", path, "--shards", "32"}, new(bytes.Buffer))
	if err != nil {
		t.Fatal(err)
	}
	if f.nodeID != 2 || f.shards != 32 || len(f.peers) != 3 || f.dataDir != "/tmp/x" {
		t.Fatalf("config file ignored or overriding the command line: %+v", f)
	}
	if err := os.WriteFile(path, []byte("nonsense = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := parseServeFlags([]string{"--config", path}, new(bytes.Buffer)); err == nil ||
		!strings.Contains(err.Error(), "nonsense") {
		t.Fatalf("unknown name in config: %v", err)
	}
}
