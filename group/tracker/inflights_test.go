package tracker

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/shardd/shardd/raftpb"
)

// window lists the recorded (index, bytes) pairs oldest first, walking the
// ring the way Add and FreeLE do.
func window(in *Inflights) []inflight {
	var out []inflight
	for i := range in.count {
		p := in.start + i
		if p >= in.maxCount {
			p -= in.maxCount
		}
		out = append(out, in.buf[p])
	}
	return out
}

// checkWindow compares in with the expected contents, count and bytes.
func checkWindow(t *testing.T, in *Inflights, want ...inflight) {
	t.Helper()
	got := window(in)
	if !slices.Equal(got, want) {
		t.Fatalf("window = %v, want %v", got, want)
	}
	var bytes uint64
	for _, f := range want {
		bytes += f.bytes
	}
	if in.Count() != len(want) || in.Bytes() != bytes {
		t.Fatalf("Count()=%d Bytes()=%d, want %d and %d", in.Count(), in.Bytes(), len(want), bytes)
	}
}

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Fatalf("%s did not panic", what)
		}
	}()
	f()
}

func TestInflightsFullByCount(t *testing.T) {
	in := NewInflights(3, 0)
	if in.Full() {
		t.Fatal("empty window is full")
	}
	in.Add(1, 100)
	in.Add(2, 100)
	if in.Full() {
		t.Fatal("window of 2/3 is full")
	}
	in.Add(3, 1<<40) // no byte bound: size does not matter
	if !in.Full() {
		t.Fatal("window of 3/3 is not full")
	}
	checkWindow(t, in, inflight{1, 100}, inflight{2, 100}, inflight{3, 1 << 40})
	mustPanic(t, "Add on a full window", func() { in.Add(4, 1) })
	// The failed Add changed nothing.
	checkWindow(t, in, inflight{1, 100}, inflight{2, 100}, inflight{3, 1 << 40})

	in.FreeLE(1)
	if in.Full() {
		t.Fatal("window still full after a free")
	}
}

func TestInflightsFullByBytes(t *testing.T) {
	in := NewInflights(10, 250)
	in.Add(1, 100)
	in.Add(2, 100)
	if in.Full() {
		t.Fatal("200/250 bytes is full")
	}
	// One message may overshoot the bound; the window is then full.
	in.Add(3, 100)
	if !in.Full() {
		t.Fatal("300/250 bytes is not full")
	}
	mustPanic(t, "Add on a byte-full window", func() { in.Add(4, 0) })
	in.FreeLE(1)
	if in.Full() || in.Bytes() != 200 {
		t.Fatalf("after FreeLE(1): Full()=%v Bytes()=%d", in.Full(), in.Bytes())
	}
	// Exactly the bound is full.
	in.Add(4, 50)
	if !in.Full() || in.Bytes() != 250 {
		t.Fatalf("at 250/250: Full()=%v Bytes()=%d", in.Full(), in.Bytes())
	}
	in.FreeLE(4)
	checkWindow(t, in)
}

func TestInflightsWrapAround(t *testing.T) {
	in := NewInflights(4, 0)
	for i := raftpb.Index(1); i <= 4; i++ {
		in.Add(i, uint64(i))
	}
	in.FreeLE(2)
	if in.start != 2 {
		t.Fatalf("start = %d after freeing two, want 2", in.start)
	}
	// These land at ring positions 0 and 1.
	in.Add(5, 5)
	in.Add(6, 6)
	if !in.Full() {
		t.Fatal("wrapped window of 4/4 not full")
	}
	checkWindow(t, in, inflight{3, 3}, inflight{4, 4}, inflight{5, 5}, inflight{6, 6})
	if in.buf[0].index != 5 || in.buf[1].index != 6 {
		t.Fatalf("buf = %v: 5 and 6 did not wrap to the front", in.buf)
	}
	// Freeing across the wrap point.
	in.FreeLE(5)
	checkWindow(t, in, inflight{6, 6})
	if in.start != 1 {
		t.Fatalf("start = %d, want 1", in.start)
	}
	in.FreeLE(6)
	checkWindow(t, in)
	if in.start != 0 {
		t.Fatalf("start = %d after emptying, want 0", in.start)
	}
}

func TestInflightsFreeLE(t *testing.T) {
	in := NewInflights(10, 0)
	in.FreeLE(100) // on an empty window: nothing to do
	checkWindow(t, in)
	for _, i := range []raftpb.Index{10, 20, 30, 40} {
		in.Add(i, uint64(i))
	}
	in.FreeLE(5) // below the oldest
	checkWindow(t, in, inflight{10, 10}, inflight{20, 20}, inflight{30, 30}, inflight{40, 40})
	in.FreeLE(25) // between two messages
	checkWindow(t, in, inflight{30, 30}, inflight{40, 40})
	in.FreeLE(29) // a stale acknowledgement
	checkWindow(t, in, inflight{30, 30}, inflight{40, 40})
	in.FreeLE(30) // exactly a message's index
	checkWindow(t, in, inflight{40, 40})
	in.FreeLE(1000)
	checkWindow(t, in)
}

func TestInflightsFreeFirstOne(t *testing.T) {
	in := NewInflights(3, 0)
	in.FreeFirstOne() // empty: no-op
	checkWindow(t, in)
	in.Add(1, 1)
	in.Add(2, 2)
	in.Add(3, 3)
	in.FreeFirstOne()
	checkWindow(t, in, inflight{2, 2}, inflight{3, 3})
	in.Add(4, 4) // wraps
	in.FreeFirstOne()
	in.FreeFirstOne()
	checkWindow(t, in, inflight{4, 4})
	in.FreeFirstOne()
	checkWindow(t, in)
}

