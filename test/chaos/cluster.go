package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shardd/shardd/internal/testports"
)

// buildShardd builds the daemon once into dir and returns the binary's
// path. The daemon is built without -race unless race is set (then its
// logs are scanned for DATA RACE like for panics).
func buildShardd(dir string, race bool) (string, error) {
	bin := filepath.Join(dir, "shardd")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "github.com/shardd/shardd/cmd/shardd")
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building shardd: %v\n%s", err, out)
	}
	return bin, nil
}

// clusterConfig is the shape of a chaos cluster.
type clusterConfig struct {
	bin      string
	dir      string // data dirs and logs go here
	nodes    int
	shards   uint64
	replicas int
	seed     uint64 // of the proxies' random sources
	logLevel string
	logf     func(format string, args ...any)
}

// cluster runs shardd processes on loopback with a linkProxy on every
// directed peer link: node i's --peers gives its own real address for
// itself and the address of proxy i -> j for every other node j.
// Client addresses (--client-peers) are real: the nemesis cuts Raft
// traffic, not the forwarding of client requests.
type cluster struct {
	cfg   clusterConfig
	nodes []*node                  // index id-1
	links map[[2]uint64]*linkProxy // {from, to}
}

// nodeState is what the test did to a node last.
type nodeState int

const (
	nodeRunning nodeState = iota
	nodePaused
	nodeDead
)

func (s nodeState) String() string {
	return [...]string{"running", "paused", "dead"}[s]
}

// node is one shardd process and its addresses, which stay the same
// across restarts (so its peers' proxies and the clients find it again).
type node struct {
	id                        uint64
	raft, client, metrics     string
	dataDir, logPath, peerArg string

	mu      sync.Mutex
	state   nodeState
	cmd     *exec.Cmd
	logFile *os.File
	exited  chan struct{} // closed when the current process has exited
	// killing is set while the test kills the process on purpose; any
	// other exit is recorded in unexpected.
	killing    bool
	unexpected []string
	starts     int
}

// startCluster starts the proxies and every node; it does not wait for
// the shards to elect leaders (waitLed does).
func startCluster(cfg clusterConfig) (*cluster, error) {
	c := &cluster{cfg: cfg, links: map[[2]uint64]*linkProxy{}}
	ports := testports.New(cfg.seed)
	n := uint64(cfg.nodes)
	for id := uint64(1); id <= n; id++ {
		nd := &node{id: id, dataDir: filepath.Join(cfg.dir, fmt.Sprintf("node%d", id)),
			logPath: filepath.Join(cfg.dir, fmt.Sprintf("node%d.log", id)), state: nodeDead}
		for _, a := range []*string{&nd.raft, &nd.client, &nd.metrics} {
			addr, err := ports.Addr()
			if err != nil {
				return nil, err
			}
			*a = addr
		}
		c.nodes = append(c.nodes, nd)
	}
	for from := uint64(1); from <= n; from++ {
		for to := uint64(1); to <= n; to++ {
			if from == to {
				continue
			}
			p, err := newLinkProxy(from, to, c.node(to).raft, cfg.seed)
			if err != nil {
				c.stop()
				return nil, err
			}
			c.links[[2]uint64{from, to}] = p
		}
	}
	var clientPeers []string
	for _, nd := range c.nodes {
		clientPeers = append(clientPeers, fmt.Sprintf("%d=%s", nd.id, nd.client))
	}
	for _, nd := range c.nodes {
		var peers []string
		for _, other := range c.nodes {
			addr := other.raft
			if other.id != nd.id {
				addr = c.links[[2]uint64{nd.id, other.id}].addr()
			}
			peers = append(peers, fmt.Sprintf("%d=%s", other.id, addr))
		}
		nd.peerArg = strings.Join(peers, ",")
		if err := c.start(nd.id, strings.Join(clientPeers, ",")); err != nil {
			c.stop()
			return nil, err
		}
	}
	return c, nil
}

func (c *cluster) node(id uint64) *node { return c.nodes[id-1] }

func (c *cluster) ids() []uint64 {
	out := make([]uint64, len(c.nodes))
	for i := range out {
		out[i] = uint64(i + 1)
	}
	return out
}

func (c *cluster) clientAddrs() []string {
	var out []string
	for _, nd := range c.nodes {
		out = append(out, nd.client)
	}
	return out
}

func (c *cluster) clientPeers() string {
	var out []string
	for _, nd := range c.nodes {
		out = append(out, fmt.Sprintf("%d=%s", nd.id, nd.client))
	}
	return strings.Join(out, ",")
}

