package batchio

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/shardd/shardd/raftpb"
)

// Corruption detection: values changed behind the store's back (through
// DB(), as a disk or a bug would) are caught by the checksum or the
// decoder on read — entries when read, records when the store opens — and
// reported as a *CorruptionError naming the shard (and the index), never as
// wrong data or a panic.

// corruptionBase writes shards 7 and 8 (entries 1..10, term 2 from index 2,
// commit 10) and shard 9 (the same, then a snapshot at 6 and the log
// compacted to 4: entries 5..10) and closes the store. Each test works on a
// copy of its files.
func corruptionBase(t *testing.T) *vfs.MemFS {
	t.Helper()
	fs := vfs.NewCrashableMem()
	s := openMem(t, fs)
	for _, id := range []raftpb.ShardID{7, 8, 9} {
		write(t, s, create(id), Update{Shard: id, Entries: mkEnts(2, 2, 9), HardState: raftpb.HardState{Term: 2, Vote: 1, Commit: 10}})
	}
	write(t, s, Update{Shard: 9, CompactTo: 4,
		SaveSnapshot: &SnapshotRecord{Meta: raftpb.SnapshotMeta{Index: 6, Term: 2, ConfState: voters3}, Data: []byte("snap-6")}})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return fs
}

// copyFS returns an exact copy of fs (every file and directory entry,
// synced or not).
func copyFS(fs *vfs.MemFS) *vfs.MemFS {
	return fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: rand.New(rand.NewPCG(1, 1))})
}

func baseLog(id raftpb.ShardID) (first raftpb.Index, ents []raftpb.Entry) {
	ents = append(mkEnts(1, 1, 1), mkEnts(2, 2, 9)...)
	if id == 9 {
		return 5, ents[4:]
	}
	return 1, ents
}

// openNoCache opens the store on fs with the entry cache disabled, so that
// every read goes to Pebble.
func openNoCache(t *testing.T, fs vfs.FS) *Store {
	return openMem(t, fs, func(o *Options) { o.CacheBytes = -1 })
}

func getValue(t *testing.T, s *Store, key []byte) []byte {
	t.Helper()
	v, closer, err := s.DB().Get(key)
	if err != nil {
		t.Fatalf("get %x: %v", key, err)
	}
	defer closer.Close()
	return slices.Clone(v)
}

