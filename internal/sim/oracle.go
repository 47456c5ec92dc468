package sim

import (
	"fmt"
	"sort"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
	"github.com/shardd/shardd/shard"
)

// The oracle checks TESTING.md's invariants incrementally, from what the
// driver sees anyway: every Ready (before and after its persist), every
// replica's Status after each step and apply, and the durable state each
// restart reads back. It keeps, per shard, the chain hash of every
// committed index (h[i] = H(h[i-1], term, index, data), the same chain
// shard keeps in Status().Hash), so "same index ⇒ same state" is one
// comparison.

// mirror is a replica's log as the driver can see it: its durable log at
// start plus every entry its Readys handed out since, as (term, hash of the
// prefix) per index. Positions at or below the commit index are trimmed
// now and then (they never change).
type mirror struct {
	base     raftpb.Index // index of the position before terms[0]
	baseTerm raftpb.Term
	baseHash uint64
	baseOK   bool // baseHash is known
	terms    []raftpb.Term
	hashes   []uint64
}

func (m *mirror) last() raftpb.Index { return m.base + raftpb.Index(len(m.terms)) }

func (m *mirror) term(i raftpb.Index) (raftpb.Term, bool) {
	if i == m.base {
		return m.baseTerm, true
	}
	if i < m.base || i > m.last() {
		return 0, false
	}
	return m.terms[i-m.base-1], true
}

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
	from := ents[0].Index
	keep := min(int(from-m.base-1), len(m.terms))
	m.terms, m.hashes = m.terms[:keep], m.hashes[:keep]
	prev := m.baseHash
	if keep > 0 {
		prev = m.hashes[keep-1]
	}
	for i := range ents {
		prev = shard.ChainHash(prev, &ents[i])
		m.terms = append(m.terms, ents[i].Term)
		m.hashes = append(m.hashes, prev)
	}
}

// trimTo drops the positions before i (i <= last).
func (m *mirror) trimTo(i raftpb.Index) {
	if i <= m.base || i > m.last() {
		return
	}
	k := int(i - m.base - 1)
	m.baseTerm, m.baseHash = m.terms[k], m.hashes[k]
	m.terms = append(m.terms[:0], m.terms[k+1:]...)
	m.hashes = append(m.hashes[:0], m.hashes[k+1:]...)
	m.base = i
}

// committedRec is what the oracle knows of a committed index.
type committedRec struct {
	term raftpb.Term
	hash uint64
	// inTerm is the smallest term in which any replica saw the index
	// committed (leader completeness).
	inTerm raftpb.Term
}

// shardOracle is the oracle's state of one shard.
type shardOracle struct {
	id        raftpb.ShardID
	committed []committedRec // committed[i-1] is index i
	// byID maps (index, term) to the hash of the prefix any log holds
	// there (log matching says it is one value), for positions above the
	// committed ones.
	byID    map[[2]uint64]uint64
	leaders map[raftpb.Term]raftpb.NodeID
	confs   map[raftpb.Index]string
}

func newShardOracle(id raftpb.ShardID) *shardOracle {
	return &shardOracle{id: id, byID: map[[2]uint64]uint64{}, leaders: map[raftpb.Term]raftpb.NodeID{},
		confs: map[raftpb.Index]string{}}
}

func (o *shardOracle) committedHash(i raftpb.Index) (uint64, bool) {
	if i == 0 {
		return 0, true
	}
	if int(i) > len(o.committed) {
		return 0, false
	}
	return o.committed[i-1].hash, true
}

// track is the oracle's state of one replica (a shard on a node). The
// durable hard state survives restarts; the rest is per incarnation.
type track struct {
	durableHS raftpb.HardState
	// Per incarnation.
	memHS    raftpb.HardState
	mir      mirror
	released raftpb.Index // last index released for applying
	relHash  uint64
	relOK    bool
	applied  raftpb.Index // last Applied seen
	stTerm   raftpb.Term  // last Status term seen
	stCommit raftpb.Index
}

// failf records the first broken invariant; the run stops at the end of
// the step.
func (s *Sim) failf(format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf("t=%v: %s", s.now, fmt.Sprintf(format, args...))
	}
}

