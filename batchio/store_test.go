package batchio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/shardd/shardd/raftpb"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func openMem(t testing.TB, fs vfs.FS, mod ...func(*Options)) *Store {
	t.Helper()
	o := Options{Dir: "db", FS: fs, Logger: quiet}
	for _, f := range mod {
		f(&o)
	}
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mkEnts(from raftpb.Index, term raftpb.Term, n int) []raftpb.Entry {
	out := make([]raftpb.Entry, n)
	for i := range out {
		idx := from + raftpb.Index(i)
		out[i] = raftpb.Entry{Index: idx, Term: term, Key: uint64(idx), Data: []byte(fmt.Sprintf("e%d-t%d", idx, term))}
	}
	return out
}

var voters3 = raftpb.ConfState{Voters: []raftpb.NodeID{1, 2, 3}}

func create(id raftpb.ShardID) Update {
	return Update{Shard: id, Create: &ReplicaRecord{Initial: voters3}, ConfState: &voters3, ConfIndex: 1,
		Entries: mkEnts(1, 1, 1), HardState: raftpb.HardState{Term: 1, Commit: 1}}
}

func write(t testing.TB, s *Store, us ...Update) {
	t.Helper()
	if err := s.Write(&Request{Updates: us}); err != nil {
		t.Fatal(err)
	}
}