// start starts node id's process on its data dir (a restart when the dir
// exists). Its output is appended to its log, after a marker line.
func (c *cluster) start(id uint64, clientPeers string) error {
	nd := c.node(id)
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.state != nodeDead {
		return fmt.Errorf("node %d is %v", id, nd.state)
	}
	lf, err := os.OpenFile(nd.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	nd.starts++
	fmt.Fprintf(lf, "=== chaos: start %d of node %d at %s\n", nd.starts, id, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(c.cfg.bin, "serve",
		"--node-id", strconv.FormatUint(id, 10),
		"--listen", nd.raft, "--client-listen", nd.client, "--metrics-listen", nd.metrics,
		"--peers", nd.peerArg, "--client-peers", clientPeers,
		"--data-dir", nd.dataDir,
		"--shards", strconv.FormatUint(c.cfg.shards, 10), "--replicas", strconv.Itoa(c.cfg.replicas),
		"--log-level", c.cfg.logLevel)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return err
	}
	nd.cmd, nd.logFile, nd.state, nd.killing = cmd, lf, nodeRunning, false
	exited := make(chan struct{})
	nd.exited = exited
	go func() {
		err := cmd.Wait()
		nd.mu.Lock()
		if !nd.killing {
			msg := fmt.Sprintf("node %d (start %d) exited on its own: %v", id, nd.starts, err)
			nd.unexpected = append(nd.unexpected, msg)
			c.cfg.logf("%s", msg)
		}
		nd.state = nodeDead
		nd.mu.Unlock()
		lf.Close()
		close(exited)
	}()
	return nil
}

// restart starts a dead node again.
func (c *cluster) restart(id uint64) error { return c.start(id, c.clientPeers()) }

// signal sends sig to node id's process and waits for it to exit when
// sig is SIGKILL or SIGTERM.
func (c *cluster) signal(id uint64, sig syscall.Signal) error {
	nd := c.node(id)
	nd.mu.Lock()
	if nd.state == nodeDead {
		nd.mu.Unlock()
		return fmt.Errorf("node %d is dead", id)
	}
	cmd, exited := nd.cmd, nd.exited
	switch sig {
	case syscall.SIGKILL, syscall.SIGTERM:
		nd.killing = true
	case syscall.SIGSTOP:
		nd.state = nodePaused
	case syscall.SIGCONT:
		nd.state = nodeRunning
	}
	nd.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("node %d: %v: %w", id, sig, err)
	}
	if sig == syscall.SIGTERM {
		// A paused node would never see it.
		_ = cmd.Process.Signal(syscall.SIGCONT)
	}
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			return fmt.Errorf("node %d did not exit on %v within 30s", id, sig)
		}
	}
	return nil
}

func (c *cluster) kill(id uint64) error   { return c.signal(id, syscall.SIGKILL) }
func (c *cluster) pause(id uint64) error  { return c.signal(id, syscall.SIGSTOP) }
func (c *cluster) resume(id uint64) error { return c.signal(id, syscall.SIGCONT) }

func (c *cluster) state(id uint64) nodeState {
	nd := c.node(id)
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.state
}

// exitCode is the last process's exit code (-1 if it was signalled or
// still runs).
func (c *cluster) exitCode(id uint64) int {
	nd := c.node(id)
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd == nil || nd.cmd.ProcessState == nil {
		return -1
	}
	return nd.cmd.ProcessState.ExitCode()
}

// unexpectedExits lists every exit the test did not cause.
func (c *cluster) unexpectedExits() []string {
	var out []string
	for _, nd := range c.nodes {
		nd.mu.Lock()
		out = append(out, nd.unexpected...)
		nd.mu.Unlock()
	}
	return out
}

// setLink sets the fault of link from -> to.
func (c *cluster) setLink(from, to uint64, f linkFault) { c.links[[2]uint64{from, to}].set(f) }

// isolate sets f on every link from and to node id.
func (c *cluster) isolate(id uint64, f linkFault) {
	for k, p := range c.links {
		if k[0] == id || k[1] == id {
			p.set(f)
		}
	}
}

// healLinks lets every link pass.
func (c *cluster) healLinks() {
	for _, p := range c.links {
		p.set(linkFault{})
	}
}

func (c *cluster) linkStats() proxyStats {
	var s proxyStats
	for _, p := range c.links {
		ps := p.stats()
		s.accepted += ps.accepted
		s.resets += ps.resets
		s.bytes += ps.bytes
	}
	return s
}

// stop kills every process (SIGKILL) and closes the proxies.
func (c *cluster) stop() {
	for _, nd := range c.nodes {
		if c.state(nd.id) != nodeDead {
			_ = c.kill(nd.id)
		}
	}
	for _, p := range c.links {
		p.close()
	}
}

