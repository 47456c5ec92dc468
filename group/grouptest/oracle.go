package grouptest

import (
	"fmt"
	"sort"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

// mirror is a replica's log as the harness can see it: its durable log plus
// every entry handed out by Ready since. Each position carries the chain
// hash of the whole prefix up to it.
type mirror struct {
	base     raftpb.Index // index of the position before ents[0]
	baseTerm raftpb.Term
	baseHash uint64
	baseOK   bool // baseHash is known
	ents     []raftpb.Entry
	hashes   []uint64
}

func mirrorFromLog(l *group.MemoryLog, o *oracle) mirror {
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	m := mirror{base: first - 1}
	m.baseTerm, _ = l.Term(first - 1)
	m.baseHash, m.baseOK = o.committedHash(m.base)
	if m.base == 0 {
		m.baseHash, m.baseOK = 0, true
	}
	if last >= first {
		ents, _ := l.Entries(first, last+1, 1<<62)
		m.append(ents)
	}
	return m
}

func (m *mirror) last() raftpb.Index { return m.base + raftpb.Index(len(m.ents)) }

func (m *mirror) term(i raftpb.Index) (raftpb.Term, bool) {
	if i == m.base {
		return m.baseTerm, true
	}
	if i < m.base || i > m.last() {
		return 0, false
	}
	return m.ents[i-m.base-1].Term, true
}

// hash returns the chain hash at i if known.
func (m *mirror) hash(i raftpb.Index) (uint64, bool) {
	if i == m.base {
		return m.baseHash, m.baseOK
	}
	if i < m.base || i > m.last() || !m.baseOK {
		return 0, false
	}
	return m.hashes[i-m.base-1], true
}

// append adds ents, replacing any suffix from ents[0].Index.
func (m *mirror) append(ents []raftpb.Entry) {
	if len(ents) == 0 {
		return
	}
	from := ents[0].Index
	if from <= m.base {
		return
	}
	keep := int(from - m.base - 1)
	if keep > len(m.ents) {
		keep = len(m.ents)
	}
	m.ents = append(m.ents[:keep:keep], ents...)
	m.hashes = m.hashes[:keep:keep]
	prev := m.baseHash
	if keep > 0 {
		prev = m.hashes[keep-1]
	}
	for i := keep; i < len(m.ents); i++ {
		prev = chainHash(prev, &m.ents[i])
		m.hashes = append(m.hashes, prev)
	}
}

func (m *mirror) restore(s *raftpb.SnapshotMeta, hash uint64, ok bool) {
	*m = mirror{base: s.Index, baseTerm: s.Term, baseHash: hash, baseOK: ok}
}

// committedRec is what the oracle knows of a committed index.
type committedRec struct {
	term raftpb.Term
	hash uint64
	// inTerm is the smallest term in which any replica observed this index
	// committed: the term of the leader that committed it, or later.
	inTerm raftpb.Term
}

// oracle checks the invariants of TESTING.md incrementally.
type oracle struct {
	err error

	leaders   map[raftpb.Term]raftpb.NodeID
	committed []committedRec // committed[i-1] is index i
	// byID maps (index, term) to the chain hash any log holds there: log
	// matching says it is one value.
	byID map[[2]uint64]uint64
	// confs maps a membership change index to the membership after it.
	confs map[raftpb.Index]string

	// Per replica: last in-memory hard state seen, last durable one (kept
	// across restarts), and the vote recorded per term.
	memHS     map[raftpb.NodeID]raftpb.HardState
	durableHS map[raftpb.NodeID]raftpb.HardState
	votes     map[[2]uint64]raftpb.NodeID

	stepErrors int
}

func newOracle() *oracle {
	return &oracle{
		leaders:   map[raftpb.Term]raftpb.NodeID{},
		byID:      map[[2]uint64]uint64{},
		confs:     map[raftpb.Index]string{},
		memHS:     map[raftpb.NodeID]raftpb.HardState{},
		durableHS: map[raftpb.NodeID]raftpb.HardState{},
		votes:     map[[2]uint64]raftpb.NodeID{},
	}
}

func (o *oracle) fail(format string, args ...any) {
	if o.err == nil {
		o.err = fmt.Errorf(format, args...)
	}
}

func (o *oracle) committedHash(i raftpb.Index) (uint64, bool) {
	if i == 0 {
		return 0, true
	}
	if int(i) > len(o.committed) {
		return 0, false
	}
	return o.committed[i-1].hash, true
}

// CommittedIndex is the highest index any replica has seen committed.
func (c *Cluster) CommittedIndex() raftpb.Index { return raftpb.Index(len(c.oracle.committed)) }

// StepErrors is the number of Step calls that returned an error.
func (c *Cluster) StepErrors() int { return c.oracle.stepErrors }

func (o *oracle) onStart(r *Replica) {
	hs := r.Log.HardState()
	o.memHS[r.ID] = hs
	// Durability across restarts: the durable state we restart from never
	// regresses below what was durable before.
	if prev, ok := o.durableHS[r.ID]; ok {
		o.checkHSMonotonic(r.ID, "restart", prev, hs)
	}
	o.durableHS[r.ID] = hs
	// The durable commit (the bootstrap entry of a new shard included) is
	// committed: record or check it.
	o.recordCommitted(r, r.mirror.base, hs.Commit, hs.Term)
}

func (o *oracle) checkHSMonotonic(id raftpb.NodeID, what string, prev, hs raftpb.HardState) {
	if hs.Term < prev.Term {
		o.fail("replica %d %s: term went back %d -> %d", id, what, prev.Term, hs.Term)
	}
	if hs.Commit < prev.Commit {
		o.fail("replica %d %s: commit went back %d -> %d", id, what, prev.Commit, hs.Commit)
	}
	if hs.Term == prev.Term && prev.Vote != raftpb.None && hs.Vote != prev.Vote {
		o.fail("replica %d %s: vote changed in term %d: %d -> %d", id, what, hs.Term, prev.Vote, hs.Vote)
	}
}

// onReady checks what a Ready reveals of a replica's in-memory state.
func (o *oracle) onReady(r *Replica, rd *group.Ready) {
	st := r.G.BasicStatus()
	if rd.Snapshot != nil {
		h, ok := o.committedHash(rd.Snapshot.Index)
		if !ok {
			o.fail("replica %d installs snapshot %d beyond anything committed", r.ID, rd.Snapshot.Index)
		}
		r.mirror.restore(rd.Snapshot, h, ok)
	}
	if len(rd.Entries) > 0 {
		r.mirror.append(rd.Entries)
		o.checkLogMatching(r, rd.Entries[0].Index)
	}
	if !rd.HardState.IsEmpty() {
		prev := o.memHS[r.ID]
		o.checkHSMonotonic(r.ID, "ready", prev, rd.HardState)
		if rd.HardState.Commit > r.mirror.last() {
			o.fail("replica %d commit %d beyond its log %d", r.ID, rd.HardState.Commit, r.mirror.last())
		}
		o.recordCommitted(r, max(prev.Commit, r.mirror.base), rd.HardState.Commit, rd.HardState.Term)
		o.memHS[r.ID] = rd.HardState
	}
	if st.Role == group.Leader {
		o.onLeader(r, st.HardState.Term)
	}
	if rd.ConfState != nil {
		s := rd.ConfState.String()
		if prev, ok := o.confs[rd.ConfIndex]; ok && prev != s {
			o.fail("replica %d membership at %d is %s, another replica had %s", r.ID, rd.ConfIndex, s, prev)
		}
		o.confs[rd.ConfIndex] = s
	}
}

// checkLogMatching verifies that positions from..last of r's log agree with
// every other log that has the same (index, term).
func (o *oracle) checkLogMatching(r *Replica, from raftpb.Index) {
	for i := from; i <= r.mirror.last(); i++ {
		h, ok := r.mirror.hash(i)
		if !ok {
			return
		}
		t, _ := r.mirror.term(i)
		key := [2]uint64{uint64(i), uint64(t)}
		if prev, ok := o.byID[key]; ok {
			if prev != h {
				o.fail("log matching: replica %d has a different prefix at (%d, term %d)", r.ID, i, t)
				return
			}
		} else {
			o.byID[key] = h
		}
	}
}

// recordCommitted records or checks indexes (from, to] that r now knows
// committed, at term (r's term when it learned it).
func (o *oracle) recordCommitted(r *Replica, from, to raftpb.Index, term raftpb.Term) {
	for i := from + 1; i <= to; i++ {
		h, ok := r.mirror.hash(i)
		t, _ := r.mirror.term(i)
		if !ok {
			continue
		}
		if int(i) <= len(o.committed) {
			rec := &o.committed[i-1]
			if rec.hash != h {
				o.fail("state machine safety: replica %d commits a different entry at %d (term %d, committed term %d)",
					r.ID, i, t, rec.term)
				return
			}
			rec.inTerm = min(rec.inTerm, term)
			continue
		}
		if int(i) != len(o.committed)+1 {
			// A gap: an earlier index was never seen committed by anybody
			// whose log we could hash. Record nothing beyond it.
			return
		}
		o.committed = append(o.committed, committedRec{term: t, hash: h, inTerm: term})
	}
}

// onLeader checks election safety and leader completeness for a leader of
// term.
func (o *oracle) onLeader(r *Replica, term raftpb.Term) {
	if prev, ok := o.leaders[term]; ok {
		if prev != r.ID {
			o.fail("election safety: replicas %d and %d both lead term %d", prev, r.ID, term)
		}
		return
	}
	o.leaders[term] = r.ID
	// Leader completeness: every entry committed in an earlier term is in
	// the new leader's log. inTerm grows with the index, so find the last
	// index committed before term.
	n := sort.Search(len(o.committed), func(k int) bool { return o.committed[k].inTerm >= term })
	if n == 0 {
		return
	}
	i := raftpb.Index(n)
	if i <= r.mirror.base {
		// Covered by the leader's snapshot (checked at install).
		return
	}
	h, ok := r.mirror.hash(i)
	if !ok || h != o.committed[i-1].hash {
		o.fail("leader completeness: leader %d of term %d lacks committed entry %d", r.ID, term, i)
	}
}

// onPersist checks the durable state after a persist.
func (o *oracle) onPersist(r *Replica, rd *group.Ready) {
	hs := r.Log.HardState()
	o.checkHSMonotonic(r.ID, "persist", o.durableHS[r.ID], hs)
	o.durableHS[r.ID] = hs
	if hs.Vote != raftpb.None {
		key := [2]uint64{uint64(r.ID), uint64(hs.Term)}
		if v, ok := o.votes[key]; ok && v != hs.Vote {
			o.fail("replica %d voted for %d and %d in term %d", r.ID, v, hs.Vote, hs.Term)
		}
		o.votes[key] = hs.Vote
	}
	if last, _ := r.Log.LastIndex(); hs.Commit > last {
		o.fail("durability: replica %d persisted commit %d beyond its durable log %d", r.ID, hs.Commit, last)
	}
}

func (o *oracle) onRestoreSM(r *Replica) {
	h, ok := o.committedHash(r.SM.Applied)
	if !ok || h != r.SM.Hash {
		o.fail("snapshot: replica %d restored state at %d differs from the committed state", r.ID, r.SM.Applied)
	}
}

func (o *oracle) beforeApply(r *Replica, e *raftpb.Entry) {
	if e.Index != r.SM.Applied+1 {
		o.fail("apply order: replica %d applies %d after %d", r.ID, e.Index, r.SM.Applied)
	}
	if c := o.memHS[r.ID].Commit; e.Index > c {
		o.fail("replica %d applies %d beyond its commit %d", r.ID, e.Index, c)
	}
	if last, _ := r.Log.LastIndex(); e.Index > last {
		o.fail("replica %d applies %d that is not durable (durable last %d)", r.ID, e.Index, last)
	}
}

func (o *oracle) afterApply(r *Replica, e *raftpb.Entry) {
	h, ok := o.committedHash(e.Index)
	if !ok {
		o.fail("replica %d applies %d, never seen committed", r.ID, e.Index)
		return
	}
	if h != r.SM.Hash {
		o.fail("state machine safety: replica %d applied state at %d differs", r.ID, e.Index)
	}
}
