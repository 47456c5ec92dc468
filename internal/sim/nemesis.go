package sim

import (
	"fmt"
	"slices"
	"time"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
	"github.com/shardd/shardd/shard"
)

// The nemesis injects the run's faults at exponentially distributed times:
// partitions of the drawn kinds, crashes (sometimes of every node at once,
// sometimes in the middle of a step pass), pauses, membership changes and
// leadership transfers. Every draw comes from the nemesis stream, in a
// fixed order, so a seed replays.

type nemesis struct {
	s *Sim

	nextPart, healAt time.Duration
	partActive       bool
	rolling          []raftpb.NodeID // nodes still to isolate in a rolling partition
	rollEvery        time.Duration
	rollNext         time.Duration

	nextCrash, nextPause, nextConf, nextTransfer, nextReconcile, nextDisk time.Duration

	// confs are the membership changes proposed and not yet resolved.
	confs []confOp
	// lastConf is when a shard's latest change was proposed or resolved.
	lastConf map[raftpb.ShardID]time.Duration
	// retired marks (shard, node) pairs whose replica was removed: a node
	// id is never reused for a shard (its old replica may have voted).
	retired map[[2]uint64]bool
}

type confOp struct {
	shard raftpb.ShardID
	r     *replica
	p     *shard.Proposal
}

func (nm *nemesis) init(s *Sim) {
	nm.s = s
	nm.lastConf = map[raftpb.ShardID]time.Duration{}
	nm.retired = map[[2]uint64]bool{}
	f := &s.f
	nm.nextPart = nm.after(f.PartitionEvery)
	nm.nextCrash = nm.after(f.CrashEvery)
	nm.nextPause = nm.after(f.PauseEvery)
	nm.nextConf = nm.after(f.ConfChangeEvery)
	nm.nextTransfer = nm.after(f.TransferEvery)
	nm.nextDisk = nm.after(f.DiskErrorEvery)
}

// after returns the time of the next event of mean interval m (never if m
// is 0).
func (nm *nemesis) after(m time.Duration) time.Duration {
	if m <= 0 {
		return 1 << 62
	}
	return nm.s.now + nm.s.expDur(m)
}

func (nm *nemesis) act() {
	s := nm.s
	now := s.now
	if nm.partActive && now >= nm.healAt {
		s.net.HealAll()
		nm.partActive, nm.rolling = false, nil
		fmt.Fprintf(s.opts.Log, "t=%v heal\n", now)
	}
	if nm.partActive && len(nm.rolling) > 0 && now >= nm.rollNext {
		s.net.HealAll()
		s.net.Isolate(nm.rolling[0])
		fmt.Fprintf(s.opts.Log, "t=%v rolling: isolate node %d\n", now, nm.rolling[0])
		nm.rolling = nm.rolling[1:]
		nm.rollNext = now + nm.rollEvery
	}
	if now >= nm.nextPart {
		nm.nextPart = nm.after(s.f.PartitionEvery)
		if !nm.partActive && len(s.nodes) > 1 {
			nm.partition()
		}
	}
	if now >= nm.nextCrash {
		nm.nextCrash = nm.after(s.f.CrashEvery)
		nm.crash()
	}
	if now >= nm.nextPause {
		nm.nextPause = nm.after(s.f.PauseEvery)
		nm.pause()
	}
	if now >= nm.nextConf {
		nm.nextConf = nm.after(s.f.ConfChangeEvery)
		nm.confChange()
	}
	if now >= nm.nextTransfer {
		nm.nextTransfer = nm.after(s.f.TransferEvery)
		nm.transfer()
	}
	if now >= nm.nextDisk {
		nm.nextDisk = nm.after(s.f.DiskErrorEvery)
		nm.diskError()
	}
	if now >= nm.nextReconcile {
		nm.nextReconcile = now + 500*time.Millisecond
		nm.reconcile()
	}
}

