package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// apiFields are the JSON fields ../shared/API.md promises.
var apiFields = []string{"writes_per_sec", "p50_ms", "p99_ms", "p999_ms", "fsyncs_per_sec",
	"entries_per_fsync", "cpu_percent", "rss_bytes", "shards", "nodes", "clients", "payload", "duration_s"}

// runTool runs the tool as `go run ./bench args...` would and returns its
// stdout, stderr and the JSON it wrote.
func runTool(t *testing.T, args ...string) (string, string, map[string]any, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "out.json")
	args = append(args, "--json", path, "--dir", filepath.Join(t.TempDir(), "data"))
	var stdout, stderr bytes.Buffer
	err := run(args, &stdout, &stderr)
	t.Logf("bench %s\n%s", strings.Join(args, " "), stdout.String())
	var m map[string]any
	if b, rerr := os.ReadFile(path); rerr == nil {
		if jerr := json.Unmarshal(b, &m); jerr != nil {
			t.Fatalf("bad JSON: %v\n%s", jerr, b)
		}
	}
	return stdout.String(), stderr.String(), m, err
}

func field(t *testing.T, m map[string]any, f string) float64 {
	t.Helper()
	v, ok := m[f].(float64)
	if !ok {
		t.Fatalf("field %q missing or not a number: %v", f, m[f])
	}
	return v
}

// allResultFields are every field a Result always writes.
func allResultFields(t *testing.T) []string {
	m, err := toMap(&Result{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// The smoke test of `make test`: 2 s of load on 10 shards; the JSON has
// every field and the figures are sane.
func TestSmoke(t *testing.T) {
	stdout, stderr, m, err := runTool(t, "--nodes", "3", "--shards", "10", "--clients", "16",
		"--payload", "16", "--duration", "2s", "--warmup", "300ms", "--progress", "500ms")
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr)
	}
	for _, f := range append(apiFields, allResultFields(t)...) {
		if _, ok := m[f]; !ok {
			t.Errorf("JSON lacks %q", f)
		}
	}
	if _, ok := m["linearizable"]; ok {
		t.Errorf("linearizable written outside --check")
	}
	if field(t, m, "shards") != 10 || field(t, m, "nodes") != 3 || field(t, m, "clients") != 16 || field(t, m, "payload") != 16 {
		t.Errorf("configuration not echoed: %v", m)
	}
	if d := field(t, m, "duration_s"); math.Abs(d-2) > 0.5 {
		t.Errorf("duration_s = %v, want about 2", d)
	}
	p50, p90, p99, p999 := field(t, m, "p50_ms"), field(t, m, "p90_ms"), field(t, m, "p99_ms"), field(t, m, "p999_ms")
	switch {
	case field(t, m, "writes_per_sec") <= 0:
		t.Errorf("no writes")
	case p50 <= 0 || p90 < p50 || p99 < p90 || p999 < p99 || field(t, m, "max_ms") < p999:
		t.Errorf("latency percentiles out of order: %v %v %v %v", p50, p90, p99, p999)
	case field(t, m, "fsyncs_per_sec") <= 0 || field(t, m, "entries_per_fsync") < 1:
		t.Errorf("fsyncs/s %v, entries per fsync %v", m["fsyncs_per_sec"], m["entries_per_fsync"])
	case field(t, m, "bytes_per_entry") < 16 || field(t, m, "disk_bytes_per_entry") < field(t, m, "bytes_per_entry"):
		t.Errorf("bytes per entry %v, disk %v", m["bytes_per_entry"], m["disk_bytes_per_entry"])
	case field(t, m, "messages_per_sec") <= 0 || field(t, m, "frames_per_sec") <= 0:
		t.Errorf("messages/s %v frames/s %v", m["messages_per_sec"], m["frames_per_sec"])
	case field(t, m, "cpu_percent") <= 0 || field(t, m, "rss_bytes") <= 0:
		t.Errorf("cpu %v rss %v", m["cpu_percent"], m["rss_bytes"])
	case field(t, m, "errors") != 0:
		t.Errorf("errors: %v (%v)", m["errors"], m["first_error"])
	}
	leaders, _ := m["leaders_per_node"].(map[string]any)
	total := 0.0
	for _, v := range leaders {
		total += v.(float64)
	}
	if total != 10 {
		t.Errorf("leaders per node: %v", leaders)
	}
	for _, want := range []string{"writes/s", "latency p50/p90/p99/p99.9", "entries per fsync", "CPU", "RSS", "GC"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q", want)
		}
	}
	if !strings.Contains(stderr, "ops") || !strings.Contains(stderr, "rate") {
		t.Errorf("no progress line on stderr:\n%s", stderr)
	}
}

// --check with one leader kill: the history is linearizable.
func TestCheckWithLeaderKill(t *testing.T) {
	stdout, stderr, m, err := runTool(t, "--check", "--shards", "4", "--clients", "8",
		"--duration", "3s", "--fault-every", "2s", "--fault-for", "1s", "--progress", "1s")
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "linearizable: true") {
		t.Errorf("stdout lacks linearizable: true")
	}
	if v, ok := m["linearizable"].(bool); !ok || !v {
		t.Errorf("JSON linearizable = %v", m["linearizable"])
	}
	check := m["check"].(map[string]any)
	faults := check["faults"].([]any)
	if len(faults) != 3 || !strings.Contains(faults[0].(string), "kill node") || !strings.Contains(faults[1].(string), "reopen") ||
		!strings.Contains(faults[2].(string), "every shard led") {
		t.Errorf("faults = %v, want one kill, its reopen and every shard led again", faults)
	}
	if field(t, check, "operations") < 100 || field(t, m, "writes_per_sec") <= 0 || field(t, m, "reads_per_sec") <= 0 {
		t.Errorf("too little history: %v", check)
	}
}

