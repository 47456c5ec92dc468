package transport

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

// bufferPool is a mem.BufferPool of byte slices whose capacities are powers
// of two from minPooledBytes up to the largest frame. Unlike gRPC's default
// pool it does not zero what it hands out: every byte of a frame is
// written before it is sent.
//
// Buffers at or below gRPC's pooling threshold (1 KiB) would be wrapped by
// mem.NewBuffer as plain slices and never come back, so even the smallest
// frame takes a minPooledBytes buffer.
type bufferPool struct {
	tiers []sync.Pool // tiers[i] holds *[]byte of capacity minPooledBytes << i
}

const (
	minPooledShift = 12
	minPooledBytes = 1 << minPooledShift // 4 KiB
)

// newBufferPool returns a pool for buffers up to maxBytes; larger requests
// are allocated and left to the garbage collector.
func newBufferPool(maxBytes int) *bufferPool {
	n := 1
	for minPooledBytes<<(n-1) < maxBytes {
		n++
	}
	return &bufferPool{tiers: make([]sync.Pool, n)}
}

// tier returns the index of the smallest tier holding n bytes, or -1.
func (p *bufferPool) tier(n int) int {
	if n <= minPooledBytes {
		return 0
	}
	i := bits.Len(uint(n-1)) - minPooledShift
	if i >= len(p.tiers) {
		return -1
	}
	return i
}

// Get returns a buffer of length n.
func (p *bufferPool) Get(n int) *[]byte {
	i := p.tier(n)
	if i < 0 {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p.tiers[i].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, minPooledBytes<<i)
	return &b
}

// Put returns a buffer obtained from Get (or a prefix of it).
func (p *bufferPool) Put(b *[]byte) {
	c := cap(*b)
	i := p.tier(c)
	if i < 0 || minPooledBytes<<i != c {
		return // not one of ours
	}
	*b = (*b)[:0]
	p.tiers[i].Put(b)
}

// buffer wraps b for gRPC: one reference, returned to p when gRPC frees it.
func (p *bufferPool) buffer(b *[]byte) mem.Buffer { return mem.NewBuffer(b, p) }
