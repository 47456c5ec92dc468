package group

import (
	"errors"
	"testing"

	"github.com/shardd/shardd/raftpb"
)

func ents(from raftpb.Index, terms ...raftpb.Term) []raftpb.Entry {
	out := make([]raftpb.Entry, len(terms))
	for i, t := range terms {
		out[i] = raftpb.Entry{Index: from + raftpb.Index(i), Term: t}
	}
	return out
}

func TestUnstableTruncateAndAppend(t *testing.T) {
	for _, tc := range []struct {
		name       string
		offset     raftpb.Index
		have       []raftpb.Term
		inProgress raftpb.Index // offsetInProgress
		app        []raftpb.Entry
		wantOffset raftpb.Index
		wantTerms  []raftpb.Term
		wantInProg raftpb.Index
	}{
		{"append at end", 5, []raftpb.Term{1, 1}, 7, ents(7, 2), 5, []raftpb.Term{1, 1, 2}, 7},
		{"replace all", 5, []raftpb.Term{1, 1}, 7, ents(5, 2, 2), 5, []raftpb.Term{2, 2}, 5},
		{"replace durable too", 5, []raftpb.Term{1, 1}, 6, ents(3, 2), 3, []raftpb.Term{2}, 3},
		{"truncate middle", 5, []raftpb.Term{1, 1, 1}, 8, ents(6, 3, 3), 5, []raftpb.Term{1, 3, 3}, 6},
		{"truncate not in progress", 5, []raftpb.Term{1, 1, 1}, 5, ents(7, 3), 5, []raftpb.Term{1, 1, 3}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := unstable{offset: tc.offset, entries: ents(tc.offset, tc.have...), offsetInProgress: tc.inProgress}
			before := append([]raftpb.Entry(nil), u.entries...)
			handed := u.entries // a slice handed out earlier
			u.truncateAndAppend(tc.app)
			if u.offset != tc.wantOffset || u.offsetInProgress != tc.wantInProg {
				t.Fatalf("offset %d inProgress %d, want %d %d", u.offset, u.offsetInProgress, tc.wantOffset, tc.wantInProg)
			}
			if len(u.entries) != len(tc.wantTerms) {
				t.Fatalf("entries %v", u.entries)
			}
			for i, e := range u.entries {
				if e.Term != tc.wantTerms[i] || e.Index != tc.wantOffset+raftpb.Index(i) {
					t.Fatalf("entry %d = %+v, want term %d", i, e, tc.wantTerms[i])
				}
			}
			// Entries handed out before keep their contents.
			for i := range handed {
				if handed[i].Index != before[i].Index || handed[i].Term != before[i].Term {
					t.Fatalf("handed-out entry %d overwritten: %+v", i, handed[i])
				}
			}
		})
	}
}

func TestUnstableStableTo(t *testing.T) {
	u := unstable{offset: 5, entries: ents(5, 1, 1, 2), offsetInProgress: 8}
	u.stableTo(6, 2) // wrong term at 6: an old acknowledgement
	if u.offset != 5 {
		t.Fatalf("stale ack applied: offset %d", u.offset)
	}
	u.stableTo(4, 1) // below offset: nothing
	u.stableTo(9, 2) // beyond: nothing
	if u.offset != 5 || len(u.entries) != 3 {
		t.Fatalf("unexpected change: %+v", u)
	}
	u.stableTo(6, 1)
	if u.offset != 7 || len(u.entries) != 1 || u.offsetInProgress != 8 {
		t.Fatalf("after stableTo(6,1): %+v", u)
	}
	u.stableTo(7, 2)
	if u.offset != 8 || u.entries != nil {
		t.Fatalf("after stableTo(7,2): %+v", u)
	}
	// The shrink keeps long-lived arrays from pinning dead entries.
	u = unstable{offset: 1, entries: make([]raftpb.Entry, 200), offsetInProgress: 201}
	for i := range u.entries {
		u.entries[i] = raftpb.Entry{Index: raftpb.Index(i + 1), Term: 1}
	}
	u.stableTo(190, 1)
	if cap(u.entries) != len(u.entries) || len(u.entries) != 10 {
		t.Fatalf("not shrunk: len %d cap %d", len(u.entries), cap(u.entries))
	}
}

