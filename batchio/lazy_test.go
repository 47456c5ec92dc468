package batchio

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/shardd/shardd/raftpb"
)

// A Lazy request is written without an fsync: a crash right after it may
// lose it, but the next synced flush makes it durable along with itself,
// and a store reopened after that crash holds both.
func TestLazyRequestRidesTheNextSync(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s := openMem(t, fs)
	defer s.Close()
	write(t, s, create(1), create(2))
	write(t, s, Update{Shard: 1, Entries: mkEnts(2, 1, 4), HardState: raftpb.HardState{Term: 1, Commit: 1}})
	flushes := s.Stats().Flushes

	lazy := func(commit raftpb.Index) {
		t.Helper()
		if err := s.Write(&Request{Lazy: true, Updates: []Update{{Shard: 1, HardState: raftpb.HardState{Term: 1, Commit: commit}}}}); err != nil {
			t.Fatal(err)
		}
	}
	hardState := func(fs vfs.FS) raftpb.HardState {
		t.Helper()
		s2 := openMem(t, fs)
		defer s2.Close()
		for _, ri := range s2.Replicas() {
			if ri.Shard == 1 {
				return ri.HardState
			}
		}
		t.Fatal("shard 1 lost")
		return raftpb.HardState{}
	}

	lazy(3)
	if got := s.Stats().Flushes; got != flushes {
		t.Fatalf("a lazy request alone was fsynced: %d flushes, want %d", got, flushes)
	}
	lost := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	if hs := hardState(lost); hs.Commit != 1 {
		t.Fatalf("after a crash losing unsynced data the commit is %d, want 1 (the lazy write unsynced)", hs.Commit)
	}

	lazy(5)
	write(t, s, Update{Shard: 2, Entries: mkEnts(2, 1, 1)}) // synced
	if got := s.Stats().Flushes; got != flushes+1 {
		t.Fatalf("%d flushes, want %d", got, flushes+1)
	}
	kept := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	if hs := hardState(kept); hs.Commit != 5 {
		t.Fatalf("after the next synced flush the commit is %d, want 5", hs.Commit)
	}
}
