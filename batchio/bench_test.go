package batchio

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/shardd/shardd/raftpb"
)

// syncCountingFS counts fsyncs of WAL files: the figure the write pipeline
// exists to keep low.
type syncCountingFS struct {
	vfs.FS
	syncs atomic.Uint64
}

type syncCountingFile struct {
	vfs.File
	fs *syncCountingFS
}

func (f syncCountingFile) Sync() error { f.fs.syncs.Add(1); return f.File.Sync() }

func (f syncCountingFile) SyncData() error { f.fs.syncs.Add(1); return f.File.SyncData() }

func (f syncCountingFile) SyncTo(n int64) (bool, error) { f.fs.syncs.Add(1); return f.File.SyncTo(n) }

func (fs *syncCountingFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return syncCountingFile{File: f, fs: fs}, nil
}

func (fs *syncCountingFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.wrap(name, f, err)
}

func (fs *syncCountingFS) ReuseForWrite(old, name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(old, name, c)
	return fs.wrap(name, f, err)
}

func (fs *syncCountingFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, opts...)
	return fs.wrap(name, f, err)
}

const benchShards = 1000

// BenchmarkFlush persists, for 1000 shards, requests of one 16-byte entry
// plus a hard state, from 2, 8 and 64 concurrent writers, on the real disk
// with fsync. Each shard has at most one request outstanding (it waits for
// its persist before the next, as a replica's Readys do), so up to 1000
// requests are in flight.
//
//   - mode=batched: through the store's write pipeline (one flush for
//     everything queued).
//   - mode=baseline: each request committed as its own Pebble batch with
//     Sync by its writer (Pebble still merges concurrent syncs).
//
// Reported: entries/s, fsyncs/s, entries/fsync and allocations per entry
// (one benchmark op is one entry).
func BenchmarkFlush(b *testing.B) {
	for _, writers := range []int{2, 8, 64} {
		for _, mode := range []string{"batched", "baseline"} {
			b.Run(fmt.Sprintf("writers=%d/mode=%s", writers, mode), func(b *testing.B) {
				benchFlush(b, writers, mode == "batched")
			})
		}
	}
}

func benchFlush(b *testing.B, writers int, batched bool) {
	fs := &syncCountingFS{FS: vfs.Default}
	s, err := Open(Options{Dir: b.TempDir(), FS: fs, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var us []Update
	for id := raftpb.ShardID(1); id <= benchShards; id++ {
		us = append(us, create(id))
	}
	write(b, s, us...)

	data := make([]byte, 16)
	var next atomic.Int64 // entries handed out so far
	total := int64(b.N)
	syncs0 := fs.syncs.Load()
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var shards []raftpb.ShardID
			for id := raftpb.ShardID(w + 1); id <= benchShards; id += raftpb.ShardID(writers) {
				shards = append(shards, id)
			}
			if batched {
				runBatchedWriter(b, s, shards, data, &next, total)
			} else {
				runBaselineWriter(b, s, shards, data, &next, total)
			}
		}(w)
	}
	wg.Wait()
	b.StopTimer()
	secs := b.Elapsed().Seconds()
	syncs := float64(fs.syncs.Load() - syncs0)
	b.ReportMetric(float64(b.N)/secs, "entries/s")
	b.ReportMetric(syncs/secs, "fsyncs/s")
	if syncs > 0 {
		b.ReportMetric(float64(b.N)/syncs, "entries/fsync")
	}
}

// claim takes the right to write one more entry, while any are left.
func claim(next *atomic.Int64, total int64) bool { return next.Add(1) <= total }

// runBatchedWriter keeps one request in flight per shard it owns.
func runBatchedWriter(b *testing.B, s *Store, shards []raftpb.ShardID, data []byte, next *atomic.Int64, total int64) {
	lastIdx := map[raftpb.ShardID]raftpb.Index{}
	done := make(chan raftpb.ShardID, len(shards))
	inflight := 0
	submit := func(id raftpb.ShardID) bool {
		if !claim(next, total) {
			return false
		}
		idx := lastIdx[id] + 1
		if idx == 1 {
			idx = 2 // entry 1 is the bootstrap entry
		}
		lastIdx[id] = idx
		r := &Request{
			Updates: []Update{{Shard: id, Entries: []raftpb.Entry{{Index: idx, Term: 2, Data: data}},
				HardState: raftpb.HardState{Term: 2, Vote: 1, Commit: idx - 1}}},
			Done: func(err error) {
				if err != nil {
					b.Error(err)
				}
				done <- id
			},
		}
		if err := s.Submit(r); err != nil {
			b.Error(err)
			return false
		}
		inflight++
		return true
	}
	for _, id := range shards {
		if !submit(id) {
			break
		}
	}
	for inflight > 0 {
		id := <-done
		inflight--
		submit(id)
	}
}

// runBaselineWriter commits each request alone, with its own fsync.
func runBaselineWriter(b *testing.B, s *Store, shards []raftpb.ShardID, data []byte, next *atomic.Int64, total int64) {
	lastIdx := map[raftpb.ShardID]raftpb.Index{}
	for i := 0; claim(next, total); i++ {
		id := shards[i%len(shards)]
		idx := lastIdx[id] + 1
		if idx == 1 {
			idx = 2
		}
		lastIdx[id] = idx
		e := raftpb.Entry{Index: idx, Term: 2, Data: data}
		batch := s.DB().NewBatch()
		op := batch.SetDeferred(logKeyLen, entryValueLen(&e))
		putLogKey(op.Key, id, idx)
		putEntryValue(op.Value, &e)
		_ = op.Finish()
		_ = batch.Set(shardKey(kindHardState, id), encodeHardState(raftpb.HardState{Term: 2, Vote: 1, Commit: idx - 1}), nil)
		if err := batch.Commit(pebble.Sync); err != nil {
			b.Error(err)
			return
		}
		batch.Close()
	}
}
