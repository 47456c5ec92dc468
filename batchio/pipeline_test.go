package batchio

import (
	"errors"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/shardd/shardd/raftpb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, ignorePebbleOpenLeak) }

// ignorePebbleOpenLeak ignores the compaction scheduler's ticker goroutine
// that pebble.Open (v2.1.7) starts and never stops when it fails after
// registering the DB with the scheduler (Close is what unregisters it):
// the error sweep (sweep_test.go) fails Open at every op. A store left
// open still shows up through its other goroutines (the pipeline's writer,
// Pebble's WAL flusher and cleaners).
var ignorePebbleOpenLeak = goleak.IgnoreTopFunction("github.com/cockroachdb/pebble/v2.(*ConcurrencyLimitScheduler).periodicGranter")

// seam is a fake commit function: it records each flush, can block until
// released and can fail.
type seam struct {
	mu      sync.Mutex
	flushes [][]int // ids of the requests of each flush
	block   chan struct{}
	entered chan struct{}
	fail    error
	refuse  map[int]bool
}

func (s *seam) commit(reqs []*Request) error {
	if s.entered != nil {
		s.entered <- struct{}{}
	}
	if s.block != nil {
		<-s.block
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []int
	for _, r := range reqs {
		id := r.Updates[0].Shard
		ids = append(ids, int(id))
		if s.refuse[int(id)] {
			r.err = ErrInvalidUpdate
		}
	}
	s.flushes = append(s.flushes, ids)
	return s.fail
}

func shardID(i int) raftpb.ShardID { return raftpb.ShardID(i) }

func req(id int, done func(error)) *Request {
	return &Request{Updates: []Update{{Shard: shardID(id)}}, Done: done}
}

type completion struct {
	id  int
	err error
}

// recorder collects completions in the order they arrive.
type recorder struct {
	mu   sync.Mutex
	got  []completion
	wait sync.WaitGroup
}

func (r *recorder) done(id int) func(error) {
	r.wait.Add(1)
	return func(err error) {
		r.mu.Lock()
		r.got = append(r.got, completion{id, err})
		r.mu.Unlock()
		r.wait.Done()
	}
}

func TestPipelineCompletesInOrder(t *testing.T) {
	s := &seam{}
	p := newPipeline(s.commit, 1<<20)
	var rec recorder
	for i := 0; i < 100; i++ {
		if err := p.submit(req(i, rec.done(i))); err != nil {
			t.Fatal(err)
		}
	}
	rec.wait.Wait()
	p.close()
	for i, c := range rec.got {
		if c.id != i || c.err != nil {
			t.Fatalf("completion %d = %+v", i, c)
		}
	}
	n := 0
	for _, f := range s.flushes {
		n += len(f)
	}
	if n != 100 {
		t.Fatalf("flushed %d requests", n)
	}
}

// While one flush is in progress, new requests gather for the next: the
// second flush carries everything submitted meanwhile.
func TestPipelineGathersWhileFlushing(t *testing.T) {
	s := &seam{block: make(chan struct{}), entered: make(chan struct{}, 10)}
	p := newPipeline(s.commit, 1<<20)
	var rec recorder
	if err := p.submit(req(0, rec.done(0))); err != nil {
		t.Fatal(err)
	}
	<-s.entered // flush 1 (request 0) is committing
	for i := 1; i <= 50; i++ {
		if err := p.submit(req(i, rec.done(i))); err != nil {
			t.Fatal(err)
		}
	}
	s.block <- struct{}{} // flush 1 done
	<-s.entered
	s.block <- struct{}{} // flush 2
	rec.wait.Wait()
	p.close()
	if len(s.flushes) != 2 || len(s.flushes[0]) != 1 || len(s.flushes[1]) != 50 {
		t.Fatalf("flushes %v", s.flushes)
	}
}

// A failed commit fails every request of its flush and every request after
// it; nothing after the failure is acknowledged.
func TestPipelineFailureLatches(t *testing.T) {
	boom := errors.New("fsync failed")
	s := &seam{fail: boom, block: make(chan struct{}), entered: make(chan struct{}, 10)}
	p := newPipeline(s.commit, 1<<20)
	var rec recorder
	_ = p.submit(req(0, rec.done(0)))
	<-s.entered
	_ = p.submit(req(1, rec.done(1)))
	_ = p.submit(req(2, rec.done(2)))
	s.block <- struct{}{}
	// Requests queued behind the failed flush fail without being committed.
	rec.wait.Wait()
	if len(s.flushes) != 1 {
		t.Fatalf("committed again after a failure: %v", s.flushes)
	}
	for _, c := range rec.got {
		if !errors.Is(c.err, ErrFailed) || !errors.Is(c.err, boom) {
			t.Fatalf("completion %+v", c)
		}
	}
	if err := p.submit(req(3, nil)); !errors.Is(err, ErrFailed) {
		t.Fatalf("submit after failure: %v", err)
	}
	p.close()
}

// A request refused alone does not affect the others of its flush.
func TestPipelineRefusesOneRequest(t *testing.T) {
	s := &seam{refuse: map[int]bool{1: true}, block: make(chan struct{}), entered: make(chan struct{}, 10)}
	p := newPipeline(s.commit, 1<<20)
	var rec recorder
	_ = p.submit(req(9, rec.done(9)))
	<-s.entered
	for i := 0; i < 3; i++ {
		_ = p.submit(req(i, rec.done(i)))
	}
	s.block <- struct{}{}
	<-s.entered
	s.block <- struct{}{}
	rec.wait.Wait()
	p.close()
	for _, c := range rec.got {
		if (c.err != nil) != (c.id == 1) {
			t.Fatalf("completion %+v", c)
		}
	}
}

// A flush gathers at most maxFlushBytes (at least one request).
func TestPipelineBoundsFlushes(t *testing.T) {
	s := &seam{block: make(chan struct{}), entered: make(chan struct{}, 100)}
	one := req(0, nil).approxSize()
	p := newPipeline(s.commit, 3*one)
	var rec recorder
	_ = p.submit(req(100, rec.done(100)))
	<-s.entered
	for i := 0; i < 10; i++ {
		_ = p.submit(req(i, rec.done(i)))
	}
	// Release flush 1, then the four flushes the ten requests need.
	go func() {
		for range 4 {
			s.block <- struct{}{}
			<-s.entered
		}
		s.block <- struct{}{}
	}()
	rec.wait.Wait()
	p.close()
	for i, f := range s.flushes {
		if len(f) > 3 {
			t.Fatalf("flush %d carried %d requests", i, len(f))
		}
	}
	if len(s.flushes) != 5 {
		t.Fatalf("flushes %v", s.flushes)
	}
}

// close flushes what is queued, then refuses new requests.
func TestPipelineCloseDrains(t *testing.T) {
	s := &seam{}
	p := newPipeline(s.commit, 1<<20)
	var rec recorder
	for i := 0; i < 10; i++ {
		_ = p.submit(req(i, rec.done(i)))
	}
	p.close()
	rec.wait.Wait()
	if len(rec.got) != 10 {
		t.Fatalf("%d completions", len(rec.got))
	}
	if err := p.submit(req(11, nil)); !errors.Is(err, ErrClosed) {
		t.Fatalf("submit after close: %v", err)
	}
}
