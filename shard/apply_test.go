package shard

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

// proposeApplied proposes one command and settles until it is applied.
func (n *tnode) proposeApplied(key uint64, cmd string) Result {
	n.t.Helper()
	p := n.propose(key, cmd)
	n.settle()
	return mustSucceed(n.t, p)
}

// proposeUpTo proposes one command at a time until Applied reaches index.
func (n *tnode) proposeUpTo(index raftpb.Index) {
	n.t.Helper()
	for k := uint64(1); n.r.Applied() < index; k++ {
		n.proposeApplied(uint64(n.r.Applied())*1000+k, fmt.Sprintf("k%d=v%d", n.r.Applied()+1, n.r.Applied()+1))
	}
}

func TestAutomaticSnapshots(t *testing.T) {
	n := newLeader(t, nodeOpts{snapEvery: 10, lag: 3})
	if len(n.pers.saves()) != 0 {
		t.Fatal("snapshot before 10 entries")
	}
	// hashAt records the hash at each applied index as we go.
	n.proposeUpTo(35)
	saves := n.pers.saves()
	var idx []raftpb.Index
	for _, s := range saves {
		idx = append(idx, s.meta.Index)
	}
	if !slices.Equal(idx, []raftpb.Index{10, 20, 30}) {
		t.Fatalf("snapshots at %v, want [10 20 30]", idx)
	}
	for _, s := range saves {
		if s.compactTo != s.meta.Index-3 {
			t.Fatalf("snapshot %d: compactTo %d, want %d", s.meta.Index, s.compactTo, s.meta.Index-3)
		}
		if s.meta.Term != 2 || !slices.Equal(s.meta.ConfState.Voters, []raftpb.NodeID{1}) {
			t.Fatalf("snapshot meta: %+v", s.meta)
		}
		d, ok := n.snaps.get(s.ref)
		if !ok {
			t.Fatalf("snapshot %d: data not committed", s.meta.Index)
		}
		if string(d[:4]) != "shd1" {
			t.Fatalf("snapshot %d: magic %q", s.meta.Index, d[:4])
		}
		if h := binary.BigEndian.Uint64(d[4:12]); h != n.hashAt[s.meta.Index] {
			t.Fatalf("snapshot %d: header hash %x, hash at that index %x", s.meta.Index, h, n.hashAt[s.meta.Index])
		}
	}
	if first, _ := n.log.FirstIndex(); first != 28 {
		t.Fatalf("log first index %d, want 28", first)
	}
	if n.r.lastSnap != 30 {
		t.Fatalf("lastSnap = %d", n.r.lastSnap)
	}
}

func TestRequestSnapshot(t *testing.T) {
	n := newLeader(t, nodeOpts{snapEvery: 10, lag: 3})
	n.proposeUpTo(13)
	ch := n.r.RequestSnapshot()
	if !n.r.HasWork() {
		t.Fatal("HasWork false with a snapshot request queued")
	}
	n.apply()
	idx, err := SnapshotResult(<-ch)
	if err != nil || idx != 13 {
		t.Fatalf("RequestSnapshot = %d, %v; want 13", idx, err)
	}
	saves := n.pers.saves()
	last := saves[len(saves)-1]
	if last.meta.Index != 13 || last.compactTo != 10 {
		t.Fatalf("last save: %+v", last)
	}
	// Nothing applied since: the same snapshot is reported, none taken.
	ch = n.r.RequestSnapshot()
	n.apply()
	if idx, err := SnapshotResult(<-ch); err != nil || idx != 13 {
		t.Fatalf("second RequestSnapshot = %d, %v", idx, err)
	}
	if len(n.pers.saves()) != len(saves) {
		t.Fatal("a second snapshot was recorded at the same index")
	}
	// The automatic schedule restarts from the requested snapshot.
	n.proposeUpTo(22)
	if got := len(n.pers.saves()); got != len(saves) {
		t.Fatalf("automatic snapshot before 10 entries after the requested one")
	}
	n.proposeUpTo(23)
	if saves := n.pers.saves(); saves[len(saves)-1].meta.Index != 23 {
		t.Fatalf("automatic snapshot at %d, want 23", saves[len(saves)-1].meta.Index)
	}
}