func mustLog(t testing.TB, s *Store, id raftpb.ShardID) *ShardLog {
	t.Helper()
	l, err := s.Shard(id)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// checkLog verifies that shard id holds exactly want (and nothing else).
func checkLog(t testing.TB, s *Store, id raftpb.ShardID, first raftpb.Index, want []raftpb.Entry) {
	t.Helper()
	l := mustLog(t, s, id)
	f, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	wantLast := first - 1 + raftpb.Index(len(want))
	if f != first || last != wantLast {
		t.Fatalf("shard %d bounds [%d, %d], want [%d, %d]", id, f, last, first, wantLast)
	}
	if len(want) == 0 {
		return
	}
	got, err := l.Entries(first, last+1, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("shard %d: %d entries, want %d", id, len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Index != w.Index || g.Term != w.Term || g.Key != w.Key || !bytes.Equal(g.Data, w.Data) {
			t.Fatalf("shard %d entry %d = %+v, want %+v", id, w.Index, g, w)
		}
		if tm, err := l.Term(w.Index); err != nil || tm != w.Term {
			t.Fatalf("shard %d term(%d) = %d %v", id, w.Index, tm, err)
		}
	}
}

func TestStoreWriteReadReopen(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs)
	write(t, s, create(1), create(2))
	write(t, s,
		Update{Shard: 1, Entries: mkEnts(2, 2, 10), HardState: raftpb.HardState{Term: 2, Vote: 3, Commit: 8}},
		Update{Shard: 2, Entries: mkEnts(2, 1, 3)})
	want1 := append(mkEnts(1, 1, 1), mkEnts(2, 2, 10)...)
	checkLog(t, s, 1, 1, want1)
	st, _ := mustLog(t, s, 1).InitialState()
	if st.HardState != (raftpb.HardState{Term: 2, Vote: 3, Commit: 8}) || st.ConfIndex != 1 ||
		!st.ConfState.Equal(&voters3) {
		t.Fatalf("initial state %+v", st)
	}
	if _, err := mustLog(t, s, 1).Entries(1, 20, 1<<20); !errors.Is(err, raftpb.ErrUnavailable) {
		t.Fatalf("read beyond last: %v", err)
	}
	if got, _ := mustLog(t, s, 1).Entries(2, 12, 1); len(got) != 1 {
		t.Fatalf("byte limit ignored: %d entries", len(got))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if err := s.Submit(&Request{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("submit after close: %v", err)
	}

	s = openMem(t, fs)
	defer s.Close()
	checkLog(t, s, 1, 1, want1) // now from Pebble: the cache starts empty
	checkLog(t, s, 2, 1, append(mkEnts(1, 1, 1), mkEnts(2, 1, 3)...))
	reps := s.Replicas()
	if len(reps) != 2 || reps[0].Shard != 1 || reps[1].Shard != 2 || reps[0].HardState.Commit != 8 ||
		!reps[0].Record.Initial.Equal(&voters3) {
		t.Fatalf("replicas %+v", reps)
	}
}

func TestStoreReplacesConflictingSuffix(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs)
	write(t, s, create(7), Update{Shard: 7, Entries: mkEnts(2, 1, 9)}) // 1..10
	// Entries 6..8 of term 2 replace 6..10 in the same write.
	write(t, s, Update{Shard: 7, Entries: mkEnts(6, 2, 3)})
	want := append(mkEnts(1, 1, 5), mkEnts(6, 2, 3)...)
	checkLog(t, s, 7, 1, want)
	if _, err := mustLog(t, s, 7).Term(9); !errors.Is(err, raftpb.ErrUnavailable) {
		t.Fatalf("replaced entry 9 still readable: %v", err)
	}
	// Replacing and extending in one flush, from two requests.
	done := make(chan error, 2)
	_ = s.Submit(&Request{Updates: []Update{{Shard: 7, Entries: mkEnts(9, 2, 3)}}, Done: func(e error) { done <- e }})
	_ = s.Submit(&Request{Updates: []Update{{Shard: 7, Entries: mkEnts(10, 3, 2)}}, Done: func(e error) { done <- e }})
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	want = append(append(want, mkEnts(9, 2, 1)...), mkEnts(10, 3, 2)...)
	checkLog(t, s, 7, 1, want)
	s.Close()
	s = openMem(t, fs)
	defer s.Close()
	checkLog(t, s, 7, 1, want)
}

func TestStoreSnapshotsAndCompaction(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs)
	write(t, s, create(3), Update{Shard: 3, Entries: mkEnts(2, 2, 99)}) // 1..100
	l := mustLog(t, s, 3)
	if _, err := l.Snapshot(); !errors.Is(err, raftpb.ErrSnapshotTemporarilyUnavailable) {
		t.Fatalf("snapshot before any: %v", err)
	}
	// Compaction needs a snapshot covering it.
	if err := s.Write(&Request{Updates: []Update{{Shard: 3, CompactTo: 40}}}); !errors.Is(err, ErrInvalidUpdate) {
		t.Fatalf("compaction without snapshot: %v", err)
	}
	snap := &SnapshotRecord{Meta: raftpb.SnapshotMeta{Index: 60, Term: 2, ConfState: voters3}, Data: []byte("file-60")}
	write(t, s, Update{Shard: 3, SaveSnapshot: snap, CompactTo: 40})
	checkLog(t, s, 3, 41, mkEnts(41, 2, 60))
	if tm, err := l.Term(40); err != nil || tm != 2 {
		t.Fatalf("term at the compaction point: %d %v", tm, err)
	}
	if _, err := l.Term(39); !errors.Is(err, raftpb.ErrCompacted) {
		t.Fatalf("term below: %v", err)
	}
	if _, err := l.Entries(30, 50, 1<<20); !errors.Is(err, raftpb.ErrCompacted) {
		t.Fatalf("entries below: %v", err)
	}
	if m, err := l.Snapshot(); err != nil || m.Index != 60 {
		t.Fatalf("snapshot %+v %v", m, err)
	}
	for _, bad := range []Update{
		{Shard: 3, CompactTo: 61},
		{Shard: 3, SaveSnapshot: &SnapshotRecord{Meta: raftpb.SnapshotMeta{Index: 50, Term: 2}}},
		{Shard: 3, SaveSnapshot: &SnapshotRecord{Meta: raftpb.SnapshotMeta{Index: 101, Term: 2}}},
	} {
		if err := s.Write(&Request{Updates: []Update{bad}}); !errors.Is(err, ErrInvalidUpdate) {
			t.Fatalf("%+v: %v", bad, err)
		}
	}
	s.Close()
	s = openMem(t, fs)
	defer s.Close()
	checkLog(t, s, 3, 41, mkEnts(41, 2, 60))
	r, ok := mustLog(t, s, 3).SnapshotRecord()
	if !ok || string(r.Data) != "file-60" || r.Meta.Index != 60 {
		t.Fatalf("snapshot record after reopen: %+v %v", r, ok)
	}
}

func TestStoreInstallSnapshot(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs)
	write(t, s, create(5), Update{Shard: 5, Entries: mkEnts(2, 1, 59)}) // 1..60
	cs := raftpb.ConfState{Voters: []raftpb.NodeID{1, 2, 4}}
	snap := &SnapshotRecord{Meta: raftpb.SnapshotMeta{Index: 100, Term: 4, ConfState: cs}}
	// The snapshot replaces the whole log, conflicting entries included, in
	// the same write as what follows it (S26b).
	write(t, s, Update{Shard: 5, InstallSnapshot: snap, Entries: mkEnts(101, 4, 5),
		HardState: raftpb.HardState{Term: 4, Commit: 100}})
	checkLog(t, s, 5, 101, mkEnts(101, 4, 5))
	st, _ := mustLog(t, s, 5).InitialState()
	if !st.ConfState.Equal(&cs) || st.ConfIndex != 100 {
		t.Fatalf("membership after install: %+v", st)
	}
	if tm, _ := mustLog(t, s, 5).Term(100); tm != 4 {
		t.Fatalf("term at the snapshot: %d", tm)
	}
	if err := s.Write(&Request{Updates: []Update{{Shard: 5, InstallSnapshot: snap}}}); !errors.Is(err, ErrInvalidUpdate) {
		t.Fatalf("reinstalling the same snapshot: %v", err)
	}
	s.Close()
	s = openMem(t, fs)
	defer s.Close()
	checkLog(t, s, 5, 101, mkEnts(101, 4, 5))
}

