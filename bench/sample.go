package main

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Node metric families the figures are made of (engine/metrics.go).
const (
	famFsyncs    = "shardd_fsyncs_total"
	famEntries   = "shardd_persisted_entries_total"
	famMessages  = "shardd_raft_messages_sent_total"
	famFrames    = "shardd_transport_frames_sent_total"
	famDropped   = "shardd_transport_dropped_total"
	famPeerBytes = "shardd_peer_bytes_sent_total"
	famLeaderChg = "shardd_leader_changes_total"
	famQuiesced  = "shardd_quiesced_shards"
	// famElections is the in-process cluster's own count of leader
	// elections (engine.EventListener), for want of shardd_leader_changes
	// being counted.
	famElections = "bench_leader_elections_total"
)

// parseProm sums each family of a Prometheus text exposition over its
// labels: `name{labels} value` and `name value` lines; comments skipped.
func parseProm(b []byte) map[string]float64 {
	out := map[string]float64{}
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		end := bytes.IndexAny(line, "{ ")
		if end <= 0 {
			continue
		}
		name := string(line[:end])
		sp := bytes.LastIndexByte(line, ' ')
		if sp < end {
			continue
		}
		v, err := strconv.ParseFloat(string(line[sp+1:]), 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	return out
}

// sample is a snapshot of every cumulative figure, taken at both ends of
// the measured window.
type sample struct {
	at    time.Time
	cpu   time.Duration // user + system time of the process
	nodes map[string]float64
	disk  diskCounters
	mem   runtime.MemStats
	// rss and rssPeak are VmRSS and VmHWM; goroutines the count then.
	rss, rssPeak uint64
	goroutines   int
	// hostBusy and hostTotal are the machine's CPU ticks, busy and all
	// (/proc/stat), to tell how much else ran during the window.
	hostBusy, hostTotal uint64
}

// takeSample reads the process's counters; nodes and disk come from the
// caller (an in-process cluster, remote /metrics, or nothing).
func takeSample(nodes map[string]float64, disk diskCounters) sample {
	s := sample{nodes: nodes, disk: disk}
	runtime.ReadMemStats(&s.mem)
	s.rss, s.rssPeak = rss()
	s.hostBusy, s.hostTotal = hostCPU()
	s.goroutines = runtime.NumGoroutine()
	s.cpu = cpuTime()
	s.at = time.Now()
	return s
}

// cpuTime is the process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// hostCPU returns the machine's busy and total CPU ticks from the first
// line of /proc/stat (0, 0 where unavailable).
func hostCPU() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, 0
	}
	// user nice system idle iowait irq softirq steal [guest guest_nice,
	// already counted in user and nice]
	for i, f := range fields[1:9] {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, 0
		}
		total += v
		if i != 3 && i != 4 {
			busy += v
		}
	}
	return busy, total
}

// rss returns the process's resident set size and its peak (VmRSS and
// VmHWM of /proc/self/status), 0 where unavailable.
func rss() (cur, peak uint64) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			cur = n << 10
		case "VmHWM":
			peak = n << 10
		}
	}
	return cur, peak
}

// fillWindow sets the figures measured between a and b.
func (r *Result) fillWindow(a, b sample) {
	secs := b.at.Sub(a.at).Seconds()
	if secs <= 0 {
		return
	}
	r.DurationS = round(secs, 3)
	r.CPUPercent = round(100*(b.cpu-a.cpu).Seconds()/secs, 1)
	if b.hostTotal > a.hostTotal {
		r.HostCPUPercent = round(100*float64(runtime.NumCPU())*float64(b.hostBusy-a.hostBusy)/float64(b.hostTotal-a.hostTotal), 1)
	}
	r.RSSBytes, r.RSSPeakBytes = b.rss, b.rssPeak
	r.HeapBytes = b.mem.HeapInuse
	r.Goroutines = b.goroutines

	delta := func(fam string) float64 { return max(b.nodes[fam]-a.nodes[fam], 0) }
	fsyncs, entries := delta(famFsyncs), delta(famEntries)
	r.FsyncsPerSec = round(fsyncs/secs, 1)
	if fsyncs > 0 {
		r.EntriesPerFsync = round(entries/fsyncs, 2)
	}
	if entries > 0 && b.disk.walBytes > a.disk.walBytes {
		r.BytesPerEntry = round(float64(b.disk.walBytes-a.disk.walBytes)/entries, 1)
		r.DiskBytesPerEntry = round(float64(b.disk.diskBytes-a.disk.diskBytes)/entries, 1)
	}
	r.MessagesPerSec = round(delta(famMessages)/secs, 1)
	r.FramesPerSec = round(delta(famFrames)/secs, 1)
	r.Dropped = int64(delta(famDropped))
	r.NetBytesPerSec = round(delta(famPeerBytes)/secs, 0)
	r.LeaderChanges = int64(max(delta(famLeaderChg), delta(famElections)))

	gcs := b.mem.NumGC - a.mem.NumGC
	r.GCCount = int64(gcs)
	r.GCPauseTotalMs = round(float64(b.mem.PauseTotalNs-a.mem.PauseTotalNs)/1e6, 3)
	var maxPause uint64
	for i := uint32(0); i < min(gcs, 256); i++ {
		// PauseNs is a ring of the last 256 pauses; the most recent is at
		// (NumGC+255)%256.
		maxPause = max(maxPause, b.mem.PauseNs[(b.mem.NumGC-i+255)%256])
	}
	r.GCPauseMaxMs = round(float64(maxPause)/1e6, 3)
}
