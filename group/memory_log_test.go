package group

import (
	"errors"
	"strings"
	"testing"

	"github.com/shardd/shardd/raftpb"
)

func TestMemoryLogBootstrapAndJoin(t *testing.T) {
	m := NewMemoryLog(raftpb.ConfState{Voters: []raftpb.NodeID{1, 2}, Learners: []raftpb.NodeID{3}})
	st, _ := m.InitialState()
	if st.HardState != (raftpb.HardState{Term: 1, Commit: 1}) || st.ConfIndex != 1 {
		t.Fatalf("bootstrap state %+v", st)
	}
	e, err := m.Entries(1, 2, 1<<20)
	if err != nil || len(e) != 1 || e[0].Type != raftpb.EntryConfChange {
		t.Fatalf("bootstrap entry %v %v", e, err)
	}
	cc, err := raftpb.UnmarshalConfChange(e[0].Data)
	if err != nil || len(cc.Changes) != 3 || cc.Changes[2] != (raftpb.ConfChangeSingle{Type: raftpb.AddLearner, Node: 3}) {
		t.Fatalf("bootstrap change %+v %v", cc, err)
	}
	j := NewMemoryLog(raftpb.ConfState{})
	if last, _ := j.LastIndex(); last != 0 {
		t.Fatalf("joining replica has entries up to %d", last)
	}
	if _, _, err := Bootstrap(raftpb.ConfState{}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("bootstrap without voters: %v", err)
	}
	if _, _, err := Bootstrap(raftpb.ConfState{Voters: []raftpb.NodeID{1}, VotersOutgoing: []raftpb.NodeID{2}}); err == nil {
		t.Fatal("joint bootstrap accepted")
	}
}

func TestMemoryLogAppendCompactSnapshot(t *testing.T) {
	m := newTestLog(t, 1, 2, 2, 3) // 1..5
	if err := m.Append(ents(7, 3)); err == nil || !strings.Contains(err.Error(), "gap") {
		t.Fatalf("gap accepted: %v", err)
	}
	if err := m.Append([]raftpb.Entry{{Index: 6, Term: 3}, {Index: 8, Term: 3}}); err == nil {
		t.Fatal("non-contiguous entries accepted")
	}
	held, _ := m.Entries(2, 6, 1<<20)
	if err := m.Append(ents(4, 4)); err != nil { // replaces 4, 5
		t.Fatal(err)
	}
	if last, _ := m.LastIndex(); last != 4 {
		t.Fatalf("last after truncation %d", last)
	}
	if held[2].Term != 2 || held[3].Term != 3 {
		t.Fatalf("slice handed out earlier changed: %v", held)
	}
	if _, err := m.Entries(1, 9, 1<<20); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("entries beyond last: %v", err)
	}
	if e, _ := m.Entries(3, 3, 1); e != nil {
		t.Fatalf("empty range returned %v", e)
	}
	if _, err := m.Snapshot(); !errors.Is(err, ErrSnapshotTemporarilyUnavailable) {
		t.Fatalf("snapshot of a fresh log: %v", err)
	}
	if err := m.Compact(3); err == nil {
		t.Fatal("compaction beyond the snapshot accepted")
	}
	if err := m.SetSnapshot(raftpb.SnapshotMeta{Index: 9, Term: 4}); err == nil {
		t.Fatal("snapshot beyond the log accepted")
	}
	if err := m.SetSnapshot(raftpb.SnapshotMeta{Index: 3, Term: 2}); err != nil {
		t.Fatal(err)
	}
	if err := m.SetSnapshot(raftpb.SnapshotMeta{Index: 3, Term: 2}); err == nil {
		t.Fatal("same snapshot twice accepted")
	}
	if err := m.Compact(3); err != nil {
		t.Fatal(err)
	}
	if err := m.Compact(2); err != nil { // already compacted: no-op
		t.Fatal(err)
	}
	if first, _ := m.FirstIndex(); first != 4 {
		t.Fatalf("first after compaction %d", first)
	}
	if tm, err := m.Term(3); err != nil || tm != 2 {
		t.Fatalf("term at the compaction point: %d %v", tm, err)
	}
	if _, err := m.Term(2); !errors.Is(err, ErrCompacted) {
		t.Fatalf("term below: %v", err)
	}
	if _, err := m.Entries(3, 4, 1<<20); !errors.Is(err, ErrCompacted) {
		t.Fatalf("entries below: %v", err)
	}
	if err := m.Append(ents(3, 5)); err == nil {
		t.Fatal("append below the snapshot accepted")
	}
	c := m.Clone()
	if err := m.InstallSnapshot(raftpb.SnapshotMeta{Index: 20, Term: 6}); err != nil {
		t.Fatal(err)
	}
	if err := m.InstallSnapshot(raftpb.SnapshotMeta{Index: 20, Term: 6}); err == nil {
		t.Fatal("reinstalling the same snapshot accepted")
	}
	if first, _ := m.FirstIndex(); first != 21 {
		t.Fatalf("first after install %d", first)
	}
	if last, _ := c.LastIndex(); last != 4 {
		t.Fatalf("clone changed with the original: last %d", last)
	}
	rd := Ready{CompactTo: 30}
	if err := m.Persist(&rd); err == nil {
		t.Fatal("persisting a compaction beyond the snapshot accepted")
	}
	rd = Ready{Snapshot: &raftpb.SnapshotMeta{Index: 5, Term: 1}}
	if err := m.Persist(&rd); err == nil {
		t.Fatal("persisting an older snapshot accepted")
	}
	rd = Ready{Entries: ents(30, 7)}
	if err := m.Persist(&rd); err == nil {
		t.Fatal("persisting entries with a gap accepted")
	}
}

