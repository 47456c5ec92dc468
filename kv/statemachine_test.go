package kv

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/shardd/shardd/batchio"
	"github.com/shardd/shardd/shard"
)

// Put, Delete and CAS in one Update: each entry sees the ones before it,
// and each gets its own result.
func TestUpdateSemantics(t *testing.T) {
	db := openDB(t, vfs.NewMem(), "db")
	sm := newTestSM(t, db, 1)
	if last, err := sm.Open(); err != nil || last != 0 {
		t.Fatalf("Open on an empty DB: %d %v", last, err)
	}
	k := []byte("k")
	ents := entries(1,
		EncodePut(k, []byte("v1")),                                               // 1 applied
		EncodeCAS(k, []byte("v1"), true, []byte("v2")),                           // 2 applied: sees entry 1 in the same batch
		EncodeCAS(k, []byte("v1"), true, []byte("v3")),                           // 3 fails: holds v2
		EncodeCAS(k, nil, false, []byte("v4")),                                   // 4 fails: exists
		EncodeDelete(k),                                                          // 5 applied
		EncodeCAS(k, []byte("v2"), true, []byte("v5")),                           // 6 fails: absent
		EncodeCAS(k, nil, false, []byte("")),                                     // 7 applied: absent -> empty value
		EncodeCAS(k, []byte{}, true, []byte("v8")),                               // 8 applied: empty matches empty
		[]byte("garbage"),                                                        // 9 invalid, not fatal
		EncodePut([]byte("other"), []byte("o")),                                  // 10 applied
		EncodeDelete([]byte("never-written")),                                    // 11 applied
		append(EncodeDelete(nil), []byte(strings.Repeat("x", MaxKeyBytes+1))...), // 12 invalid: key too large
	)
	if err := sm.Update(ents); err != nil {
		t.Fatal(err)
	}
	type want struct {
		code    uint64
		cur     string
		found   bool
		errPart string
	}
	wants := []want{
		{code: CodeApplied}, {code: CodeApplied},
		{code: CodeCASFailed, cur: "v2", found: true},
		{code: CodeCASFailed, cur: "v2", found: true},
		{code: CodeApplied},
		{code: CodeCASFailed, found: false},
		{code: CodeApplied}, {code: CodeApplied},
		{code: CodeInvalid, errPart: "invalid command"},
		{code: CodeApplied}, {code: CodeApplied},
		{code: CodeInvalid, errPart: "MaxKeyBytes"},
	}
	for i, w := range wants {
		res := ents[i].Result
		if res.Value != w.code {
			t.Fatalf("entry %d: code %d, want %d (%q)", i+1, res.Value, w.code, res.Data)
		}
		switch w.code {
		case CodeCASFailed:
			cur, found, err := CASCurrent(res)
			if err != nil || found != w.found || string(cur) != w.cur {
				t.Fatalf("entry %d: current %q %v %v, want %q %v", i+1, cur, found, err, w.cur, w.found)
			}
		case CodeInvalid:
			if !strings.Contains(string(res.Data), w.errPart) {
				t.Fatalf("entry %d: data %q", i+1, res.Data)
			}
		case CodeApplied:
			if res.Data != nil {
				t.Fatalf("entry %d: data %q", i+1, res.Data)
			}
		}
	}
	if v, found := get(t, sm, "k"); !found || v != "v8" {
		t.Fatalf("k = %q %v", v, found)
	}
	if v, found := get(t, sm, "other"); !found || v != "o" {
		t.Fatalf("other = %q %v", v, found)
	}
	if _, found := get(t, sm, "never-written"); found {
		t.Fatal("never-written found")
	}
	// An empty value is found, and differs from an absent key.
	if err := sm.Update(entries(13, EncodePut([]byte("empty"), nil))); err != nil {
		t.Fatal(err)
	}
	out, err := sm.Lookup(EncodeGet([]byte("empty")))
	if err != nil || !bytes.Equal(out, []byte{lookupFound}) {
		t.Fatalf("empty value answer %q %v", out, err)
	}
	out, err = sm.Lookup(EncodeGet([]byte("absent")))
	if err != nil || !bytes.Equal(out, []byte{lookupNotFound}) {
		t.Fatalf("absent answer %q %v", out, err)
	}
	if _, err := sm.Lookup([]byte("junk")); !errors.Is(err, ErrInvalidQuery) {
		t.Fatalf("bad query: %v", err)
	}
	// The applied index is the last entry's, and survives a new state
	// machine over the same DB (what a restart sees).
	sm2 := newTestSM(t, db, 1)
	if last, err := sm2.Open(); err != nil || last != 13 {
		t.Fatalf("Open after Update: %d %v", last, err)
	}
	if v, found := get(t, sm2, "k"); !found || v != "v8" {
		t.Fatalf("k after reopen = %q %v", v, found)
	}
}

