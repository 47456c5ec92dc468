package sim

import (
	"fmt"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

// Tracing for replaying a failed seed: Options.TraceShard logs every
// change of the shard's replicas' status, Options.TraceKey the life of one
// proposal (forwarded, appended, released).

// traceStatus logs r's status when it changed since the last call.
func (s *Sim) traceStatus(r *replica) {
	if s.opts.TraceShard == 0 || r.shard != s.opts.TraceShard {
		return
	}
	st := r.Status()
	line := fmt.Sprintf("%v term %d lead %d commit %d applied %d last %d quiesced %v %v",
		st.Role, st.Term, st.Leader, st.Commit, st.Applied, st.LastIndex, st.Quiesced, st.Members)
	if r.traced != line {
		r.traced = line
		fmt.Fprintf(s.opts.Log, "t=%v shard %d node %d: %s\n", s.now, r.shard, r.node.id, line)
	}
}

// traceReady logs what rd does with the traced proposal.
func (s *Sim) traceReady(r *replica, rd *group.Ready) {
	k := s.opts.TraceKey
	if k == 0 {
		return
	}
	for _, e := range rd.Entries {
		if e.Key == k {
			fmt.Fprintf(s.opts.Log, "t=%v shard %d node %d appends proposal %d at (%d, term %d)\n", s.now, r.shard, r.node.id, k, e.Index, e.Term)
		}
	}
	for _, e := range rd.CommittedEntries {
		if e.Key == k {
			fmt.Fprintf(s.opts.Log, "t=%v shard %d node %d releases proposal %d at (%d, term %d)\n", s.now, r.shard, r.node.id, k, e.Index, e.Term)
		}
	}
	for _, m := range rd.Messages {
		if m.Type != raftpb.MsgProp {
			continue
		}
		for _, e := range m.Entries {
			if e.Key == k {
				fmt.Fprintf(s.opts.Log, "t=%v shard %d node %d forwards proposal %d: %v\n", s.now, r.shard, r.node.id, k, m)
			}
		}
	}
}
