// Package conformance checks that the storage implementations of the Raft
// core's LogReader agree: the in-memory log the core's tests use and the
// Pebble store nodes use must answer every question the same way after the
// same writes.
package conformance

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/goleak"

	"github.com/shardd/shardd/batchio"
	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The Pebble store's per-shard reader is a LogReader.
var _ group.LogReader = (*batchio.ShardLog)(nil)

// update converts what a Ready asks to persist into a batchio update.
func update(shard raftpb.ShardID, rd *group.Ready) batchio.Update {
	u := batchio.Update{Shard: shard, Entries: rd.Entries, HardState: rd.HardState, CompactTo: rd.CompactTo}
	if rd.Snapshot != nil {
		u.InstallSnapshot = &batchio.SnapshotRecord{Meta: *rd.Snapshot}
	}
	if rd.ConfState != nil {
		u.ConfState, u.ConfIndex = rd.ConfState, rd.ConfIndex
	}
	return u
}

// TestLogReadersAgree drives identical random write sequences — appends
// that replace suffixes, hard states, snapshots taken and installed,
// compactions — into a MemoryLog and a batchio shard, and compares every
// LogReader answer after each write, including errors (as sentinels).
func TestLogReadersAgree(t *testing.T) {
	lg := slog.New(slog.NewTextHandler(io.Discard, nil))
	for seed := uint64(1); seed <= 8; seed++ {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 42))
			store, err := batchio.Open(batchio.Options{Dir: "db", FS: vfs.NewMem(), Logger: lg,
				CacheBytes: int64(r.IntN(2)) * 4096}) // sometimes no cache at all
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			cs := raftpb.ConfState{Voters: []raftpb.NodeID{1, 2, 3}}
			mem := group.NewMemoryLog(cs)
			st, boot, _ := group.Bootstrap(cs)
			err = store.Write(&batchio.Request{Updates: []batchio.Update{{Shard: 1,
				Create:  &batchio.ReplicaRecord{Initial: cs},
				Entries: []raftpb.Entry{boot}, HardState: st.HardState, ConfState: &st.ConfState, ConfIndex: st.ConfIndex}}})
			if err != nil {
				t.Fatal(err)
			}
			disk, err := store.Shard(1)
			if err != nil {
				t.Fatal(err)
			}
			term := raftpb.Term(1)
			accepted := 0
			for step := 0; step < 300; step++ {
				rd := randomReady(r, mem, &term)
				memErr := mem.Persist(&rd.Ready)
				var diskErr error
				switch {
				case rd.SnapshotTaken != nil:
					if memErr == nil {
						memErr = mem.SetSnapshot(*rd.SnapshotTaken)
					}
					diskErr = store.Write(&batchio.Request{Updates: []batchio.Update{{Shard: 1,
						SaveSnapshot: &batchio.SnapshotRecord{Meta: *rd.SnapshotTaken}}}})
				default:
					diskErr = store.Write(&batchio.Request{Updates: []batchio.Update{update(1, &rd.Ready)}})
				}
				if (memErr == nil) != (diskErr == nil) {
					t.Fatalf("step %d: memory log says %v, store says %v", step, memErr, diskErr)
				}
				if memErr == nil {
					accepted++
				}
				compare(t, step, r, mem, disk)
			}
			if last, _ := mem.LastIndex(); accepted < 200 || last < 100 {
				t.Fatalf("only %d of 300 writes accepted, log ends at %d: the test exercises little", accepted, last)
			}
		})
	}
}

// randomReady is a Ready-shaped write (or a snapshot taken) that is valid
// for mem, or occasionally not.
type step struct {
	group.Ready
	SnapshotTaken *raftpb.SnapshotMeta
}