// The applied index is written in the same batch as the data: every
// state the DB can be in has both or neither. Checked by a reader that
// watches the DB while Updates go on.
func TestAppliedIndexAtomicWithData(t *testing.T) {
	db := openDB(t, vfs.NewMem(), "db")
	sm := newTestSM(t, db, 3)
	if _, err := sm.Open(); err != nil {
		t.Fatal(err)
	}
	const rounds = 200
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			snap := db.NewSnapshot()
			applied, err := readApplied(snap, sm.keys, 3)
			if err == nil && applied > 0 {
				// Entry i puts "c" = i: the value must match the index.
				v, closer, gerr := snap.Get(sm.keys.appendDataKey(nil, []byte("c")))
				if gerr != nil {
					err = gerr
				} else {
					if string(v) != strconv.FormatUint(applied, 10) {
						err = fmt.Errorf("value %q at applied %d", v, applied)
					}
					closer.Close()
				}
			}
			snap.Close()
			if err != nil {
				bad = err
				return
			}
		}
	}()
	for i := uint64(1); i <= rounds; i++ {
		if err := sm.Update(entries(i, EncodePut([]byte("c"), []byte(strconv.FormatUint(i, 10))))); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if bad != nil {
		t.Fatal(bad)
	}
	if last, err := newTestSM(t, db, 3).Open(); err != nil || last != rounds {
		t.Fatalf("Open: %d %v", last, err)
	}
}

// Two shards in one DB share no keys; the layout never collides with
// batchio's kinds, nor reaches outside 'm'.
func TestShardsIsolated(t *testing.T) {
	db := openDB(t, vfs.NewMem(), "db")
	a, b := newTestSM(t, db, 1), newTestSM(t, db, 2)
	maxShard := newTestSM(t, db, ^uint64(0))
	for i, sm := range []*stateMachine{a, b, maxShard} {
		if err := sm.Update(entries(1,
			EncodePut([]byte("same"), []byte{byte('a' + i)}),
			EncodePut([]byte{byte('x' + i)}, []byte("own")))); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Update(entries(3, EncodeDelete([]byte("same")))); err != nil {
		t.Fatal(err)
	}
	if _, found := get(t, a, "same"); found {
		t.Fatal("delete on shard 1 missed")
	}
	if v, _ := get(t, b, "same"); v != "b" {
		t.Fatalf("shard 2 sees %q", v)
	}
	if v, _ := get(t, maxShard, "same"); v != "c" {
		t.Fatalf("max shard sees %q", v)
	}
	if _, found := get(t, b, "x"); found {
		t.Fatal("shard 2 sees shard 1's key")
	}
	if d := dump(t, db, 2); len(d) != 2 || d["y"] != "own" {
		t.Fatalf("shard 2 range %v", d)
	}
	if last, _ := newTestSM(t, db, 1).Open(); last != 3 {
		t.Fatalf("shard 1 applied %d", last)
	}
	if last, _ := newTestSM(t, db, 2).Open(); last != 2 {
		t.Fatalf("shard 2 applied %d", last)
	}
	it, err := db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if it.Key()[0] != batchio.StateMachinePrefix {
			t.Fatalf("key %q outside the state machine prefix", it.Key())
		}
	}
}

