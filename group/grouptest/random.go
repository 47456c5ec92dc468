package grouptest

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

// Faults are the fault and workload options of one random run, drawn from
// its seed (and printed, so a failure explains itself).
type Faults struct {
	Voters       int
	DropRate     float64
	DupRate      float64
	MaxDelay     int64 // steps; a tick is StepsPerTick steps
	PersistDelay int64
	CrashRate    float64 // per tick
	PartRate     float64 // per tick
	SnapRate     float64 // per tick
	ConfRate     float64 // per tick
	TransferRate float64 // per tick
	ProposeRate  float64 // per tick
	ReadRate     float64 // per tick
	QuietRate    float64 // per tick: start a quiet period (no load; leader asked to quiesce)
	PreVote      bool
	CheckQuorum  bool
	LeaseReads   bool
}

func (f Faults) String() string {
	return fmt.Sprintf("voters=%d drop=%.2f dup=%.2f delay<=%d persistDelay<=%d crash=%.3f part=%.3f "+
		"snap=%.3f conf=%.3f transfer=%.3f propose=%.2f read=%.2f quiet=%.3f prevote=%v checkquorum=%v lease=%v",
		f.Voters, f.DropRate, f.DupRate, f.MaxDelay, f.PersistDelay, f.CrashRate, f.PartRate,
		f.SnapRate, f.ConfRate, f.TransferRate, f.ProposeRate, f.ReadRate, f.QuietRate, f.PreVote,
		f.CheckQuorum, f.LeaseReads)
}

// StepsPerTick is the number of simulated steps per replica tick.
const StepsPerTick = 10

// DrawFaults draws a run's options from seed. voters is 3 or 5 (0 = draw).
func DrawFaults(seed uint64, voters int) Faults {
	r := rand.New(rand.NewPCG(seed, 0xfa017))
	if voters == 0 {
		voters = 3 + 2*r.IntN(2)
	}
	f := Faults{
		Voters:       voters,
		DropRate:     r.Float64() * 0.10,
		DupRate:      r.Float64() * 0.05,
		MaxDelay:     1 + r.Int64N(3*StepsPerTick),
		PersistDelay: r.Int64N(2 * StepsPerTick),
		CrashRate:    r.Float64() * 0.02,
		PartRate:     r.Float64() * 0.02,
		SnapRate:     r.Float64() * 0.05,
		ConfRate:     r.Float64() * 0.03,
		TransferRate: r.Float64() * 0.02,
		ProposeRate:  0.2 + r.Float64()*2,
		ReadRate:     r.Float64() * 0.5,
		QuietRate:    r.Float64() * 0.02,
		PreVote:      r.IntN(4) != 0,
		CheckQuorum:  r.IntN(4) != 0,
	}
	f.LeaseReads = f.CheckQuorum && r.IntN(3) == 0
	return f
}

// RunResult summarises a random run.
type RunResult struct {
	Faults     Faults
	Committed  raftpb.Index
	Elections  int
	Restarts   int
	Snapshots  int
	ConfApply  int
	ReadsOK    int
	StepErrors int
	Quiesced   int
}

type pendingRead struct {
	id       uint64
	replica  raftpb.NodeID
	minIndex raftpb.Index
}

// Run drives a cluster with random faults and workload for ticks ticks,
// then heals everything and checks that the shard converges: one leader,
// every member applied to the same index with the same state.
func Run(seed uint64, voters int, ticks int) (RunResult, error) {
	f := DrawFaults(seed, voters)
	res := RunResult{Faults: f}
	var ids, spare []raftpb.NodeID
	for i := 1; i <= f.Voters; i++ {
		ids = append(ids, raftpb.NodeID(i))
	}
	spare = []raftpb.NodeID{raftpb.NodeID(f.Voters + 1), raftpb.NodeID(f.Voters + 2)}
	c, err := NewCluster(Options{
		Voters:       ids,
		Spare:        spare,
		Seed:         seed,
		PersistDelay: f.PersistDelay,
		Configure: func(cfg *group.Config) {
			cfg.DisablePreVote = !f.PreVote
			cfg.DisableCheckQuorum = !f.CheckQuorum
			if f.LeaseReads {
				cfg.ReadOnly = group.ReadLeaseBased
			}
			cfg.MaxSizePerMsg = 256
			cfg.MaxInflightMsgs = 4
		},
	})
	if err != nil {
		return res, err
	}
	c.Net.DropRate, c.Net.DupRate, c.Net.MaxDelay = f.DropRate, f.DupRate, f.MaxDelay
	d := &driver{c: c, f: f, res: &res, downUntil: map[raftpb.NodeID]int64{},
		unreachable: map[[2]raftpb.NodeID]int64{}}
	for tick := 0; tick < ticks && c.Err() == nil; tick++ {
		d.tick(true)
	}
	if err := c.Err(); err != nil {
		return res, err
	}
	if err := d.liveness(); err != nil {
		return res, err
	}
	res.Committed = c.CommittedIndex()
	res.Elections = len(c.oracle.leaders)
	res.StepErrors = c.StepErrors()
	for _, r := range c.Replicas {
		res.Restarts += r.Restarts
	}
	return res, c.Err()
}

