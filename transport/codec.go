package transport

import (
	"fmt"

	"google.golang.org/grpc/mem"
)

// codecName is the content subtype of our streams. Both sides force the
// codec (grpc.ForceServerCodecV2, grpc.ForceCodecV2), so it is never looked
// up in gRPC's global registry and nothing is registered at init.
const codecName = "shardd-frame"

// frameCodec passes frames through gRPC untouched: a frame is already in
// its wire form (raftpb's protobuf encoding of a Batch, or a snapshot
// chunk), so encoding it again as a protobuf bytes message would only copy
// it.
type frameCodec struct{}

// outFrame is a frame to send. Its buffers' references pass to gRPC, which
// frees them (returning pooled memory to the pool) once written to the
// socket, possibly after SendMsg has returned: that is why a frame is
// encoded into a pooled buffer rather than into one buffer reused in place.
type outFrame struct {
	data mem.BufferSlice
}

// inFrame receives one frame. Each frame normally gets its own allocation,
// because decoded entries alias it (raftpb decoding does not copy) and the
// handler keeps them. With reuse set, a frame overwrites the previous one:
// snapshot chunks are written to the sink before the next is read, so a
// transfer needs one chunk of memory whatever its size.
type inFrame struct {
	data  []byte
	reuse bool
}

// Marshal hands the frame's buffers to gRPC.
func (frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*outFrame)
	if !ok {
		return nil, fmt.Errorf("transport: cannot marshal %T", v)
	}
	data := f.data
	f.data = nil // the reference is gRPC's now
	return data, nil
}

// Unmarshal copies the frame out of gRPC's buffers, which are freed as
// soon as it returns.
func (frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*inFrame)
	if !ok {
		return fmt.Errorf("transport: cannot unmarshal into %T", v)
	}
	n := data.Len()
	if f.reuse && cap(f.data) >= n {
		f.data = f.data[:n]
	} else {
		f.data = make([]byte, n)
	}
	data.CopyTo(f.data)
	return nil
}

// Name returns the content subtype.
func (frameCodec) Name() string { return codecName }

// frameSlice wraps an immutable frame (a ping or pong, encoded once) for
// sending; gRPC's free is a no-op on it.
func frameSlice(b []byte) mem.BufferSlice { return mem.BufferSlice{mem.SliceBuffer(b)} }
