package kv

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// fill puts n keys into sm (in Updates of 1000 entries) and deletes every
// 10th; it returns the bytes of keys and values kept.
func fill(t testing.TB, sm *stateMachine, n, valueLen int) int {
	t.Helper()
	var cmds [][]byte
	idx := uint64(1)
	flush := func() {
		if err := sm.Update(entries(idx, cmds...)); err != nil {
			t.Fatal(err)
		}
		idx += uint64(len(cmds))
		cmds = cmds[:0]
	}
	size := 0
	value := make([]byte, valueLen)
	for i := 0; i < n; i++ {
		key := []byte(fmt.Sprintf("key-%07d", i))
		binary.BigEndian.PutUint32(value, uint32(i))
		cmds = append(cmds, EncodePut(key, value))
		if i%10 == 9 {
			cmds = append(cmds, EncodeDelete(key))
		} else {
			size += len(key) + len(value)
		}
		if len(cmds) >= 1000 {
			flush()
		}
	}
	if len(cmds) > 0 {
		flush()
	}
	return size
}

func heapBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// peakHeapGrowth runs f and returns the peak heap (live and not yet
// collected objects) above what was live before, sampled every
// millisecond; a low GC percent keeps garbage from inflating the figure.
func peakHeapGrowth(f func()) int64 {
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(1))
	base := heapBytes()
	var peak uint64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			if h := heapBytes(); h > peak {
				peak = h
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	stopped := false
	defer func() { // f failed the test
		if !stopped {
			close(stop)
			sampler.Wait()
		}
	}()
	f()
	close(stop)
	sampler.Wait()
	stopped = true
	if h := heapBytes(); h > peak {
		peak = h
	}
	return int64(peak) - int64(base)
}

// saveTo runs SaveSnapshot into a pipe whose other end is read by consume.
func saveTo(sm *stateMachine, consume func(io.Reader) error) (saveErr, consumeErr error) {
	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		saveErr = sm.SaveSnapshot(pw)
		pw.CloseWithError(saveErr)
	}()
	consumeErr = consume(pr)
	pr.CloseWithError(errors.New("consumer done"))
	wg.Wait()
	return saveErr, consumeErr
}