func TestRequestSnapshotNothingApplied(t *testing.T) {
	n := newNode(t, 1, nodeOpts{})
	ch := n.r.RequestSnapshot()
	n.apply()
	if _, err := SnapshotResult(<-ch); err == nil {
		t.Fatal("snapshot with nothing applied succeeded")
	}
}

func TestSnapshotWithoutCompactionLag(t *testing.T) {
	n := newLeader(t, nodeOpts{snapEvery: 5})
	n.proposeUpTo(5)
	saves := n.pers.saves()
	if len(saves) != 1 || saves[0].meta.Index != 5 || saves[0].compactTo != 5 {
		t.Fatalf("saves: %+v", saves)
	}
	// A lag beyond the applied index compacts nothing.
	m := newLeader(t, nodeOpts{lag: 100})
	ch := m.r.RequestSnapshot()
	m.apply()
	if idx, err := SnapshotResult(<-ch); err != nil || idx != 2 {
		t.Fatalf("RequestSnapshot = %d, %v", idx, err)
	}
	if s := m.pers.saves(); len(s) != 1 || s[0].compactTo != 0 {
		t.Fatalf("saves: %+v", s)
	}
}

func TestSnapshotFailures(t *testing.T) {
	boom := errors.New("boom")
	t.Run("create", func(t *testing.T) {
		n := newLeader(t, nodeOpts{snapEvery: 5})
		n.snaps.createErr = boom
		n.proposeUpTo(6) // the automatic snapshot fails quietly
		if len(n.pers.saves()) != 0 || n.r.Err() != nil {
			t.Fatalf("saves %v, err %v", n.pers.saves(), n.r.Err())
		}
		ch := n.r.RequestSnapshot()
		n.apply()
		if _, err := SnapshotResult(<-ch); !errors.Is(err, boom) {
			t.Fatalf("RequestSnapshot: %v", err)
		}
		// It is retried once possible.
		n.snaps.createErr = nil
		n.proposeUpTo(7)
		if s := n.pers.saves(); len(s) != 1 || s[0].meta.Index != 7 {
			t.Fatalf("saves after recovery: %+v", s)
		}
	})
	t.Run("save", func(t *testing.T) {
		n := newLeader(t, nodeOpts{})
		n.kv.saveErr = boom
		ch := n.r.RequestSnapshot()
		n.apply()
		if _, err := SnapshotResult(<-ch); !errors.Is(err, boom) {
			t.Fatalf("RequestSnapshot: %v", err)
		}
		if n.snaps.aborts != 1 {
			t.Fatalf("aborts = %d", n.snaps.aborts)
		}
	})
	t.Run("commit", func(t *testing.T) {
		n := newLeader(t, nodeOpts{})
		n.snaps.commitErr = boom
		ch := n.r.RequestSnapshot()
		n.apply()
		if _, err := SnapshotResult(<-ch); !errors.Is(err, boom) {
			t.Fatalf("RequestSnapshot: %v", err)
		}
	})
	t.Run("persister", func(t *testing.T) {
		n := newLeader(t, nodeOpts{})
		n.pers.err = boom
		ch := n.r.RequestSnapshot()
		n.apply()
		if _, err := SnapshotResult(<-ch); !errors.Is(err, boom) {
			t.Fatalf("RequestSnapshot: %v", err)
		}
		if n.r.lastSnap != 0 {
			t.Fatalf("lastSnap moved to %d on a failed save", n.r.lastSnap)
		}
	})
	t.Run("sync", func(t *testing.T) {
		d := &diskKV{kvSM: newKV(), syncErr: boom}
		n := newLeader(t, nodeOpts{sm: d})
		ch := n.r.RequestSnapshot()
		n.apply()
		if _, err := SnapshotResult(<-ch); !errors.Is(err, boom) {
			t.Fatalf("RequestSnapshot: %v", err)
		}
		if !errors.Is(n.r.Err(), boom) {
			t.Fatalf("a failed Sync does not stop the replica: %v", n.r.Err())
		}
	})
}