// nodeStatus is the part of shardd's /status JSON the test reads.
type nodeStatus struct {
	Node        uint64        `json:"node"`
	Failed      string        `json:"failed"`
	LocalShards []shardStatus `json:"local_shards"`
}

type shardStatus struct {
	Shard    uint64   `json:"shard"`
	Role     string   `json:"role"`
	Term     uint64   `json:"term"`
	Leader   uint64   `json:"leader"`
	Commit   uint64   `json:"commit"`
	Applied  uint64   `json:"applied"`
	Voters   []uint64 `json:"voters"`
	Learners []uint64 `json:"learners"`
	Error    string   `json:"error"`
	// Hash is the running hash of the applied entries, compared when the
	// daemon exposes it (nil otherwise).
	Hash *uint64 `json:"hash"`
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

func (c *cluster) httpGet(ctx context.Context, id uint64, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+c.node(id).metrics+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("node %d %s: HTTP %d: %s", id, path, resp.StatusCode, strings.TrimSpace(buf.String()))
	}
	return buf.Bytes(), nil
}

func (c *cluster) status(ctx context.Context, id uint64) (nodeStatus, error) {
	var st nodeStatus
	b, err := c.httpGet(ctx, id, "/status")
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(b, &st)
}

// allStatus reads /status of every node; nodes that do not answer are
// missing from the map.
func (c *cluster) allStatus(ctx context.Context) map[uint64]nodeStatus {
	out := map[uint64]nodeStatus{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, id := range c.ids() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := c.status(ctx, id)
			if err == nil {
				mu.Lock()
				out[id] = st
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// procMetrics are the process figures compared at start and end.
type procMetrics struct{ goroutines, openFDs float64 }

func (c *cluster) metrics(ctx context.Context, id uint64) (procMetrics, error) {
	var m procMetrics
	b, err := c.httpGet(ctx, id, "/metrics")
	if err != nil {
		return m, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	found := 0
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		var dst *float64
		switch name {
		case "go_goroutines":
			dst = &m.goroutines
		case "process_open_fds":
			dst = &m.openFDs
		default:
			continue
		}
		if *dst, err = strconv.ParseFloat(strings.TrimSpace(val), 64); err != nil {
			return m, fmt.Errorf("node %d /metrics: %q: %w", id, sc.Text(), err)
		}
		found++
	}
	if err := sc.Err(); err != nil {
		return m, err
	}
	if m.goroutines == 0 {
		return m, fmt.Errorf("node %d /metrics lacks go_goroutines", id)
	}
	if found < 2 {
		// shardd's /metrics has no process_open_fds (it would need
		// vm.WriteFDMetrics): count the process's descriptors instead.
		if m.openFDs, err = c.countFDs(id); err != nil {
			return m, err
		}
	}
	return m, nil
}

// countFDs counts node id's open files in /proc (Linux).
func (c *cluster) countFDs(id uint64) (float64, error) {
	nd := c.node(id)
	nd.mu.Lock()
	pid := 0
	if nd.cmd != nil && nd.cmd.Process != nil {
		pid = nd.cmd.Process.Pid
	}
	nd.mu.Unlock()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, fmt.Errorf("node %d: open files: %w", id, err)
	}
	return float64(len(ents)), nil
}

// hosting maps every shard to the nodes that host a replica of it, as
// their /status says (every node must answer).
func (c *cluster) hosting(ctx context.Context) (map[uint64][]uint64, error) {
	all := c.allStatus(ctx)
	if len(all) != len(c.nodes) {
		return nil, fmt.Errorf("only %d of %d nodes answer /status", len(all), len(c.nodes))
	}
	out := map[uint64][]uint64{}
	for id, st := range all {
		for _, sh := range st.LocalShards {
			out[sh.Shard] = append(out[sh.Shard], id)
		}
	}
	for _, nodes := range out {
		slices.Sort(nodes)
	}
	return out, nil
}

// unled describes the shards that are not yet led on every hosting node
// (a hosting node that does not answer counts as not led), or that the
// hosting nodes do not agree on: at most a few, and how many in all.
func unled(hosting map[uint64][]uint64, all map[uint64]nodeStatus) (int, []string) {
	type view struct{ leader, term uint64 }
	views := map[uint64]map[uint64]view{}
	for id, st := range all {
		for _, sh := range st.LocalShards {
			if views[sh.Shard] == nil {
				views[sh.Shard] = map[uint64]view{}
			}
			views[sh.Shard][id] = view{sh.Leader, sh.Term}
		}
	}
	count := 0
	var ex []string
	for shard, nodes := range hosting {
		bad := ""
		var leader uint64
		for _, id := range nodes {
			v, ok := views[shard][id]
			switch {
			case !ok:
				bad = fmt.Sprintf("node %d does not report it", id)
			case v.leader == 0:
				bad = fmt.Sprintf("node %d knows no leader (term %d)", id, v.term)
			case leader != 0 && v.leader != leader:
				bad = fmt.Sprintf("nodes disagree on the leader (%d, %d)", leader, v.leader)
			}
			if bad != "" {
				break
			}
			leader = v.leader
		}
		if bad != "" {
			count++
			if len(ex) < 5 {
				ex = append(ex, fmt.Sprintf("shard %d: %s", shard, bad))
			}
		}
	}
	slices.Sort(ex)
	return count, ex
}

// diverged describes the shards whose replicas differ in commit, applied
// index or (when exposed) hash, that report an error, or whose voters are
// not exactly the hosting nodes (with no learner left).
func diverged(hosting map[uint64][]uint64, all map[uint64]nodeStatus) (int, []string) {
	reps := map[uint64]map[uint64]shardStatus{}
	for id, st := range all {
		for _, sh := range st.LocalShards {
			if reps[sh.Shard] == nil {
				reps[sh.Shard] = map[uint64]shardStatus{}
			}
			reps[sh.Shard][id] = sh
		}
	}
	count := 0
	var ex []string
	for shard, nodes := range hosting {
		var parts []string
		bad := false
		var first *shardStatus
		for _, id := range nodes {
			sh, ok := reps[shard][id]
			if !ok {
				parts = append(parts, fmt.Sprintf("n%d:missing", id))
				bad = true
				continue
			}
			h := "-"
			if sh.Hash != nil {
				h = strconv.FormatUint(*sh.Hash, 16)
			}
			parts = append(parts, fmt.Sprintf("n%d:commit=%d,applied=%d,hash=%s,voters=%v,learners=%v%s",
				id, sh.Commit, sh.Applied, h, sh.Voters, sh.Learners, errSuffix(sh.Error)))
			voters := slices.Sorted(slices.Values(sh.Voters))
			if sh.Error != "" || !slices.Equal(voters, nodes) || len(sh.Learners) > 0 {
				bad = true // an error, or a membership not back to every hosting node as voter
			}
			if first == nil {
				first = &sh
				continue
			}
			if sh.Applied != first.Applied || sh.Commit != first.Commit ||
				(sh.Hash != nil && first.Hash != nil && *sh.Hash != *first.Hash) {
				bad = true
			}
		}
		if bad {
			count++
			if len(ex) < 5 {
				ex = append(ex, fmt.Sprintf("shard %d: %s", shard, strings.Join(parts, " ")))
			}
		}
	}
	slices.Sort(ex)
	return count, ex
}

func errSuffix(e string) string {
	if e == "" {
		return ""
	}
	return ",error=" + e
}

// badLog matches the log lines that fail a run: a panic, a fatal error, a
// data race (with -chaos.race), or anything shardd logs at ERROR (a node
// or replica stopped on an error, a peer refusing our stream, a shard not
// restarted). warnLog matches WARN lines: faults explain most of them
// (a snapshot not sent over a cut link), so they are only reported.
var (
	badLog  = regexp.MustCompile(`(?i)panic|fatal|DATA RACE|\blevel=ERROR\b`)
	warnLog = regexp.MustCompile(`\blevel=WARN\b`)
	logMsg  = regexp.MustCompile(`\bmsg=("(?:[^"\\]|\\.)*"|\S+)`)
)

// logScan is what scanLogs found.
type logScan struct {
	bad   []string       // bad lines (at most a few per node) with their place
	warns map[string]int // WARN lines by message
}

// scanLogs reads every node's log for bad and WARN lines.
func (c *cluster) scanLogs() (logScan, error) {
	out := logScan{warns: map[string]int{}}
	for _, nd := range c.nodes {
		f, err := os.Open(nd.logPath)
		if err != nil {
			return out, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		n := 0
		for line := 1; sc.Scan(); line++ {
			text := sc.Text()
			switch {
			case badLog.MatchString(text):
				n++
				if n <= 5 {
					out.bad = append(out.bad, fmt.Sprintf("%s:%d: %s", nd.logPath, line, text))
				}
			case warnLog.MatchString(text):
				msg := text
				if m := logMsg.FindStringSubmatch(text); m != nil {
					msg = m[1]
				}
				out.warns[msg]++
			}
		}
		if n > 5 {
			out.bad = append(out.bad, fmt.Sprintf("%s: %d more bad lines", nd.logPath, n-5))
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return out, err
		}
	}
	return out, nil
}
