package sim

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/shardd/shardd/internal/linz"

	"github.com/shardd/shardd/raftpb"
	"github.com/shardd/shardd/shard"
)

// Clients are closed loops: each issues one operation at a time — a put
// (Propose) or a linearizable get (Read, then Lookup once the read may
// run) of one key — to a random replica of the shard, and records it for
// porcupine with virtual call and return times. A put whose outcome is
// unknown (ErrResultUnknown, or the client's timeout) may have been applied
// at any time after its call: it is recorded with an infinite return time.
// A put that failed for sure (ErrBusy, ErrStopped before it reached Raft)
// is left out: if it were applied anyway, a later get would see a value
// nobody wrote.

// never is the return time of an operation whose outcome is unknown.
const never = int64(1) << 62

type client struct {
	id   int
	op   *op
	next time.Duration
}

type op struct {
	put      bool
	shard    raftpb.ShardID
	key      string
	value    string
	r        *replica
	prop     *shard.Proposal
	read     *shard.ReadRequest
	call     time.Duration
	deadline time.Duration
}

// kvInput and kvOutput are the porcupine model's operation values.
type kvInput struct {
	put   bool
	key   string
	value string
}

type kvOutput struct {
	value   string
	unknown bool
}

// kvModel is a register per key: puts set it, gets must return it.
var kvModel = porcupine.Model{
	Partition: linz.PartitionByKey(func(in any) string { return in.(kvInput).key }),
	Init:      func() interface{} { return "" },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		in, out := input.(kvInput), output.(kvOutput)
		if in.put {
			return true, in.value
		}
		return out.value == state.(string), state
	},
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(kvInput), output.(kvOutput)
		switch {
		case in.put && out.unknown:
			return fmt.Sprintf("put(%s, %s) -> ?", in.key, in.value)
		case in.put:
			return fmt.Sprintf("put(%s, %s)", in.key, in.value)
		}
		return fmt.Sprintf("get(%s) -> %q", in.key, out.value)
	},
	DescribeState: func(state interface{}) string { return fmt.Sprintf("%q", state) },
}

func keyName(id raftpb.ShardID, k int) string { return fmt.Sprintf("s%d/k%d", id, k) }

// issue starts an operation for every idle client whose think time is over.
func (s *Sim) issue() {
	if s.now < s.quietUntil {
		return
	}
	for _, c := range s.clients {
		if c.op != nil || s.now < c.next {
			continue
		}
		s.startOp(c)
	}
}

func (s *Sim) startOp(c *client) {
	r := s.crnd
	c.next = s.now + s.expDurR(r, s.f.ThinkTime)
	var id raftpb.ShardID
	if r.Float64() < 0.8 {
		id = s.hot[r.IntN(len(s.hot))]
	} else {
		id = raftpb.ShardID(1 + r.IntN(s.opts.Shards))
	}
	// A random live replica of the shard.
	var cands []*replica
	for _, n := range s.nodes {
		if n.up && n.reps[id-1] != nil {
			cands = append(cands, n.reps[id-1])
		}
	}
	if len(cands) == 0 {
		return
	}
	rep := cands[r.IntN(len(cands))]
	o := &op{shard: id, key: keyName(id, r.IntN(s.opts.KeysPerShard)), r: rep, call: s.now,
		deadline: s.now + s.f.ClientTimeout}
	if r.Float64() >= s.f.ReadRatio {
		o.put = true
		s.valueSeq++
		o.value = fmt.Sprintf("v%d", s.valueSeq)
		s.keySeq++
		p, err := rep.Propose(s.keySeq, putCmd(o.key, []byte(o.value)))
		if err != nil {
			s.stats.OpsFailed++
			return
		}
		o.prop = p
		s.props = append(s.props, propRef{p: p, r: rep, key: s.keySeq, at: s.now})
	} else {
		rr, err := rep.Read()
		if err != nil {
			s.stats.OpsFailed++
			return
		}
		o.read = rr
	}
	rep.dirty = true
	c.op = o
}