func TestOnDiskSnapshotSyncsFirst(t *testing.T) {
	d := &diskKV{kvSM: newKV()}
	n := newLeader(t, nodeOpts{sm: d, snapEvery: 5, lag: 1})
	n.proposeUpTo(5)
	if d.syncs != 1 {
		t.Fatalf("Sync calls: %d", d.syncs)
	}
	if s := n.pers.saves(); len(s) != 1 || s[0].compactTo != 4 {
		t.Fatalf("saves: %+v", s)
	}
}

func TestRestoreFromOwnSnapshot(t *testing.T) {
	n := newLeader(t, nodeOpts{snapEvery: 10, lag: 3})
	n.proposeUpTo(30)
	saves := n.pers.saves()
	last := saves[len(saves)-1]
	if last.meta.Index != 30 || n.r.Applied() != 30 {
		t.Fatalf("last snapshot %d, applied %d", last.meta.Index, n.r.Applied())
	}
	want, wantHash := n.kv.state(), n.r.Status().Hash

	// A new replica on the same durable state, restored from the snapshot.
	m := newNode(t, 1, nodeOpts{log: n.log.Clone(), snaps: n.snaps, snapEvery: 10, lag: 3,
		restoreRef: last.ref, restoreIdx: 30})
	if got := m.kv.state(); !maps.Equal(got, want) {
		t.Fatalf("restored state %v, want %v", got, want)
	}
	if st := m.r.Status(); st.Applied != 30 || st.Hash != wantHash {
		t.Fatalf("restored status: applied %d hash %x, want 30 %x", st.Applied, st.Hash, wantHash)
	}
	if m.r.appTerm != 2 || m.r.lastSnap != 30 {
		t.Fatalf("appTerm %d lastSnap %d", m.r.appTerm, m.r.lastSnap)
	}
	// It goes on from there: nothing at or below 30 reaches the state machine.
	m.electSingle()
	res := m.proposeApplied(1, "z=26")
	if res.Index <= 30 {
		t.Fatalf("result index %d", res.Index)
	}
	for _, i := range m.kv.appliedIndexes() {
		if i <= 30 {
			t.Fatalf("entry %d applied again after restore", i)
		}
	}
	if v, _ := m.r.Lookup([]byte("k10")); string(v) != "v10" {
		t.Fatalf("k10 = %q after restore", v)
	}
}

func TestRestoreErrors(t *testing.T) {
	n := newLeader(t, nodeOpts{snapEvery: 10, lag: 3})
	n.proposeUpTo(10)
	ref := n.pers.saves()[0].ref
	good, _ := n.snaps.get(ref)

	cases := []struct {
		name  string
		setup func(o *nodeOpts)
		want  string
	}{
		{"compacted log without snapshot", func(o *nodeOpts) { o.restoreRef = nil }, "no snapshot to restore"},
		{"missing snapshot", func(o *nodeOpts) { o.restoreRef = []byte("nope") }, "opening snapshot"},
		{"short header", func(o *nodeOpts) {
			o.snaps.put([]byte("short"), []byte("shd"))
			o.restoreRef = []byte("short")
		}, "snapshot header"},
		{"bad magic", func(o *nodeOpts) {
			o.snaps.put([]byte("bad"), append([]byte("xxxx12345678"), good[12:]...))
			o.restoreRef = []byte("bad")
		}, "unknown format"},
		{"recover fails", func(o *nodeOpts) {
			kv := newKV()
			kv.recErr = errors.New("recover boom")
			o.sm = kv
		}, "recover boom"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := nodeOpts{log: n.log.Clone(), snaps: newMemSnapStore(), restoreRef: []byte("good"), restoreIdx: 10}
			o.snaps.put([]byte("good"), good)
			tc.setup(&o)
			_, err := newNodeErr(t, 1, o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want %q", err, tc.want)
			}
		})
	}
}

func TestNewRejectsBadCoreConfig(t *testing.T) {
	_, err := newNodeErr(t, 1, nodeOpts{core: func(c *group.Config) { c.HeartbeatTicks = 50 }})
	if err == nil || !errors.Is(err, group.ErrInvalidConfig) {
		t.Fatalf("New with an invalid core config: %v", err)
	}
}

