package transport

import (
	"errors"
	"hash/crc32"
	"io"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardd/shardd/raftpb"
)

// patternPeriod is the period of the test data: a prime, so no chunk size
// divides it and a misplaced chunk changes the checksum.
const patternPeriod = 65521

var pattern = func() []byte {
	b := make([]byte, 2*patternPeriod)
	x := uint32(2463534242)
	for i := range patternPeriod {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	copy(b[patternPeriod:], b[:patternPeriod])
	return b
}()

// patternReader yields size bytes of deterministic data without holding
// them: a snapshot of any size costs no memory to produce.
type patternReader struct{ off, size int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.size-r.off)]
	n := 0
	for n < len(p) {
		n += copy(p[n:], pattern[(r.off+int64(n))%patternPeriod:][:patternPeriod])
	}
	r.off += int64(n)
	return n, nil
}

// patternCRC is the CRC-32C of the first size bytes of the pattern.
func patternCRC(size int64) uint32 {
	r := &patternReader{size: size}
	buf := make([]byte, 1<<20)
	var crc uint32
	for {
		n, err := r.Read(buf)
		crc = crc32.Update(crc, castagnoli, buf[:n])
		if err != nil {
			return crc
		}
	}
}

// snapMsg is the MsgSnap of a test snapshot from -> to.
func snapMsg(from, to raftpb.NodeID) raftpb.Message {
	return raftpb.Message{
		Type: raftpb.MsgSnap, Shard: 4, From: from, To: to, Term: 2,
		Snapshot: &raftpb.SnapshotMeta{Index: 100, Term: 2, ConfState: raftpb.ConfState{Voters: []raftpb.NodeID{1, 2, 3}}},
	}
}

// opener returns an open function for a pattern snapshot of size bytes
// that counts its calls.
func opener(size int64, calls *atomic.Int32) func() (io.ReadCloser, int64, error) {
	return func() (io.ReadCloser, int64, error) {
		calls.Add(1)
		return io.NopCloser(&patternReader{size: size}), size, nil
	}
}

// sendSnapshotAndWait sends a snapshot and returns what done reported.
func sendSnapshotAndWait(t *testing.T, tr *GRPC, m raftpb.Message, open func() (io.ReadCloser, int64, error)) error {
	t.Helper()
	ch := make(chan error, 1)
	tr.SendSnapshot(m, open, func(err error) { ch <- err })
	select {
	case err := <-ch:
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("snapshot transfer did not finish")
		return nil
	}
}

// heapObjectBytes is the heap's object bytes, live or not yet swept.
func heapObjectBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// checkDelivered checks that node h got exactly m after its snapshot.
func checkSnapDelivered(t *testing.T, h *recorder, want raftpb.Message) {
	t.Helper()
	msgs := h.messages()
	if len(msgs) != 1 || msgs[0].Type != raftpb.MsgSnap || msgs[0].Snapshot == nil ||
		msgs[0].Snapshot.Index != want.Snapshot.Index || msgs[0].Shard != want.Shard ||
		!msgs[0].Snapshot.ConfState.Equal(&want.Snapshot.ConfState) {
		t.Fatalf("delivered %v, want %v", msgs, want)
	}
}