func TestUpdateRefusesOutOfOrderEntries(t *testing.T) {
	db := openDB(t, vfs.NewMem(), "db")
	sm := newTestSM(t, db, 1)
	if err := sm.Update(entries(5, EncodePut([]byte("a"), nil))); err != nil {
		t.Fatal(err)
	}
	if err := sm.Update(entries(5, EncodePut([]byte("b"), nil))); err == nil {
		t.Fatal("re-applying index 5")
	}
	ents := entries(6, EncodePut([]byte("b"), nil), EncodePut([]byte("c"), nil))
	ents[1].Index = 6
	if err := sm.Update(ents); err == nil {
		t.Fatal("a repeated index in one call")
	}
	if _, found := get(t, sm, "b"); found {
		t.Fatal("a refused Update wrote")
	}
	if err := sm.Update(nil); err != nil {
		t.Fatal(err)
	}
}

func TestLifecycleErrors(t *testing.T) {
	// Before OnStoreOpen.
	st := NewStore()
	sm := st.NewStateMachine(1, 1).(*stateMachine)
	if _, err := sm.Open(); !errors.Is(err, ErrNoStore) {
		t.Fatalf("Open without a store: %v", err)
	}
	mustIs(t, sm.Update(entries(1, EncodeDelete([]byte("a")))), ErrNoStore)
	mustIs(t, sm.Sync(), ErrNoStore)
	if err := st.OnStoreOpen(nil); err == nil {
		t.Fatal("OnStoreOpen(nil)")
	}

	db := openDB(t, vfs.NewMem(), "db")
	sm = newTestSM(t, db, 1)
	if err := sm.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := sm.Lookup(EncodeGet([]byte("a")))
	mustIs(t, err, ErrClosed)
	mustIs(t, sm.SaveSnapshot(&bytes.Buffer{}), ErrClosed)
	mustIs(t, sm.RecoverFromSnapshot(&bytes.Buffer{}), ErrClosed)
	_, err = sm.Open()
	mustIs(t, err, ErrClosed)
	// Close releases nothing shared: the DB stays usable.
	if err := db.Set([]byte("x"), nil, pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

func TestLayoutVersion(t *testing.T) {
	db := openDB(t, vfs.NewMem(), "db")
	st := NewStore()
	for i := 0; i < 2; i++ { // a new store, then an existing one
		if err := st.OnStoreOpen(db); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Set(layoutKey, []byte{9}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := NewStore().OnStoreOpen(db); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("unknown layout: %v", err)
	}
}

func TestCorruptAppliedIndex(t *testing.T) {
	db := openDB(t, vfs.NewMem(), "db")
	sm := newTestSM(t, db, 1)
	if err := db.Set(sm.keys.applied, []byte{1, 2, 3}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if _, err := sm.Open(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "shard 1") {
		t.Fatalf("Open: %v", err)
	}
	mustIs(t, sm.SaveSnapshot(&bytes.Buffer{}), ErrCorrupt)
}

// A stale read racing with the node's shutdown gets an error, not a
// panic, when the DB is already closed.
func TestLookupOnClosedDB(t *testing.T) {
	db := openDB(t, vfs.NewMem(), "db")
	sm := newTestSM(t, db, 1)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := sm.Lookup(EncodeGet([]byte("a")))
	mustIs(t, err, ErrClosed)
	mustIs(t, err, pebble.ErrClosed)
}

func TestRecoverClosedDBRepanicsOthers(t *testing.T) {
	defer func() {
		if r := recover(); r != "boom" {
			t.Fatalf("recovered %v", r)
		}
	}()
	var err error
	func() {
		defer recoverClosedDB(&err)
		panic("boom")
	}()
}

// Lookups run concurrently with each other and with SaveSnapshot.
func TestConcurrentLookups(t *testing.T) {
	db := openDB(t, vfs.NewMem(), "db")
	sm := newTestSM(t, db, 1)
	var cmds [][]byte
	for i := 0; i < 100; i++ {
		cmds = append(cmds, EncodePut([]byte{byte(i)}, []byte{byte(i)}))
	}
	if err := sm.Update(entries(1, cmds...)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 9)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				out, err := sm.Lookup(EncodeGet([]byte{byte(i)}))
				if err != nil || !bytes.Equal(out, []byte{lookupFound, byte(i)}) {
					errs <- errors.New("bad lookup")
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := sm.SaveSnapshot(&bytes.Buffer{}); err != nil {
			errs <- err
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

var _ shard.OnDiskStateMachine = (*stateMachine)(nil)