// onStart checks a (re)started replica against what was durable before and
// rebuilds its mirror from its durable log.
func (s *Sim) onStart(r *replica) error {
	o, t := s.oracles[r.shard], r.track
	st, err := r.log.InitialState()
	if err != nil {
		return err
	}
	hs := st.HardState
	checkHS(s, r, "restart", t.durableHS, hs)
	t.durableHS = hs
	t.memHS = hs
	first, _ := r.log.FirstIndex()
	last, _ := r.log.LastIndex()
	m := mirror{base: first - 1}
	m.baseTerm, _ = r.log.Term(first - 1)
	m.baseHash, m.baseOK = o.committedHash(m.base)
	for lo := first; lo <= last; {
		ents, err := r.log.Entries(lo, last+1, 1<<20)
		if err != nil {
			return fmt.Errorf("reading the durable log [%d, %d]: %w", lo, last, err)
		}
		m.append(ents)
		lo += raftpb.Index(len(ents))
	}
	t.mir = m
	s.recordCommitted(r, m.base, hs.Commit, hs.Term)
	rs := r.Status()
	t.applied, t.released = rs.Applied, rs.Applied
	t.stTerm, t.stCommit = rs.Term, rs.Commit
	t.relHash = rs.Hash
	t.relOK = true
	if h, ok := o.committedHash(rs.Applied); !ok || h != rs.Hash {
		s.failf("snapshot: replica %d/%d restarted at applied %d with hash %x, committed hash %x (known %v)",
			r.shard, r.node.id, rs.Applied, rs.Hash, h, ok)
	}
	return nil
}

func checkHS(s *Sim, r *replica, what string, prev, hs raftpb.HardState) {
	if hs.Term < prev.Term {
		s.failf("durability: replica %d/%d %s: term went back %d -> %d", r.shard, r.node.id, what, prev.Term, hs.Term)
	}
	if hs.Commit < prev.Commit {
		s.failf("durability: replica %d/%d %s: commit went back %d -> %d", r.shard, r.node.id, what, prev.Commit, hs.Commit)
	}
	if hs.Term == prev.Term && prev.Vote != raftpb.None && hs.Vote != prev.Vote {
		s.failf("election safety: replica %d/%d %s: vote changed in term %d: %d -> %d",
			r.shard, r.node.id, what, hs.Term, prev.Vote, hs.Vote)
	}
}

// onReady checks what a Ready reveals, before its persist.
func (s *Sim) onReady(r *replica, rd *group.Ready) {
	s.traceReady(r, rd)
	o, t := s.oracles[r.shard], r.track
	for i := range rd.Messages {
		s.checkMessage(r, &rd.Messages[i])
	}
	for i := range rd.AfterPersist {
		s.checkMessage(r, &rd.AfterPersist[i])
	}
	if rd.Snapshot != nil {
		h, ok := o.committedHash(rd.Snapshot.Index)
		if !ok {
			s.failf("snapshot: replica %d/%d installs snapshot %d beyond anything committed", r.shard, r.node.id, rd.Snapshot.Index)
		}
		t.mir = mirror{base: rd.Snapshot.Index, baseTerm: rd.Snapshot.Term, baseHash: h, baseOK: ok}
		t.released, t.relHash, t.relOK = rd.Snapshot.Index, h, ok
	}
	if n := len(rd.Entries); n > 0 {
		from := rd.Entries[0].Index
		if from <= t.memHS.Commit {
			s.failf("log: replica %d/%d rewrites committed index %d (commit %d)", r.shard, r.node.id, from, t.memHS.Commit)
		} else if from > t.mir.last()+1 {
			s.failf("log: replica %d/%d appends at %d after a gap (last %d)", r.shard, r.node.id, from, t.mir.last())
		} else {
			t.mir.append(rd.Entries)
			s.checkLogMatching(r, from)
		}
		for i := range rd.Entries {
			if k := rd.Entries[i].Key; k != 0 {
				s.appended[k] = true
			}
		}
	}
	if !rd.HardState.IsEmpty() {
		prev := t.memHS
		checkHS(s, r, "ready", prev, rd.HardState)
		if rd.HardState.Commit > t.mir.last() {
			s.failf("log: replica %d/%d commit %d beyond its log %d", r.shard, r.node.id, rd.HardState.Commit, t.mir.last())
		}
		s.recordCommitted(r, max(prev.Commit, t.mir.base), rd.HardState.Commit, rd.HardState.Term)
		t.memHS = rd.HardState
	}
	if rd.ConfState != nil {
		cs := rd.ConfState.String()
		if prev, ok := o.confs[rd.ConfIndex]; ok && prev != cs {
			s.failf("membership: replica %d/%d has %s at %d, another replica had %s", r.shard, r.node.id, cs, rd.ConfIndex, prev)
		}
		o.confs[rd.ConfIndex] = cs
	}
	for i := range rd.CommittedEntries {
		e := &rd.CommittedEntries[i]
		if e.Index != t.released+1 {
			s.failf("apply: replica %d/%d releases %d after %d", r.shard, r.node.id, e.Index, t.released)
			return
		}
		if e.Index > t.memHS.Commit {
			s.failf("apply: replica %d/%d releases %d beyond its commit %d", r.shard, r.node.id, e.Index, t.memHS.Commit)
		}
		t.released = e.Index
		if !t.relOK {
			continue
		}
		t.relHash = shard.ChainHash(t.relHash, e)
		if h, ok := o.committedHash(e.Index); !ok {
			s.failf("apply: replica %d/%d releases %d, never seen committed", r.shard, r.node.id, e.Index)
		} else if h != t.relHash {
			s.failf("state machine safety: replica %d/%d releases a different entry at %d (term %d)",
				r.shard, r.node.id, e.Index, e.Term)
		}
	}
	// Keep the mirror short: committed positions never change.
	if len(t.mir.terms) > 1024 && t.memHS.Commit > t.mir.base+512 {
		t.mir.trimTo(t.memHS.Commit - 256)
	}
}

