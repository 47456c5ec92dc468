package kv

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/goleak"

	"github.com/shardd/shardd/shard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// quietPebble drops Pebble's log lines; Fatalf still fails loudly.
type quietPebble struct{}

func (quietPebble) Infof(string, ...any)         {}
func (quietPebble) Errorf(string, ...any)        {}
func (quietPebble) Fatalf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }

// openDB opens a Pebble DB in dir of fs, closed at the end of the test
// unless the test closed it.
func openDB(t testing.TB, fs vfs.FS, dir string) *pebble.DB {
	t.Helper()
	return openDBWith(t, dir, &pebble.Options{FS: fs})
}

func openDBWith(t testing.TB, dir string, opts *pebble.Options) *pebble.DB {
	t.Helper()
	opts.Logger = quietPebble{}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		defer func() { _ = recover() }() // already closed by the test
		_ = db.Close()
	})
	return db
}

// newTestSM opens a store on db and returns shard's state machine.
func newTestSM(t testing.TB, db *pebble.DB, shardID uint64) *stateMachine {
	t.Helper()
	st := NewStore()
	if err := st.OnStoreOpen(db); err != nil {
		t.Fatal(err)
	}
	return st.NewStateMachine(shardID, 1).(*stateMachine)
}

// entries turns commands into entries numbered from first.
func entries(first uint64, cmds ...[]byte) []shard.Entry {
	ents := make([]shard.Entry, len(cmds))
	for i, c := range cmds {
		ents[i] = shard.Entry{Index: first + uint64(i), Cmd: c}
	}
	return ents
}

// get reads key through Lookup: its value and whether it exists.
func get(t testing.TB, sm *stateMachine, key string) (string, bool) {
	t.Helper()
	out, err := sm.Lookup(EncodeGet([]byte(key)))
	if err != nil {
		t.Fatalf("lookup %q: %v", key, err)
	}
	v, found, err := DecodeLookup(out)
	if err != nil {
		t.Fatal(err)
	}
	return string(v), found
}

// dump returns every pair of a shard's data range.
func dump(t testing.TB, db *pebble.DB, shardID uint64) map[string]string {
	t.Helper()
	k := newShardKeys(shardID)
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: k.dataStart, UpperBound: k.dataEnd})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for ok := it.First(); ok; ok = it.Next() {
		out[string(userKey(it.Key()))] = string(it.Value())
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

func sameMaps(a, b map[string]string) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d keys vs %d", len(a), len(b))
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return fmt.Errorf("key %q: %q vs %q (present %v)", k, v, w, ok)
		}
	}
	return nil
}

func mustIs(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
}