func setValue(t *testing.T, s *Store, key, v []byte) {
	t.Helper()
	if err := s.DB().Set(key, v, pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

func deleteKey(t *testing.T, s *Store, key []byte) {
	t.Helper()
	if err := s.DB().Delete(key, pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

// wantCorrupt checks that err is a *CorruptionError for shard and index (of
// record, unless empty) that errors.Is ErrCorrupt and names them.
func wantCorrupt(t *testing.T, what string, err error, shard raftpb.ShardID, index raftpb.Index, record string) {
	t.Helper()
	var ce *CorruptionError
	if !errors.As(err, &ce) {
		t.Fatalf("%s: %v (%T), want a *CorruptionError", what, err, err)
	}
	if ce.Shard != shard || ce.Index != index || (record != "" && ce.Record != record) {
		t.Fatalf("%s: corruption of shard %d index %d %s, want shard %d index %d %s: %v",
			what, ce.Shard, ce.Index, ce.Record, shard, index, record, err)
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("%s: %v does not match ErrCorrupt", what, err)
	}
	msg := err.Error()
	if !strings.Contains(msg, fmt.Sprintf("shard %d", shard)) ||
		(index != 0 && !strings.Contains(msg, fmt.Sprintf("index %d", index))) {
		t.Fatalf("%s: %q does not name shard %d index %d", what, msg, shard, index)
	}
}

// wantEntryCorrupt checks every read that touches entry i of shard id, and
// that reads around it still succeed.
func wantEntryCorrupt(t *testing.T, what string, s *Store, id raftpb.ShardID, i raftpb.Index) {
	t.Helper()
	l := mustLog(t, s, id)
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	_, err := l.Entries(first, last+1, math.MaxUint64)
	wantCorrupt(t, what+": Entries over the log", err, id, i, "log entry")
	_, err = l.Entries(i, i+1, math.MaxUint64)
	wantCorrupt(t, what+": Entries of the entry", err, id, i, "log entry")
	_, err = l.Term(i)
	wantCorrupt(t, what+": Term", err, id, i, "log entry")
	if i > first {
		if _, err := l.Entries(first, i, math.MaxUint64); err != nil {
			t.Fatalf("%s: entries before the corrupt one: %v", what, err)
		}
	}
	if i < last {
		if _, err := l.Entries(i+1, last+1, math.MaxUint64); err != nil {
			t.Fatalf("%s: entries after the corrupt one: %v", what, err)
		}
	}
}

// Every single-byte change of a stored entry — checksum or payload — is
// caught by Entries and Term, and names the shard and the index.
func TestCorruptionEntryByteFlips(t *testing.T) {
	s := openNoCache(t, copyFS(corruptionBase(t)))
	defer s.Close()
	for _, tc := range []struct {
		id raftpb.ShardID
		i  raftpb.Index
	}{{7, 5}, {7, 1}, {7, 10}, {9, 5}, {9, 10}} {
		key := logKey(tc.id, tc.i)
		orig := getValue(t, s, key)
		for pos := range orig {
			for _, mask := range []byte{0x01, 0x80, 0xff} {
				v := slices.Clone(orig)
				v[pos] ^= mask
				setValue(t, s, key, v)
				where := "checksum"
				if pos >= crcLen {
					where = "payload"
				}
				wantEntryCorrupt(t, fmt.Sprintf("shard %d entry %d, %s byte %d ^ %#x", tc.id, tc.i, where, pos, mask), s, tc.id, tc.i)
			}
		}
		setValue(t, s, key, orig)
		for _, id := range []raftpb.ShardID{7, 8, 9} {
			first, want := baseLog(id)
			checkLog(t, s, id, first, want)
		}
	}
}

// The same after reopening with the default options: the cache starts
// empty, so the reads find the corrupt values in Pebble.
func TestCorruptionEntryAfterReopen(t *testing.T) {
	fs := copyFS(corruptionBase(t))
	s := openMem(t, fs)
	crc := getValue(t, s, logKey(7, 3))
	crc[0] ^= 0x10
	setValue(t, s, logKey(7, 3), crc)
	payload := getValue(t, s, logKey(8, 9))
	payload[len(payload)-1] ^= 0x01 // the last byte of the entry's data
	setValue(t, s, logKey(8, 9), payload)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openMem(t, fs)
	defer s.Close()
	wantEntryCorrupt(t, "checksum after reopen", s, 7, 3)
	wantEntryCorrupt(t, "payload after reopen", s, 8, 9)
	first, want := baseLog(9)
	checkLog(t, s, 9, first, want)
}

// A value that is a valid entry, but of another index, or a value cut
// short.
func TestCorruptionEntryMisplacedOrTruncated(t *testing.T) {
	s := openNoCache(t, copyFS(corruptionBase(t)))
	defer s.Close()
	key := logKey(7, 5)
	orig := getValue(t, s, key)
	for name, v := range map[string][]byte{
		"entry 6 stored at 5":          getValue(t, s, logKey(7, 6)),
		"entry 4 stored at 5":          getValue(t, s, logKey(7, 4)),
		"empty":                        {},
		"shorter than its checksum":    orig[:crcLen-1],
		"checksum only":                orig[:crcLen],
		"payload cut":                  orig[:len(orig)-1],
		"payload extended":             append(slices.Clone(orig), 0),
		"checksum of an empty payload": frame(nil),
	} {
		setValue(t, s, key, v)
		wantEntryCorrupt(t, name, s, 7, 5)
	}
	setValue(t, s, key, getValue(t, s, logKey(7, 6)))
	_, err := mustLog(t, s, 7).Term(5)
	if !strings.Contains(err.Error(), "holds index 6") {
		t.Fatalf("misplaced entry: %v does not say which index it holds", err)
	}
	setValue(t, s, key, orig)
	first, want := baseLog(7)
	checkLog(t, s, 7, first, want)
}

// An entry missing inside the log is corruption at its index; an entry
// missing below the first index was compacted.
func TestCorruptionMissingEntry(t *testing.T) {
	fs := copyFS(corruptionBase(t))
	s := openNoCache(t, fs)
	deleteKey(t, s, logKey(7, 5))
	wantEntryCorrupt(t, "entry 5 deleted", s, 7, 5)
	last8 := getValue(t, s, logKey(8, 10))
	deleteKey(t, s, logKey(8, 10))
	wantEntryCorrupt(t, "last entry deleted", s, 8, 10)
	setValue(t, s, logKey(8, 10), last8) // else Open fails: commit 10 beyond the log

	// Shard 9 was compacted to 4: entries 1..4 are gone from Pebble and
	// reading them is ErrCompacted, not corruption.
	l := mustLog(t, s, 9)
	for i := raftpb.Index(1); i <= 4; i++ {
		if _, closer, err := s.DB().Get(logKey(9, i)); !errors.Is(err, pebble.ErrNotFound) {
			if err == nil {
				closer.Close()
			}
			t.Fatalf("compacted entry %d still stored: %v", i, err)
		}
	}
	if _, err := l.Term(3); !errors.Is(err, raftpb.ErrCompacted) {
		t.Fatalf("term of a compacted entry: %v", err)
	}
	if tm, err := l.Term(4); err != nil || tm != 2 {
		t.Fatalf("term at the truncation point: %d %v", tm, err)
	}
	if _, err := l.Entries(3, 8, math.MaxUint64); !errors.Is(err, raftpb.ErrCompacted) {
		t.Fatalf("entries from a compacted index: %v", err)
	}
	// A read racing a compaction finds the entries gone from Pebble after
	// checking the bounds: that is ErrCompacted as well.
	if _, err := l.readEntries(3, 8, math.MaxUint64); !errors.Is(err, raftpb.ErrCompacted) {
		t.Fatalf("reading from Pebble below the first index: %v", err)
	}
	if _, err := l.readEntries(1, 5, math.MaxUint64); !errors.Is(err, raftpb.ErrCompacted) {
		t.Fatalf("reading from Pebble below the first index: %v", err)
	}

	// After reopening, a hole in the middle is still corruption at its
	// index (Open reads only the log's bounds).
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openNoCache(t, fs)
	defer s.Close()
	wantEntryCorrupt(t, "entry 5 deleted, after reopen", s, 7, 5)
}

// A corrupt hard state, replica record or snapshot record fails Open with
// a CorruptionError naming the shard, for every byte changed.
func TestCorruptionRecordsFailOpen(t *testing.T) {
	base := corruptionBase(t)
	for _, tc := range []struct {
		kind   byte
		record string
	}{
		{kindHardState, "hard state"},
		{kindReplica, "replica record"},
		{kindSnapshot, "snapshot record"},
	} {
		key := shardKey(tc.kind, 9)
		var orig []byte
		{
			s := openMem(t, copyFS(base))
			orig = getValue(t, s, key)
			s.Close()
		}
		for pos := range orig {
			fs := copyFS(base)
			s := openMem(t, fs)
			v := slices.Clone(orig)
			v[pos] ^= 0x41
			setValue(t, s, key, v)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, err := Open(Options{Dir: "db", FS: fs, Logger: quiet})
			if err == nil {
				s2.Close()
				t.Fatalf("%s byte %d changed: Open succeeded", tc.record, pos)
			}
			wantCorrupt(t, fmt.Sprintf("%s byte %d changed", tc.record, pos), err, 9, 0, tc.record)
		}
	}
}

// Open checks the log's bounds against the replica record: the first key
// must follow the truncation point, and the commit index must be within
// the log.
func TestCorruptionLogBoundsFailOpen(t *testing.T) {
	base := corruptionBase(t)
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, s *Store)
		shard  raftpb.ShardID
		index  raftpb.Index
		record string
	}{
		{"first entry deleted", func(t *testing.T, s *Store) { deleteKey(t, s, logKey(7, 1)) }, 7, 2, "log entry"},
		{"first entry after compaction deleted", func(t *testing.T, s *Store) { deleteKey(t, s, logKey(9, 5)) }, 9, 6, "log entry"},
		{"compacted entry back", func(t *testing.T, s *Store) {
			setValue(t, s, logKey(9, 2), getValue(t, s, logKey(7, 2)))
		}, 9, 2, "log entry"},
		{"committed tail deleted", func(t *testing.T, s *Store) {
			deleteKey(t, s, logKey(8, 10))
		}, 8, 10, "hard state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := copyFS(base)
			s := openMem(t, fs)
			tc.change(t, s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, err := Open(Options{Dir: "db", FS: fs, Logger: quiet})
			if err == nil {
				s2.Close()
				t.Fatal("Open succeeded")
			}
			wantCorrupt(t, tc.name, err, tc.shard, tc.index, tc.record)
		})
	}

	// A key among the replica records that is not one.
	fs := copyFS(base)
	s := openMem(t, fs)
	setValue(t, s, []byte{kindReplica, 1, 2, 3}, []byte("x"))
	s.Close()
	if s2, err := Open(Options{Dir: "db", FS: fs, Logger: quiet}); !errors.Is(err, ErrCorrupt) {
		if err == nil {
			s2.Close()
		}
		t.Fatalf("stray key among replica records: %v", err)
	}

	// An entry stored past the end (a hole between): Open takes the last
	// key as the log's end; the hole is corruption at its first index.
	fs = copyFS(base)
	s = openMem(t, fs)
	setValue(t, s, logKey(7, 14), getValue(t, s, logKey(7, 10)))
	s.Close()
	s = openNoCache(t, fs)
	defer s.Close()
	l := mustLog(t, s, 7)
	if last, _ := l.LastIndex(); last != 14 {
		t.Fatalf("last index %d", last)
	}
	if _, err := l.Entries(1, 15, math.MaxUint64); err == nil {
		t.Fatal("reading across the hole succeeded")
	} else {
		wantCorrupt(t, "hole before a stray entry", err, 7, 11, "log entry")
	}
	_, err := l.Term(14)
	wantCorrupt(t, "stray entry holding index 10", err, 7, 14, "log entry")
}

// Values with a valid checksum but garbage inside: decoding fails or yields
// nonsense, and the store reports it without panicking.
func TestCorruptionGarbageNeverPanics(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	garbage := func() []byte {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		// Often a valid-looking prefix: a tag of a known field.
		if len(b) > 0 && rng.IntN(2) == 0 {
			b[0] = byte(1+rng.IntN(6))<<3 | byte(rng.IntN(3))
		}
		return frame(b)
	}
	base := corruptionBase(t)

	s := openNoCache(t, copyFS(base))
	for range 100 {
		setValue(t, s, logKey(7, 5), garbage())
		l := mustLog(t, s, 7)
		_, err1 := l.Entries(1, 11, math.MaxUint64)
		_, err2 := l.Term(5)
		for _, err := range []error{err1, err2} {
			// A garbage payload decoding to entry 5 itself is not
			// detectable; anything else must be reported at index 5.
			if err != nil {
				wantCorrupt(t, "garbage entry", err, 7, 5, "log entry")
			}
		}
	}
	s.Close()

	for _, kind := range []byte{kindHardState, kindReplica, kindSnapshot} {
		for range 15 {
			fs := copyFS(base)
			s := openMem(t, fs)
			setValue(t, s, shardKey(kind, 9), garbage())
			s.Close()
			s2, err := Open(Options{Dir: "db", FS: fs, Logger: quiet, CacheBytes: -1})
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("garbage %c record: Open failed with %v, want ErrCorrupt", kind, err)
				}
				continue
			}
			// Decoded into something: reading must not panic either.
			if l, err := s2.Shard(9); err == nil {
				f, _ := l.FirstIndex()
				last, _ := l.LastIndex()
				_, _ = l.InitialState()
				_, _ = l.Snapshot()
				_, _ = l.Term(f)
				if last >= f && last-f < 1000 {
					_, _ = l.Entries(f, last+1, math.MaxUint64)
				}
			}
			s2.Close()
		}
	}
}

