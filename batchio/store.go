// Package batchio is a node's one Pebble store: the log entries, hard
// state, snapshot records and replica records of every shard the node
// hosts, written by one pipeline that turns everything pending into one
// Pebble batch and one fsync (pipeline.go), and read back per shard through
// ShardLog, which satisfies the Raft core's LogReader.
//
// It imports only raftpb of shardd: the engine converts the core's Ready
// into Updates and wires the two.
package batchio

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/shardd/shardd/raftpb"
)

// Options configures a Store. Zero fields take the documented defaults
// (EnsureDefaults); Validate reports every invalid field.
type Options struct {
	// Dir is the directory of the Pebble store. Required.
	Dir string
	// FS is the file system. The default value is vfs.Default (the disk);
	// tests pass an in-memory, crash-simulating or error-injecting one.
	FS vfs.FS
	// Logger receives the store's and Pebble's log lines. The default value
	// is slog.Default().
	Logger *slog.Logger
	// CacheBytes bounds the entry cache shared by all shards. The default
	// value is 64 MiB; negative disables the cache.
	CacheBytes int64
	// BlockCacheBytes is the size of Pebble's block cache. The default value
	// is 32 MiB.
	BlockCacheBytes int64
	// MemTableBytes is Pebble's memtable size. The default value is 64 MiB.
	MemTableBytes uint64
	// MaxFlushBytes bounds what one flush gathers (a single larger request
	// still goes alone). The default value is 16 MiB.
	MaxFlushBytes int
}

// EnsureDefaults fills zero fields; it is the one place defaults live.
func (o *Options) EnsureDefaults() {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = 64 << 20
	}
	if o.BlockCacheBytes == 0 {
		o.BlockCacheBytes = 32 << 20
	}
	if o.MemTableBytes == 0 {
		o.MemTableBytes = 64 << 20
	}
	if o.MaxFlushBytes == 0 {
		o.MaxFlushBytes = 16 << 20
	}
}

// Validate reports every invalid field, each named.
func (o *Options) Validate() error {
	var errs []error
	if o.Dir == "" {
		errs = append(errs, errors.New("batchio: Options.Dir is required"))
	}
	if o.MaxFlushBytes < 0 {
		errs = append(errs, fmt.Errorf("batchio: Options.MaxFlushBytes must be positive, got %d", o.MaxFlushBytes))
	}
	if o.BlockCacheBytes < 0 {
		errs = append(errs, fmt.Errorf("batchio: Options.BlockCacheBytes must be positive, got %d", o.BlockCacheBytes))
	}
	return errors.Join(errs...)
}

// Store is a node's Pebble store of every replica's log.
type Store struct {
	opts Options
	db   *pebble.DB
	lg   *slog.Logger

	// mu guards the shards map (not the shards' contents).
	mu     sync.RWMutex
	shards map[raftpb.ShardID]*shardState

	pipe *pipeline
	// Writer-goroutine state.
	batch   *pebble.Batch
	cache   entryCache
	byID    map[raftpb.ShardID]*pendingShard // the shards the flush touches
	views   []*pendingShard                  // pooled views
	scratch []scratchView                    // validation's running copies

	stats     counters
	closeOnce sync.Once
	closeErr  error
}

// shardState is the in-memory view of one replica's durable state.
//
// Invariant: the log holds exactly [first, last]; first-1 is rec.TruncIndex
// (term rec.TruncTerm). Readers hold mu for reading; the writer goroutine
// changes it holding mu.
type shardState struct {
	id raftpb.ShardID
	mu sync.RWMutex

	first, last raftpb.Index
	hs          raftpb.HardState
	rec         ReplicaRecord
	snap        *SnapshotRecord
	removed     bool

	cache      []raftpb.Entry
	cacheBytes int64
}

// counters are the store's statistics, updated by the writer.
type counters struct {
	flushes    atomic.Uint64
	requests   atomic.Uint64
	entries    atomic.Uint64
	bytes      atomic.Uint64
	cacheBytes atomic.Int64
}

// Stats are cumulative counts of the store's writes.
type Stats struct {
	// Flushes is the number of Pebble batches committed with an fsync.
	Flushes uint64
	// Requests and Entries count what those flushes carried.
	Requests uint64
	Entries  uint64
	// Bytes is the size of the committed batches.
	Bytes uint64
	// CacheBytes is the entry cache's current size.
	CacheBytes int64
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	return Stats{
		Flushes:    s.stats.flushes.Load(),
		Requests:   s.stats.requests.Load(),
		Entries:    s.stats.entries.Load(),
		Bytes:      s.stats.bytes.Load(),
		CacheBytes: s.stats.cacheBytes.Load(),
	}
}

