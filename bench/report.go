package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is one run's figures: the table and the JSON. Every field is
// always written (0 where a mode does not measure it) except linearizable
// and check, which only --check writes. Rates are per second of the
// measured window, summed over the cluster's nodes; CPU, RSS and GC are
// the whole process's (nodes and clients alike, in-process).
type Result struct {
	Name      string  `json:"name"`
	Mode      string  `json:"mode"` // load, idle, check, remote
	Loop      string  `json:"loop"` // closed, open, none
	Nodes     int     `json:"nodes"`
	Shards    int     `json:"shards"`
	Replicas  int     `json:"replicas"`
	Clients   int     `json:"clients"`
	Payload   int     `json:"payload"`
	Keys      int     `json:"keys"`
	ReadRatio float64 `json:"read_ratio"`
	Zipf      float64 `json:"zipf"`
	Rate      float64 `json:"rate"` // offered, open loop
	DurationS float64 `json:"duration_s"`
	WarmupS   float64 `json:"warmup_s"`
	// StartupS is the time from opening the nodes to every shard led (and
	// leaders spread).
	StartupS float64 `json:"startup_s"`
	// QuiesceS (idle) is the time from every shard led to every replica
	// quiesced.
	QuiesceS float64 `json:"quiesce_s"`

	WritesPerSec float64 `json:"writes_per_sec"`
	ReadsPerSec  float64 `json:"reads_per_sec"`
	Ops          int64   `json:"ops"`
	Errors       int64   `json:"errors"`
	Unknown      int64   `json:"unknown"` // outcome unknown (leader changed)
	Retries      int64   `json:"retries"` // busy / no leader, retried
	FirstError   string  `json:"first_error"`
	P50Ms        float64 `json:"p50_ms"`
	P90Ms        float64 `json:"p90_ms"`
	P99Ms        float64 `json:"p99_ms"`
	P999Ms       float64 `json:"p999_ms"`
	MaxMs        float64 `json:"max_ms"`
	WriteP99Ms   float64 `json:"write_p99_ms"`
	ReadP99Ms    float64 `json:"read_p99_ms"`

	FsyncsPerSec      float64 `json:"fsyncs_per_sec"`
	EntriesPerFsync   float64 `json:"entries_per_fsync"`
	BytesPerEntry     float64 `json:"bytes_per_entry"`      // WAL bytes written per persisted entry
	DiskBytesPerEntry float64 `json:"disk_bytes_per_entry"` // WAL + flushes + compactions
	MessagesPerSec    float64 `json:"messages_per_sec"`     // Raft messages sent between nodes
	FramesPerSec      float64 `json:"frames_per_sec"`       // transport frames sent between nodes
	NetBytesPerSec    float64 `json:"net_bytes_per_sec"`
	// Dropped counts messages the transport dropped in the window (full
	// send queue, unreachable peer): Raft retransmits them, late.
	Dropped       int64 `json:"dropped_messages"`
	LeaderChanges int64 `json:"leader_changes"`

	CPUPercent float64 `json:"cpu_percent"` // of one core
	// HostCPUPercent is the whole machine's, every process's (of one
	// core): well above cpu_percent, something else ran during the window
	// and the figures are suspect.
	HostCPUPercent float64 `json:"host_cpu_percent"`
	RSSBytes       uint64  `json:"rss_bytes"`
	RSSPeakBytes   uint64  `json:"rss_peak_bytes"`
	HeapBytes      uint64  `json:"heap_bytes"`
	Goroutines     int     `json:"goroutines"`
	GCCount        int64   `json:"gc_count"`
	GCPauseTotalMs float64 `json:"gc_pause_total_ms"`
	GCPauseMaxMs   float64 `json:"gc_pause_max_ms"`

	LeadersPerNode map[string]int `json:"leaders_per_node"`

	GoVersion  string `json:"go_version"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	NumCPU     int    `json:"num_cpu"`
	StartedAt  string `json:"started_at"`

	Linearizable *bool        `json:"linearizable,omitempty"`
	Check        *CheckReport `json:"check,omitempty"`
}

// CheckReport is what --check adds.
type CheckReport struct {
	Result     string   `json:"result"` // porcupine: Ok, Illegal, Unknown (timed out)
	Operations int      `json:"operations"`
	Ambiguous  int      `json:"ambiguous"` // writes recorded as maybe-applied
	Keys       int      `json:"keys"`
	CheckS     float64  `json:"check_s"`
	Faults     []string `json:"faults"`
	HTML       string   `json:"html,omitempty"`
	// RecoveryS is the longest time, after a fault ended (node reopened,
	// partition healed), until every replica knew a leader again.
	RecoveryS float64 `json:"recovery_s"`
}

// newResult fills what every mode shares.
func newResult(o *options, mode string) *Result {
	r := &Result{
		Mode: mode, Loop: "closed",
		Nodes: o.nodes, Shards: o.shards, Replicas: o.replicas, Clients: o.clients,
		Payload: o.payload, Keys: o.keys, ReadRatio: o.readRatio, Zipf: o.zipf, Rate: o.rate,
		WarmupS:        o.warmup.Seconds(),
		LeadersPerNode: map[string]int{},
		GoVersion:      runtime.Version(),
		GOMAXPROCS:     runtime.GOMAXPROCS(0),
		NumCPU:         runtime.NumCPU(),
		StartedAt:      time.Now().UTC().Format(time.RFC3339),
	}
	if o.rate > 0 {
		r.Loop = "open"
	}
	return r
}

func (r *Result) setLeaders(counts map[uint64]int) {
	r.LeadersPerNode = map[string]int{}
	for id, n := range counts {
		name := strconv.FormatUint(id, 10)
		if id == 0 {
			name = "none"
		}
		r.LeadersPerNode[name] = n
	}
}

func round(v float64, digits int) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// printTable writes the figures as a table.
func printTable(w io.Writer, r *Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	switch r.Mode {
	case "idle":
		row("run", "%s: idle, %d nodes, %d shards x %d replicas", r.Name, r.Nodes, r.Shards, r.Replicas)
	case "remote":
		row("run", "%s: remote, %s loop, %d targets, %d shards, %d clients, payload %d B",
			r.Name, r.Loop, r.Nodes, r.Shards, r.Clients, r.Payload)
	default:
		row("run", "%s: %s, %s loop, %d nodes, %d shards x %d replicas, %d clients, payload %d B",
			r.Name, r.Mode, r.Loop, r.Nodes, r.Shards, r.Replicas, r.Clients, r.Payload)
	}
	if r.Loop == "open" {
		row("offered rate", "%s/s", human(r.Rate))
	}
	row("window", "%.1f s after %.1f s warm-up; startup %.2f s", r.DurationS, r.WarmupS, r.StartupS)
	row("leaders per node", "%s", leadersString(r.LeadersPerNode))
	if r.Mode != "idle" {
		row("writes/s", "%s", human(r.WritesPerSec))
		row("reads/s", "%s", human(r.ReadsPerSec))
		row("errors", "%d (unknown outcome %d, retries %d)%s", r.Errors, r.Unknown, r.Retries, firstErr(r.FirstError))
		row("latency p50/p90/p99/p99.9", "%s / %s / %s / %s ms (max %s)",
			fmtMs(r.P50Ms), fmtMs(r.P90Ms), fmtMs(r.P99Ms), fmtMs(r.P999Ms), fmtMs(r.MaxMs))
		row("fsyncs/s", "%s (all nodes)", human(r.FsyncsPerSec))
		row("entries per fsync", "%.1f", r.EntriesPerFsync)
		if r.Mode != "remote" {
			row("bytes per entry", "%.1f WAL, %.1f disk", r.BytesPerEntry, r.DiskBytesPerEntry)
		}
	} else {
		row("quiesced after", "%.2f s", r.QuiesceS)
	}
	row("messages/s, frames/s", "%s, %s (%s B/s)", human(r.MessagesPerSec), human(r.FramesPerSec), human(r.NetBytesPerSec))
	row("dropped messages", "%d", r.Dropped)
	row("leader changes", "%d", r.LeaderChanges)
	row("CPU", "%.1f%% of one core (%d cores, GOMAXPROCS %d); machine %.1f%%, other processes %.1f%%",
		r.CPUPercent, r.NumCPU, r.GOMAXPROCS, r.HostCPUPercent, max(r.HostCPUPercent-r.CPUPercent, 0))
	row("RSS", "%s (peak %s), heap %s, %d goroutines", bytesStr(r.RSSBytes), bytesStr(r.RSSPeakBytes), bytesStr(r.HeapBytes), r.Goroutines)
	row("GC", "%d cycles, pauses %.2f ms total, %.2f ms max", r.GCCount, r.GCPauseTotalMs, r.GCPauseMaxMs)
	if c := r.Check; c != nil {
		row("history", "%d operations on %d keys, %d ambiguous writes; checked in %.1f s (%s)",
			c.Operations, c.Keys, c.Ambiguous, c.CheckS, c.Result)
		row("faults", "%s", strings.Join(c.Faults, "; "))
		row("recovery", "every shard led again at most %.2f s after a fault ended", c.RecoveryS)
	}
	tw.Flush()
	if r.Linearizable != nil {
		fmt.Fprintf(w, "linearizable: %v\n", *r.Linearizable)
		if r.Check != nil && r.Check.HTML != "" {
			fmt.Fprintf(w, "visualization: %s\n", r.Check.HTML)
		}
	}
}

func firstErr(s string) string {
	if s == "" {
		return ""
	}
	return "; first: " + s
}

func leadersString(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if len(a) != len(b) {
			return len(a) - len(b)
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func fmtMs(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// human writes a count with thousands separators.
func human(v float64) string {
	neg := v < 0
	s := strconv.FormatFloat(math.Abs(v), 'f', 0, 64)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func bytesStr(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", b>>10)
}

// writeJSON writes v indented, creating the file's directory.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// comparedFigures are the measured figures --compare shows, in order;
// higherIsBetter says which way a ratio above 1 points.
var comparedFigures = []struct {
	field          string
	higherIsBetter bool
}{
	{"writes_per_sec", true}, {"reads_per_sec", true},
	{"p50_ms", false}, {"p90_ms", false}, {"p99_ms", false}, {"p999_ms", false}, {"max_ms", false},
	{"errors", false}, {"unknown", false},
	{"fsyncs_per_sec", false}, {"entries_per_fsync", true},
	{"bytes_per_entry", false}, {"disk_bytes_per_entry", false},
	{"messages_per_sec", false}, {"frames_per_sec", false}, {"net_bytes_per_sec", false}, {"dropped_messages", false},
	{"leader_changes", false},
	{"cpu_percent", false}, {"host_cpu_percent", false}, {"rss_bytes", false}, {"rss_peak_bytes", false}, {"heap_bytes", false},
	{"gc_count", false}, {"gc_pause_total_ms", false}, {"gc_pause_max_ms", false},
	{"startup_s", false}, {"quiesce_s", false},
}

// configFields must match for a comparison to be like for like; a
// difference is reported above the figures.
var configFields = []string{"mode", "loop", "nodes", "shards", "replicas", "clients", "payload",
	"keys", "read_ratio", "zipf", "rate", "gomaxprocs"}

// loadRuns reads a result file: one run, or a suite {"runs": [...]}.
func loadRuns(path string) ([]map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var top map[string]any
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	runs, ok := top["runs"].([]any)
	if !ok {
		return []map[string]any{top}, nil
	}
	var out []map[string]any
	for _, r := range runs {
		if m, ok := r.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out, nil
}

func toMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}

// compareWith prints this run against the earlier runs.
func compareWith(w io.Writer, old []map[string]any, r *Result) error {
	m, err := toMap(r)
	if err != nil {
		return err
	}
	return compareRuns(w, old, []map[string]any{m})
}

// compareFiles prints newPath's runs against oldPath's.
func compareFiles(w io.Writer, oldPath, newPath string) error {
	old, err := loadRuns(oldPath)
	if err != nil {
		return err
	}
	cur, err := loadRuns(newPath)
	if err != nil {
		return err
	}
	return compareRuns(w, old, cur)
}

// compareRuns pairs runs by name (a single run on each side is paired
// whatever the names) and prints old, new and new/old for each figure.
func compareRuns(w io.Writer, old, cur []map[string]any) error {
	pairs := 0
	for _, c := range cur {
		var o map[string]any
		if len(old) == 1 && len(cur) == 1 {
			o = old[0]
		} else {
			for _, x := range old {
				if x["name"] == c["name"] {
					o = x
				}
			}
		}
		if o == nil {
			fmt.Fprintf(w, "compare: no earlier run named %v\n", c["name"])
			continue
		}
		pairs++
		printComparison(w, o, c)
	}
	if pairs == 0 {
		return fmt.Errorf("compare: no run to compare with")
	}
	return nil
}

func printComparison(w io.Writer, old, cur map[string]any) {
	fmt.Fprintf(w, "\ncompare %v (earlier: %v, started %v)\n", cur["name"], old["name"], old["started_at"])
	for _, f := range configFields {
		if fmt.Sprint(old[f]) != fmt.Sprint(cur[f]) {
			fmt.Fprintf(w, "  note: %s differs: %v then, %v now\n", f, old[f], cur[f])
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "figure\tearlier\tnow\tratio\t\t")
	for _, f := range comparedFigures {
		ov, ok1 := old[f.field].(float64)
		nv, ok2 := cur[f.field].(float64)
		if !ok1 || !ok2 {
			continue
		}
		ratio, verdict := "-", ""
		if ov != 0 {
			q := nv / ov
			ratio = strconv.FormatFloat(q, 'f', 3, 64)
			// Within ±5% is noise on a shared machine.
			if q > 1.05 || q < 0.95 {
				verdict = "worse"
				if (q > 1) == f.higherIsBetter {
					verdict = "better"
				}
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", f.field, num(ov), num(nv), ratio, verdict)
	}
	tw.Flush()
}

func num(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 6, 64)
}
