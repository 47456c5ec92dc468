package transport

import (
	"bytes"
	"hash/crc32"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardd/shardd/raftpb"
)

// beginFrame is a begin frame announcing m with size bytes.
func beginFrame(m raftpb.Message, size uint64) []byte {
	b := raftpb.Batch{ClusterID: testClusterID, From: m.From, To: m.To, Messages: []raftpb.Message{m}}
	return appendBegin(nil, size, b.MarshalAppend(nil))
}

// dataFrame is a data chunk of data at offset.
func dataFrame(offset uint64, data []byte) []byte {
	b := make([]byte, chunkHeaderBytes+len(data))
	copy(b[chunkHeaderBytes:], data)
	putDataHeader(b, offset)
	return b
}

// endFrame is the end frame of data.
func endFrame(data []byte) []byte {
	return appendEnd(nil, uint64(len(data)), crc32.Checksum(data, castagnoli))
}

// Malformed, truncated, reordered, oversized or corrupt snapshot streams
// are refused with a status, counted, the sink (if opened) aborted, and
// nothing is handed on; a well-formed one on the same harness succeeds.
// S27 (wrong offsets and sizes refused), S28 (size cap before allocation).
func TestSnapshotRejectBadChunks(t *testing.T) {
	c := newCluster(t, 2, func(cfg *Config) { cfg.MaxSnapshotBytes = 1 << 20 })
	n1 := c.node(1)
	good := identity{cluster: testClusterID, from: 2, to: 1}
	m := snapMsg(2, 1)
	data := bytes.Repeat([]byte("snapshot-data-"), 1000)
	half := len(data) / 2
	begin := beginFrame(m, uint64(len(data)))
	d1, d2 := dataFrame(0, data[:half]), dataFrame(uint64(half), data[half:])
	end := endFrame(data)

	corrupt := bytes.Clone(d2)
	corrupt[len(corrupt)-1] ^= 1
	wrongEnd := bytes.Clone(end)
	wrongEnd[len(wrongEnd)-1] ^= 1
	notSnap := app(2, 1, 1, 1, nil)
	badBegin := beginFrame(notSnap, uint64(len(data)))
	toOther := snapMsg(2, 3)
	otherBegin := beginFrame(toOther, 10)

	cases := []struct {
		name   string
		id     identity
		frames [][]byte
		code   codes.Code
		sink   bool // a sink is opened before the failure
	}{
		{"bad chunk checksum", good, [][]byte{begin, d1, corrupt, end}, codes.DataLoss, true},
		{"truncated (no end)", good, [][]byte{begin, d1}, codes.DataLoss, true},
		{"gap", good, [][]byte{begin, d2, end}, codes.DataLoss, true},
		{"duplicate chunk", good, [][]byte{begin, d1, d1, d2, end}, codes.DataLoss, true},
		{"more than announced", good, [][]byte{begin, d1, d2, dataFrame(uint64(len(data)), []byte("x")), end}, codes.DataLoss, true},
		{"short of announced", good, [][]byte{begin, d1, endFrame(data[:half])}, codes.DataLoss, true},
		{"wrong total checksum", good, [][]byte{begin, d1, d2, wrongEnd}, codes.DataLoss, true},
		{"garbage chunk", good, [][]byte{begin, {0x00, 0x01, 0x02}}, codes.DataLoss, true},
		{"truncated chunk header", good, [][]byte{begin, d1[:5]}, codes.DataLoss, true},
		{"second begin", good, [][]byte{begin, begin}, codes.InvalidArgument, true},
		{"oversized announcement", good, [][]byte{beginFrame(m, 2<<20)}, codes.InvalidArgument, false},
		{"not a MsgSnap", good, [][]byte{badBegin}, codes.InvalidArgument, false},
		{"addressed to another node", good, [][]byte{otherBegin}, codes.InvalidArgument, false},
		{"data before begin", good, [][]byte{d1}, codes.InvalidArgument, false},
		{"foreign cluster", identity{cluster: 99, from: 2, to: 1}, [][]byte{begin}, codes.FailedPrecondition, false},
		{"unknown node", identity{cluster: testClusterID, from: 7, to: 1}, [][]byte{begin}, codes.PermissionDenied, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rejected := n1.tr.Stats().Rejected
			sinks := len(n1.h.sinkList())
			cs := rawStream(t, n1.addr, &tc.id, snapshotStreamDesc, snapshotMethod)
			if err := sendRaw(cs, tc.frames...); status.Code(err) != tc.code {
				t.Fatalf("stream ended with %v, want code %v", err, tc.code)
			}
			if d := n1.tr.Stats().Rejected - rejected; d != 1 {
				t.Fatalf("Rejected grew by %d, want 1", d)
			}
			opened := n1.h.sinkList()[sinks:]
			if (len(opened) == 1) != tc.sink || len(opened) > 1 {
				t.Fatalf("%d sinks opened, want one: %v", len(opened), tc.sink)
			}
			for _, s := range opened {
				if _, _, committed, aborted := s.state(); committed || !aborted {
					t.Fatalf("sink committed %v, aborted %v", committed, aborted)
				}
			}
			if r := n1.h.received(); r != 0 {
				t.Fatalf("%d messages handed on", r)
			}
		})
	}

	// Control: the well-formed stream is accepted, committed, delivered.
	cs := rawStream(t, n1.addr, &good, snapshotStreamDesc, snapshotMethod)
	for _, f := range [][]byte{begin, d1, d2, end} {
		if err := cs.SendMsg(&outFrame{data: frameSlice(f)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var reply inFrame
	if err := cs.RecvMsg(&reply); err != nil || !bytes.Equal(reply.data, []byte{chunkOK}) {
		t.Fatalf("valid snapshot: reply %q, %v", reply.data, err)
	}
	sinks := n1.h.sinkList()
	if n, crc, committed, _ := sinks[len(sinks)-1].state(); n != int64(len(data)) || crc != crc32.Checksum(data, castagnoli) || !committed {
		t.Fatalf("valid snapshot: sink has %d bytes, committed %v", n, committed)
	}
	checkSnapDelivered(t, n1.h, m)
}
