package kv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"

	"github.com/shardd/shardd/shard"
)

// State machine errors.
var (
	// ErrNoStore: a state machine was created before Store.OnStoreOpen
	// handed the store its DB; every method of it returns this error.
	ErrNoStore = errors.New("kv: store not open (OnStoreOpen not called)")
	// ErrClosed: the state machine was closed.
	ErrClosed = errors.New("kv: state machine closed")
	// ErrCorrupt: a record of the kv keyspace does not decode (wrong
	// length, unknown layout version).
	ErrCorrupt = errors.New("kv: corrupt store")
	// ErrBadSnapshot: a snapshot stream is malformed, truncated, or fails
	// its checksum.
	ErrBadSnapshot = errors.New("kv: bad snapshot")
	// ErrRecoveryIncomplete: a RecoverFromSnapshot failed after it had
	// started replacing the shard's data. The state machine refuses
	// Update, Lookup and SaveSnapshot until a recovery succeeds or Open
	// (at the next start) clears the half-written data and reports
	// applied index 0.
	ErrRecoveryIncomplete = errors.New("kv: snapshot recovery incomplete")
)

// Store hands the node's Pebble DB to the state machines of its shards.
// Use one Store per node. Its methods are safe for concurrent use.
type Store struct {
	mu sync.Mutex
	db *pebble.DB
}

// NewStore returns a Store that waits for OnStoreOpen.
func NewStore() *Store { return &Store{} }

// OnStoreOpen takes the node's DB; pass it as engine.Config.OnStoreOpen.
// It checks (or, on a new store, writes) the layout version of the kv
// keyspace. State machines created afterwards use db. Calling it again (a
// node reopened in the same process) switches to the new DB.
func (s *Store) OnStoreOpen(db *pebble.DB) error {
	if db == nil {
		return errors.New("kv: OnStoreOpen with a nil DB")
	}
	v, closer, err := db.Get(layoutKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		if err := db.Set(layoutKey, []byte{layoutVersion}, pebble.Sync); err != nil {
			return fmt.Errorf("kv: writing the layout version: %w", err)
		}
	case err != nil:
		return fmt.Errorf("kv: reading the layout version: %w", err)
	default:
		ok := len(v) == 1 && v[0] == layoutVersion
		got := fmt.Sprintf("%x", v)
		closer.Close()
		if !ok {
			return fmt.Errorf("%w: kv layout version %s, this build reads %d", ErrCorrupt, got, layoutVersion)
		}
	}
	s.mu.Lock()
	s.db = db
	s.mu.Unlock()
	return nil
}

// NewStateMachine returns the state machine of shardID on this node, an
// shard.OnDiskStateMachine; pass it as engine.Config.NewStateMachine (or
// ShardConfig.NewStateMachine).
func (s *Store) NewStateMachine(shardID, nodeID uint64) shard.StateMachine {
	s.mu.Lock()
	db := s.db
	s.mu.Unlock()
	return newStateMachine(db, shardID)
}

// recoverBatchBytes bounds the Pebble batches RecoverFromSnapshot writes.
const recoverBatchBytes = 1 << 20

// stateMachine is one shard's kv state machine.
//
// Concurrency (shard.StateMachine): Update, RecoverFromSnapshot and Open
// are never concurrent with anything else of this state machine; Lookup
// and SaveSnapshot may run concurrently with each other and with Lookup.
// Fields marked "exclusive" are touched only by the exclusive methods;
// Lookup reads only immutable fields and atomics, so it stays safe even if
// a caller breaks that contract (it reads the DB, which is concurrent-safe).
type stateMachine struct {
	db    *pebble.DB // nil: created before OnStoreOpen
	shard uint64
	keys  *shardKeys

	applied     uint64 // exclusive: the last applied index
	keyBuf      []byte // exclusive: Update's data key buffer
	batchBytes  int    // RecoverFromSnapshot's batch bound (tests lower it)
	closed      atomic.Bool
	recoverFail atomic.Pointer[error] // set while a failed recovery left half-written data
}

var _ shard.OnDiskStateMachine = (*stateMachine)(nil)

func newStateMachine(db *pebble.DB, shardID uint64) *stateMachine {
	return &stateMachine{db: db, shard: shardID, keys: newShardKeys(shardID), batchBytes: recoverBatchBytes}
}

// usable returns why the state machine cannot serve, or nil.
func (m *stateMachine) usable() error {
	if err := m.openable(); err != nil {
		return err
	}
	if p := m.recoverFail.Load(); p != nil {
		return *p
	}
	return nil
}

func (m *stateMachine) openable() error {
	switch {
	case m.closed.Load():
		return ErrClosed
	case m.db == nil:
		return ErrNoStore
	}
	return nil
}

// Open implements shard.OnDiskStateMachine: it returns the last applied
// index recorded in the store (0 for a new shard). If a snapshot recovery
// was cut short (by a crash or an error), it first deletes the shard's
// half-written data, durably, and returns 0: the engine then restores the
// latest snapshot (or replays the whole log) as for a new replica.
func (m *stateMachine) Open() (uint64, error) {
	if err := m.openable(); err != nil {
		return 0, err
	}
	_, closer, err := m.db.Get(m.keys.recovery)
	switch {
	case err == nil:
		closer.Close()
		b := m.db.NewBatch()
		defer b.Close()
		_ = b.DeleteRange(m.keys.dataStart, m.keys.dataEnd, nil)
		_ = b.Delete(m.keys.applied, nil)
		_ = b.Delete(m.keys.recovery, nil)
		if err := b.Commit(pebble.Sync); err != nil {
			return 0, fmt.Errorf("kv: shard %d: clearing an incomplete recovery: %w", m.shard, err)
		}
		m.applied = 0
		m.recoverFail.Store(nil)
		return 0, nil
	case !errors.Is(err, pebble.ErrNotFound):
		return 0, fmt.Errorf("kv: shard %d: %w", m.shard, err)
	}
	applied, err := readApplied(m.db, m.keys, m.shard)
	if err != nil {
		return 0, err
	}
	m.applied = applied
	return applied, nil
}