func TestUnstableSnapshot(t *testing.T) {
	u := unstable{offset: 3, entries: ents(3, 1), offsetInProgress: 4}
	u.restore(raftpb.SnapshotMeta{Index: 10, Term: 4})
	if i, ok := u.maybeFirstIndex(); !ok || i != 11 {
		t.Fatalf("first %d %v", i, ok)
	}
	if i, ok := u.maybeLastIndex(); !ok || i != 10 {
		t.Fatalf("last %d %v", i, ok)
	}
	if tm, ok := u.maybeTerm(10); !ok || tm != 4 {
		t.Fatalf("term(10) %d %v", tm, ok)
	}
	if _, ok := u.maybeTerm(9); ok {
		t.Fatal("term below the snapshot known")
	}
	if u.nextSnapshot() == nil {
		t.Fatal("snapshot not offered")
	}
	u.acceptInProgress()
	if u.nextSnapshot() != nil {
		t.Fatal("snapshot offered twice")
	}
	u.stableSnapTo(9) // other index: ignored
	if u.snapshot == nil {
		t.Fatal("stableSnapTo with another index dropped the snapshot")
	}
	u.stableSnapTo(10)
	if u.snapshot != nil {
		t.Fatal("snapshot not stable")
	}
	if _, ok := u.maybeLastIndex(); ok {
		t.Fatal("empty unstable reports a last index")
	}
}

// failingLog fails every read after failAfter calls.
type failingLog struct {
	*MemoryLog
	fail bool
}

var errDisk = errors.New("disk on fire")

func (f *failingLog) Term(i raftpb.Index) (raftpb.Term, error) {
	if f.fail {
		return 0, errDisk
	}
	return f.MemoryLog.Term(i)
}

func (f *failingLog) Entries(lo, hi raftpb.Index, max uint64) ([]raftpb.Entry, error) {
	if f.fail {
		return nil, errDisk
	}
	return f.MemoryLog.Entries(lo, hi, max)
}

func newTestLog(t *testing.T, terms ...raftpb.Term) *MemoryLog {
	t.Helper()
	m := NewMemoryLog(raftpb.ConfState{Voters: []raftpb.NodeID{1, 2, 3}})
	if err := m.Append(ents(2, terms...)); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRaftLogTermAndSlice(t *testing.T) {
	m := newTestLog(t, 1, 1, 2, 2) // indexes 1..5
	l, err := newLog(m, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	// Unstable entries replace a durable suffix: reads at 4.. come from
	// unstable, never from the stale durable entries.
	l.append(ents(4, 3, 3, 3))
	if got := l.lastIndex(); got != 6 {
		t.Fatalf("last %d", got)
	}
	for i, want := range map[raftpb.Index]raftpb.Term{1: 1, 3: 1, 4: 3, 6: 3} {
		if tm, err := l.term(i); err != nil || tm != want {
			t.Fatalf("term(%d) = %d, %v; want %d", i, tm, err, want)
		}
	}
	if _, err := l.term(7); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("term(7): %v", err)
	}
	got, err := l.slice(2, 6, 1<<20)
	if err != nil || len(got) != 4 || got[1].Term != 1 || got[2].Term != 3 {
		t.Fatalf("slice: %v %v", got, err)
	}
	// Byte limit: at least one entry, then stop.
	got, err = l.slice(2, 7, 1)
	if err != nil || len(got) != 1 {
		t.Fatalf("limited slice: %v %v", got, err)
	}
	if _, err := l.slice(2, 9, 1<<20); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("slice beyond last: %v", err)
	}
	if got, _ := l.slice(3, 3, 1<<20); got != nil {
		t.Fatalf("empty slice: %v", got)
	}
	// (term, index) freshness in dictionary order (S01).
	if !l.isUpToDate(1, 4) || l.isUpToDate(100, 2) || !l.isUpToDate(6, 3) || l.isUpToDate(5, 3) {
		t.Fatal("isUpToDate disagrees with dictionary order")
	}
}