// checkMessage checks isolation: a replica's messages carry its shard and
// node (routing then delivers them to that shard only).
func (s *Sim) checkMessage(r *replica, m *raftpb.Message) {
	if m.Shard != r.shard || m.From != r.node.id || m.To == r.node.id || m.To == raftpb.None {
		s.failf("isolation: replica %d/%d sends %v", r.shard, r.node.id, m)
	}
}

// checkLogMatching verifies that positions from..last of r's log agree with
// every other log holding the same (index, term).
func (s *Sim) checkLogMatching(r *replica, from raftpb.Index) {
	o, m := s.oracles[r.shard], &r.track.mir
	for i := from; i <= m.last(); i++ {
		h, ok := m.hash(i)
		if !ok {
			return
		}
		t, _ := m.term(i)
		if int(i) <= len(o.committed) && o.committed[i-1].term == t {
			if o.committed[i-1].hash != h {
				s.failf("log matching: replica %d/%d has a different prefix at committed (%d, term %d)", r.shard, r.node.id, i, t)
				return
			}
			continue
		}
		key := [2]uint64{uint64(i), uint64(t)}
		if prev, ok := o.byID[key]; ok {
			if prev != h {
				s.failf("log matching: replica %d/%d has a different prefix at (%d, term %d)", r.shard, r.node.id, i, t)
				return
			}
		} else {
			o.byID[key] = h
		}
	}
	if len(o.byID) > 1<<16 {
		for k := range o.byID {
			if k[0] <= uint64(len(o.committed)) {
				delete(o.byID, k)
			}
		}
	}
}

// recordCommitted records, or checks against the record, the indexes
// (from, to] that r now knows committed, learned in term.
func (s *Sim) recordCommitted(r *replica, from, to raftpb.Index, term raftpb.Term) {
	o, m := s.oracles[r.shard], &r.track.mir
	for i := from + 1; i <= to; i++ {
		h, ok := m.hash(i)
		t, _ := m.term(i)
		if !ok {
			continue
		}
		if int(i) <= len(o.committed) {
			rec := &o.committed[i-1]
			if rec.hash != h {
				s.failf("state machine safety: replica %d/%d commits a different entry at %d (term %d, committed term %d)",
					r.shard, r.node.id, i, t, rec.term)
				return
			}
			rec.inTerm = min(rec.inTerm, term)
			continue
		}
		if int(i) != len(o.committed)+1 {
			return // a gap: nobody whose log we could hash saw the index before
		}
		o.committed = append(o.committed, committedRec{term: t, hash: h, inTerm: term})
	}
}