// A shard of 100k small keys streams through a pipe with a peak heap far
// below its size, and recovers into another shard of another DB with
// identical contents.
func TestSnapshotStreamsLargeShard(t *testing.T) {
	if testing.Short() {
		t.Skip("100k keys")
	}
	// No background compactions: they would allocate while the heap is
	// measured.
	srcDB := openDBWith(t, "src", &pebble.Options{FS: vfs.NewMem(), DisableAutomaticCompactions: true})
	src := newTestSM(t, srcDB, 5)
	dataBytes := fill(t, src, 100_000, 100)
	if err := srcDB.Flush(); err != nil {
		t.Fatal(err)
	}

	// Peak heap while the whole snapshot goes through a pipe into a
	// checksum.
	var streamed int64
	growth := peakHeapGrowth(func() {
		saveErr, readErr := saveTo(src, func(r io.Reader) error {
			var err error
			streamed, err = io.Copy(crc32.New(castagnoli), r)
			return err
		})
		if saveErr != nil || readErr != nil {
			t.Fatal(saveErr, readErr)
		}
	})
	// The instrument sees a consumer that does buffer the stream.
	buffered := peakHeapGrowth(func() {
		if _, err := saveTo(src, func(r io.Reader) error { _, err := io.ReadAll(r); return err }); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("data %d bytes, stream %d bytes, peak heap growth %d bytes (%d when the consumer buffers)",
		dataBytes, streamed, growth, buffered)
	if streamed < int64(dataBytes) {
		t.Fatalf("stream of %d bytes for %d bytes of data", streamed, dataBytes)
	}
	if buffered < int64(dataBytes) {
		t.Fatalf("the heap instrument missed a buffering consumer: growth %d", buffered)
	}
	if growth > int64(dataBytes)/2 {
		t.Fatalf("peak heap grew by %d bytes while streaming %d bytes of data", growth, dataBytes)
	}

	// The same stream recovers into shard 77 of another DB, replacing what
	// was there and leaving its neighbour alone.
	dstDB := openDB(t, vfs.NewMem(), "dst")
	dst := newTestSM(t, dstDB, 77)
	neighbour := newTestSM(t, dstDB, 78)
	for _, sm := range []*stateMachine{dst, neighbour} {
		if err := sm.Update(entries(1, EncodePut([]byte("stale"), []byte("x")))); err != nil {
			t.Fatal(err)
		}
	}
	saveErr, recErr := saveTo(src, dst.RecoverFromSnapshot)
	if saveErr != nil || recErr != nil {
		t.Fatal(saveErr, recErr)
	}
	want := dump(t, src.db, 5)
	if len(want) != 90_000 {
		t.Fatalf("source holds %d keys", len(want))
	}
	if err := sameMaps(want, dump(t, dstDB, 77)); err != nil {
		t.Fatal(err)
	}
	if v, found := get(t, neighbour, "stale"); !found || v != "x" {
		t.Fatal("recovery touched another shard")
	}
	srcApplied, _ := newTestSM(t, src.db, 5).Open()
	if last, err := newTestSM(t, dstDB, 77).Open(); err != nil || last != srcApplied || last == 0 {
		t.Fatalf("recovered applied index %d %v, want %d", last, err, srcApplied)
	}
	if err := dst.Update(entries(srcApplied+1, EncodePut([]byte("after"), nil))); err != nil {
		t.Fatal(err)
	}
}

// snapshotOf returns a small shard's snapshot bytes and contents.
func snapshotOf(t testing.TB, keys int) ([]byte, map[string]string) {
	t.Helper()
	src := newTestSM(t, openDB(t, vfs.NewMem(), "src"), 1)
	fill(t, src, keys, 50)
	var buf bytes.Buffer
	if err := src.SaveSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), dump(t, src.db, 1)
}

// dstWithData returns a state machine holding "old" = "kept".
func dstWithData(t testing.TB) *stateMachine {
	t.Helper()
	sm := newTestSM(t, openDB(t, vfs.NewMem(), "dst"), 9)
	if err := sm.Update(entries(1, EncodePut([]byte("old"), []byte("kept")))); err != nil {
		t.Fatal(err)
	}
	return sm
}

func TestSnapshotRoundTripSmall(t *testing.T) {
	snap, want := snapshotOf(t, 300)
	dst := dstWithData(t)
	if err := dst.RecoverFromSnapshot(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if err := sameMaps(want, dump(t, dst.db, 9)); err != nil {
		t.Fatal(err)
	}
	// An empty shard's snapshot empties the destination.
	empty := newTestSM(t, openDB(t, vfs.NewMem(), "e"), 4)
	var buf bytes.Buffer
	if err := empty.SaveSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	if err := dst.RecoverFromSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	if d := dump(t, dst.db, 9); len(d) != 0 {
		t.Fatalf("%d keys left", len(d))
	}
	if last, err := newTestSM(t, dst.db, 9).Open(); err != nil || last != 0 {
		t.Fatalf("applied %d %v", last, err)
	}
}

// A truncated or corrupted snapshot fails; one that fails before anything
// was committed leaves the old state serving.
func TestSnapshotTruncatedOrCorrupt(t *testing.T) {
	snap, _ := snapshotOf(t, 300)
	check := func(name string, data []byte) {
		t.Helper()
		dst := dstWithData(t)
		err := dst.RecoverFromSnapshot(bytes.NewReader(data))
		if !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("%s: %v", name, err)
		}
		if v, found := get(t, dst, "old"); !found || v != "kept" {
			t.Fatalf("%s: old state lost", name)
		}
	}
	for _, n := range []int{0, 2, 4, 5, 10, len(snap) / 2, len(snap) - 21, len(snap) - 12, len(snap) - 4, len(snap) - 1} {
		check(fmt.Sprintf("truncated to %d", n), snap[:n])
	}
	for _, at := range []int{0, 7, len(snap) / 3, len(snap) - 18, len(snap) - 10, len(snap) - 1} {
		bad := bytes.Clone(snap)
		bad[at] ^= 0x20
		check(fmt.Sprintf("byte %d flipped", at), bad)
	}
	check("trailing byte", append(bytes.Clone(snap), 0))
	// Well-formed streams that lie.
	check("count mismatch", craft(func(w *snapWriter) { w.u32(0); w.u64(1); w.u64(3) }))
	check("oversized key", craft(func(w *snapWriter) { w.u32(MaxKeyBytes + 1) }))
	check("oversized value", craft(func(w *snapWriter) { w.u32(1); w.write([]byte("k")); w.u32(MaxValueBytes + 1) }))
}

// craft returns a snapshot stream: the header, body's bytes, a valid CRC.
func craft(body func(*snapWriter)) []byte {
	var buf bytes.Buffer
	w := &snapWriter{w: bufio.NewWriter(&buf)}
	w.write(snapshotMagic[:])
	body(w)
	w.u32(w.crc)
	_ = w.w.Flush()
	return buf.Bytes()
}

// A recovery that fails after committing part of the snapshot leaves a
// marker: the state machine refuses to serve, a restart's Open clears the
// range and reports 0, and a later successful recovery heals it.
func TestSnapshotPartialRecovery(t *testing.T) {
	snap, want := snapshotOf(t, 300)
	dst := dstWithData(t)
	dst.batchBytes = 1 << 10
	err := dst.RecoverFromSnapshot(bytes.NewReader(snap[:len(snap)/2]))
	mustIs(t, err, ErrRecoveryIncomplete)
	mustIs(t, err, ErrBadSnapshot)
	_, err = dst.Lookup(EncodeGet([]byte("old")))
	mustIs(t, err, ErrRecoveryIncomplete)
	mustIs(t, dst.Update(entries(2, EncodeDelete([]byte("x")))), ErrRecoveryIncomplete)
	mustIs(t, dst.SaveSnapshot(io.Discard), ErrRecoveryIncomplete)
	// What a restart sees: half the data and the marker.
	restarted := newTestSM(t, dst.db, 9)
	mustIs(t, restarted.SaveSnapshot(io.Discard), ErrRecoveryIncomplete)
	if d := dump(t, dst.db, 9); len(d) == 0 {
		t.Fatal("nothing was committed: the test does not exercise a partial recovery")
	}
	if last, err := restarted.Open(); err != nil || last != 0 {
		t.Fatalf("Open after a partial recovery: %d %v", last, err)
	}
	if d := dump(t, dst.db, 9); len(d) != 0 {
		t.Fatalf("Open left %d keys", len(d))
	}
	if _, found := get(t, restarted, "old"); found {
		t.Fatal("old data survived")
	}
	// The failed state machine heals with a full recovery.
	if err := dst.RecoverFromSnapshot(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if err := sameMaps(want, dump(t, dst.db, 9)); err != nil {
		t.Fatal(err)
	}
	if _, found := get(t, dst, "key-0000000"); !found {
		t.Fatal("recovered state not served")
	}
	// A multi-batch recovery that succeeds is complete too.
	dst2 := dstWithData(t)
	dst2.batchBytes = 1 << 10
	if err := dst2.RecoverFromSnapshot(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if err := sameMaps(want, dump(t, dst2.db, 9)); err != nil {
		t.Fatal(err)
	}
}

type failingIO struct {
	n   int
	err error
}

func (f *failingIO) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	n := min(len(p), f.n)
	for i := range p[:n] {
		p[i] = snapshotMagic[i%4]
	}
	f.n -= n
	return n, nil
}

func (f *failingIO) Write(p []byte) (int, error) { return 0, f.err }

func TestSnapshotIOErrors(t *testing.T) {
	boom := errors.New("boom")
	dst := dstWithData(t)
	mustIs(t, dst.RecoverFromSnapshot(&failingIO{n: 6, err: boom}), boom)
	mustIs(t, dst.RecoverFromSnapshot(&failingIO{n: 4, err: io.EOF}), ErrBadSnapshot)
	if v, _ := get(t, dst, "old"); v != "kept" {
		t.Fatal("old state lost")
	}
	mustIs(t, dst.SaveSnapshot(&failingIO{err: boom}), boom)
	mustIs(t, dst.RecoverFromSnapshot(bytes.NewReader([]byte("nope-not-a-snapshot"))), ErrBadSnapshot)
}

// The stream format, byte for byte, for one pair.
func TestSnapshotFormat(t *testing.T) {
	sm := newTestSM(t, openDB(t, vfs.NewMem(), "db"), 3)
	if err := sm.Update(entries(42, EncodePut([]byte("k"), []byte("vv")))); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := sm.SaveSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	want := []byte("kvs\x01" + "\x00\x00\x00\x01k" + "\x00\x00\x00\x02vv" + "\x00\x00\x00\x00" +
		"\x00\x00\x00\x00\x00\x00\x00\x2a" + "\x00\x00\x00\x00\x00\x00\x00\x01")
	want = binary.BigEndian.AppendUint32(want, crc32.Checksum(want, castagnoli))
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("stream\n%q\nwant\n%q", buf.Bytes(), want)
	}
}

// Open clears a recovery marker left by a crash.
func TestOpenClearsRecoveryMarker(t *testing.T) {
	fs := vfs.NewMem()
	db := openDB(t, fs, "db")
	sm := newTestSM(t, db, 1)
	if err := db.Set(sm.keys.recovery, nil, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if last, err := sm.Open(); err != nil || last != 0 {
		t.Fatalf("%d %v", last, err)
	}
	if _, closer, err := db.Get(sm.keys.recovery); err == nil {
		closer.Close()
		t.Fatal("marker left")
	}
}
