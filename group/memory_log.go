package group

import (
	"fmt"

	"github.com/shardd/shardd/raftpb"
)

// MemoryLog is a LogReader kept in memory, with the write side a persistence
// layer would have. It serves tests, benchmarks and the pure-core harness;
// nodes use batchio. It is not safe for concurrent use.
type MemoryLog struct {
	hs        raftpb.HardState
	cs        raftpb.ConfState
	confIndex raftpb.Index
	snap      raftpb.SnapshotMeta
	// ents[0] stands for the snapshot position: index snap.Index, term
	// snap.Term, no data. Real entries follow.
	ents []raftpb.Entry
}

// NewMemoryLog returns the log of a new replica. With voters in cs it is an
// initial member, bootstrapped (see Bootstrap); with an empty cs it is a
// replica that joins a running shard and learns everything from the leader.
func NewMemoryLog(cs raftpb.ConfState) *MemoryLog {
	m := &MemoryLog{ents: make([]raftpb.Entry, 1)}
	if len(cs.Voters) == 0 {
		return m
	}
	st, e, err := Bootstrap(cs)
	if err != nil {
		panic(err)
	}
	m.hs, m.cs, m.confIndex = st.HardState, st.ConfState, st.ConfIndex
	m.ents = append(m.ents, e)
	return m
}

// InitialState implements LogReader.
func (m *MemoryLog) InitialState() (InitialState, error) {
	return InitialState{HardState: m.hs, ConfState: m.cs.Clone(), ConfIndex: m.confIndex}, nil
}

// HardState returns the persisted hard state.
func (m *MemoryLog) HardState() raftpb.HardState { return m.hs }

func (m *MemoryLog) offset() raftpb.Index { return m.ents[0].Index }

// FirstIndex implements LogReader.
func (m *MemoryLog) FirstIndex() (raftpb.Index, error) { return m.offset() + 1, nil }

// LastIndex implements LogReader.
func (m *MemoryLog) LastIndex() (raftpb.Index, error) {
	return m.offset() + raftpb.Index(len(m.ents)) - 1, nil
}

// Term implements LogReader.
func (m *MemoryLog) Term(i raftpb.Index) (raftpb.Term, error) {
	off := m.offset()
	if i < off {
		return 0, ErrCompacted
	}
	if int(i-off) >= len(m.ents) {
		return 0, ErrUnavailable
	}
	return m.ents[i-off].Term, nil
}

// Entries implements LogReader.
func (m *MemoryLog) Entries(lo, hi raftpb.Index, maxBytes uint64) ([]raftpb.Entry, error) {
	off := m.offset()
	if lo <= off {
		return nil, ErrCompacted
	}
	last, _ := m.LastIndex()
	if hi > last+1 {
		return nil, fmt.Errorf("%w: entries [%d,%d) beyond last index %d", ErrUnavailable, lo, hi, last)
	}
	if lo >= hi {
		return nil, nil
	}
	// Three-index slice: callers may append without touching our array.
	return limitSize(m.ents[lo-off:hi-off:hi-off], maxBytes), nil
}

// Snapshot implements LogReader.
func (m *MemoryLog) Snapshot() (raftpb.SnapshotMeta, error) {
	if m.snap.IsEmpty() {
		return raftpb.SnapshotMeta{}, ErrSnapshotTemporarilyUnavailable
	}
	return m.snap, nil
}

// Persist makes everything rd asks to persist durable, atomically, in the
// order a persistence layer must follow: the snapshot replaces the log, the
// entries replace the suffix from their first index, then the hard state,
// the membership and the compaction.
func (m *MemoryLog) Persist(rd *Ready) error {
	if rd.Snapshot != nil {
		if err := m.InstallSnapshot(*rd.Snapshot); err != nil {
			return err
		}
	}
	if err := m.Append(rd.Entries); err != nil {
		return err
	}
	if !rd.HardState.IsEmpty() {
		m.hs = rd.HardState
	}
	if rd.ConfState != nil {
		m.cs = rd.ConfState.Clone()
		m.confIndex = rd.ConfIndex
	}
	if rd.CompactTo > 0 {
		return m.Compact(rd.CompactTo)
	}
	return nil
}

// Append writes ents, replacing the log's suffix from ents[0].Index.
func (m *MemoryLog) Append(ents []raftpb.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	off := m.offset()
	first := ents[0].Index
	last, _ := m.LastIndex()
	if first <= off {
		return fmt.Errorf("memory log: append at %d at or below snapshot %d", first, off)
	}
	if first > last+1 {
		return fmt.Errorf("memory log: append at %d leaves a gap after %d", first, last)
	}
	for i := 1; i < len(ents); i++ {
		if ents[i].Index != ents[i-1].Index+1 {
			return fmt.Errorf("memory log: entries not contiguous at %d", ents[i].Index)
		}
	}
	// Copy the kept prefix when truncating, so slices handed out earlier
	// keep their contents.
	keep := m.ents[:first-off]
	if first <= last {
		keep = append(make([]raftpb.Entry, 0, len(keep)+len(ents)), keep...)
	}
	m.ents = append(keep, ents...)
	return nil
}

// SetSnapshot records meta as the latest snapshot (taken by the state
// machine at meta.Index) without touching the log.
func (m *MemoryLog) SetSnapshot(meta raftpb.SnapshotMeta) error {
	if meta.Index <= m.snap.Index {
		return fmt.Errorf("memory log: snapshot %d not newer than %d", meta.Index, m.snap.Index)
	}
	last, _ := m.LastIndex()
	if meta.Index > last {
		return fmt.Errorf("memory log: snapshot %d beyond last index %d", meta.Index, last)
	}
	m.snap = meta
	m.snap.ConfState = meta.ConfState.Clone()
	return nil
}

// InstallSnapshot replaces the whole log with a received snapshot.
func (m *MemoryLog) InstallSnapshot(meta raftpb.SnapshotMeta) error {
	if meta.Index <= m.snap.Index {
		return fmt.Errorf("memory log: installing snapshot %d not newer than %d", meta.Index, m.snap.Index)
	}
	m.snap = meta
	m.snap.ConfState = meta.ConfState.Clone()
	m.ents = []raftpb.Entry{{Index: meta.Index, Term: meta.Term}}
	return nil
}

// Compact drops entries up to and including i, which must be covered by the
// latest snapshot.
func (m *MemoryLog) Compact(i raftpb.Index) error {
	off := m.offset()
	if i <= off {
		return nil
	}
	if i > m.snap.Index {
		return fmt.Errorf("memory log: compact to %d beyond snapshot %d", i, m.snap.Index)
	}
	last, _ := m.LastIndex()
	if i > last {
		return fmt.Errorf("memory log: compact to %d beyond last index %d", i, last)
	}
	n := i - off
	ents := make([]raftpb.Entry, 1, 1+len(m.ents)-int(n)-1)
	ents[0] = raftpb.Entry{Index: i, Term: m.ents[n].Term}
	m.ents = append(ents, m.ents[n+1:]...)
	return nil
}

// Clone returns an independent copy, e.g. to keep the durable state of a
// crashed replica.
func (m *MemoryLog) Clone() *MemoryLog {
	c := *m
	c.cs = m.cs.Clone()
	c.snap.ConfState = m.snap.ConfState.Clone()
	c.ents = append([]raftpb.Entry(nil), m.ents...)
	return &c
}