// pebbleLogger routes Pebble's log lines to slog. Fatalf is how Pebble
// reports a failed WAL write or sync ("fatal commit error"): its default
// exits the process. Here it panics with a fatalError, which the writer
// recovers as a failed flush (the store then refuses all writes); raised on
// any other goroutine it crashes the node, which is the right outcome for a
// storage failure (TESTING.md: never retry an fsync).
type pebbleLogger struct{ lg *slog.Logger }

type fatalError struct{ msg string }

func (e fatalError) Error() string { return e.msg }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.lg.Info(fmt.Sprintf(format, args...), "component", "pebble")
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.lg.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.lg.Error(msg, "component", "pebble", "fatal", true)
	panic(fatalError{msg: msg})
}

// Open opens (or creates) the store in opts.Dir and loads every replica
// found there.
func Open(opts Options) (*Store, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	cache := pebble.NewCache(opts.BlockCacheBytes)
	defer cache.Unref()
	popts := &pebble.Options{
		FS:           opts.FS,
		Cache:        cache,
		MemTableSize: opts.MemTableBytes,
		Logger:       pebbleLogger{lg: opts.Logger},
		// Compactions should not starve the writer on a small machine.
		L0CompactionThreshold: 4,
	}
	popts.EnsureDefaults()
	db, err := openPebble(opts.Dir, popts)
	if err != nil {
		if pebble.IsCorruptionError(err) {
			return nil, fmt.Errorf("%w: pebble at %s: %w", ErrCorrupt, opts.Dir, err)
		}
		return nil, fmt.Errorf("batchio: open %s: %w", opts.Dir, err)
	}
	s := &Store{
		opts:   opts,
		db:     db,
		lg:     opts.Logger,
		shards: map[raftpb.ShardID]*shardState{},
		batch:  db.NewBatch(),
		cache:  entryCache{maxBytes: opts.CacheBytes},
		byID:   map[raftpb.ShardID]*pendingShard{},
	}
	if err := s.load(); err != nil {
		_ = db.Close()
		return nil, err
	}
	s.pipe = newPipeline(s.commit, opts.MaxFlushBytes)
	return s, nil
}

// openPebble opens the DB, turning a Fatalf during open into an error.
func openPebble(dir string, o *pebble.Options) (db *pebble.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			fe, ok := r.(fatalError)
			if !ok {
				panic(r)
			}
			err = fe
		}
	}()
	return pebble.Open(dir, o)
}

// Close flushes what is queued and closes the store. It is safe to call
// twice.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.pipe.close()
		s.batch.Close()
		s.closeErr = s.closeDB()
	})
	return s.closeErr
}

func (s *Store) closeDB() (err error) {
	defer func() {
		if r := recover(); r != nil {
			// Closing after a failed commit can trip Pebble's own checks;
			// the store is dead either way.
			err = fmt.Errorf("batchio: close after failure: %v", r)
		}
	}()
	return s.db.Close()
}

// Submit queues r for the next flush. It does not block on I/O; r.Done is
// called once r is durable or has failed. It returns an error (and never
// calls Done) if the store is closed or has failed.
func (s *Store) Submit(r *Request) error { return s.pipe.submit(r) }

// Write submits r and waits for it.
func (s *Store) Write(r *Request) error {
	done := make(chan error, 1)
	inner := r.Done
	r.Done = func(err error) {
		if inner != nil {
			inner(err)
		}
		done <- err
	}
	if err := s.Submit(r); err != nil {
		return err
	}
	return <-done
}

// ReplicaInfo describes a replica found on disk.
type ReplicaInfo struct {
	Shard     raftpb.ShardID
	Record    ReplicaRecord
	HardState raftpb.HardState
	// FirstIndex and LastIndex bound the log; Snapshot is the latest
	// snapshot record, if any.
	FirstIndex, LastIndex raftpb.Index
	Snapshot              *SnapshotRecord
}

// Replicas lists every replica in the store, by shard id.
func (s *Store) Replicas() []ReplicaInfo {
	s.mu.RLock()
	out := make([]ReplicaInfo, 0, len(s.shards))
	for _, st := range s.shards {
		st.mu.RLock()
		ri := ReplicaInfo{Shard: st.id, Record: st.rec, HardState: st.hs, FirstIndex: st.first,
			LastIndex: st.last, Snapshot: st.snap}
		st.mu.RUnlock()
		out = append(out, ri)
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b ReplicaInfo) int {
		switch {
		case a.Shard < b.Shard:
			return -1
		case a.Shard > b.Shard:
			return 1
		}
		return 0
	})
	return out
}

func (s *Store) shard(id raftpb.ShardID) *shardState {
	s.mu.RLock()
	st := s.shards[id]
	s.mu.RUnlock()
	return st
}

// DB returns the Pebble database, for state machines that keep their data
// in the node's store under StateMachinePrefix.
func (s *Store) DB() *pebble.DB { return s.db }