// getter is what reads a point: the DB, a snapshot, an indexed batch.
type getter interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

func readApplied(r getter, keys *shardKeys, shardID uint64) (uint64, error) {
	v, closer, err := r.Get(keys.applied)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("kv: shard %d: reading the applied index: %w", shardID, err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: shard %d: applied index record of %d bytes", ErrCorrupt, shardID, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// Update implements shard.StateMachine. It applies entries in one batch,
// together with the new applied index (so a crash keeps both or neither),
// and commits it without waiting for an fsync (see Sync). A command that
// does not decode or breaks the limits is applied as a no-op with
// CodeInvalid, identically on every replica: it does not stop the shard.
// An error (from Pebble, or entries that do not follow the applied index)
// leaves the store unchanged.
func (m *stateMachine) Update(ents []shard.Entry) error {
	if err := m.usable(); err != nil {
		return err
	}
	if len(ents) == 0 {
		return nil
	}
	hasCAS := false
	prev := m.applied
	for i := range ents {
		if ents[i].Index <= prev {
			return fmt.Errorf("kv: shard %d: entry %d applied after %d", m.shard, ents[i].Index, prev)
		}
		prev = ents[i].Index
		if c := ents[i].Cmd; len(c) > 1 && Op(c[1]) == OpCAS {
			hasCAS = true
		}
	}
	// A CAS reads; an indexed batch lets it see the writes of the entries
	// before it in the same batch.
	var b *pebble.Batch
	if hasCAS {
		b = m.db.NewIndexedBatch()
	} else {
		b = m.db.NewBatch()
	}
	defer b.Close()
	for i := range ents {
		if err := m.apply(b, &ents[i]); err != nil {
			return fmt.Errorf("kv: shard %d: entry %d: %w", m.shard, ents[i].Index, err)
		}
	}
	var idx [8]byte
	binary.BigEndian.PutUint64(idx[:], prev)
	if err := b.Set(m.keys.applied, idx[:], nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("kv: shard %d: committing entries %d..%d: %w", m.shard, ents[0].Index, prev, err)
	}
	m.applied = prev
	return nil
}

// apply adds one command to b and sets its result.
func (m *stateMachine) apply(b *pebble.Batch, e *shard.Entry) error {
	c, err := DecodeCommand(e.Cmd)
	if err != nil {
		e.Result.Value, e.Result.Data = CodeInvalid, []byte(err.Error())
		return nil
	}
	m.keyBuf = m.keys.appendDataKey(m.keyBuf[:0], c.Key)
	e.Result.Value, e.Result.Data = CodeApplied, nil
	switch c.Op {
	case OpPut:
		return b.Set(m.keyBuf, c.Value, nil)
	case OpDelete:
		return b.Delete(m.keyBuf, nil)
	}
	// OpCAS: b is indexed.
	cur, closer, err := b.Get(m.keyBuf)
	found := err == nil
	if err != nil && !errors.Is(err, pebble.ErrNotFound) {
		return err
	}
	holds := casHolds(&c, cur, found)
	if !holds {
		e.Result.Value, e.Result.Data = CodeCASFailed, encodeLookup(cur, found)
	}
	if found {
		closer.Close()
	}
	if holds {
		return b.Set(m.keyBuf, c.Value, nil)
	}
	return nil
}

// Lookup implements shard.StateMachine: it answers a Get query (EncodeGet)
// with the latest value, encoded for DecodeLookup.
func (m *stateMachine) Lookup(query []byte) (_ []byte, err error) {
	if err := m.usable(); err != nil {
		return nil, err
	}
	key, err := DecodeQuery(query)
	if err != nil {
		return nil, err
	}
	defer recoverClosedDB(&err)
	v, closer, err := m.db.Get(m.keys.appendDataKey(nil, key))
	if errors.Is(err, pebble.ErrNotFound) {
		return encodeLookup(nil, false), nil
	}
	if err != nil {
		return nil, fmt.Errorf("kv: shard %d: get: %w", m.shard, err)
	}
	out := encodeLookup(v, true)
	return out, closer.Close()
}

// recoverClosedDB turns Pebble's panic on a closed DB into an error: a
// stale read racing with the node's shutdown may reach a DB that is
// already closed. Any other panic goes on.
func recoverClosedDB(err *error) {
	r := recover()
	if r == nil {
		return
	}
	if e, ok := r.(error); ok && errors.Is(e, pebble.ErrClosed) {
		*err = fmt.Errorf("%w: %w", ErrClosed, e)
		return
	}
	panic(r)
}

// Sync implements shard.OnDiskStateMachine: it makes every batch committed
// so far durable. Update commits with NoSync, which puts the batch in the
// WAL without waiting for an fsync; the WAL is one sequential log, and a
// synced write returns only once the log is synced up to and including
// it, so one synced write after them covers them all. The write is a
// LogData record: WAL-only, it adds nothing to the memtable. (An empty
// synced batch would not do: Pebble skips empty batches without syncing;
// a Flush would be correct but writes sstables.)
func (m *stateMachine) Sync() error {
	if err := m.openable(); err != nil {
		return err
	}
	if err := m.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("kv: shard %d: sync: %w", m.shard, err)
	}
	return nil
}

// Close implements shard.StateMachine. The DB belongs to the node, so
// there is nothing to release; later calls return ErrClosed.
func (m *stateMachine) Close() error {
	m.closed.Store(true)
	return nil
}