func TestInflightsReset(t *testing.T) {
	in := NewInflights(3, 10)
	in.Add(1, 2)
	in.Add(2, 2)
	in.FreeLE(1) // the window no longer starts at the ring's front
	in.Add(3, 9)
	if !in.Full() || in.start == 0 {
		t.Fatalf("11/10 bytes: Full()=%v start=%d", in.Full(), in.start)
	}
	in.Reset()
	checkWindow(t, in)
	if in.Full() || in.start != 0 {
		t.Fatalf("after Reset: Full()=%v start=%d", in.Full(), in.start)
	}
	in.Add(7, 1)
	checkWindow(t, in, inflight{7, 1})
}

// The ring grows by doubling and never beyond maxCount, so a follower that
// only ever has a message or two in flight costs a small buffer.
func TestInflightsGrowth(t *testing.T) {
	in := NewInflights(5, 0)
	if len(in.buf) != 0 {
		t.Fatalf("new window has a buffer of %d", len(in.buf))
	}
	want := []int{1, 2, 4, 4, 5}
	for i := range 5 {
		in.Add(raftpb.Index(i+1), 1)
		if len(in.buf) != want[i] {
			t.Fatalf("after %d adds len(buf) = %d, want %d", i+1, len(in.buf), want[i])
		}
	}
	// A steady one-in-flight pattern stays at the small buffer.
	small := NewInflights(1000, 0)
	for i := range raftpb.Index(100) {
		small.Add(i+1, 1)
		small.FreeLE(i + 1)
	}
	if len(small.buf) != 1 {
		t.Fatalf("one-in-flight window grew to %d", len(small.buf))
	}
}

// Growing while the window does not start at the ring's front must keep
// the messages in order.
func TestInflightsGrowWithOffset(t *testing.T) {
	in := NewInflights(8, 0)
	in.Add(1, 1)
	in.Add(2, 2) // buf is 2
	in.FreeLE(1) // start = 1
	in.Add(3, 3) // position 2: grows to 4
	in.Add(4, 4)
	in.Add(5, 5) // position 4: grows to 8
	checkWindow(t, in, inflight{2, 2}, inflight{3, 3}, inflight{4, 4}, inflight{5, 5})
	if len(in.buf) != 8 {
		t.Fatalf("len(buf) = %d, want 8", len(in.buf))
	}
}

func TestInflightsClone(t *testing.T) {
	in := NewInflights(4, 100)
	in.Add(1, 10)
	in.Add(2, 20)
	c := in.Clone()
	checkWindow(t, c, inflight{1, 10}, inflight{2, 20})

	c.Add(3, 30)
	c.FreeLE(1)
	checkWindow(t, in, inflight{1, 10}, inflight{2, 20})
	checkWindow(t, c, inflight{2, 20}, inflight{3, 30})

	in.Reset()
	in.Add(9, 90)
	checkWindow(t, c, inflight{2, 20}, inflight{3, 30})

	empty := NewInflights(2, 0).Clone()
	empty.Add(1, 1)
	checkWindow(t, empty, inflight{1, 1})
}

func TestInflightsZeroCountAlwaysFull(t *testing.T) {
	in := NewInflights(0, 0)
	if !in.Full() {
		t.Fatal("window of 0 messages is not full")
	}
	mustPanic(t, "Add to a window of 0 messages", func() { in.Add(1, 0) })
}

// TestInflightsRandom runs random operations against a plain slice model,
// covering wrap-around at every ring size and growth at every offset.
func TestInflightsRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for round := range 300 {
		maxCount := 1 + rng.IntN(9)
		var maxBytes uint64
		if rng.IntN(2) == 0 {
			maxBytes = uint64(1 + rng.IntN(50))
		}
		in := NewInflights(maxCount, maxBytes)
		var model []inflight
		var modelBytes uint64
		next := raftpb.Index(1)
		for step := range 200 {
			modelFull := len(model) == maxCount || (maxBytes != 0 && modelBytes >= maxBytes)
			if in.Full() != modelFull {
				t.Fatalf("round %d step %d: Full()=%v, model %v (%v)", round, step, in.Full(), modelFull, model)
			}
			switch op := rng.IntN(10); {
			case op < 5:
				if modelFull {
					continue
				}
				b := uint64(rng.IntN(10))
				in.Add(next, b)
				model = append(model, inflight{next, b})
				modelBytes += b
				next += raftpb.Index(1 + rng.IntN(3))
			case op < 8:
				to := next - min(next, raftpb.Index(rng.IntN(8)))
				in.FreeLE(to)
				for len(model) > 0 && model[0].index <= to {
					modelBytes -= model[0].bytes
					model = model[1:]
				}
			case op < 9:
				in.FreeFirstOne()
				if len(model) > 0 {
					modelBytes -= model[0].bytes
					model = model[1:]
				}
			default:
				in.Reset()
				model, modelBytes = nil, 0
			}
			if got := window(in); !slices.Equal(got, model) || in.Bytes() != modelBytes || in.Count() != len(model) {
				t.Fatalf("round %d step %d: window %v (%d bytes), model %v (%d bytes)",
					round, step, got, in.Bytes(), model, modelBytes)
			}
			if len(in.buf) > maxCount {
				t.Fatalf("round %d: buffer grew to %d > %d", round, len(in.buf), maxCount)
			}
		}
	}
}