func TestConfigDefaultsAndValidate(t *testing.T) {
	c := Config{ID: 1, Log: NewMemoryLog(raftpb.ConfState{Voters: []raftpb.NodeID{1}})}
	c.EnsureDefaults()
	if c.ElectionTicks != 10 || c.HeartbeatTicks != 1 || c.MaxSizePerMsg != 1<<20 ||
		c.MaxInflightMsgs != 256 || c.Rand == nil || c.Logger == nil {
		t.Fatalf("defaults not filled: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := Config{ElectionTicks: 2, HeartbeatTicks: 3, MaxInflightMsgs: -1, ReadOnly: 7}
	err := bad.Validate()
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("invalid config: %v", err)
	}
	// Every problem is named at once.
	for _, field := range []string{"ID", "Log", "HeartbeatTicks", "MaxInflightMsgs", "ReadOnly"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("%q not named in %v", field, err)
		}
	}
	lease := Config{ID: 1, Log: c.Log, ElectionTicks: 10, HeartbeatTicks: 1, MaxInflightMsgs: 1,
		ReadOnly: ReadLeaseBased, DisableCheckQuorum: true}
	if err := lease.Validate(); err == nil || !strings.Contains(err.Error(), "check-quorum") {
		t.Fatalf("lease reads without check-quorum: %v", err)
	}
	if _, err := New(Config{Log: c.Log}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("New without ID: %v", err)
	}
	l := newTestLog(t, 1, 1)
	if _, err := New(Config{ID: 1, Log: l, Applied: 7}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Applied beyond commit: %v", err)
	}
	// The nop logger accepts everything.
	var n nopLogger
	n.Debug("x")
	n.Info("x")
	n.Warn("x")
	n.Error("x")
}

func TestRoleAndTypeStrings(t *testing.T) {
	for r, want := range map[Role]string{Follower: "Follower", PreCandidate: "PreCandidate",
		Candidate: "Candidate", Leader: "Leader", Role(9): "Role(9)"} {
		if r.String() != want {
			t.Errorf("%d: %q", r, r.String())
		}
	}
}
