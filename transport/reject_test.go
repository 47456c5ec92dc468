package transport

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shardd/shardd/raftpb"
)

// rawStream opens a stream to addr the way a peer would, but claiming
// whatever identity the test wants (none when id is nil).
func rawStream(t *testing.T, addr string, id *identity, desc *grpc.StreamDesc, method string) grpc.ClientStream {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(frameCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(func() {
		cancel()
		conn.Close()
	})
	if id != nil {
		ctx = id.outgoing(ctx)
	}
	cs, err := conn.NewStream(ctx, desc, method)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// sendRaw sends frames on cs, closes its side, and returns the status the
// server ended the stream with.
func sendRaw(cs grpc.ClientStream, frames ...[]byte) error {
	for _, f := range frames {
		if err := cs.SendMsg(&outFrame{data: frameSlice(f)}); err != nil {
			break // the server ended the stream; RecvMsg says why
		}
	}
	cs.CloseSend()
	var in inFrame
	for {
		if err := cs.RecvMsg(&in); err != nil {
			return err
		}
	}
}

func encodeBatch(b raftpb.Batch) []byte { return b.MarshalAppend(nil) }

// Streams and frames that are foreign, misaddressed, malformed or too
// large are refused with a status saying why, counted, and the stream is
// closed; the handler never sees them and the node keeps serving.
func TestRejectBadInput(t *testing.T) {
	const maxFrame = 64 << 10
	c := newCluster(t, 2, func(cfg *Config) { cfg.MaxFrameBytes = maxFrame })
	n1 := c.node(1)
	good := identity{cluster: testClusterID, from: 2, to: 1}
	header := raftpb.Batch{ClusterID: testClusterID, From: 2, To: 1}
	valid := header
	valid.Messages = []raftpb.Message{app(2, 1, 1, 1, []byte("x"))}
	validFrame := encodeBatch(valid)

	withMsg := func(m raftpb.Message) []byte {
		b := header
		b.Messages = []raftpb.Message{m}
		return encodeBatch(b)
	}
	garbage := make([]byte, 512)
	rand.Read(garbage)
	garbage[0] = 0xff // an invalid field number: never valid protobuf

	toOther := app(2, 3, 1, 1, nil)
	fromOther := app(3, 1, 1, 1, nil)
	snap := raftpb.Message{Type: raftpb.MsgSnap, From: 2, To: 1, Shard: 1, Snapshot: &raftpb.SnapshotMeta{Index: 5}}
	otherCluster := header
	otherCluster.ClusterID = 99
	otherFrom := header
	otherFrom.From = 3

	cases := []struct {
		name   string
		id     *identity
		frames [][]byte
		code   codes.Code
	}{
		{"no handshake", nil, nil, codes.InvalidArgument},
		{"wrong cluster", &identity{cluster: 99, from: 2, to: 1}, nil, codes.FailedPrecondition},
		{"unknown node", &identity{cluster: testClusterID, from: 9, to: 1}, nil, codes.PermissionDenied},
		{"addressed to another node", &identity{cluster: testClusterID, from: 2, to: 3}, nil, codes.FailedPrecondition},
		{"frame of another cluster", &good, [][]byte{encodeBatch(otherCluster)}, codes.InvalidArgument},
		{"frame from another node", &good, [][]byte{encodeBatch(otherFrom)}, codes.InvalidArgument},
		{"message to another node", &good, [][]byte{withMsg(toOther)}, codes.InvalidArgument},
		{"message from another node", &good, [][]byte{withMsg(fromOther)}, codes.InvalidArgument},
		{"MsgSnap without data", &good, [][]byte{withMsg(snap)}, codes.InvalidArgument},
		{"garbage", &good, [][]byte{garbage}, codes.InvalidArgument},
		{"truncated frame", &good, [][]byte{validFrame[:len(validFrame)-3]}, codes.InvalidArgument},
		{"oversized frame", &good, [][]byte{make([]byte, maxFrame+1)}, codes.ResourceExhausted},
		{"bad frame after a good one", &good, [][]byte{validFrame, garbage}, codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := n1.tr.Stats().Rejected
			got := n1.h.received()
			cs := rawStream(t, n1.addr, tc.id, raftStreamDesc, raftMethod)
			err := sendRaw(cs, tc.frames...)
			if status.Code(err) != tc.code {
				t.Fatalf("stream ended with %v, want code %v", err, tc.code)
			}
			if d := n1.tr.Stats().Rejected - before; d != 1 {
				t.Fatalf("Rejected grew by %d, want 1", d)
			}
			want := got
			if len(tc.frames) > 1 {
				want++ // the good frame before the bad one was delivered
			}
			if r := n1.h.received(); r != want {
				t.Fatalf("handler received %d messages, want %d", r, want)
			}
		})
	}

	// The harness can deliver: a valid frame on a raw stream arrives.
	cs := rawStream(t, n1.addr, &good, raftStreamDesc, raftMethod)
	before := n1.h.received()
	if err := cs.SendMsg(&outFrame{data: frameSlice(validFrame)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a valid raw frame", func() bool { return n1.h.received() == before+1 })

	// And the real peer still gets through.
	c.connect(2)
	before = n1.h.received()
	c.node(2).tr.Send([]raftpb.Message{app(2, 1, 1, 1, []byte("y"))})
	waitFor(t, 5*time.Second, "the real peer's message", func() bool { return n1.h.received() == before+1 })
}

// A pong that is not an empty frame from the peer breaks the stream and
// is counted.
func TestRejectBadPong(t *testing.T) {
	c := newCluster(t, 2, nil)
	tr := c.node(1).tr
	bad := [][]byte{
		encodeBatch(raftpb.Batch{ClusterID: 99, From: 2, To: 1}),
		encodeBatch(raftpb.Batch{ClusterID: testClusterID, From: 2, To: 1, Heartbeats: []raftpb.Heartbeat{{Shard: 1}}}),
		{0xff, 0x01},
	}
	for _, b := range bad {
		if err := tr.checkPong(b, 2); err == nil {
			t.Fatalf("pong %x accepted", b)
		}
	}
	if err := tr.checkPong(encodeBatch(raftpb.Batch{ClusterID: testClusterID, From: 2, To: 1}), 2); err != nil {
		t.Fatal(err)
	}
}

// A node configured with another cluster id is refused at the handshake:
// the receiver counts it and hands nothing on.
func TestRejectWrongClusterPeer(t *testing.T) {
	c := newCluster(t, 2, nil)
	c.stop(2)
	lis := listenAgain(t, c.peers[2])
	h := &recorder{}
	cfg := c.testConfig(2, lis, h)
	cfg.ClusterID = 99
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	n1 := c.node(1)
	deadline := time.Now().Add(3 * time.Second)
	for n1.tr.Stats().Rejected < 2 && time.Now().Before(deadline) {
		tr.Send([]raftpb.Message{app(2, 1, 1, 1, nil)})
		time.Sleep(5 * time.Millisecond)
	}
	if r := n1.tr.Stats().Rejected; r < 2 {
		t.Fatalf("Rejected = %d after repeated attempts from another cluster", r)
	}
	if r := n1.h.received(); r != 0 {
		t.Fatalf("handler received %d messages from another cluster", r)
	}
	if st := tr.Stats(); st.MessagesSent != 0 {
		t.Fatalf("foreign node sent %d messages", st.MessagesSent)
	}
}
