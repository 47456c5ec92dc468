package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Frames of the snapshot stream. They are not protobuf: a data chunk is
// laid out so that the sender reads snapshot data straight into the frame
// buffer after a fixed-size header, with no copy and no length prefix to
// know in advance. Integers are big-endian.
//
//	begin  'B' | size u64 | raftpb.Batch (cluster, from, to, the one MsgSnap)
//	data   'D' | offset u64 | crc32c(data) u32 | data
//	end    'E' | size u64 | crc32c(all data) u32
//
// A stream is one begin, data chunks at increasing offsets covering
// exactly size bytes, and one end; the receiver answers with one 'K' frame
// when the snapshot is verified and committed, and with an error status
// otherwise.
const (
	chunkBegin byte = 'B'
	chunkData  byte = 'D'
	chunkEnd   byte = 'E'
	chunkOK    byte = 'K'

	chunkHeaderBytes = 1 + 8 + 4 // of a data chunk
	chunkEndBytes    = 1 + 8 + 4
	chunkBeginFixed  = 1 + 8
)

// castagnoli is the CRC-32C table; the polynomial has hardware support on
// common CPUs.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errBadChunk is wrapped by every error decoding a snapshot frame.
var errBadChunk = errors.New("transport: malformed snapshot chunk")

// chunk is a decoded snapshot frame. payload aliases the frame.
type chunk struct {
	kind    byte
	size    uint64 // begin, end
	offset  uint64 // data
	crc     uint32 // data, end
	payload []byte // begin: the encoded Batch; data: the data
}

// parseChunk decodes a snapshot frame. It checks the layout and a data
// chunk's checksum; the sequence is the receiver's to check.
func parseChunk(b []byte) (chunk, error) {
	if len(b) == 0 {
		return chunk{}, fmt.Errorf("%w: empty frame", errBadChunk)
	}
	c := chunk{kind: b[0]}
	switch c.kind {
	case chunkBegin:
		if len(b) < chunkBeginFixed {
			return chunk{}, fmt.Errorf("%w: begin frame of %d bytes", errBadChunk, len(b))
		}
		c.size = binary.BigEndian.Uint64(b[1:])
		c.payload = b[chunkBeginFixed:]
	case chunkData:
		if len(b) < chunkHeaderBytes {
			return chunk{}, fmt.Errorf("%w: data frame of %d bytes", errBadChunk, len(b))
		}
		c.offset = binary.BigEndian.Uint64(b[1:])
		c.crc = binary.BigEndian.Uint32(b[9:])
		c.payload = b[chunkHeaderBytes:]
		if got := crc32.Checksum(c.payload, castagnoli); got != c.crc {
			return chunk{}, fmt.Errorf("%w: data at offset %d: checksum %08x, frame says %08x",
				errBadChunk, c.offset, got, c.crc)
		}
	case chunkEnd:
		if len(b) != chunkEndBytes {
			return chunk{}, fmt.Errorf("%w: end frame of %d bytes", errBadChunk, len(b))
		}
		c.size = binary.BigEndian.Uint64(b[1:])
		c.crc = binary.BigEndian.Uint32(b[9:])
	default:
		return chunk{}, fmt.Errorf("%w: unknown kind %#x", errBadChunk, c.kind)
	}
	return c, nil
}

// appendBegin appends a begin frame.
func appendBegin(b []byte, size uint64, batch []byte) []byte {
	b = append(b, chunkBegin)
	b = binary.BigEndian.AppendUint64(b, size)
	return append(b, batch...)
}

// putDataHeader writes a data chunk's header into b[:chunkHeaderBytes];
// the data follows it in b.
func putDataHeader(b []byte, offset uint64) {
	b[0] = chunkData
	binary.BigEndian.PutUint64(b[1:], offset)
	binary.BigEndian.PutUint32(b[9:], crc32.Checksum(b[chunkHeaderBytes:], castagnoli))
}

// appendEnd appends an end frame.
func appendEnd(b []byte, size uint64, crc uint32) []byte {
	b = append(b, chunkEnd)
	b = binary.BigEndian.AppendUint64(b, size)
	return binary.BigEndian.AppendUint32(b, crc)
}