// A 256 MiB snapshot streams with bounded memory on both sides (both are in
// this process, so the heap seen here is the sum), arrives verified, is
// committed, and its MsgSnap is delivered after. S28 (bounded memory;
// each transfer is one stream, so there is no per-chunk timeout to trip).
func TestSnapshotLarge(t *testing.T) {
	const size = 256 << 20
	const budget = 64 << 20
	c := newCluster(t, 2, nil)
	n1, n2 := c.node(1), c.node(2)
	want := patternCRC(size)

	runtime.GC()
	base := heapObjectBytes()
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // heap sampler
		defer wg.Done()
		tick := time.NewTicker(500 * time.Microsecond)
		defer tick.Stop()
		for {
			if h := heapObjectBytes(); h > peak.Load() {
				peak.Store(h)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	var calls atomic.Int32
	m := snapMsg(1, 2)
	start := time.Now()
	err := sendSnapshotAndWait(t, n1.tr, m, opener(size, &calls))
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	growth := int64(peak.Load()) - int64(base)
	t.Logf("256 MiB in %v (%.0f MiB/s), peak heap growth %.1f MiB", elapsed,
		float64(size>>20)/elapsed.Seconds(), float64(growth)/(1<<20))
	if growth >= budget {
		t.Fatalf("peak heap grew by %d MiB streaming 256 MiB, budget %d MiB", growth>>20, budget>>20)
	}
	sinks := n2.h.sinkList()
	if len(sinks) != 1 {
		t.Fatalf("%d sinks opened", len(sinks))
	}
	if n, crc, committed, aborted := sinks[0].state(); n != size || crc != want || !committed || aborted {
		t.Fatalf("sink: %d bytes, crc %08x (want %08x), committed %v, aborted %v", n, crc, want, committed, aborted)
	}
	checkSnapDelivered(t, n2.h, m)
	if calls.Load() != 1 {
		t.Fatalf("opened %d times", calls.Load())
	}
	if s1, s2 := n1.tr.Stats(), n2.tr.Stats(); s1.SnapshotsSent != 1 || s2.SnapshotsReceived != 1 || s1.SnapshotsFailed+s2.SnapshotsFailed != 0 {
		t.Fatalf("stats: sender %+v, receiver %+v", s1, s2)
	}
}

// A stream broken mid-transfer fails that attempt cleanly (the partial
// sink is aborted) and the sender starts over; the second attempt arrives
// whole. S27: a transfer is one stream (its identity), so chunks of two
// snapshots cannot interleave and a retry always starts at offset 0.
func TestSnapshotRetryAfterBrokenStream(t *testing.T) {
	const size = 8 << 20
	c := newCluster(t, 2, func(cfg *Config) { cfg.SnapshotChunkBytes = 256 << 10 })
	proxy := newProxy(t, c.peers[2])
	c.stop(1)
	c.peers = map[raftpb.NodeID]string{1: c.peers[1], 2: proxy.addr()}
	n1, n2 := c.restart(1), c.node(2)

	var sinks atomic.Int32
	n2.h.setNewSink(func(m raftpb.Message, sz int64) (*testSink, error) {
		s := &testSink{}
		if sinks.Add(1) == 1 {
			var once sync.Once
			s.onWrite = func(total int64) {
				if total >= 2<<20 {
					once.Do(proxy.breakAll)
				}
			}
		}
		return s, nil
	})
	var calls atomic.Int32
	m := snapMsg(1, 2)
	if err := sendSnapshotAndWait(t, n1.tr, m, opener(size, &calls)); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 2 {
		t.Fatalf("opened %d times, want 2 (one retry from the start)", calls.Load())
	}
	list := n2.h.sinkList()
	if len(list) != 2 {
		t.Fatalf("%d sinks opened, want 2", len(list))
	}
	waitFor(t, 5*time.Second, "the broken attempt aborted", func() bool { _, _, _, a := list[0].state(); return a })
	if n, _, committed, _ := list[0].state(); committed || n >= size {
		t.Fatalf("broken attempt: %d bytes, committed %v", n, committed)
	}
	if n, crc, committed, aborted := list[1].state(); n != size || crc != patternCRC(size) || !committed || aborted {
		t.Fatalf("retry: %d bytes, crc %08x, committed %v, aborted %v", n, crc, committed, aborted)
	}
	checkSnapDelivered(t, n2.h, m)
}

// Failures on the sending side end the transfer with an error: retried
// when a retry may help (a short read), not when the receiver refused.
func TestSnapshotSendFailures(t *testing.T) {
	c := newCluster(t, 2, func(cfg *Config) {
		cfg.SnapshotChunkBytes = 64 << 10
		cfg.SnapshotRetries = 2
	})
	n1, n2 := c.node(1), c.node(2)
	m := snapMsg(1, 2)

	t.Run("shorter than announced", func(t *testing.T) {
		var calls atomic.Int32
		short := func() (io.ReadCloser, int64, error) {
			calls.Add(1)
			return io.NopCloser(&patternReader{size: 100 << 10}), 1 << 20, nil
		}
		before := len(n2.h.sinkList())
		err := sendSnapshotAndWait(t, n1.tr, m, short)
		if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("got %v, want a short-read error", err)
		}
		if calls.Load() != 3 {
			t.Fatalf("opened %d times, want 3 (two retries)", calls.Load())
		}
		// A cancelled stream may be reset before the receiver read its
		// first frame, so not every attempt opens a sink; every sink that
		// was opened must be aborted.
		waitFor(t, 5*time.Second, "sinks aborted", func() bool {
			for _, s := range n2.h.sinkList()[before:] {
				if _, _, committed, aborted := s.state(); committed || !aborted {
					return false
				}
			}
			return true
		})
	})
	t.Run("commit fails", func(t *testing.T) {
		var mu sync.Mutex
		var made []*testSink
		n2.h.setNewSink(func(raftpb.Message, int64) (*testSink, error) {
			s := &testSink{failCommt: errInjected}
			mu.Lock()
			made = append(made, s)
			mu.Unlock()
			return s, nil
		})
		defer n2.h.setNewSink(nil)
		var calls atomic.Int32
		err := sendSnapshotAndWait(t, n1.tr, m, opener(200<<10, &calls))
		if !errors.Is(err, ErrSnapshotRejected) || calls.Load() != 1 {
			t.Fatalf("got %v after %d attempts, want ErrSnapshotRejected after 1", err, calls.Load())
		}
		// A late attempt of the previous subtest may open a sink here too;
		// it is cancelled, so every sink must end aborted.
		waitFor(t, 5*time.Second, "sinks aborted", func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, s := range made {
				if _, _, committed, aborted := s.state(); committed || !aborted {
					return false
				}
			}
			return len(made) > 0
		})
	})
	t.Run("sink refused", func(t *testing.T) {
		n2.h.setNewSink(func(raftpb.Message, int64) (*testSink, error) { return nil, errInjected })
		defer n2.h.setNewSink(nil)
		var calls atomic.Int32
		err := sendSnapshotAndWait(t, n1.tr, m, opener(10, &calls))
		if !errors.Is(err, ErrSnapshotRejected) || calls.Load() != 1 {
			t.Fatalf("got %v after %d attempts", err, calls.Load())
		}
	})
	t.Run("open fails", func(t *testing.T) {
		err := sendSnapshotAndWait(t, n1.tr, m, func() (io.ReadCloser, int64, error) { return nil, 0, errInjected })
		if !errors.Is(err, errInjected) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("unknown node", func(t *testing.T) {
		err := sendSnapshotAndWait(t, n1.tr, snapMsg(1, 9), opener(10, new(atomic.Int32)))
		if !errors.Is(err, ErrUnknownNode) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("not a MsgSnap", func(t *testing.T) {
		if err := sendSnapshotAndWait(t, n1.tr, app(1, 2, 1, 1, nil), opener(10, new(atomic.Int32))); err == nil {
			t.Fatal("a MsgApp was sent as a snapshot")
		}
	})
	for _, m := range n2.h.messages() {
		t.Fatalf("a failed snapshot delivered %v", m)
	}
	if st := n1.tr.Stats(); st.SnapshotsFailed != 6 || st.SnapshotsSent != 0 {
		t.Fatalf("sender stats %+v", st)
	}
}

// blockingSink blocks every write until released.
type blockingSink struct {
	testSink
	release chan struct{}
}

func (s *blockingSink) Write(p []byte) (int, error) {
	<-s.release
	return s.testSink.Write(p)
}

// A receiver that stops making progress fails the transfer after
// SnapshotTimeout, instead of holding the sender forever; the receiver's
// sink is aborted once it returns.
func TestSnapshotTimeout(t *testing.T) {
	release := make(chan struct{})
	blocked := &blockingSink{release: release}
	var once sync.Once
	defer once.Do(func() { close(release) })
	c := newCluster(t, 2, func(cfg *Config) {
		cfg.SnapshotTimeout = 200 * time.Millisecond
		cfg.SnapshotRetries = -1
		if cfg.NodeID == 2 {
			cfg.Handler = sinkHandler{cfg.Handler.(*recorder), blocked}
		}
	})

	start := time.Now()
	err := sendSnapshotAndWait(t, c.node(1).tr, snapMsg(1, 2), opener(64<<20, new(atomic.Int32)))
	if err == nil {
		t.Fatal("a snapshot to a stalled receiver succeeded")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the stalled transfer took %v to fail, timeout 200ms", took)
	}
	once.Do(func() { close(release) })
	waitFor(t, 5*time.Second, "the stalled sink aborted", func() bool { _, _, _, a := blocked.state(); return a })
}

// sinkHandler is a recorder whose SnapshotSink returns one given sink.
type sinkHandler struct {
	*recorder
	sink SnapshotSink
}

func (h sinkHandler) SnapshotSink(raftpb.Message, int64) (SnapshotSink, error) { return h.sink, nil }