func TestStoreRemoveAndRecreate(t *testing.T) {
	fs := vfs.NewMem()
	s := openMem(t, fs)
	write(t, s, create(9), create(10), Update{Shard: 9, Entries: mkEnts(2, 1, 10)})
	write(t, s, Update{Shard: 9, Remove: true})
	if _, err := s.Shard(9); !errors.Is(err, ErrUnknownShard) {
		t.Fatalf("removed shard readable: %v", err)
	}
	if err := s.Write(&Request{Updates: []Update{{Shard: 9, Entries: mkEnts(12, 1, 1)}}}); !errors.Is(err, ErrUnknownShard) {
		t.Fatalf("write to removed shard: %v", err)
	}
	s.Close()
	s = openMem(t, fs)
	defer s.Close()
	if reps := s.Replicas(); len(reps) != 1 || reps[0].Shard != 10 {
		t.Fatalf("replicas after removal %+v", reps)
	}
	// Nothing of the old replica is left: a new one starts empty.
	write(t, s, Update{Shard: 9, Create: &ReplicaRecord{Join: true}})
	checkLog(t, s, 9, 1, nil)
	if st, _ := mustLog(t, s, 9).InitialState(); !st.HardState.IsEmpty() {
		t.Fatalf("recreated replica inherited %+v", st)
	}
}

// Invalid requests are refused alone; the rest of the flush is written.
func TestStoreInvalidRequestsRefusedAlone(t *testing.T) {
	s := openMem(t, vfs.NewMem())
	defer s.Close()
	write(t, s, create(1))
	type result struct {
		name string
		err  error
	}
	bad := map[string]Update{
		"gap":             {Shard: 1, Entries: mkEnts(5, 1, 1)},
		"not contiguous":  {Shard: 1, Entries: []raftpb.Entry{{Index: 2, Term: 1}, {Index: 4, Term: 1}}},
		"unknown shard":   {Shard: 99, Entries: mkEnts(1, 1, 1)},
		"exists":          create(1),
		"commit past end": {Shard: 1, HardState: raftpb.HardState{Term: 1, Commit: 5}},
	}
	results := make(chan result, len(bad)+1)
	for name, u := range bad {
		name := name
		if err := s.Submit(&Request{Updates: []Update{u}, Done: func(e error) { results <- result{name, e} }}); err != nil {
			t.Fatal(err)
		}
	}
	good := &Request{Updates: []Update{{Shard: 1, Entries: mkEnts(2, 1, 2)}}, Done: func(e error) { results <- result{"good", e} }}
	if err := s.Submit(good); err != nil {
		t.Fatal(err)
	}
	for range len(bad) + 1 {
		r := <-results
		if (r.err == nil) != (r.name == "good") {
			t.Errorf("%s: %v", r.name, r.err)
		}
	}
	checkLog(t, s, 1, 1, append(mkEnts(1, 1, 1), mkEnts(2, 1, 2)...))
	// A request touching a good and a bad shard is refused entirely.
	err := s.Write(&Request{Updates: []Update{{Shard: 1, Entries: mkEnts(4, 1, 1)}, {Shard: 99}}})
	if !errors.Is(err, ErrUnknownShard) {
		t.Fatalf("mixed request: %v", err)
	}
	checkLog(t, s, 1, 1, append(mkEnts(1, 1, 1), mkEnts(2, 1, 2)...))
}

// The entry cache stays within its bound, and reads stay correct when what
// they need was evicted.
func TestStoreCacheBounded(t *testing.T) {
	const bound = 64 << 10
	s := openMem(t, vfs.NewMem(), func(o *Options) { o.CacheBytes = bound })
	defer s.Close()
	for id := raftpb.ShardID(1); id <= 20; id++ {
		write(t, s, create(id))
	}
	next := map[raftpb.ShardID]raftpb.Index{}
	for round := 0; round < 50; round++ {
		var us []Update
		for id := raftpb.ShardID(1); id <= 20; id++ {
			if next[id] == 0 {
				next[id] = 2
			}
			us = append(us, Update{Shard: id, Entries: mkEnts(next[id], 1, 10)})
			next[id] += 10
		}
		write(t, s, us...)
		if cb := s.Stats().CacheBytes; cb > bound {
			t.Fatalf("cache holds %d bytes, bound %d", cb, bound)
		}
	}
	for id := raftpb.ShardID(1); id <= 20; id++ {
		checkLog(t, s, id, 1, append(mkEnts(1, 1, 1), mkEnts(2, 1, 500)...))
	}
	st := s.Stats()
	if st.Entries != 20+20*500 || st.Flushes == 0 || st.Flushes > st.Requests {
		t.Fatalf("stats %+v", st)
	}
}

func TestOptionsValidate(t *testing.T) {
	_, err := Open(Options{MaxFlushBytes: -1, BlockCacheBytes: -1})
	for _, field := range []string{"Dir", "MaxFlushBytes", "BlockCacheBytes"} {
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(field)) {
			t.Errorf("%s not named in %v", field, err)
		}
	}
}