func TestCompareLogID(t *testing.T) { // S01 comparator table
	for _, tc := range []struct {
		t1   raftpb.Term
		i1   raftpb.Index
		t2   raftpb.Term
		i2   raftpb.Index
		want int
	}{
		{2, 1, 1, 2, 1}, {2, 0, 1, 9, 1}, {1, 9, 2, 0, -1}, {3, 3, 3, 3, 0}, {3, 2, 3, 3, -1}, {3, 4, 3, 3, 1},
	} {
		if got := compareLogID(tc.t1, tc.i1, tc.t2, tc.i2); got != tc.want {
			t.Errorf("compare((%d,%d),(%d,%d)) = %d, want %d", tc.t1, tc.i1, tc.t2, tc.i2, got, tc.want)
		}
	}
}

func TestRaftLogMaybeAppend(t *testing.T) {
	m := newTestLog(t, 1, 1, 2, 2) // 1..5
	l, _ := newLog(m, 1<<20)
	l.committed = 3
	// Mismatched prev: nothing.
	if _, ok, err := l.maybeAppend(5, 9, 5, nil); ok || err != nil {
		t.Fatal("append after a mismatched prev accepted")
	}
	// Equal entries are not rewritten (S08): nothing unstable.
	if last, ok, err := l.maybeAppend(2, 1, 3, ents(3, 1, 2)); !ok || err != nil || last != 4 {
		t.Fatalf("matching append: %d %v %v", last, ok, err)
	}
	if len(l.unstable.entries) != 0 {
		t.Fatalf("equal entries rewritten: %v", l.unstable.entries)
	}
	// A conflict above commit replaces only from the conflict.
	if last, ok, err := l.maybeAppend(3, 1, 9, ents(4, 2, 4)); !ok || err != nil || last != 5 {
		t.Fatalf("conflicting append: %d %v %v", last, ok, err)
	}
	if l.unstable.offset != 5 || len(l.unstable.entries) != 1 || l.unstable.entries[0].Term != 4 {
		t.Fatalf("unstable after conflict: %+v", l.unstable)
	}
	// S09: commit capped by what the request proved.
	if l.committed != 5 {
		t.Fatalf("committed %d, want 5 (min(9, last new 5))", l.committed)
	}
	// A conflict at or below commit is refused.
	if _, _, err := l.maybeAppend(1, 1, 5, ents(2, 9)); !errors.Is(err, errConflictCommitted) {
		t.Fatalf("rewrite of committed entry: %v", err)
	}
}

func TestRaftLogFindConflictByTerm(t *testing.T) {
	m := newTestLog(t, 1, 1, 3, 3, 3, 5) // 1..7: terms 1 1 1 3 3 3 5
	l, _ := newLog(m, 1<<20)
	for _, tc := range []struct {
		index    raftpb.Index
		term     raftpb.Term
		wantIdx  raftpb.Index
		wantTerm raftpb.Term
	}{
		{7, 5, 7, 5}, {7, 4, 6, 3}, {7, 2, 3, 1}, {6, 3, 6, 3}, {7, 0, 0, 0},
	} {
		i, tm := l.findConflictByTerm(tc.index, tc.term)
		if i != tc.wantIdx || tm != tc.wantTerm {
			t.Errorf("findConflictByTerm(%d, %d) = (%d, %d), want (%d, %d)",
				tc.index, tc.term, i, tm, tc.wantIdx, tc.wantTerm)
		}
	}
}

func TestRaftLogStorageFailureStops(t *testing.T) {
	fl := &failingLog{MemoryLog: newTestLog(t, 1, 1)}
	g, err := New(Config{ID: 1, Shard: 1, Log: fl, DisableCheckQuorum: true})
	if err != nil {
		t.Fatal(err)
	}
	fl.fail = true
	// A vote request needs the last term: the read fails and the group stops
	// without answering.
	err = g.Step(raftpb.Message{Type: raftpb.MsgVote, Shard: 1, From: 2, To: 1, Term: 5, LogTerm: 1, Index: 3})
	if !errors.Is(err, ErrStorage) || !errors.Is(err, errDisk) {
		t.Fatalf("Step error %v", err)
	}
	if g.Err() == nil || g.HasReady() {
		t.Fatal("group did not stop")
	}
	if rd := g.Ready(); !rd.isEmpty() {
		t.Fatalf("stopped group handed out %+v", rd)
	}
	for _, call := range []error{
		g.Propose([]raftpb.Entry{{}}), g.ReadIndex(1), g.TransferLeader(2), g.Campaign(),
		g.ProposeConfChange(0, raftpb.ConfChange{}), g.Compact(1), g.Advance(Ready{seq: 1}),
		g.Step(raftpb.Message{Type: raftpb.MsgHeartbeat, Shard: 1, From: 2, To: 1, Term: 5}),
	} {
		if !errors.Is(call, ErrStorage) {
			t.Fatalf("call on a stopped group returned %v", call)
		}
	}
	g.Tick()
	g.ReportUnreachable(2)
	g.ReportSnapshot(2, true)
}