// A request may carry several updates of one shard; each is validated
// against the state the earlier ones leave (validate's contract). One that
// is not valid there must be refused, never written: written, it leaves a
// log the store cannot reopen — corruption made by the store itself.
func TestCorruptionSameShardTwiceInARequest(t *testing.T) {
	snap10 := &SnapshotRecord{Meta: raftpb.SnapshotMeta{Index: 10, Term: 1, ConfState: voters3}}
	for _, tc := range []struct {
		name    string
		updates []Update
		want    error // nil: accepted
	}{
		// Controls: valid sequences within one request.
		{"append twice", []Update{{Shard: 1, Entries: mkEnts(16, 1, 2)}, {Shard: 1, Entries: mkEnts(18, 1, 2)}}, nil},
		{"compact then append at the tail", []Update{{Shard: 1, SaveSnapshot: snap10, CompactTo: 10},
			{Shard: 1, Entries: mkEnts(16, 1, 1)}}, nil},
		{"remove then create", []Update{{Shard: 1, Remove: true}, {Shard: 1, Create: &ReplicaRecord{Join: true}}}, nil},
		// Invalid once the first update is applied.
		{"compact then append below the first index", []Update{{Shard: 1, SaveSnapshot: snap10, CompactTo: 10},
			{Shard: 1, Entries: mkEnts(5, 2, 2)}}, ErrInvalidUpdate},
		{"remove then append", []Update{{Shard: 1, Remove: true},
			{Shard: 1, Entries: mkEnts(16, 1, 2), HardState: raftpb.HardState{Term: 5, Vote: 2, Commit: 16}}}, ErrUnknownShard},
		{"remove then hard state", []Update{{Shard: 1, Remove: true},
			{Shard: 1, HardState: raftpb.HardState{Term: 5, Vote: 2, Commit: 1}}}, ErrUnknownShard},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewMem()
			s := openNoCache(t, fs)
			write(t, s, create(1), Update{Shard: 1, Entries: mkEnts(2, 1, 14), HardState: raftpb.HardState{Term: 1, Commit: 12}})
			err := s.Write(&Request{Updates: tc.updates})
			if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Errorf("Write: %v, want %v", err, tc.want)
			}
			// Whatever was accepted, the store must reopen to what it
			// served; and a replica created afresh afterwards starts empty.
			before, berr := observe(s, 1)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openNoCache(t, fs)
			after, aerr := observe(s, 1)
			if berr != nil || aerr != nil {
				t.Fatalf("reading shard 1 before reopening: %v; after: %v", berr, aerr)
			}
			if d := diffObserved(&before, &after); d != "" {
				t.Fatalf("reopened store differs from the one closed: %s", d)
			}
			if after.exists {
				write(t, s, Update{Shard: 1, Remove: true})
			}
			write(t, s, Update{Shard: 1, Create: &ReplicaRecord{Join: true}})
			s.Close()
			s2, err := Open(Options{Dir: "db", FS: fs, Logger: quiet, CacheBytes: -1})
			if err != nil {
				t.Fatalf("reopening after the replica was recreated: %v", err)
			}
			defer s2.Close()
			if o, err := observe(s2, 1); err != nil || o.first != 1 || o.last != 0 || !o.hs.IsEmpty() {
				t.Fatalf("recreated replica after reopening: %+v %v, want empty", o, err)
			}
		})
	}
}

func diffObserved(a, b *observed) string {
	m := modelShard{exists: a.exists, first: a.first, ents: a.ents, truncTerm: a.truncTerm, hs: a.hs, snap: a.snap,
		snapRec: a.snapRec, conf: a.conf, confIndex: a.confIndex}
	if a.exists && a.last != m.last() {
		return fmt.Sprintf("bounds [%d, %d] with %d entries", a.first, a.last, len(a.ents))
	}
	return m.diff(b)
}