func (nm *nemesis) partition() {
	s := nm.s
	var kinds []int
	for i := range partNames {
		if s.f.PartitionKinds&(1<<i) != 0 {
			kinds = append(kinds, 1<<i)
		}
	}
	if len(kinds) == 0 {
		return
	}
	kind := kinds[s.rnd.IntN(len(kinds))]
	ids := make([]raftpb.NodeID, len(s.nodes))
	for i := range ids {
		ids[i] = raftpb.NodeID(i + 1)
	}
	nm.partActive = true
	nm.healAt = s.now + s.expDur(s.f.PartitionFor)
	s.stats.Partitions++
	switch kind {
	case PartHalves:
		perm := s.rnd.Perm(len(ids))
		k := 1 + s.rnd.IntN(len(ids)-1)
		var a, b []raftpb.NodeID
		for i, p := range perm {
			if i < k {
				a = append(a, ids[p])
			} else {
				b = append(b, ids[p])
			}
		}
		s.net.Partition(a, b)
		fmt.Fprintf(s.opts.Log, "t=%v partition %v | %v\n", s.now, a, b)
	case PartOneNode:
		id := ids[s.rnd.IntN(len(ids))]
		s.net.Isolate(id)
		fmt.Fprintf(s.opts.Log, "t=%v isolate node %d\n", s.now, id)
	case PartLeader:
		id := nm.busiestLeader()
		s.net.Isolate(id)
		fmt.Fprintf(s.opts.Log, "t=%v isolate node %d (leads most shards)\n", s.now, id)
	case PartOneWay:
		id := ids[s.rnd.IntN(len(ids))]
		out := s.rnd.IntN(2) == 0
		for _, o := range ids {
			if o == id {
				continue
			}
			if out {
				s.net.Cut(id, o)
			} else {
				s.net.Cut(o, id)
			}
		}
		fmt.Fprintf(s.opts.Log, "t=%v one-way: node %d cannot %s\n", s.now, id, map[bool]string{true: "send", false: "hear"}[out])
	case PartRolling:
		perm := s.rnd.Perm(len(ids))
		nm.rolling = nm.rolling[:0]
		for _, p := range perm {
			nm.rolling = append(nm.rolling, ids[p])
		}
		nm.rollEvery = max(s.opts.Step, (nm.healAt-s.now)/time.Duration(len(ids)))
		nm.rollNext = s.now
		nm.healAt = s.now + nm.rollEvery*time.Duration(len(ids))
		fmt.Fprintf(s.opts.Log, "t=%v rolling partition %v every %v\n", s.now, nm.rolling, nm.rollEvery)
	}
}

// busiestLeader is the node leading the most shards (the lowest id on a
// tie).
func (nm *nemesis) busiestLeader() raftpb.NodeID {
	best, bestN := raftpb.NodeID(1), -1
	for _, n := range nm.s.nodes {
		if !n.up {
			continue
		}
		c := 0
		for _, r := range n.reps {
			if r != nil && r.Status().Role == group.Leader {
				c++
			}
		}
		if c > bestN {
			best, bestN = n.id, c
		}
	}
	return best
}

func (nm *nemesis) crash() {
	s := nm.s
	var up []*node
	for _, n := range s.nodes {
		if n.up && n.crashMid == 0 {
			up = append(up, n)
		}
	}
	if len(up) == 0 {
		return
	}
	if s.rnd.IntN(10) == 0 && len(up) == len(s.nodes) {
		// Power loss: every node at once.
		for _, n := range up {
			n.crash()
		}
		return
	}
	if len(s.nodes)-len(up) >= max(1, (len(s.nodes)-1)/2) {
		return // keep a majority of nodes up
	}
	n := up[s.rnd.IntN(len(up))]
	if s.rnd.Float64() < s.f.MidFlush {
		n.crashMid = 1 + s.rnd.IntN(2)
		n.crashMidUntil = s.now + 200*time.Millisecond
		return
	}
	n.crash()
}

// diskError makes a random node's WAL fail: its next flush fails and it
// fail-stops.
func (nm *nemesis) diskError() {
	s := nm.s
	var up []*node
	for _, n := range s.nodes {
		if n.up && n.crashMid == 0 {
			up = append(up, n)
		}
	}
	if len(up) == 0 || len(s.nodes)-len(up) >= max(1, (len(s.nodes)-1)/2) {
		return
	}
	n := up[s.rnd.IntN(len(up))]
	n.disk.armed.Store(true)
	fmt.Fprintf(s.opts.Log, "t=%v node %d's disk fails\n", s.now, n.id)
}

func (nm *nemesis) pause() {
	s := nm.s
	var cands []*node
	for _, n := range s.nodes {
		if n.up && s.now >= n.pausedUntil {
			cands = append(cands, n)
		}
	}
	if len(cands) == 0 {
		return
	}
	n := cands[s.rnd.IntN(len(cands))]
	n.pausedUntil = s.now + s.expDur(s.f.PauseFor)
	s.stats.Pauses++
	fmt.Fprintf(s.opts.Log, "t=%v pause node %d until %v\n", s.now, n.id, n.pausedUntil)
}

// leaderOf returns the live replica of a shard that leads it in the
// highest term, or nil.
func (s *Sim) leaderOf(id raftpb.ShardID) (*replica, shard.Status) {
	var best *replica
	var bst shard.Status
	for _, n := range s.nodes {
		if !n.up || n.reps[id-1] == nil {
			continue
		}
		r := n.reps[id-1]
		st := r.Status()
		if st.Role == group.Leader && (best == nil || st.Term > bst.Term) {
			best, bst = r, st
		}
	}
	return best, bst
}

func (nm *nemesis) transfer() {
	s := nm.s
	id := raftpb.ShardID(1 + s.rnd.IntN(s.opts.Shards))
	l, st := s.leaderOf(id)
	if l == nil {
		return
	}
	var cands []raftpb.NodeID
	for _, v := range st.Members.Voters {
		if v != l.node.id {
			cands = append(cands, v)
		}
	}
	if len(cands) == 0 {
		return
	}
	target := cands[s.rnd.IntN(len(cands))]
	l.TransferLeader(target)
	l.dirty = true
	s.stats.Transfers++
	fmt.Fprintf(s.opts.Log, "t=%v transfer shard %d: %d -> %d\n", s.now, id, l.node.id, target)
}