type errLog struct {
	MemoryLog
	first, last, init, snap error
}

func (e *errLog) FirstIndex() (raftpb.Index, error) {
	if e.first != nil {
		return 0, e.first
	}
	return e.MemoryLog.FirstIndex()
}

func (e *errLog) LastIndex() (raftpb.Index, error) {
	if e.last != nil {
		return 0, e.last
	}
	return e.MemoryLog.LastIndex()
}

func (e *errLog) InitialState() (InitialState, error) {
	if e.init != nil {
		return InitialState{}, e.init
	}
	return e.MemoryLog.InitialState()
}

func TestNewReportsStorageErrors(t *testing.T) {
	base := func() *errLog {
		return &errLog{MemoryLog: *NewMemoryLog(raftpb.ConfState{Voters: []raftpb.NodeID{1}})}
	}
	for name, mk := range map[string]func() *errLog{
		"first": func() *errLog { l := base(); l.first = errDisk; return l },
		"last":  func() *errLog { l := base(); l.last = errDisk; return l },
		"init":  func() *errLog { l := base(); l.init = errDisk; return l },
	} {
		if _, err := New(Config{ID: 1, Log: mk()}); !errors.Is(err, ErrStorage) || !errors.Is(err, errDisk) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// A persisted commit beyond the log is corruption, not something to
	// carry on with.
	l := base()
	l.hs.Commit = 9
	if _, err := New(Config{ID: 1, Log: l}); !errors.Is(err, ErrStorage) {
		t.Errorf("commit beyond log: %v", err)
	}
	// A persisted membership that breaks the rules.
	l = base()
	l.cs = raftpb.ConfState{Voters: []raftpb.NodeID{1}, Learners: []raftpb.NodeID{1}}
	if _, err := New(Config{ID: 1, Log: l}); !errors.Is(err, ErrStorage) {
		t.Errorf("invalid membership: %v", err)
	}
}

// The term of the last durable entry (offset-1) is remembered when it
// becomes durable or a snapshot is installed, and forgotten when a
// replacement reaches below it: the entry before the replacement is
// durable but its term was never seen here.
func TestUnstablePrevTerm(t *testing.T) {
	u := unstable{offset: 5, offsetInProgress: 5}
	if _, ok := u.maybeTerm(4); ok {
		t.Fatal("term of a durable entry known before any was seen")
	}
	u.truncateAndAppend(ents(5, 2, 2, 3))
	u.stableTo(6, 2)
	if tm, ok := u.maybeTerm(6); !ok || tm != 2 {
		t.Fatalf("term(6) after stableTo(6, 2) = %d %v", tm, ok)
	}
	if tm, ok := u.maybeTerm(7); !ok || tm != 3 {
		t.Fatalf("term(7), unstable = %d %v", tm, ok)
	}
	if _, ok := u.maybeTerm(5); ok {
		t.Fatal("only offset-1 is remembered")
	}
	u.truncateAndAppend(ents(7, 4)) // from == offset: offset-1 unchanged
	if tm, ok := u.maybeTerm(6); !ok || tm != 2 {
		t.Fatalf("term(6) after an append at the offset = %d %v", tm, ok)
	}
	u.truncateAndAppend(ents(6, 5)) // replaces durable entry 6
	if tm, ok := u.maybeTerm(6); !ok || tm != 5 {
		t.Fatalf("term(6) replaced = %d %v", tm, ok)
	}
	if _, ok := u.maybeTerm(5); ok {
		t.Fatal("term(5) is durable and unknown here: it must come from storage")
	}
	u.restore(raftpb.SnapshotMeta{Index: 20, Term: 7})
	u.stableSnapTo(20)
	if tm, ok := u.maybeTerm(20); !ok || tm != 7 {
		t.Fatalf("term(20) after installing a snapshot at (20, 7) = %d %v", tm, ok)
	}
}
