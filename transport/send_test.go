package transport

import (
	"fmt"
	"testing"
	"time"

	"github.com/shardd/shardd/raftpb"
)

// Messages of one stream arrive complete, once each, in the order sent,
// whether sent one per call or many per call.
func TestOrderedDelivery(t *testing.T) {
	c := newCluster(t, 2, nil)
	c.connect(1)
	n1, n2 := c.node(1), c.node(2)
	const shards, perShard = 8, 500
	// Odd rounds go as one Send call per round, even rounds one message
	// per call.
	for i := 1; i <= perShard; i++ {
		var round []raftpb.Message
		for s := raftpb.ShardID(1); s <= shards; s++ {
			m := app(1, 2, s, raftpb.Index(i), []byte(fmt.Sprintf("s%d-i%d", s, i)))
			if i%2 == 0 {
				n1.tr.Send([]raftpb.Message{m})
			} else {
				round = append(round, m)
			}
		}
		n1.tr.Send(round)
	}
	waitFor(t, 10*time.Second, "all messages", func() bool { return n2.h.received() == shards*perShard })

	next := map[raftpb.ShardID]raftpb.Index{}
	for _, m := range n2.h.messages() {
		want := next[m.Shard] + 1
		if m.Type != raftpb.MsgApp || m.From != 1 || m.To != 2 || len(m.Entries) != 1 {
			t.Fatalf("unexpected message %v", m)
		}
		if got := m.Entries[0].Index; got != want {
			t.Fatalf("shard %d: got index %d, want %d (out of order or lost)", m.Shard, got, want)
		}
		if got, want := string(m.Entries[0].Data), fmt.Sprintf("s%d-i%d", m.Shard, want); got != want {
			t.Fatalf("shard %d: data %q, want %q", m.Shard, got, want)
		}
		next[m.Shard] = want
	}
	st := n1.tr.Stats()
	if st.MessagesSent != shards*perShard || st.Dropped != 0 {
		t.Fatalf("sender stats %+v", st)
	}
	if r := n2.h.received(); r != shards*perShard {
		t.Fatalf("received %d messages, want %d (duplicates?)", r, shards*perShard)
	}
}

// Under load the send loop packs many messages into each frame: there is
// no timer, frames grow while the previous one is written.
func TestBatchingUnderLoad(t *testing.T) {
	c := newCluster(t, 2, nil)
	c.connect(1)
	n1, n2 := c.node(1), c.node(2)
	const total = 40000
	data := make([]byte, 16)
	one := make([]raftpb.Message, 1)
	for i := 1; i <= total; i++ {
		one[0] = app(1, 2, raftpb.ShardID(i%100), raftpb.Index(i), data)
		n1.tr.Send(one)
	}
	waitFor(t, 20*time.Second, "all messages", func() bool {
		st := n1.tr.Stats()
		return uint64(n2.h.received())+st.Dropped == total && st.MessagesSent+st.Dropped == total
	})
	st := n1.tr.Stats()
	if st.Dropped != 0 {
		t.Fatalf("dropped %d of %d with a queue of %d", st.Dropped, total, DefaultSendQueueMessages)
	}
	if st.FramesSent >= st.MessagesSent {
		t.Fatalf("no batching: %d frames for %d messages", st.FramesSent, st.MessagesSent)
	}
	r := n2.tr.Stats()
	if r.FramesReceived != st.FramesSent || r.MessagesReceived != total || r.BytesReceived != st.BytesSent {
		t.Fatalf("receiver %+v disagrees with sender %+v", r, st)
	}
	t.Logf("%d messages in %d frames (%.1f per frame)", st.MessagesSent, st.FramesSent,
		float64(st.MessagesSent)/float64(st.FramesSent))
}