// --check with one partition: the node leading most shards is isolated
// through the proxies and healed.
func TestCheckWithPartition(t *testing.T) {
	stdout, stderr, m, err := runTool(t, "--check", "--shards", "4", "--clients", "8", "--faults", "partition",
		"--duration", "3s", "--fault-every", "2s", "--fault-for", "1s", "--progress", "1s")
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "linearizable: true") {
		t.Errorf("stdout lacks linearizable: true")
	}
	check := m["check"].(map[string]any)
	faults := check["faults"].([]any)
	if len(faults) != 3 || !strings.Contains(faults[0].(string), "isolate node") || !strings.Contains(faults[1].(string), "heal") ||
		!strings.Contains(faults[2].(string), "every shard led") {
		t.Errorf("faults = %v, want one partition, its heal and every shard led again", faults)
	}
	// The isolated node's leaders lose their leadership: new ones are
	// elected on the majority side.
	if field(t, m, "leader_changes") < 1 {
		t.Errorf("no election during the partition")
	}
}

// An open loop offers its rate whatever the latency; reads are mixed in.
func TestOpenLoop(t *testing.T) {
	_, stderr, m, err := runTool(t, "--shards", "2", "--clients", "8", "--rate", "400",
		"--read-ratio", "0.5", "--duration", "1s", "--warmup", "200ms")
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr)
	}
	total := field(t, m, "writes_per_sec") + field(t, m, "reads_per_sec")
	if m["loop"] != "open" || total < 300 || total > 500 || field(t, m, "reads_per_sec") < 100 {
		t.Errorf("open loop at 400/s: loop %v, writes/s %v, reads/s %v", m["loop"], m["writes_per_sec"], m["reads_per_sec"])
	}
}

// --idle: once quiesced, idle shards exchange no Raft message at all.
func TestIdle(t *testing.T) {
	_, stderr, m, err := runTool(t, "--idle", "--shards", "20", "--duration", "1s")
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr)
	}
	if field(t, m, "shards") != 20 || m["mode"] != "idle" {
		t.Errorf("not an idle run of 20 shards: %v", m)
	}
	if field(t, m, "messages_per_sec") != 0 || field(t, m, "frames_per_sec") != 0 {
		t.Errorf("messages/s %v, frames/s %v between quiesced nodes", m["messages_per_sec"], m["frames_per_sec"])
	}
	if field(t, m, "rss_bytes") <= 0 || field(t, m, "startup_s") <= 0 {
		t.Errorf("rss %v startup %v", m["rss_bytes"], m["startup_s"])
	}
	for _, f := range apiFields {
		if _, ok := m[f]; !ok {
			t.Errorf("JSON lacks %q", f)
		}
	}
}

func TestCompare(t *testing.T) {
	dir := t.TempDir()
	old := &Result{Name: "a", Mode: "load", Shards: 10, WritesPerSec: 1000, P99Ms: 10, CPUPercent: 100}
	cur := &Result{Name: "a", Mode: "load", Shards: 20, WritesPerSec: 2000, P99Ms: 5, CPUPercent: 101}
	oldPath, newPath := filepath.Join(dir, "old.json"), filepath.Join(dir, "new.json")
	if err := writeJSON(oldPath, old); err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(newPath, cur); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run([]string{"--compare", oldPath, "--new", newPath}, &out, &out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	t.Log(s)
	for _, re := range []string{
		`writes_per_sec\s+1000\s+2000\s+2.000\s+better`,
		`p99_ms\s+10\s+5\s+0.500\s+better`,
		`cpu_percent\s+100\s+101\s+1.010\s`,
		`note: shards differs: 10 then, 20 now`,
	} {
		if !regexpMatch(re, s) {
			t.Errorf("output lacks %q", re)
		}
	}
	// A suite on both sides pairs runs by name.
	suitePath := filepath.Join(dir, "suite.json")
	b1, _ := json.Marshal(old)
	b2, _ := json.Marshal(&Result{Name: "b", WritesPerSec: 7})
	if err := writeJSON(suitePath, Suite{Suite: true, Runs: []json.RawMessage{b2, b1}}); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run([]string{"--compare", suitePath, "--new", suitePath}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !regexpMatch(`(?s)compare b .*writes_per_sec\s+7\s+7\s+1.000.*compare a .*writes_per_sec\s+1000\s+1000`, out.String()) {
		t.Errorf("suite comparison:\n%s", out.String())
	}
}

func TestFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--replicas", "4"},
		{"--zipf", "0.5"},
		{"--idle", "--check"},
		{"--read-ratio", "2"},
		{"--new", "x.json"},
		{"--check", "--faults", "kill,flood"},
		{"extra"},
	} {
		var out bytes.Buffer
		if err := run(args, &out, &out); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}
