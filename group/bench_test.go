package group_test

import (
	"fmt"
	"testing"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

// benchShard is three replicas wired together in memory, driven the way the
// engine drives them: every pass drains each replica's Ready, persists it to
// its MemoryLog, delivers messages and advances. No oracle: this measures
// the core.
type benchShard struct {
	gs    [3]*group.Group
	logs  [3]*group.MemoryLog
	inbox [3][]raftpb.Message
	spare [3][]raftpb.Message
	// applied counts entries released for applying on the leader.
	applied int
}

func (s *benchShard) leader() int {
	for i, g := range s.gs {
		if g.BasicStatus().Role == group.Leader {
			return i
		}
	}
	return -1
}

func newBenchShard(tb testing.TB) *benchShard {
	s := &benchShard{}
	cs := raftpb.ConfState{Voters: []raftpb.NodeID{1, 2, 3}}
	for i := range s.gs {
		s.logs[i] = group.NewMemoryLog(cs)
		g, err := group.New(group.Config{ID: raftpb.NodeID(i + 1), Shard: 1, Log: s.logs[i]})
		if err != nil {
			tb.Fatal(err)
		}
		s.gs[i] = g
	}
	for i := 0; i < 200 && s.leader() < 0; i++ {
		for _, g := range s.gs {
			g.Tick()
		}
		s.pass(tb)
	}
	if s.leader() < 0 {
		tb.Fatal("no leader elected")
	}
	for i := 0; i < 5; i++ {
		s.pass(tb)
	}
	return s
}

// pass lets every replica handle its inbox and its Readys once.
func (s *benchShard) pass(tb testing.TB) {
	for i, g := range s.gs {
		msgs := s.inbox[i]
		s.inbox[i] = s.spare[i][:0]
		for j := range msgs {
			if err := g.Step(msgs[j]); err != nil {
				tb.Fatal(err)
			}
		}
		s.spare[i] = msgs[:0]
		for g.HasReady() {
			rd := g.Ready()
			s.route(rd.Messages)
			if err := s.logs[i].Persist(&rd); err != nil {
				tb.Fatal(err)
			}
			s.route(rd.AfterPersist)
			if g.BasicStatus().Role == group.Leader {
				s.applied += len(rd.CommittedEntries)
			}
			if err := g.Advance(rd); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

// compact snapshots and compacts every replica's log at what it has
// applied, as a running node does, so the benchmark measures the core
// rather than the growth of ever longer logs.
func (s *benchShard) compact(tb testing.TB) {
	for i, g := range s.gs {
		st := g.BasicStatus()
		if snap, err := s.logs[i].Snapshot(); err == nil && snap.Index >= st.Applying {
			continue
		}
		term, err := s.logs[i].Term(st.Applying)
		if err != nil {
			tb.Fatal(err)
		}
		meta := raftpb.SnapshotMeta{Index: st.Applying, Term: term, ConfState: g.ConfState()}
		if err := s.logs[i].SetSnapshot(meta); err != nil {
			tb.Fatal(err)
		}
		if err := g.Compact(st.Applying); err != nil {
			tb.Fatal(err)
		}
	}
}

func (s *benchShard) route(msgs []raftpb.Message) {
	for _, m := range msgs {
		s.inbox[m.To-1] = append(s.inbox[m.To-1], m)
	}
}

// BenchmarkPropose measures proposals committed and released for applying
// per second through a 3-replica shard, with batches of 1 and 64 entries
// (16-byte commands) proposed per pass, and the allocations per proposal.
func BenchmarkPropose(b *testing.B) {
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s := newBenchShard(b)
			lead := s.gs[s.leader()]
			cmd := make([]byte, 16)
			ents := make([]raftpb.Entry, batch)
			start := s.applied
			b.ReportAllocs()
			b.ResetTimer()
			proposed := 0
			for proposed < b.N {
				n := min(batch, b.N-proposed)
				for i := range ents[:n] {
					ents[i] = raftpb.Entry{Key: uint64(proposed + i), Data: cmd}
				}
				if err := lead.Propose(ents[:n]); err != nil {
					b.Fatal(err)
				}
				proposed += n
				s.pass(b)
				if proposed%4096 < n {
					s.compact(b)
				}
			}
			for i := 0; i < 10 && s.applied-start < proposed; i++ {
				s.pass(b)
			}
			b.StopTimer()
			if s.applied-start < proposed {
				b.Fatalf("applied %d of %d", s.applied-start, proposed)
			}
			b.ReportMetric(float64(proposed)/b.Elapsed().Seconds(), "proposals/s")
		})
	}
}
