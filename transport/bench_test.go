package transport

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardd/shardd/raftpb"
)

// countingHandler counts messages and keeps nothing.
type countingHandler struct{ n atomic.Int64 }

func (h *countingHandler) HandleMessages(_ raftpb.NodeID, msgs []raftpb.Message) {
	h.n.Add(int64(len(msgs)))
}
func (h *countingHandler) NodeUnreachable(raftpb.NodeID) {}
func (h *countingHandler) NodeReachable(raftpb.NodeID)   {}
func (h *countingHandler) SnapshotSink(raftpb.Message, int64) (SnapshotSink, error) {
	return nil, errInjected
}

// BenchmarkSend sends small Raft messages (a MsgApp with one 34-byte
// entry, about 64 bytes encoded) from one node to another over loopback
// gRPC, one Send call per message, spread over 1, 100 or 10000 shards. One
// op is one message delivered to the receiving handler; allocations count
// both sides (sender, gRPC, receiver's decoding). The sender keeps at most
// 32Ki messages in flight so the bounded queue never drops.
func BenchmarkSend(b *testing.B) {
	for _, shards := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("shards=%d", shards), func(b *testing.B) { benchSend(b, shards) })
	}
}

func benchSend(b *testing.B, shards int) {
	const inflight = 32 << 10
	c := newCluster(b, 2, nil)
	c.connect(1)
	tr := c.node(1).tr
	// Replace node 2's handler by a counter: restart it with one.
	c.stop(2)
	h := &countingHandler{}
	cfg := c.testConfig(2, listenAgain(b, c.peers[2]), h)
	tr2, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer tr2.Close()
	waitFor(b, 10*time.Second, "stream to the new receiver", func() bool {
		tr.Send([]raftpb.Message{app(1, 2, 1, 1, nil)})
		time.Sleep(time.Millisecond)
		return h.n.Load() > 0
	})
	// One entry slice shared by every message: the benchmark measures the
	// transport, not the making of messages.
	m := app(1, 2, 1, 1, make([]byte, 34))
	one := make([]raftpb.Message, 1)
	base := h.n.Load()
	before := tr.Stats()

	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		m.Shard, m.Index, m.Commit = raftpb.ShardID(i%shards+1), raftpb.Index(i/shards+1), raftpb.Index(i/shards)
		one[0] = m
		tr.Send(one)
		if i%256 == 0 {
			for int64(i)-(h.n.Load()-base) > inflight {
				time.Sleep(20 * time.Microsecond)
			}
		}
	}
	for h.n.Load()-base < int64(b.N) {
		if tr.Stats().Dropped != before.Dropped {
			b.Fatalf("dropped %d messages", tr.Stats().Dropped-before.Dropped)
		}
		time.Sleep(20 * time.Microsecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()

	st := tr.Stats()
	frames := st.FramesSent - before.FramesSent
	wire := st.BytesSent - before.BytesSent
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(wire)/elapsed.Seconds(), "bytes/s")
	b.ReportMetric(float64(wire)/float64(b.N), "wire-bytes/msg")
	b.ReportMetric(float64(b.N)/float64(max(frames, 1)), "msgs/frame")
}
