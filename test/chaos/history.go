package chaos

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/shardd/shardd/internal/linz"
	"google.golang.org/grpc/status"

	"github.com/shardd/shardd/client"
)

// The workload: closed-loop workers doing get, put and compare-and-swap on
// a small key set through a kvClient (rawKV by default, or the Go client;
// each worker its own, over every node, so it meets every fault), each
// operation with its own deadline, recorded for porcupine with monotonic
// call and return times.
//
// Recording rules (TESTING.md, invariant 11):
//   - a write that succeeded, and a CAS that failed its comparison
//     (FailedPrecondition), are definite;
//   - a write that certainly did not run (errNotApplied: only rawKV knows)
//     is not recorded;
//   - any other write error may hide a success — a timeout, Aborted
//     (ErrOutcomeUnknown), and Unavailable too, since the Go client retries
//     Unavailable and one of its attempts may have reached Raft before the
//     error: the write is recorded as maybe-applied, with return time
//     math.MaxInt64 (porcupine then may linearize it anywhere after its
//     call, including never);
//   - a read that failed is not recorded.
//
// Every written value is unique in the run (worker and sequence number),
// and never "", which the model uses for "absent".

// never is the return time of an operation whose outcome is unknown.
const never = int64(math.MaxInt64)

type opKind uint8

const (
	opGet opKind = iota
	opPut
	opCAS
)

// kvInput and kvOutput are porcupine's operation values.
type kvInput struct {
	kind     opKind
	key      string
	value    string // put, cas: the new value
	expected string // cas: "" = expect absent
}

type kvOutput struct {
	value   string // get: the value read ("" = absent)
	ok      bool   // cas: it swapped
	unknown bool   // put, cas: outcome unknown
}

// kvModel is a register per key; the history is partitioned by key.
var kvModel = porcupine.Model{
	Partition: linz.PartitionByKey(func(in any) string { return in.(kvInput).key }),
	Init:      func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(string), input.(kvInput), output.(kvOutput)
		switch in.kind {
		case opGet:
			return out.value == st, st
		case opPut:
			return true, in.value
		}
		// CAS. An unknown outcome is whatever the state implies at the
		// point porcupine linearizes it.
		match := st == in.expected
		switch {
		case out.unknown && match, out.ok && match:
			return true, in.value
		case out.unknown, !out.ok && !match:
			return true, st
		}
		return false, st
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvInput), output.(kvOutput)
		switch in.kind {
		case opGet:
			return fmt.Sprintf("get(%s) -> %q", in.key, out.value)
		case opPut:
			if out.unknown {
				return fmt.Sprintf("put(%s, %s) -> ?", in.key, in.value)
			}
			return fmt.Sprintf("put(%s, %s)", in.key, in.value)
		}
		res := "ok"
		switch {
		case out.unknown:
			res = "?"
		case !out.ok:
			res = "failed"
		}
		return fmt.Sprintf("cas(%s, %q -> %s) -> %s", in.key, in.expected, in.value, res)
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%q", state) },
}

// recorder collects the history of a run.
type recorder struct {
	t0 time.Time

	mu     sync.Mutex
	ops    []porcupine.Operation
	counts map[string]int // by op kind and outcome, for the report
	shards map[string]uint64
}

func newRecorder() *recorder {
	return &recorder{t0: time.Now(), counts: map[string]int{}, shards: map[string]uint64{}}
}

// now is the monotonic time since the start of the run, in nanoseconds.
func (r *recorder) now() int64 { return int64(time.Since(r.t0)) }

func (r *recorder) add(op porcupine.Operation, outcome string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, op)
	r.counts[outcome]++
}

func (r *recorder) count(outcome string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts[outcome]++
}

func (r *recorder) noteShard(key string, shard uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.shards[key] = shard
}

// hotShards are the shards of the keys written so far.
func (r *recorder) hotShards() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []uint64
	for _, s := range r.shards {
		out = append(out, s)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (r *recorder) history() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ops)
}

func (r *recorder) summary() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := make([]string, 0, len(r.counts))
	for k := range r.counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, r.counts[k]))
	}
	return strings.Join(parts, " ")
}

// workload drives the load.
type workload struct {
	rec       *recorder
	addrs     []string
	keys      []string
	workers   int
	opTimeout time.Duration
	seed      uint64
	client    string // "go" or "raw": see newKVClient

	// latest is the last value any worker saw per key: what a CAS
	// expects, so that many succeed.
	latestMu sync.Mutex
	latest   map[string]string
}