func randomReady(r *rand.Rand, mem *group.MemoryLog, term *raftpb.Term) step {
	first, _ := mem.FirstIndex()
	last, _ := mem.LastIndex()
	hs := mem.HardState()
	var s step
	switch k := r.IntN(10); {
	case k < 6: // append, sometimes replacing a suffix above the commit
		from := last + 1
		if r.IntN(4) == 0 && last > hs.Commit {
			from = hs.Commit + 1 + raftpb.Index(r.IntN(int(last-hs.Commit)))
			*term++
		}
		n := 1 + r.IntN(6)
		for i := 0; i < n; i++ {
			s.Entries = append(s.Entries, raftpb.Entry{Index: from + raftpb.Index(i), Term: *term,
				Key: r.Uint64(), Data: []byte(fmt.Sprint(r.Uint32()))})
		}
		newLast := from + raftpb.Index(n) - 1
		if c := hs.Commit + raftpb.Index(r.IntN(3)); c <= newLast && c > hs.Commit {
			s.HardState = raftpb.HardState{Term: *term, Commit: c}
		}
	case k < 8: // take a snapshot at the commit and compact below it
		if hs.Commit >= first {
			t, _ := mem.Term(hs.Commit)
			s.SnapshotTaken = &raftpb.SnapshotMeta{Index: hs.Commit, Term: t,
				ConfState: raftpb.ConfState{Voters: []raftpb.NodeID{1, 2, 3}}}
		}
	case k < 9: // compact (maybe beyond the snapshot: both must refuse)
		if first <= last {
			s.CompactTo = first + raftpb.Index(r.IntN(int(last-first+1)))
		}
	default: // install a received snapshot beyond everything
		*term++
		idx := last + raftpb.Index(1+r.IntN(10))
		s.Snapshot = &raftpb.SnapshotMeta{Index: idx, Term: *term,
			ConfState: raftpb.ConfState{Voters: []raftpb.NodeID{1, 2, 4}}}
		s.HardState = raftpb.HardState{Term: *term, Commit: idx}
		s.ConfState, s.ConfIndex = &s.Snapshot.ConfState, idx
	}
	return s
}

func sentinel(err error) error {
	for _, s := range []error{raftpb.ErrCompacted, raftpb.ErrUnavailable, raftpb.ErrSnapshotTemporarilyUnavailable} {
		if errors.Is(err, s) {
			return s
		}
	}
	return err
}

func compare(t *testing.T, step int, r *rand.Rand, mem *group.MemoryLog, disk *batchio.ShardLog) {
	t.Helper()
	mf, _ := mem.FirstIndex()
	df, _ := disk.FirstIndex()
	ml, _ := mem.LastIndex()
	dl, _ := disk.LastIndex()
	if mf != df || ml != dl {
		t.Fatalf("step %d: bounds memory [%d,%d] store [%d,%d]", step, mf, ml, df, dl)
	}
	ms, _ := mem.InitialState()
	ds, _ := disk.InitialState()
	if ms.HardState != ds.HardState || ms.ConfIndex != ds.ConfIndex || !ms.ConfState.Equal(&ds.ConfState) {
		t.Fatalf("step %d: initial state memory %+v store %+v", step, ms, ds)
	}
	msnap, merr := mem.Snapshot()
	dsnap, derr := disk.Snapshot()
	if sentinel(merr) != sentinel(derr) || msnap.Index != dsnap.Index || msnap.Term != dsnap.Term {
		t.Fatalf("step %d: snapshot memory %+v %v store %+v %v", step, msnap, merr, dsnap, derr)
	}
	for i := raftpb.Index(0); i <= ml+2; i++ {
		mt, merr := mem.Term(i)
		dt, derr := disk.Term(i)
		if mt != dt || sentinel(merr) != sentinel(derr) {
			t.Fatalf("step %d: term(%d) memory %d %v store %d %v", step, i, mt, merr, dt, derr)
		}
	}
	for n := 0; n < 5; n++ {
		lo := raftpb.Index(r.IntN(int(ml) + 2))
		hi := lo + raftpb.Index(r.IntN(8))
		max := uint64(r.IntN(200))
		me, merr := mem.Entries(lo, hi, max)
		de, derr := disk.Entries(lo, hi, max)
		if (merr == nil) != (derr == nil) || (merr != nil && sentinel(merr) != sentinel(derr)) {
			t.Fatalf("step %d: entries [%d,%d) memory %v store %v", step, lo, hi, merr, derr)
		}
		if len(me) == 0 && len(de) == 0 {
			continue
		}
		if !reflect.DeepEqual(me, de) {
			t.Fatalf("step %d: entries [%d,%d) max %d differ:\nmemory %+v\nstore  %+v", step, lo, hi, max, me, de)
		}
	}
}
