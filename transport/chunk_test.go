package transport

import (
	"bytes"
	"errors"
	"testing"

	"github.com/shardd/shardd/raftpb"
)

func TestChunkRoundTrip(t *testing.T) {
	data := []byte("0123456789")
	c, err := parseChunk(dataFrame(42, data))
	if err != nil || c.kind != chunkData || c.offset != 42 || !bytes.Equal(c.payload, data) {
		t.Fatalf("data: %+v, %v", c, err)
	}
	c, err = parseChunk(endFrame(data))
	if err != nil || c.kind != chunkEnd || c.size != 10 || c.crc == 0 {
		t.Fatalf("end: %+v, %v", c, err)
	}
	c, err = parseChunk(beginFrame(snapMsg(1, 2), 99))
	if err != nil || c.kind != chunkBegin || c.size != 99 || len(c.payload) == 0 {
		t.Fatalf("begin: %+v, %v", c, err)
	}
	bad := [][]byte{nil, {chunkData}, {chunkEnd, 1, 2}, {chunkBegin, 0}, {'Z', 0, 0}, append(endFrame(data), 0)}
	flipped := dataFrame(0, data)
	flipped[len(flipped)-1] ^= 0x80
	bad = append(bad, flipped)
	for _, b := range bad {
		if _, err := parseChunk(b); !errors.Is(err, errBadChunk) {
			t.Errorf("parseChunk(%x) = %v, want errBadChunk", b, err)
		}
	}
}

func TestBufferPool(t *testing.T) {
	p := newBufferPool(4 << 20)
	for _, n := range []int{1, 4096, 4097, 1 << 20, 4 << 20, 4<<20 + 1} {
		b := p.Get(n)
		if len(*b) != n || cap(*b) < n {
			t.Fatalf("Get(%d): len %d cap %d", n, len(*b), cap(*b))
		}
		p.Put(b)
	}
	b := p.Get(5000)
	if cap(*b) != 8192 {
		t.Fatalf("Get(5000) has capacity %d, want the 8 KiB tier", cap(*b))
	}
}

// Fuzz the snapshot chunk decoder: any input gives a chunk or an error
// wrapping errBadChunk, and a chunk re-encodes to the frame it came from
// (one encoding per chunk: nothing in a frame goes unchecked or unread).
func FuzzParseChunk(f *testing.F) {
	for _, b := range chunkSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseChunk(b)
		if err != nil {
			if !errors.Is(err, errBadChunk) {
				t.Fatalf("error %v does not wrap errBadChunk", err)
			}
			return
		}
		if c.kind == chunkData && len(b) != chunkHeaderBytes+len(c.payload) {
			t.Fatalf("data chunk of %d bytes has %d of payload", len(b), len(c.payload))
		}
		var enc []byte
		switch c.kind {
		case chunkBegin:
			enc = appendBegin(nil, c.size, c.payload)
		case chunkData:
			enc = make([]byte, chunkHeaderBytes+len(c.payload))
			copy(enc[chunkHeaderBytes:], c.payload)
			putDataHeader(enc, c.offset)
		case chunkEnd:
			enc = appendEnd(nil, c.size, c.crc)
		default:
			t.Fatalf("parsed a chunk of kind %#x", c.kind)
		}
		if !bytes.Equal(enc, b) {
			t.Fatalf("frame %x parses to %+v, which encodes as %x", b, c, enc)
		}
	})
}

// chunkSeeds are FuzzParseChunk's seeds, also committed under
// testdata/fuzz/FuzzParseChunk.
func chunkSeeds() [][]byte {
	badCRC := dataFrame(0, []byte("0123456789"))
	badCRC[len(badCRC)-1] ^= 0x80
	return [][]byte{
		dataFrame(3, []byte("abc")),
		endFrame([]byte("abc")),
		beginFrame(snapMsg(1, 2), 3),
		{},
		dataFrame(1<<40, nil),
		badCRC,
		append(endFrame([]byte("abc")), 0),
		{chunkBegin, 0, 0},
		{chunkOK},
	}
}

// Fuzz the receiver's frame check: any input is delivered, a ping, or an
// error; whatever is delivered is addressed from the stream's peer to us.
func FuzzDecodeFrame(f *testing.F) {
	tr := &GRPC{cfg: Config{ClusterID: testClusterID}, self: 1}
	for _, b := range frameSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, ping, err := tr.decodeFrame(b, 2)
		if err != nil {
			return
		}
		if ping && len(msgs) != 0 {
			t.Fatal("a ping with messages")
		}
		for _, m := range msgs {
			if m.From != 2 || m.To != 1 || m.Type == raftpb.MsgSnap || !m.Type.Valid() {
				t.Fatalf("delivered %v", m)
			}
		}
	})
}

// frameSeeds are FuzzDecodeFrame's seeds (frames on a stream from node 2
// to node 1), also committed under testdata/fuzz/FuzzDecodeFrame.
func frameSeeds() [][]byte {
	hb := raftpb.Batch{ClusterID: testClusterID, From: 2, To: 1,
		Messages:   []raftpb.Message{app(2, 1, 1, 1, []byte("x"))},
		Heartbeats: []raftpb.Heartbeat{{Shard: 3, Term: 1}}}
	coalesced := raftpb.Batch{ClusterID: testClusterID, From: 2, To: 1,
		Heartbeats: []raftpb.Heartbeat{{Shard: 3, Term: 2, Commit: 5}, {Shard: 4, Term: 7, Response: true}}}
	foreign := raftpb.Batch{ClusterID: testClusterID + 1, From: 2, To: 1, Messages: []raftpb.Message{app(2, 1, 1, 1, nil)}}
	snap := raftpb.Batch{ClusterID: testClusterID, From: 2, To: 1, Messages: []raftpb.Message{snapMsg(2, 1)}}
	return [][]byte{
		hb.MarshalAppend(nil),
		(&raftpb.Batch{ClusterID: testClusterID, From: 2, To: 1}).MarshalAppend(nil),
		{0xff},
		coalesced.MarshalAppend(nil),
		foreign.MarshalAppend(nil),
		snap.MarshalAppend(nil),
	}
}