func (w *workload) saw(key, value string) {
	w.latestMu.Lock()
	defer w.latestMu.Unlock()
	if w.latest == nil {
		w.latest = map[string]string{}
	}
	w.latest[key] = value
}

func (w *workload) lastSeen(key string) string {
	w.latestMu.Lock()
	defer w.latestMu.Unlock()
	return w.latest[key]
}

func keyNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("chaos-key-%03d", i)
	}
	return out
}

// run drives the workers until ctx is done and waits for them.
func (w *workload) run(ctx context.Context) error {
	clients := make([]kvClient, w.workers)
	for i := range clients {
		cl, err := newKVClient(w.client, w.addrs, w.opTimeout)
		if err != nil {
			for _, c := range clients[:i] {
				c.close()
			}
			return err
		}
		clients[i] = cl
	}
	var wg sync.WaitGroup
	for i, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cl.close()
			w.worker(ctx, i, cl)
		}()
	}
	wg.Wait()
	return nil
}

func (w *workload) worker(ctx context.Context, id int, cl kvClient) {
	rnd := rand.New(rand.NewPCG(w.seed, uint64(id)))
	for seq := 0; ctx.Err() == nil; seq++ {
		key := w.keys[rnd.IntN(len(w.keys))]
		p := rnd.Float64()
		switch {
		case p < 0.5:
			if v, ok := w.get(cl, id, key); ok {
				w.saw(key, v)
			}
		case p < 0.8:
			v := fmt.Sprintf("w%d-%d", id, seq)
			if w.put(cl, id, key, v) {
				w.saw(key, v)
			}
		default:
			v := fmt.Sprintf("w%d-%d", id, seq)
			if w.cas(cl, id, key, w.lastSeen(key), v) {
				w.saw(key, v)
			}
		}
	}
}

// get reads key linearizably; a failed read is not recorded.
func (w *workload) get(cl kvClient, id int, key string) (string, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), w.opTimeout)
	defer cancel()
	call := w.rec.now()
	v, found, err := cl.get(ctx, key)
	ret := w.rec.now()
	if err != nil {
		w.rec.count("get:failed")
		return "", false
	}
	if !found {
		v = ""
	}
	w.rec.add(porcupine.Operation{ClientId: id, Input: kvInput{kind: opGet, key: key},
		Call: call, Output: kvOutput{value: v}, Return: ret}, "get:ok")
	return v, true
}

// put writes value; true if acknowledged.
func (w *workload) put(cl kvClient, id int, key, value string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), w.opTimeout)
	defer cancel()
	call := w.rec.now()
	shard, err := cl.put(ctx, key, value)
	ret := w.rec.now()
	out := kvOutput{}
	outcome := "put:ok"
	switch {
	case err == nil:
		w.rec.noteShard(key, shard)
	case errors.Is(err, errNotApplied):
		w.rec.count("put:not-applied")
		return false
	default:
		out.unknown, ret, outcome = true, never, "put:unknown("+errClass(err)+")"
	}
	w.rec.add(porcupine.Operation{ClientId: id, Input: kvInput{kind: opPut, key: key, value: value},
		Call: call, Output: out, Return: ret}, outcome)
	return err == nil
}

// cas swaps key from expected ("" = absent) to value; true if it swapped.
func (w *workload) cas(cl kvClient, id int, key, expected, value string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), w.opTimeout)
	defer cancel()
	call := w.rec.now()
	shard, err := cl.cas(ctx, key, expected, value)
	ret := w.rec.now()
	out := kvOutput{ok: err == nil}
	outcome := "cas:ok"
	switch {
	case err == nil:
		w.rec.noteShard(key, shard)
	case errors.Is(err, errCASFailed):
		outcome = "cas:failed"
	case errors.Is(err, errNotApplied):
		w.rec.count("cas:not-applied")
		return false
	default:
		out.unknown, ret, outcome = true, never, "cas:unknown("+errClass(err)+")"
	}
	w.rec.add(porcupine.Operation{ClientId: id, Input: kvInput{kind: opCAS, key: key, value: value,
		expected: expected}, Call: call, Output: out, Return: ret}, outcome)
	return err == nil
}