// A tick's heartbeats for 1000 shards to one node travel as one frame of
// compact records and arrive, expanded, in one HandleMessages call; with
// two peers, one frame each.
func TestHeartbeatsCoalesced(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.connect(1)
	n1 := c.node(1)
	before := n1.tr.Stats()
	const shards = 1000
	msgs := make([]raftpb.Message, 0, 2*shards+1)
	for s := raftpb.ShardID(1); s <= shards; s++ {
		msgs = append(msgs, heartbeat(1, 2, s), heartbeat(1, 3, s))
	}
	// A response travels coalesced too, and a non-coalescable heartbeat
	// (it carries an index) travels as a message in the same frame.
	resp := heartbeat(1, 2, shards+1)
	resp.Type = raftpb.MsgHeartbeatResp
	odd := heartbeat(1, 2, shards+2)
	odd.Index = 4
	msgs = append(msgs, resp, odd)
	n1.tr.Send(msgs)

	for _, to := range []raftpb.NodeID{2, 3} {
		want := shards
		if to == 2 {
			want += 2
		}
		h := c.node(to).h
		waitFor(t, 10*time.Second, "heartbeats", func() bool { return h.received() == want })
		h.mu.Lock()
		calls := h.calls
		h.mu.Unlock()
		if len(calls) != 1 || len(calls[0]) != want {
			t.Fatalf("node %d: %d HandleMessages calls, want 1 with %d messages", to, len(calls), want)
		}
		byShard := map[raftpb.ShardID]raftpb.Message{}
		for _, m := range calls[0] {
			byShard[m.Shard] = m
		}
		for s := raftpb.ShardID(1); s <= shards; s++ {
			if got, want := byShard[s], heartbeat(1, to, s); got.Type != want.Type || got.Term != want.Term ||
				got.Commit != want.Commit || got.Context != want.Context || got.From != 1 || got.To != to {
				t.Fatalf("node %d shard %d: got %v, want %v", to, s, got, want)
			}
		}
		if to == 2 {
			if m := byShard[shards+1]; m.Type != raftpb.MsgHeartbeatResp {
				t.Fatalf("response arrived as %v", m)
			}
			if m := byShard[shards+2]; m.Type != raftpb.MsgHeartbeat || m.Index != 4 {
				t.Fatalf("non-coalescable heartbeat arrived as %v", m)
			}
		}
	}
	after := n1.tr.Stats()
	if got := after.FramesSent - before.FramesSent; got != 2 {
		t.Fatalf("sent %d frames for one tick of heartbeats to 2 peers, want 2", got)
	}
	if got := after.HeartbeatsCoalesced - before.HeartbeatsCoalesced; got != 2*shards+1 {
		t.Fatalf("coalesced %d heartbeats, want %d", got, 2*shards+1)
	}
}

// A peer that never comes up cannot make its queue grow: beyond the bound,
// Send drops and counts; and once it is unreachable, everything is dropped.
func TestSendQueueBounded(t *testing.T) {
	c := newCluster(t, 2, func(cfg *Config) {
		cfg.SendQueueMessages = 100
		cfg.MissedPings = 1000 // keep the peer "reachable" for this test
	})
	c.stop(2)
	n1 := c.node(1)
	// Wait until the stream to 2 has failed at least once, so that the
	// queue is not being drained by a live stream.
	waitFor(t, 5*time.Second, "a failed dial", func() bool { return n1.tr.peers[2].breaker.Tripped() })
	const total = 1000
	msgs := make([]raftpb.Message, total)
	for i := range msgs {
		msgs[i] = app(1, 2, 1, raftpb.Index(i+1), nil)
	}
	n1.tr.Send(msgs)
	st := n1.tr.Stats()
	if st.Dropped < total-100 {
		t.Fatalf("dropped %d of %d with a queue of 100", st.Dropped, total)
	}
	if ps := n1.tr.PeerStats(); len(ps) != 1 || ps[0].Node != 2 || ps[0].Dropped != st.Dropped {
		t.Fatalf("peer stats %+v, stats %+v", ps, st)
	}
}

// Messages the receiver would refuse (and so would poison a frame) are
// dropped at Send; so are messages to unknown nodes and after Close.
func TestSendDropsInvalid(t *testing.T) {
	c := newCluster(t, 2, nil)
	c.connect(1)
	n1, n2 := c.node(1), c.node(2)
	good := app(1, 2, 1, 1, []byte("ok"))
	wrongFrom := app(3, 2, 1, 1, nil)
	snap := raftpb.Message{Type: raftpb.MsgSnap, From: 1, To: 2, Shard: 1, Snapshot: &raftpb.SnapshotMeta{Index: 1}}
	invalid := raftpb.Message{Type: raftpb.MsgInvalid, From: 1, To: 2}
	unknown := app(1, 9, 1, 1, nil)
	self := app(1, 1, 1, 1, nil)
	n1.tr.Send([]raftpb.Message{wrongFrom, snap, good, invalid, unknown, self})
	waitFor(t, 5*time.Second, "the valid message", func() bool { return n2.h.received() == 1 })
	if st := n1.tr.Stats(); st.Dropped != 5 || st.MessagesSent != 1 {
		t.Fatalf("stats %+v, want 5 dropped and 1 sent", st)
	}
	if got := n2.h.messages()[0]; string(got.Entries[0].Data) != "ok" {
		t.Fatalf("received %v", got)
	}
	if st := n2.tr.Stats(); st.Rejected != 0 {
		t.Fatalf("receiver rejected %d frames", st.Rejected)
	}
}

// After Close, Send drops and SendSnapshot reports ErrClosed at once;
// Close is idempotent.
func TestClose(t *testing.T) {
	c := newCluster(t, 2, nil)
	tr := c.node(1).tr
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	tr.Send([]raftpb.Message{app(1, 2, 1, 1, nil)})
	if st := tr.Stats(); st.Dropped != 1 {
		t.Fatalf("send after close: %+v", st)
	}
	var got error
	tr.SendSnapshot(raftpb.Message{Type: raftpb.MsgSnap, From: 1, To: 2}, nil, func(err error) { got = err })
	if got != ErrClosed {
		t.Fatalf("SendSnapshot after Close: %v", got)
	}
}