// confChange proposes one membership change of a random shard: demote a
// voter, promote a learner, both at once (a joint configuration), add a
// learner on a spare node or remove a learner (moving a replica takes
// several).
func (nm *nemesis) confChange() {
	s := nm.s
	id := raftpb.ShardID(1 + s.rnd.IntN(s.opts.Shards))
	for _, c := range nm.confs {
		if c.shard == id {
			return
		}
	}
	l, st := s.leaderOf(id)
	if l == nil || st.Members.Joint() {
		return
	}
	cs := st.Members
	minVoters := s.opts.Replicas/2 + 1
	members := len(cs.Voters) + len(cs.Learners)
	var spare []raftpb.NodeID
	for _, n := range s.nodes {
		if n.up && !cs.IsMember(n.id) && n.reps[id-1] == nil && !nm.retired[[2]uint64{uint64(id), uint64(n.id)}] {
			spare = append(spare, n.id)
		}
	}
	pick := func(ids []raftpb.NodeID) raftpb.NodeID { return ids[s.rnd.IntN(len(ids))] }
	var choices []func() raftpb.ConfChange
	if len(cs.Voters) > minVoters {
		choices = append(choices, func() raftpb.ConfChange {
			return raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.AddLearner, Node: pick(cs.Voters)}}}
		})
	}
	if len(cs.Learners) > 0 {
		choices = append(choices, func() raftpb.ConfChange {
			return raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.AddVoter, Node: pick(cs.Learners)}}}
		})
		choices = append(choices, func() raftpb.ConfChange {
			return raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{
				{Type: raftpb.AddLearner, Node: pick(cs.Voters)}, {Type: raftpb.AddVoter, Node: pick(cs.Learners)}}}
		})
		if members > s.opts.Replicas {
			choices = append(choices, func() raftpb.ConfChange {
				return raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.RemoveNode, Node: pick(cs.Learners)}}}
			})
		}
	}
	if len(spare) > 0 && members <= s.opts.Replicas {
		choices = append(choices, func() raftpb.ConfChange {
			return raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.AddLearner, Node: pick(spare)}}}
		})
	}
	if len(choices) == 0 {
		return
	}
	cc := choices[s.rnd.IntN(len(choices))]()
	for _, c := range cc.Changes {
		if c.Type != raftpb.RemoveNode && !cs.IsMember(c.Node) {
			// A new member's replica exists before the change does.
			if err := s.nodes[c.Node-1].join(id); err != nil {
				s.failf("node %d: joining shard %d: %v", c.Node, id, err)
				return
			}
		}
	}
	s.keySeq++
	p, err := l.ProposeConfChange(s.keySeq, cc)
	if err != nil {
		return
	}
	l.dirty = true
	nm.confs = append(nm.confs, confOp{shard: id, r: l, p: p})
	nm.lastConf[id] = s.now
	s.stats.ConfChanges++
	fmt.Fprintf(s.opts.Log, "t=%v shard %d %v: propose %v\n", s.now, id, cs, cc.Changes)
}

// reconcile resolves finished membership changes and removes the
// replicas of nodes that are no longer members, once the shard's changes
// have settled (none unresolved, the last one resolved a second ago, the
// leader's configuration not joint).
func (nm *nemesis) reconcile() {
	s := nm.s
	kept := nm.confs[:0]
	for _, c := range nm.confs {
		select {
		case <-c.p.Done():
			if _, err := c.p.Result(); err == nil {
				s.stats.ConfApplied++
			}
			nm.lastConf[c.shard] = s.now
			continue
		default:
		}
		if c.r.stopped {
			nm.lastConf[c.shard] = s.now
			continue
		}
		kept = append(kept, c)
	}
	nm.confs = kept
	for i := 1; i <= s.opts.Shards; i++ {
		id := raftpb.ShardID(i)
		last, changed := nm.lastConf[id]
		if !changed || s.now < last+time.Second || slices.ContainsFunc(nm.confs, func(c confOp) bool { return c.shard == id }) {
			continue
		}
		l, st := s.leaderOf(id)
		if l == nil || st.Members.Joint() {
			continue
		}
		for _, n := range s.nodes {
			if n.up && n.reps[id-1] != nil && !st.Members.IsMember(n.id) {
				fmt.Fprintf(s.opts.Log, "t=%v remove shard %d's replica on node %d (members %v)\n", s.now, id, n.id, st.Members)
				nm.retired[[2]uint64{uint64(id), uint64(n.id)}] = true
				if err := n.removeReplica(id); err != nil {
					s.failf("node %d: removing shard %d: %v", n.id, id, err)
				}
			}
		}
	}
}