// errClass names an error's kind for the counts.
func errClass(err error) string {
	switch {
	case errors.Is(err, client.ErrOutcomeUnknown):
		return "aborted"
	case errors.Is(err, client.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	case errors.Is(err, client.ErrInvalidArgument):
		return "invalid"
	}
	if st, ok := status.FromError(err); ok {
		return strings.ToLower(st.Code().String())
	}
	return "other"
}

// finalReads reads every key once more (after healing), retrying until
// deadline; the reads join the history. It returns each key's value ("" =
// absent) and the keys it could not read.
func (w *workload) finalReads(deadline time.Duration) (map[string]string, []string, error) {
	cl, err := newKVClient(w.client, w.addrs, w.opTimeout)
	if err != nil {
		return nil, nil, err
	}
	defer cl.close()
	out := map[string]string{}
	var failed []string
	stop := time.Now().Add(deadline)
	for _, k := range w.keys {
		for {
			if v, ok := w.get(cl, w.workers, k); ok {
				out[k] = v
				break
			}
			if time.Now().After(stop) {
				failed = append(failed, k)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return out, failed, nil
}

// lostWrites checks that every acknowledged write is present: each key's
// final value must be written by a write W (acknowledged or maybe-applied)
// that no acknowledged write of the key follows in real time (one whose
// call came after W returned), and an absent key must have no acknowledged
// write at all. It returns one line per key that breaks this, and the
// number of acknowledged writes.
func lostWrites(history []porcupine.Operation, final map[string]string) ([]string, int) {
	type write struct {
		value        string
		call, ret    int64
		acknowledged bool
	}
	byKey := map[string][]write{}
	acked := 0
	for _, op := range history {
		in, out := op.Input.(kvInput), op.Output.(kvOutput)
		if in.kind == opGet || (in.kind == opCAS && !out.ok && !out.unknown) {
			continue
		}
		wr := write{value: in.value, call: op.Call, ret: op.Return, acknowledged: !out.unknown}
		if wr.acknowledged {
			acked++
		}
		byKey[in.key] = append(byKey[in.key], wr)
	}
	var bad []string
	keys := make([]string, 0, len(final))
	for k := range final {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := final[k]
		var lastAcked *write
		for i, wr := range byKey[k] {
			if wr.acknowledged && (lastAcked == nil || wr.call > lastAcked.call) {
				lastAcked = &byKey[k][i]
			}
		}
		if v == "" {
			if lastAcked != nil {
				bad = append(bad, fmt.Sprintf("%s: absent at the end, but %s was acknowledged at %v",
					k, lastAcked.value, time.Duration(lastAcked.ret)))
			}
			continue
		}
		var src *write
		for i, wr := range byKey[k] {
			if wr.value == v {
				src = &byKey[k][i]
			}
		}
		switch {
		case src == nil:
			bad = append(bad, fmt.Sprintf("%s: final value %s was never written", k, v))
		case lastAcked != nil && src.ret != never && lastAcked.call > src.ret:
			bad = append(bad, fmt.Sprintf("%s: final value %s (written in [%v, %v]) but %s, acknowledged at %v, was called after it",
				k, v, time.Duration(src.call), time.Duration(src.ret), lastAcked.value, time.Duration(lastAcked.ret)))
		}
	}
	return bad, acked
}

// nemesisEvent is one fault on the timeline, for the visualization.
type nemesisEvent struct {
	start, end int64
	what       string
}

// checkResult is the outcome of the porcupine check.
type checkResult struct {
	result  porcupine.CheckResult
	elapsed time.Duration
	badKeys []string // keys whose own history is not linearizable (or timed out)
	explain []string // per bad key: where the longest linearization stops
	html    string   // visualization of the first bad key
}

// checkLinearizable runs porcupine over the history; when it is not Ok it
// finds the keys at fault, explains each (and dumps its history as text
// into dir) and writes the visualization of the first into dir.
func checkLinearizable(history []porcupine.Operation, timeout time.Duration, dir string,
	events []nemesisEvent) (checkResult, error) {
	start := time.Now()
	res, _ := porcupine.CheckOperationsVerbose(kvModel, history, timeout)
	cr := checkResult{result: res, elapsed: time.Since(start)}
	if res == porcupine.Ok {
		return cr, nil
	}
	var ann []porcupine.Annotation
	for _, e := range events {
		ann = append(ann, porcupine.Annotation{Tag: "nemesis", Start: e.start, End: e.end,
			Description: e.what, BackgroundColor: "#fdd"})
	}
	for _, part := range kvModel.Partition(history) {
		key := part[0].Input.(kvInput).key
		r, info := porcupine.CheckOperationsVerbose(kvModel, part, timeout)
		if r == porcupine.Ok {
			continue
		}
		cr.badKeys = append(cr.badKeys, fmt.Sprintf("%s (%s, %d ops)", key, r, len(part)))
		txt := filepath.Join(dir, "history-"+key+".txt")
		if err := os.WriteFile(txt, []byte(dumpOps(part)), 0o644); err != nil {
			return cr, err
		}
		cr.explain = append(cr.explain, fmt.Sprintf("%s (all its operations in %s):\n%s", key, txt,
			explainPartial(part, info, events)))
		if cr.html != "" {
			continue
		}
		info.AddAnnotations(ann)
		path := filepath.Join(dir, "history-"+key+".html")
		if err := porcupine.VisualizePath(kvModel, info, path); err != nil {
			return cr, fmt.Errorf("visualizing %s: %w", key, err)
		}
		cr.html = path
	}
	return cr, nil
}

func fmtTime(t int64) string {
	if t == never {
		return "      ∞"
	}
	return fmt.Sprintf("%8.3fs", time.Duration(t).Seconds())
}

func describeOp(op porcupine.Operation) string {
	return fmt.Sprintf("[%s, %s] client %2d %s", fmtTime(op.Call), fmtTime(op.Return), op.ClientId,
		kvModel.DescribeOperation(op.Input, op.Output))
}

// dumpOps lists ops by call time, one a line.
func dumpOps(ops []porcupine.Operation) string {
	ops = slices.Clone(ops)
	slices.SortStableFunc(ops, func(a, b porcupine.Operation) int { return cmpInt64(a.Call, b.Call) })
	var b strings.Builder
	for _, op := range ops {
		b.WriteString(describeOp(op))
		b.WriteByte('\n')
	}
	return b.String()
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// explainPartial tells where the longest linearization porcupine found
// for one key's ops stops: its last steps with the state after each, the
// first operations (by return time) it could not place, and the faults
// around them.
func explainPartial(part []porcupine.Operation, info porcupine.LinearizationInfo, events []nemesisEvent) string {
	partials := info.PartialLinearizations()
	if len(partials) == 0 || len(partials[0]) == 0 {
		return "  (no partial linearization)"
	}
	longest := partials[0][0]
	for _, l := range partials[0] {
		if len(l) > len(longest) {
			longest = l
		}
	}
	var b strings.Builder
	state := kvModel.Init()
	placed := map[int]bool{}
	for i, id := range longest {
		_, state = kvModel.Step(state, part[id].Input, part[id].Output)
		placed[id] = true
		if i >= len(longest)-6 {
			fmt.Fprintf(&b, "  linearized %s  => %s\n", describeOp(part[id]), kvModel.DescribeState(state))
		}
	}
	var rest []int
	for id := range part {
		if !placed[id] {
			rest = append(rest, id)
		}
	}
	slices.SortFunc(rest, func(a, b int) int { return cmpInt64(part[a].Return, part[b].Return) })
	for i, id := range rest {
		if i == 4 {
			break
		}
		fmt.Fprintf(&b, "  not placed %s\n", describeOp(part[id]))
	}
	// A value no successful write wrote, read back: the write ran although
	// its client was told otherwise (e.g. a retried CAS that had applied).
	read := map[string]porcupine.Operation{}
	for _, op := range part {
		if in := op.Input.(kvInput); in.kind == opGet {
			if v := op.Output.(kvOutput).value; v != "" {
				if _, seen := read[v]; !seen {
					read[v] = op
				}
			}
		}
	}
	hints := 0
	for _, op := range part {
		in, out := op.Input.(kvInput), op.Output.(kvOutput)
		if in.kind == opCAS && !out.ok && !out.unknown && hints < 3 {
			if g, ok := read[in.value]; ok {
				hints++
				fmt.Fprintf(&b, "  hint: %s, yet %s read its value\n", describeOp(op), describeOp(g))
			}
		}
	}
	if len(rest) > 0 {
		at := part[rest[0]].Call
		for _, e := range events {
			if e.start <= at+int64(5*time.Second) && e.end >= at-int64(5*time.Second) {
				fmt.Fprintf(&b, "  nemesis    [%s, %s] %s\n", fmtTime(e.start), fmtTime(e.end), e.what)
			}
		}
	}
	return strings.TrimRight(b.String(), "\n")
}