type driver struct {
	c         *Cluster
	f         Faults
	res       *RunResult
	downUntil map[raftpb.NodeID]int64
	healAt    int64
	readSeq   uint64
	reads     []pendingRead
	keySeq    int
	// quietUntil: no load until then; the leader is asked to quiesce.
	quietUntil int64
	// unreachable[{observer, peer}] is the tick the link went bad (or -1
	// once reported), like a transport's liveness check.
	unreachable map[[2]raftpb.NodeID]int64
}

// livenessTicks is how long a peer must be unreachable before the
// observer is told (the transport's missed-ping bound).
const livenessTicks = 3

// tick advances one replica tick: StepsPerTick steps of delivery and
// persistence, each replica's Tick, and (with faults) random events.
func (d *driver) tick(faults bool) {
	c := d.c
	for s := 0; s < StepsPerTick; s++ {
		c.Now++
		c.Deliver()
		for _, id := range c.IDs {
			r := c.Replicas[id]
			if !r.Down {
				c.persistDue(r, false)
				c.Process(id)
			}
		}
	}
	for _, id := range c.IDs {
		c.Tick(id)
	}
	d.checkReads()
	d.reportLiveness()
	if c.Now < d.quietUntil || !faults {
		d.quiesce()
	}
	if !faults {
		return
	}
	r := c.Rand
	for id, until := range d.downUntil {
		if c.Now >= until {
			delete(d.downUntil, id)
			_ = c.Restart(id)
		}
	}
	if d.healAt > 0 && c.Now >= d.healAt {
		c.Net.Heal()
		d.healAt = 0
	}
	if r.Float64() < d.f.CrashRate {
		id := c.IDs[r.IntN(len(c.IDs))]
		if !c.Replicas[id].Down {
			c.Crash(id)
			d.downUntil[id] = c.Now + int64(1+r.IntN(30))*StepsPerTick
		}
	}
	if d.healAt == 0 && r.Float64() < d.f.PartRate {
		d.partition()
	}
	if r.Float64() < d.f.SnapRate {
		id := c.IDs[r.IntN(len(c.IDs))]
		if !c.Replicas[id].Down {
			if err := c.TakeSnapshot(id, raftpb.Index(r.IntN(20))); err == nil {
				d.res.Snapshots++
			}
		}
	}
	if r.Float64() < d.f.ConfRate {
		d.changeMembership()
	}
	if r.Float64() < d.f.TransferRate {
		if lead := c.Leader(); lead != 0 {
			cs := c.Replicas[lead].G.ConfState()
			t := cs.Voters[r.IntN(len(cs.Voters))]
			_ = c.Replicas[lead].G.TransferLeader(t)
			c.Process(lead)
		}
	}
	if r.Float64() < d.f.QuietRate {
		d.quietUntil = c.Now + int64(20+r.IntN(100))*StepsPerTick
	}
	if c.Now < d.quietUntil {
		return
	}
	for n := poisson(r, d.f.ProposeRate); n > 0; n-- {
		d.propose()
	}
	for n := poisson(r, d.f.ReadRate); n > 0; n-- {
		d.read()
	}
}

// quiesce asks the leader to quiesce, as the engine does for an idle shard.
func (d *driver) quiesce() {
	c := d.c
	if lead := c.Leader(); lead != 0 {
		if c.Replicas[lead].G.Quiesce() {
			d.res.Quiesced++
			c.Process(lead)
		}
	}
}

