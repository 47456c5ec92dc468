package kv

import (
	"bytes"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// crashOpen opens the DB a crash of fs at this moment leaves behind (only
// synced data survives) and returns shard's state machine on it.
func crashOpen(t *testing.T, fs *vfs.MemFS, shardID uint64) (*stateMachine, *pebble.DB) {
	t.Helper()
	clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	db := openDB(t, clone, "db")
	return newTestSM(t, db, shardID), db
}

// Update commits without fsync (the Raft log is the durable record); Sync
// makes everything applied so far durable, data and applied index
// together.
func TestSyncMakesUpdatesDurable(t *testing.T) {
	fs := vfs.NewCrashableMem()
	db := openDB(t, fs, "db")
	sm := newTestSM(t, db, 1)
	if _, err := sm.Open(); err != nil {
		t.Fatal(err)
	}
	var cmds [][]byte
	for _, k := range []string{"a", "b", "c"} {
		cmds = append(cmds, EncodePut([]byte(k), []byte("v-"+k)))
	}
	if err := sm.Update(entries(1, cmds...)); err != nil {
		t.Fatal(err)
	}
	if err := sm.Update(entries(4, EncodeCAS([]byte("a"), []byte("v-a"), true, []byte("v2")))); err != nil {
		t.Fatal(err)
	}

	// Without Sync nothing was fsynced: a crash now loses the updates
	// (the engine replays them from the log, after Open's 0).
	crashed, cdb := crashOpen(t, fs, 1)
	if last, err := crashed.Open(); err != nil || last != 0 {
		t.Fatalf("Open after a crash without Sync: %d %v", last, err)
	}
	if d := dump(t, cdb, 1); len(d) != 0 {
		t.Fatalf("unsynced data survived: %v", d)
	}

	if err := sm.Sync(); err != nil {
		t.Fatal(err)
	}
	// Applied after the Sync: not durable yet.
	if err := sm.Update(entries(5, EncodePut([]byte("late"), nil))); err != nil {
		t.Fatal(err)
	}
	crashed, cdb = crashOpen(t, fs, 1)
	if last, err := crashed.Open(); err != nil || last != 4 {
		t.Fatalf("Open after a crash after Sync: %d %v", last, err)
	}
	want := map[string]string{"a": "v2", "b": "v-b", "c": "v-c"}
	if err := sameMaps(want, dump(t, cdb, 1)); err != nil {
		t.Fatal(err)
	}
	// Replaying the log from lastApplied+1 brings the rest back.
	if err := crashed.Update(entries(5, EncodePut([]byte("late"), nil))); err != nil {
		t.Fatal(err)
	}
	if _, found := get(t, crashed, "late"); !found {
		t.Fatal("replayed entry missing")
	}
}

// A recovery is durable when RecoverFromSnapshot returns.
func TestRecoveryDurable(t *testing.T) {
	snap, want := snapshotOf(t, 50)
	fs := vfs.NewCrashableMem()
	sm := newTestSM(t, openDB(t, fs, "db"), 2)
	sm.batchBytes = 512 // several batches
	if err := sm.RecoverFromSnapshot(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	crashed, cdb := crashOpen(t, fs, 2)
	if last, err := crashed.Open(); err != nil || last == 0 {
		t.Fatalf("Open: %d %v", last, err)
	}
	if err := sameMaps(want, dump(t, cdb, 2)); err != nil {
		t.Fatal(err)
	}
}