// onStatus checks a replica's published status after a step or apply.
func (s *Sim) onStatus(r *replica) {
	s.traceStatus(r)
	o, t := s.oracles[r.shard], r.track
	st := r.Status()
	if st.Err != nil {
		s.failf("replica %d/%d stopped: %v", r.shard, r.node.id, st.Err)
		return
	}
	if st.Term < t.stTerm || st.Commit < t.stCommit {
		s.failf("replica %d/%d: term or commit went back: (%d, %d) -> (%d, %d)", r.shard, r.node.id,
			t.stTerm, t.stCommit, st.Term, st.Commit)
	}
	t.stTerm, t.stCommit = st.Term, st.Commit
	if st.Applied < t.applied {
		s.failf("apply: replica %d/%d applied went back %d -> %d", r.shard, r.node.id, t.applied, st.Applied)
	}
	if st.Applied > t.released || st.Applied > st.Commit {
		s.failf("apply: replica %d/%d applied %d beyond released %d or commit %d", r.shard, r.node.id,
			st.Applied, t.released, st.Commit)
	}
	if st.Applied != t.applied {
		t.applied = st.Applied
		if h, ok := o.committedHash(st.Applied); ok && h != st.Hash {
			s.failf("state machine safety: replica %d/%d state at %d has hash %x, committed %x",
				r.shard, r.node.id, st.Applied, st.Hash, h)
		}
	}
	if st.Role == group.Leader {
		s.onLeader(r, st)
	}
}

// onLeader checks election safety and leader completeness.
func (s *Sim) onLeader(r *replica, st shard.Status) {
	o := s.oracles[r.shard]
	if prev, ok := o.leaders[st.Term]; ok {
		if prev != r.node.id {
			s.failf("election safety: nodes %d and %d both lead shard %d in term %d", prev, r.node.id, r.shard, st.Term)
		}
		return
	}
	o.leaders[st.Term] = r.node.id
	s.stats.Elections++
	// Every entry committed in an earlier term is in the new leader's log.
	n := sort.Search(len(o.committed), func(k int) bool { return o.committed[k].inTerm >= st.Term })
	if n == 0 {
		return
	}
	i := raftpb.Index(n)
	m := &r.track.mir
	if i <= m.base {
		return // covered by a snapshot or trimmed (checked when it was)
	}
	if h, ok := m.hash(i); !ok || h != o.committed[i-1].hash {
		s.failf("leader completeness: leader %d of shard %d term %d lacks committed entry %d", r.node.id, r.shard, st.Term, i)
	}
}

// onPersisted checks the durable state after rd's persist: it holds what
// rd asked for, and never regresses. A persist without an fsync (synced
// false: a pass of commit indexes alone) is checked but not counted as
// durable: a crash may take it back.
func (s *Sim) onPersisted(r *replica, rd *group.Ready, synced bool) {
	t := r.track
	st, err := r.log.InitialState()
	if err != nil {
		s.failf("replica %d/%d: reading the durable state: %v", r.shard, r.node.id, err)
		return
	}
	hs := st.HardState
	checkHS(s, r, "persist", t.durableHS, hs)
	if synced {
		t.durableHS = hs
	}
	if !rd.HardState.IsEmpty() && hs != rd.HardState {
		s.failf("durability: replica %d/%d persisted %+v, its store holds %+v", r.shard, r.node.id, rd.HardState, hs)
	}
	last, _ := r.log.LastIndex()
	if n := len(rd.Entries); n > 0 {
		e := &rd.Entries[n-1]
		if term, err := r.log.Term(e.Index); last != e.Index || err != nil || term != e.Term {
			s.failf("durability: replica %d/%d persisted entries up to (%d, term %d), its store ends at %d (term %d, %v)",
				r.shard, r.node.id, e.Index, e.Term, last, term, err)
		}
	}
	if hs.Commit > last {
		s.failf("durability: replica %d/%d persisted commit %d beyond its durable log %d", r.shard, r.node.id, hs.Commit, last)
	}
}