// reportLiveness tells each live replica about peers it has not been able
// to reach (down, or the link cut either way) for livenessTicks, once per
// outage, as the transport's node liveness does.
func (d *driver) reportLiveness() {
	c := d.c
	for _, obs := range c.IDs {
		ro := c.Replicas[obs]
		for _, peer := range c.IDs {
			if peer == obs {
				continue
			}
			key := [2]raftpb.NodeID{obs, peer}
			bad := ro.Down || c.Replicas[peer].Down || c.Net.Blocked(obs, peer) || c.Net.Blocked(peer, obs)
			since, seen := d.unreachable[key]
			switch {
			case !bad:
				delete(d.unreachable, key)
			case !seen:
				d.unreachable[key] = c.Now
			case since >= 0 && c.Now-since >= livenessTicks*StepsPerTick && !ro.Down:
				ro.G.ReportUnreachable(peer)
				c.Process(obs)
				d.unreachable[key] = -1
			}
		}
	}
}

func poisson(r *rand.Rand, rate float64) int {
	n := int(rate)
	if r.Float64() < rate-float64(n) {
		n++
	}
	return n
}

func (d *driver) partition() {
	c, r := d.c, d.c.Rand
	switch r.IntN(3) {
	case 0: // one node isolated
		c.Net.Isolate(c.IDs[r.IntN(len(c.IDs))], c.IDs)
	case 1: // the leader isolated
		if lead := c.Leader(); lead != 0 {
			c.Net.Isolate(lead, c.IDs)
		}
	default: // two halves
		perm := r.Perm(len(c.IDs))
		k := 1 + r.IntN(len(c.IDs)-1)
		var a, b []raftpb.NodeID
		for i, p := range perm {
			if i < k {
				a = append(a, c.IDs[p])
			} else {
				b = append(b, c.IDs[p])
			}
		}
		c.Net.Partition(a, b)
	}
	d.healAt = c.Now + int64(5+r.IntN(40))*StepsPerTick
}

func (d *driver) propose() {
	c, r := d.c, d.c.Rand
	id := c.IDs[r.IntN(len(c.IDs))]
	if c.Replicas[id].Down {
		return
	}
	d.keySeq++
	_ = c.Propose(id, EncodePut(fmt.Sprintf("k%d", r.IntN(8)), fmt.Sprintf("v%d", d.keySeq)))
}

// read starts a ReadIndex at a random replica. The index it returns must
// be at least everything seen committed anywhere when it started: that is
// what makes the read linearizable.
func (d *driver) read() {
	c, r := d.c, d.c.Rand
	id := c.IDs[r.IntN(len(c.IDs))]
	rep := c.Replicas[id]
	if rep.Down {
		return
	}
	d.readSeq++
	if err := rep.G.ReadIndex(d.readSeq); err != nil {
		return
	}
	d.reads = append(d.reads, pendingRead{id: d.readSeq, replica: id, minIndex: c.CommittedIndex()})
	c.Process(id)
}

func (d *driver) checkReads() {
	c := d.c
	for _, id := range c.IDs {
		r := c.Replicas[id]
		for _, rs := range r.ReadStates {
			k := slices.IndexFunc(d.reads, func(p pendingRead) bool { return p.id == rs.ID && p.replica == id })
			if k < 0 {
				continue
			}
			p := d.reads[k]
			d.reads = slices.Delete(d.reads, k, k+1)
			if rs.Dropped {
				continue
			}
			if rs.Index < p.minIndex {
				c.oracle.fail("linearizability: read %d at replica %d got index %d < %d committed when it began",
					rs.ID, id, rs.Index, p.minIndex)
			}
			d.res.ReadsOK++
		}
		r.ReadStates = r.ReadStates[:0]
	}
}