// compactedLog returns a single-voter log with entries 1..20 of term 1,
// committed, and a snapshot at snapIndex compacted to compactTo.
func compactedLog(t *testing.T, snapIndex, compactTo raftpb.Index) *group.MemoryLog {
	t.Helper()
	log := group.NewMemoryLog(raftpb.ConfState{Voters: []raftpb.NodeID{1}})
	var ents []raftpb.Entry
	for i := raftpb.Index(2); i <= 20; i++ {
		ents = append(ents, raftpb.Entry{Index: i, Term: 1, Data: fmt.Appendf(nil, "k%d=v%d", i, i)})
	}
	rd := group.Ready{Entries: ents, HardState: raftpb.HardState{Term: 1, Commit: 20}}
	if err := log.Persist(&rd); err != nil {
		t.Fatal(err)
	}
	if snapIndex > 0 {
		if err := log.SetSnapshot(raftpb.SnapshotMeta{Index: snapIndex, Term: 1, ConfState: raftpb.ConfState{Voters: []raftpb.NodeID{1}}}); err != nil {
			t.Fatal(err)
		}
		if err := log.Compact(compactTo); err != nil {
			t.Fatal(err)
		}
	}
	return log
}

// snapshotData is what a replica would write for state kv with hash h.
func snapshotData(t *testing.T, kv map[string]string, h uint64) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := writeSnapshotHeader(&b, h); err != nil {
		t.Fatal(err)
	}
	sm := &kvSM{kv: kv}
	if err := sm.SaveSnapshot(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestOnDiskOpen(t *testing.T) {
	t.Run("beyond durable commit", func(t *testing.T) {
		d := &diskKV{kvSM: newKV(), lastApplied: 5}
		_, err := newNodeErr(t, 1, nodeOpts{sm: d})
		if err == nil || !strings.Contains(err.Error(), "beyond the durable commit") {
			t.Fatalf("New: %v", err)
		}
	})
	t.Run("open error", func(t *testing.T) {
		d := &diskKV{kvSM: newKV(), openErr: errors.New("disk gone")}
		_, err := newNodeErr(t, 1, nodeOpts{sm: d})
		if err == nil || !strings.Contains(err.Error(), "disk gone") {
			t.Fatalf("New: %v", err)
		}
	})
	t.Run("below first index without snapshot", func(t *testing.T) {
		d := &diskKV{kvSM: newKV(), lastApplied: 3}
		_, err := newNodeErr(t, 1, nodeOpts{sm: d, log: compactedLog(t, 15, 15)})
		if err == nil || !strings.Contains(err.Error(), "no snapshot covers the gap") {
			t.Fatalf("New: %v", err)
		}
	})
	t.Run("below first index, snapshot too old", func(t *testing.T) {
		d := &diskKV{kvSM: newKV(), lastApplied: 3}
		snaps := newMemSnapStore()
		snaps.put([]byte("s10"), snapshotData(t, map[string]string{"a": "1"}, 42))
		_, err := newNodeErr(t, 1, nodeOpts{sm: d, log: compactedLog(t, 15, 15), snaps: snaps,
			restoreRef: []byte("s10"), restoreIdx: 10})
		if err == nil || !strings.Contains(err.Error(), "no snapshot covers the gap") {
			t.Fatalf("New: %v", err)
		}
	})
	t.Run("below first index, snapshot covers", func(t *testing.T) {
		d := &diskKV{kvSM: newKV(), lastApplied: 3}
		snaps := newMemSnapStore()
		kv := map[string]string{"snap": "yes"}
		snaps.put([]byte("s15"), snapshotData(t, kv, 0xfeed))
		n, err := newNodeErr(t, 1, nodeOpts{sm: d, log: compactedLog(t, 15, 12), snaps: snaps,
			restoreRef: []byte("s15"), restoreIdx: 15})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		if st := n.r.Status(); st.Applied != 15 || st.Hash != 0xfeed {
			t.Fatalf("status: applied %d hash %x", st.Applied, st.Hash)
		}
		if !maps.Equal(d.state(), kv) {
			t.Fatalf("state: %v", d.state())
		}
		if n.r.appTerm != 1 {
			t.Fatalf("appTerm = %d", n.r.appTerm)
		}
		// The log replays 16..20 only.
		n.settle()
		if got := d.appliedIndexes(); !slices.Equal(got, []uint64{16, 17, 18, 19, 20}) {
			t.Fatalf("replayed %v", got)
		}
		if n.r.Applied() != 20 {
			t.Fatalf("applied %d", n.r.Applied())
		}
	})
	t.Run("below first index, snapshot unreadable", func(t *testing.T) {
		d := &diskKV{kvSM: newKV(), lastApplied: 3}
		snaps := newMemSnapStore()
		snaps.put([]byte("s15"), []byte("garbage-garbage"))
		_, err := newNodeErr(t, 1, nodeOpts{sm: d, log: compactedLog(t, 15, 12), snaps: snaps,
			restoreRef: []byte("s15"), restoreIdx: 15})
		if err == nil || !strings.Contains(err.Error(), "unknown format") {
			t.Fatalf("New: %v", err)
		}
	})
	t.Run("within the log", func(t *testing.T) {
		d := &diskKV{kvSM: newKV(), lastApplied: 17}
		n, err := newNodeErr(t, 1, nodeOpts{sm: d, log: compactedLog(t, 15, 12)})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		if n.r.Applied() != 17 || n.r.appTerm != 1 {
			t.Fatalf("applied %d appTerm %d", n.r.Applied(), n.r.appTerm)
		}
		n.settle()
		if got := d.appliedIndexes(); !slices.Equal(got, []uint64{18, 19, 20}) {
			t.Fatalf("replayed %v", got)
		}
	})
	t.Run("first index exactly next", func(t *testing.T) {
		// applied+1 == first: nothing is missing.
		d := &diskKV{kvSM: newKV(), lastApplied: 12}
		n, err := newNodeErr(t, 1, nodeOpts{sm: d, log: compactedLog(t, 15, 12)})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		n.settle()
		if got := d.appliedIndexes(); len(got) != 8 || got[0] != 13 {
			t.Fatalf("replayed %v", got)
		}
	})
}

func TestUpdateErrorStopsReplica(t *testing.T) {
	n := newLeader(t, nodeOpts{})
	n.kv.failCmd = "bad=1"
	ok1 := n.propose(1, "a=1")
	bad := n.propose(2, "bad=1")
	ok2 := n.propose(3, "b=1")
	n.holdApply = true
	n.settle()
	// Queued behind the failure, in the inbox.
	queued := n.propose(4, "c=1")
	rr := n.read()
	n.apply()

	err := n.r.Err()
	if err == nil || !strings.Contains(err.Error(), "bad=1") {
		t.Fatalf("Err = %v", err)
	}
	if st := n.r.Status(); st.Err == nil || st.Err.Error() != err.Error() {
		t.Fatalf("Status().Err = %v", st.Err)
	}
	for _, p := range []*Proposal{ok1, bad, ok2} {
		if _, perr := mustResult(t, p); !errors.Is(perr, ErrResultUnknown) {
			t.Fatalf("proposal %d in Raft: %v, want ErrResultUnknown", p.key, perr)
		}
	}
	if _, perr := mustResult(t, queued); perr == nil || perr.Error() != err.Error() {
		t.Fatalf("queued proposal: %v, want %v", perr, err)
	}
	if !isDone(rr.Done()) || rr.Err() == nil {
		t.Fatalf("queued read: done=%v err=%v", isDone(rr.Done()), rr.Err())
	}
	if _, perr := n.r.Propose(5, []byte("d=1")); !errors.Is(perr, ErrStopped) {
		t.Fatalf("Propose after failure: %v", perr)
	}
	if _, lerr := n.r.Lookup([]byte("a")); lerr == nil {
		t.Fatal("Lookup on a failed replica succeeded")
	}
	// Nothing was applied: the entry is never skipped.
	if n.r.Applied() != 2 {
		t.Fatalf("applied %d", n.r.Applied())
	}
	// Later work is refused.
	ch := n.r.RequestSnapshot()
	n.r.Persisted(group.Ready{CommittedEntries: []raftpb.Entry{{Index: 3, Term: 2}}})
	n.r.Apply(nil)
	if _, serr := SnapshotResult(<-ch); serr == nil {
		t.Fatal("snapshot of a failed replica")
	}
	if n.r.Applied() != 2 {
		t.Fatalf("applied %d after failure", n.r.Applied())
	}
	if rds, _ := n.r.Step(nil, nil, 0); len(rds) != 0 {
		t.Fatal("a failed replica steps")
	}
	if n.r.TryQuiesce() {
		t.Fatal("a failed replica quiesces")
	}
}

func TestApplySkipsEntriesAtOrBelowApplied(t *testing.T) {
	n := newLeader(t, nodeOpts{})
	n.proposeUpTo(5)
	h, calls := n.r.Status().Hash, len(n.kv.updateCalls())
	// Entries already applied (e.g. covered by a snapshot installed
	// meanwhile) are skipped; applied never goes back.
	old := []raftpb.Entry{{Index: 4, Term: 2, Data: []byte("x=1")}, {Index: 5, Term: 2, Data: []byte("y=1")}}
	n.r.Persisted(group.Ready{CommittedEntries: old})
	n.apply()
	if n.r.Applied() != 5 || n.r.Status().Hash != h || len(n.kv.updateCalls()) != calls || n.r.Err() != nil {
		t.Fatalf("old entries applied again: applied %d, err %v", n.r.Applied(), n.r.Err())
	}
	// Partly old: only the new part applies.
	mixed := []raftpb.Entry{{Index: 5, Term: 2, Data: []byte("y=1")}, {Index: 6, Term: 2, Data: []byte("z=1")}}
	n.r.Persisted(group.Ready{CommittedEntries: mixed})
	n.apply()
	if n.r.Applied() != 6 {
		t.Fatalf("applied %d", n.r.Applied())
	}
	calls2 := n.kv.updateCalls()
	if last := calls2[len(calls2)-1]; !slices.Equal(last, []uint64{6}) {
		t.Fatalf("last Update: %v", last)
	}
	// A snapshot at or below applied is not installed.
	snap := &raftpb.SnapshotMeta{Index: 4, Term: 2, ConfState: raftpb.ConfState{Voters: []raftpb.NodeID{1}}}
	ms := len(n.ev.memberships())
	n.r.Persisted(group.Ready{Snapshot: snap})
	n.apply()
	if n.r.Applied() != 6 || n.r.Err() != nil || len(n.ev.memberships()) != ms {
		t.Fatalf("old snapshot installed: applied %d err %v", n.r.Applied(), n.r.Err())
	}
}

func TestApplyGapStopsReplica(t *testing.T) {
	n := newLeader(t, nodeOpts{})
	n.r.Persisted(group.Ready{CommittedEntries: []raftpb.Entry{{Index: 9, Term: 2, Data: []byte("a=1")}}})
	n.apply()
	if err := n.r.Err(); err == nil || !strings.Contains(err.Error(), "entry 9 after 2") {
		t.Fatalf("Err = %v", err)
	}
}

func TestPersistedReportsApplyWork(t *testing.T) {
	n := newNode(t, 1, nodeOpts{})
	if n.r.Persisted(group.Ready{HardState: raftpb.HardState{Term: 1, Commit: 1}}) {
		t.Fatal("Persisted reports work for a Ready without anything to apply")
	}
	if n.r.HasWork() {
		t.Fatal("HasWork")
	}
	if !n.r.Persisted(group.Ready{ConfState: &raftpb.ConfState{Voters: []raftpb.NodeID{1}}, ConfIndex: 1}) {
		t.Fatal("Persisted: membership is work")
	}
	if !n.r.HasWork() {
		t.Fatal("HasWork false")
	}
	n.r.Apply(nil) // nil Events is allowed
	if n.r.HasWork() {
		t.Fatal("HasWork after Apply")
	}
}
