package sim

import (
	"fmt"
	"strings"
	"time"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
	"github.com/shardd/shardd/shard"
	"github.com/shardd/shardd/transport/transporttest"
)

// liveness heals every fault — partitions, message loss, pauses, crashed
// nodes — and requires, within opts.LivenessTimeouts election timeouts,
// one leader per shard that every member follows, every proposal ever
// made resolved, and every member's replica applied to the leader's last
// index with the same state hash. Then it reads every key from its
// shard's leader into the history.
func (s *Sim) liveness() error {
	fmt.Fprintf(s.opts.Log, "t=%v liveness phase\n", s.now)
	s.net.HealAll()
	s.net.SetDefaultFaults(transporttest.Faults{MinDelay: s.f.MinDelay, MaxDelay: s.f.MaxDelay, FrameRate: s.f.FrameRate})
	for _, n := range s.nodes {
		n.pausedUntil = 0
		n.crashMid = 0
		if n.up && n.disk.armed.Load() {
			// A failing disk is a fault too. Its node would fail-stop at
			// its next flush, during the phase (seed 47 with 120 s runs);
			// it cannot simply be disarmed, as the WAL writer may have hit
			// it already. Crash it now; it restarts on a healthy disk.
			n.crash()
		}
		if !n.up {
			n.downUntil = s.now
		}
	}
	start := s.now
	timeout := time.Duration(s.opts.LivenessTimeouts*s.opts.ElectionTicks) * s.opts.Tick
	for {
		s.step(false)
		if s.err != nil {
			return s.err
		}
		leaders, why := s.converged()
		if why == "" {
			s.stats.Converged = s.now - start
			fmt.Fprintf(s.opts.Log, "t=%v converged after %v\n", s.now, s.stats.Converged)
			s.finalReads(leaders)
			if s.err != nil || s.opts.QuiesceTicks <= 0 {
				return s.err
			}
			return s.quiescence()
		}
		if s.now-start >= timeout {
			return fmt.Errorf("t=%v: liveness: not converged %v after healing (%d election timeouts): %s",
				s.now, s.now-start, s.opts.LivenessTimeouts, why)
		}
	}
}

// quiescence lets the healed, idle cluster run on and requires every
// replica of every shard to be quiesced at once within QuiesceTicks plus
// LivenessTimeouts election timeouts: an idle shard that stays awake — a
// replica that keeps calling elections nobody answers next to a leader
// that keeps quiescing — costs for ever what quiescence is there to save.
func (s *Sim) quiescence() error {
	start := s.now
	timeout := time.Duration(s.opts.QuiesceTicks+s.opts.LivenessTimeouts*s.opts.ElectionTicks) * s.opts.Tick
	for {
		why := s.awakeShard()
		if why == "" {
			s.stats.Quiesced = s.now - start
			fmt.Fprintf(s.opts.Log, "t=%v quiesced after %v\n", s.now, s.stats.Quiesced)
			return nil
		}
		if s.now-start >= timeout {
			return fmt.Errorf("t=%v: liveness: idle shards not quiesced %v after converging: %s", s.now, s.now-start, why)
		}
		s.step(false)
		if s.err != nil {
			return s.err
		}
	}
}

// awakeShard names a shard with a member not quiesced, or returns "".
func (s *Sim) awakeShard() string {
	for i := range s.opts.Shards {
		id := raftpb.ShardID(i + 1)
		var lead *replica
		if w := s.shardConverged(id, &lead); w != "" {
			return w
		}
		for _, m := range allMembers(lead.Status()) {
			if !s.nodes[m-1].reps[id-1].Status().Quiesced {
				return fmt.Sprintf("shard %d's member %d is awake: %s", id, m, s.describeShard(id))
			}
		}
	}
	return ""
}

// converged returns every shard's leader, or why the cluster has not
// converged yet.
func (s *Sim) converged() ([]*replica, string) {
	leaders := make([]*replica, s.opts.Shards)
	var why []string
	for i := range leaders {
		id := raftpb.ShardID(i + 1)
		if w := s.shardConverged(id, &leaders[i]); w != "" {
			why = append(why, w)
			if len(why) >= 4 {
				break
			}
		}
	}
	if len(why) == 0 {
		for _, p := range s.props {
			if p.resolved() {
				continue
			}
			st := p.r.Status()
			return nil, fmt.Sprintf("proposal %d made at %v to shard %d on node %d is unresolved (replica: term %d leader %d applied %d)",
				p.key, p.at, p.r.shard, p.r.node.id, st.Term, st.Leader, st.Applied)
		}
	}
	return leaders, strings.Join(why, "; ")
}

func (s *Sim) shardConverged(id raftpb.ShardID, leader **replica) string {
	var lead *replica
	for _, n := range s.nodes {
		if !n.up || n.reps[id-1] == nil {
			continue
		}
		if st := n.reps[id-1].Status(); st.Role == group.Leader {
			if lead != nil {
				return fmt.Sprintf("shard %d has leaders on nodes %d and %d", id, lead.node.id, n.id)
			}
			lead = n.reps[id-1]
		}
	}
	if lead == nil {
		return fmt.Sprintf("shard %d has no leader: %s", id, s.describeShard(id))
	}
	ls := lead.Status()
	if ls.Applied != ls.LastIndex || ls.Commit != ls.LastIndex {
		return fmt.Sprintf("shard %d's leader %d has applied %d, commit %d, last %d", id, lead.node.id, ls.Applied, ls.Commit, ls.LastIndex)
	}
	for _, m := range allMembers(ls) {
		if int(m) > len(s.nodes) || !s.nodes[m-1].up {
			return fmt.Sprintf("shard %d's member %d is down", id, m)
		}
		r := s.nodes[m-1].reps[id-1]
		if r == nil {
			return fmt.Sprintf("shard %d's member %d hosts no replica", id, m)
		}
		st := r.Status()
		if st.Leader != lead.node.id || st.Term != ls.Term || st.Applied != ls.Applied || st.Hash != ls.Hash {
			return fmt.Sprintf("shard %d's member %d (%v, %v) follows %d in term %d at applied %d (leader %d, term %d, applied %d)",
				id, m, st.Role, st.Members, st.Leader, st.Term, st.Applied, lead.node.id, ls.Term, ls.Applied)
		}
	}
	*leader = lead
	return ""
}

// allMembers lists every member of a replica's configuration: voters,
// learners, and both sides of a joint one.
func allMembers(st shard.Status) []raftpb.NodeID {
	ms := st.Members
	members := append(append([]raftpb.NodeID(nil), ms.Voters...), ms.Learners...)
	return append(append(members, ms.VotersOutgoing...), ms.LearnersNext...)
}

// describeShard lists the status of every replica of a shard.
func (s *Sim) describeShard(id raftpb.ShardID) string {
	var b strings.Builder
	for _, n := range s.nodes {
		if !n.up || n.reps[id-1] == nil {
			continue
		}
		r := n.reps[id-1]
		st := r.Status()
		fmt.Fprintf(&b, "[node %d: %v term %d lead %d commit %d applied %d last %d quiesced %v %v] ",
			n.id, st.Role, st.Term, st.Leader, st.Commit, st.Applied, st.LastIndex, st.Quiesced, st.Members)
	}
	return b.String()
}