// changeMembership proposes a random valid change at the leader: add a
// spare as learner, promote a learner, remove a member, or swap a voter
// through a joint configuration.
func (d *driver) changeMembership() {
	c, r := d.c, d.c.Rand
	lead := c.Leader()
	if lead == 0 {
		return
	}
	cs := c.Replicas[lead].G.ConfState()
	if cs.Joint() {
		return
	}
	var nonMembers []raftpb.NodeID
	for _, id := range c.IDs {
		if !cs.IsMember(id) {
			nonMembers = append(nonMembers, id)
		}
	}
	var cc raftpb.ConfChange
	switch k := r.IntN(4); {
	case k == 0 && len(nonMembers) > 0:
		cc.Changes = []raftpb.ConfChangeSingle{{Type: raftpb.AddLearner, Node: nonMembers[r.IntN(len(nonMembers))]}}
	case k == 1 && len(cs.Learners) > 0:
		cc.Changes = []raftpb.ConfChangeSingle{{Type: raftpb.AddVoter, Node: cs.Learners[r.IntN(len(cs.Learners))]}}
	case k == 2 && len(cs.Voters) > 3:
		cc.Changes = []raftpb.ConfChangeSingle{{Type: raftpb.RemoveNode, Node: cs.Voters[r.IntN(len(cs.Voters))]}}
	case k == 2 && len(cs.Learners) > 0:
		cc.Changes = []raftpb.ConfChangeSingle{{Type: raftpb.RemoveNode, Node: cs.Learners[r.IntN(len(cs.Learners))]}}
	case k == 3 && len(cs.Learners) > 0:
		in := cs.Learners[r.IntN(len(cs.Learners))]
		out := cs.Voters[r.IntN(len(cs.Voters))]
		cc.Changes = []raftpb.ConfChangeSingle{{Type: raftpb.AddVoter, Node: in}, {Type: raftpb.RemoveNode, Node: out}}
		if r.IntN(2) == 0 {
			cc.Transition = raftpb.TransitionJointImplicit
		}
	default:
		return
	}
	if err := c.ProposeConfChange(lead, cc); err == nil {
		d.res.ConfApply++
	}
}

// liveness heals every fault and requires convergence within a bounded
// number of election timeouts.
func (d *driver) liveness() error {
	c := d.c
	c.Net.Heal()
	c.Net.DropRate, c.Net.DupRate = 0, 0
	for _, id := range c.IDs {
		if c.Replicas[id].Down {
			if err := c.Restart(id); err != nil {
				return err
			}
		}
	}
	// Leave any joint configuration and let a leader emerge.
	bound := 40 * c.Opts.ElectionTicks
	var lead raftpb.NodeID
	for t := 0; t < bound; t++ {
		d.tick(false)
		if lead = c.Leader(); lead != 0 {
			cs := c.Replicas[lead].G.ConfState()
			if !cs.Joint() && c.Replicas[lead].G.BasicStatus().LeadTransferee == 0 {
				break
			}
		}
	}
	if lead == 0 {
		return fmt.Errorf("liveness: no leader %d ticks after healing", bound)
	}
	// A final write must commit and be applied by every member.
	marker := EncodePut("final", "marker")
	var want raftpb.Index
	for t := 0; t < bound; t++ {
		if t%(2*c.Opts.ElectionTicks) == 0 {
			if l := c.Leader(); l != 0 {
				_ = c.Propose(l, marker)
			}
		}
		d.tick(false)
		if l := c.Leader(); l != 0 && c.Replicas[l].SM.Values["final"] == "marker" {
			want = c.Replicas[l].G.BasicStatus().HardState.Commit
			if d.converged(l, want) {
				return c.Err()
			}
		}
	}
	var states []string
	for _, id := range c.IDs {
		r := c.Replicas[id]
		st := r.G.BasicStatus()
		states = append(states, fmt.Sprintf("%d:%s t%d commit=%d applied=%d", id, st.Role, st.HardState.Term,
			st.HardState.Commit, r.SM.Applied))
	}
	return fmt.Errorf("liveness: no convergence %d ticks after healing (want %d): %v", bound, want, states)
}

// converged reports whether every member of the leader's configuration has
// applied exactly the leader's state at want.
func (d *driver) converged(lead raftpb.NodeID, want raftpb.Index) bool {
	c := d.c
	lr := c.Replicas[lead]
	cs := lr.G.ConfState()
	for _, id := range c.IDs {
		if !cs.IsMember(id) {
			continue
		}
		r := c.Replicas[id]
		if r.SM.Applied < want {
			return false
		}
	}
	// All members at or past want: their hashes at the same index agree
	// (the oracle checked every apply against the committed record).
	return true
}