// poll completes the operations that have an outcome (or timed out).
func (s *Sim) poll() {
	for _, c := range s.clients {
		o := c.op
		if o == nil {
			continue
		}
		if o.put {
			select {
			case <-o.prop.Done():
				_, err := o.prop.Result()
				switch {
				case err == nil:
					s.record(c, o, kvOutput{}, s.now)
					s.stats.Writes++
				case errors.Is(err, shard.ErrResultUnknown):
					s.record(c, o, kvOutput{unknown: true}, time.Duration(never))
					s.stats.WritesUnknown++
				default:
					s.stats.OpsFailed++
				}
				c.op = nil
				continue
			default:
			}
		} else {
			select {
			case <-o.read.Done():
				if o.read.Err() == nil {
					if v, err := o.r.Lookup([]byte(o.key)); err == nil {
						s.record(c, o, kvOutput{value: string(v)}, s.now)
						s.stats.Reads++
					} else {
						s.stats.OpsFailed++
					}
				} else {
					s.stats.OpsFailed++
				}
				c.op = nil
				continue
			default:
			}
		}
		if s.now >= o.deadline {
			if o.put {
				s.record(c, o, kvOutput{unknown: true}, time.Duration(never))
				s.stats.WritesUnknown++
			} else {
				s.stats.OpsFailed++
			}
			s.stats.Timeouts++
			c.op = nil
		}
	}
}

func (s *Sim) record(c *client, o *op, out kvOutput, ret time.Duration) {
	s.history = append(s.history, porcupine.Operation{
		ClientId: c.id,
		Input:    kvInput{put: o.put, key: o.key, value: o.value},
		Call:     int64(o.call),
		Output:   out,
		Return:   int64(ret),
	})
}

// finalReads reads every key from its shard's leader once the liveness
// phase converged: every acknowledged write must be there (the check is
// the history's linearizability, with these reads last).
func (s *Sim) finalReads(leaders []*replica) {
	id := len(s.clients)
	for i, r := range leaders {
		for k := 0; k < s.opts.KeysPerShard; k++ {
			key := keyName(raftpb.ShardID(i+1), k)
			v, err := r.Lookup([]byte(key))
			if err != nil {
				s.failf("final read of %s: %v", key, err)
				return
			}
			s.history = append(s.history, porcupine.Operation{
				ClientId: id,
				Input:    kvInput{key: key},
				Call:     int64(s.now),
				Output:   kvOutput{value: string(v)},
				Return:   int64(s.now),
			})
		}
	}
}

// checkHistory checks the clients' history for linearizability, key by
// key; on failure it writes porcupine's visualization and names it.
func (s *Sim) checkHistory() error {
	res, info := porcupine.CheckOperationsVerbose(kvModel, s.history, s.opts.CheckTimeout)
	switch res {
	case porcupine.Ok:
		return nil
	case porcupine.Unknown:
		// Undecided, not illegal: no key to name, and looking for one
		// without a budget ran for ever and exhausted memory (eager seed
		// 2038 of 120 s runs).
		return fmt.Errorf("linearizability: history of %d operations (%d writes of unknown outcome) not decided within CheckTimeout %v",
			len(s.history), s.stats.WritesUnknown, s.opts.CheckTimeout)
	}
	dir := s.opts.HistoryDir
	if dir == "" {
		dir = os.TempDir()
	}
	path := filepath.Join(dir, fmt.Sprintf("sim-seed-%d-history.html", s.opts.Seed))
	msg := fmt.Sprintf("linearizability: history of %d operations is %s", len(s.history), strings.ToLower(string(res)))
	if key, ops := s.illegalKey(); key != "" {
		msg += fmt.Sprintf(" (key %q: %s)", key, ops)
	}
	if err := porcupine.VisualizePath(kvModel, info, path); err != nil {
		return fmt.Errorf("%s (visualization failed: %v)", msg, err)
	}
	return fmt.Errorf("%s; visualization: %s", msg, path)
}

// illegalKey finds the first key whose own history is not linearizable and
// describes its operations in call order (simulated ms), for the failure
// message: the visualization is hard to read on a big history.
func (s *Sim) illegalKey() (string, string) {
	byKey := map[string][]porcupine.Operation{}
	var keys []string
	for _, op := range s.history {
		k := op.Input.(kvInput).key
		if _, ok := byKey[k]; !ok {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], op)
	}
	for _, k := range keys {
		ops := byKey[k]
		// Bounded like the whole check: a key that cannot be decided in
		// time is not named.
		if porcupine.CheckOperationsTimeout(kvModel, ops, s.opts.CheckTimeout) != porcupine.Illegal {
			continue
		}
		var b strings.Builder
		for _, op := range ops {
			in, out := op.Input.(kvInput), op.Output.(kvOutput)
			what := "get -> " + out.value
			if in.put {
				what = "put " + in.value
				if out.unknown {
					what += " (unknown)"
				}
			}
			end := "inf"
			if op.Return < math.MaxInt64/2 {
				end = fmt.Sprint(time.Duration(op.Return).Milliseconds())
			}
			fmt.Fprintf(&b, "[c%d %d-%s %s] ", op.ClientId, time.Duration(op.Call).Milliseconds(), end, what)
		}
		return k, b.String()
	}
	return "", ""
}
