package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	sharddv1 "github.com/shardd/shardd/api/shardd/v1"
	"github.com/shardd/shardd/client"
	"github.com/shardd/shardd/internal/testports"
)

// sharddBin is the daemon built once for the process tests.
var sharddBin string

func TestMain(m *testing.M) {
	flag.Parse()
	// A fuzz worker runs nothing but its fuzz target: building the daemon
	// in each one would hold up every fuzzing run by a link.
	if fw := flag.Lookup("test.fuzzworker"); fw != nil && fw.Value.String() == "true" {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "shardd-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sharddBin = filepath.Join(dir, "shardd")
	out, err := exec.Command("go", "build", "-o", sharddBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building shardd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// procCluster runs real shardd processes on loopback ports.
type procCluster struct {
	t                       *testing.T
	dir                     string
	n, replicas             int
	shards                  uint64
	raft, clientA, metricsA map[uint64]string
	procs                   map[uint64]*exec.Cmd
	logs                    map[uint64]*os.File
}

// ports hands out the daemons' addresses from below the ephemeral range:
// a ":0" port released for a daemon to bind could be taken meanwhile by an
// outgoing connection of a test running beside this one (CI saw a node
// never start).
var ports = testports.New(rand.Uint64())

func freePort(t *testing.T) string {
	addr, err := ports.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func newProcCluster(t *testing.T, n, replicas int, shards uint64) *procCluster {
	c := &procCluster{t: t, dir: t.TempDir(), n: n, replicas: replicas, shards: shards,
		raft: map[uint64]string{}, clientA: map[uint64]string{}, metricsA: map[uint64]string{},
		procs: map[uint64]*exec.Cmd{}, logs: map[uint64]*os.File{}}
	for id := uint64(1); id <= uint64(n); id++ {
		c.raft[id], c.clientA[id], c.metricsA[id] = freePort(t), freePort(t), freePort(t)
	}
	for id := uint64(1); id <= uint64(n); id++ {
		c.start(id)
	}
	t.Cleanup(func() {
		for id := range c.procs {
			c.kill(id)
		}
	})
	return c
}

func joinPeers(m map[uint64]string) string {
	var parts []string
	for id, a := range m {
		parts = append(parts, fmt.Sprintf("%d=%s", id, a))
	}
	return strings.Join(parts, ",")
}

func (c *procCluster) start(id uint64) {
	logf, err := os.OpenFile(filepath.Join(c.dir, fmt.Sprintf("node%d.log", id)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(sharddBin, "serve",
		"--node-id", strconv.FormatUint(id, 10),
		"--listen", c.raft[id], "--client-listen", c.clientA[id], "--metrics-listen", c.metricsA[id],
		"--peers", joinPeers(c.raft), "--client-peers", joinPeers(c.clientA),
		"--data-dir", filepath.Join(c.dir, fmt.Sprintf("node%d", id)),
		"--shards", strconv.FormatUint(c.shards, 10), "--replicas", strconv.Itoa(c.replicas),
		"--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.procs[id], c.logs[id] = cmd, logf
}

// kill stops node id with SIGKILL (no chance to flush anything).
func (c *procCluster) kill(id uint64) {
	cmd := c.procs[id]
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	delete(c.procs, id)
	c.logs[id].Close()
}

func (c *procCluster) client(ids ...uint64) *client.Client {
	var addrs []string
	for _, id := range ids {
		addrs = append(addrs, c.clientA[id])
	}
	cl, err := client.New(addrs, client.Options{Timeout: 20 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// waitReady waits until node id's /status lists every shard it hosts with
// a leader.
func (c *procCluster) waitReady(id uint64, d time.Duration) nodeStatus {
	deadline := time.Now().Add(d)
	for {
		st, err := c.status(id)
		if err == nil && len(st.LocalShards) > 0 {
			led := 0
			for _, sh := range st.LocalShards {
				if sh.Leader != 0 {
					led++
				}
			}
			if led == len(st.LocalShards) {
				return st
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("node%d.log", id)))
			if len(log) > 4000 {
				log = log[len(log)-4000:]
			}
			c.t.Fatalf("node %d not ready after %v (last error %v); the end of its log:\n%s", id, d, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *procCluster) status(id uint64) (nodeStatus, error) {
	var st nodeStatus
	resp, err := http.Get("http://" + c.metricsA[id] + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return st, fmt.Errorf("status %d", resp.StatusCode)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// writeKeys writes keys [from, to) through cl with 32 workers and returns
// the acknowledged ones (errors are allowed while a node is down).
func writeKeys(t *testing.T, cl *client.Client, from, to int, mustAll bool) map[string]string {
	acked := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := from
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= to {
					return
				}
				k, v := fmt.Sprintf("key-%06d", i), fmt.Sprintf("value-%d", i)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := cl.Put(ctx, []byte(k), []byte(v))
				cancel()
				if err != nil {
					if mustAll {
						t.Errorf("put %s: %v", k, err)
					}
					continue
				}
				mu.Lock()
				acked[k] = v
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return acked
}

func checkKeys(t *testing.T, cl *client.Client, want map[string]string) {
	t.Helper()
	var wg sync.WaitGroup
	ch := make(chan [2]string)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for kv := range ch {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				v, found, err := cl.Get(ctx, []byte(kv[0]))
				cancel()
				if err != nil || !found || string(v) != kv[1] {
					t.Errorf("get %s: %q found=%v err=%v, want %q", kv[0], v, found, err, kv[1])
				}
			}
		}()
	}
	for k, v := range want {
		ch <- [2]string{k, v}
	}
	close(ch)
	wg.Wait()
}

// Three real processes: 10000 keys written and read through different
// nodes; one node killed with SIGKILL while writes go on, restarted, and it
// serves every acknowledged key.
func TestProcessesKillAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newProcCluster(t, 3, 3, 64)
	for id := uint64(1); id <= 3; id++ {
		c.waitReady(id, 60*time.Second)
	}
	acked := writeKeys(t, c.client(1, 2, 3), 0, 10000, true)
	checkKeys(t, c.client(3, 2, 1), acked)

	c.kill(2)
	for k, v := range writeKeys(t, c.client(1, 3), 10000, 12000, false) {
		acked[k] = v
	}
	c.start(2)
	c.waitReady(2, 60*time.Second)
	checkKeys(t, c.client(2), acked)

	// Bad requests give the documented codes.
	checkErrorCodes(t, c)
	checkMetricsAndStatus(t, c, 3)
	checkAdmin(t, c)
}

// checkAdmin moves a shard's leadership through the Admin API.
func checkAdmin(t *testing.T, c *procCluster) {
	t.Helper()
	conn, err := grpc.NewClient(c.clientA[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin := sharddv1.NewAdminClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := c.status(1)
	if err != nil {
		t.Fatal(err)
	}
	sh := st.LocalShards[0]
	target := sh.Leader%3 + 1
	if _, err := admin.TransferLeader(ctx, &sharddv1.TransferLeaderRequest{Shard: sh.Shard, Target: target}); err != nil {
		t.Fatalf("transfer shard %d to %d: %v", sh.Shard, target, err)
	}
	if st, _ := c.status(target); !leads(st, sh.Shard, target) {
		t.Fatalf("node %d does not lead shard %d after the transfer", target, sh.Shard)
	}
	if _, err := admin.TransferLeader(ctx, &sharddv1.TransferLeaderRequest{Shard: 99999, Target: 1}); status.Code(err) != codes.NotFound {
		t.Fatalf("transfer of an unknown shard: %v", err)
	}
	if r, err := admin.RequestSnapshot(ctx, &sharddv1.RequestSnapshotRequest{Shard: sh.Shard}); err != nil || r.Index == 0 {
		t.Fatalf("snapshot: %+v %v", r, err)
	}
}

func leads(st nodeStatus, shard, node uint64) bool {
	for _, s := range st.LocalShards {
		if s.Shard == shard {
			return s.Leader == node
		}
	}
	return false
}

// Five processes with three replicas per shard: every node takes every key
// (forwarding to a hosting node), and a killed node's shards go on.
func TestProcessesFiveNodesThreeReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newProcCluster(t, 5, 3, 32)
	for id := uint64(1); id <= 5; id++ {
		c.waitReady(id, 60*time.Second)
	}
	acked := writeKeys(t, c.client(1, 2, 3, 4, 5), 0, 3000, true)
	checkKeys(t, c.client(5, 4), acked)
	c.kill(4)
	for k, v := range writeKeys(t, c.client(1, 2, 3, 5), 3000, 4000, false) {
		acked[k] = v
	}
	c.start(4)
	c.waitReady(4, 60*time.Second)
	checkKeys(t, c.client(4), acked)
}

func checkErrorCodes(t *testing.T, c *procCluster) {
	t.Helper()
	cl := c.client(1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cl.Put(ctx, nil, []byte("x")); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("empty key: %v", err)
	}
	_, err := cl.Put(ctx, []byte(strings.Repeat("k", 5000)), []byte("x"))
	if !errors.Is(err, client.ErrInvalidArgument) || !strings.Contains(err.Error(), "4096") {
		t.Errorf("oversized key: %v", err)
	}
	_, err = cl.Put(ctx, []byte("big"), make([]byte, 2<<20))
	if !errors.Is(err, client.ErrInvalidArgument) && status.Code(err) != codes.ResourceExhausted {
		t.Errorf("oversized value: %v", err)
	}
	if _, err := cl.CompareAndSwap(ctx, []byte("cas"), nil, true, []byte("1")); err != nil {
		t.Errorf("cas on an absent key: %v", err)
	}
	if _, err := cl.CompareAndSwap(ctx, []byte("cas"), []byte("2"), false, []byte("3")); !errors.Is(err, client.ErrCASFailed) {
		t.Errorf("failed cas: %v", err)
	}
	if _, err := cl.CompareAndSwap(ctx, []byte("cas"), []byte("1"), false, []byte("3")); err != nil {
		t.Errorf("cas: %v", err)
	}
	if _, err := cl.Delete(ctx, []byte("cas")); err != nil {
		t.Errorf("delete: %v", err)
	}
	if _, found, err := cl.Get(ctx, []byte("cas")); err != nil || found {
		t.Errorf("get after delete: found=%v %v", found, err)
	}
	if _, found, err := cl.GetStale(ctx, []byte("key-000001")); err != nil || !found {
		t.Errorf("stale get: found=%v %v", found, err)
	}
	if st, err := cl.Status(ctx); err != nil || st.NodeId != 1 || len(st.LocalShards) == 0 {
		t.Errorf("status: %+v %v", st, err)
	}
}

func checkMetricsAndStatus(t *testing.T, c *procCluster, n int) {
	t.Helper()
	resp, err := http.Get("http://" + c.metricsA[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	families := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		// name{labels} value — label values may contain spaces.
		i := strings.LastIndexByte(line, ' ')
		if i <= 0 {
			t.Fatalf("not Prometheus text: %q", line)
		}
		if _, err := strconv.ParseFloat(line[i+1:], 64); err != nil {
			t.Fatalf("bad value: %q", line)
		}
		name, labels, hasLabels := strings.Cut(line[:i], "{")
		if hasLabels && !strings.HasSuffix(labels, "}") {
			t.Fatalf("bad labels: %q", line)
		}
		families[name] = true
	}
	for _, want := range []string{"shardd_proposals_total", "shardd_fsyncs_total", "go_goroutines",
		"process_resident_memory_bytes", "shardd_peer_messages_sent_total"} {
		if !families[want] {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	st, err := c.status(1)
	if err != nil {
		t.Fatal(err)
	}
	if st.Node != 1 || uint64(len(st.LocalShards)) != c.shards || len(st.Peers) != n-1 {
		t.Fatalf("/status: node %d, %d shards, %d peers", st.Node, len(st.LocalShards), len(st.Peers))
	}
	resp2, err := http.Get("http://" + c.metricsA[1] + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if resp2.StatusCode != 200 || strings.TrimSpace(string(body)) != "ok" {
		t.Fatalf("/healthz: %d %q", resp2.StatusCode, body)
	}
}
