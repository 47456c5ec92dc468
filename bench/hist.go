package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// A histogram of latencies in nanoseconds, log-bucketed as HDR histograms
// are: values below 2^subBits have a bucket each, and every power of two
// above is cut into 2^subBits buckets, so a bucket's width is at most
// 1/64 (1.6%) of its values. Counters are atomic: many clients record
// into one histogram; histStripes spreads them over several to keep the
// cache lines apart.
const (
	subBits    = 6
	subBuckets = 1 << subBits
	numBuckets = (64 - subBits + 1) << subBits
)

type histogram struct {
	counts [numBuckets]atomic.Uint64
	max    atomic.Int64
}

// bucketOf maps a value to its bucket; buckets are ordered by value.
func bucketOf(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	l := bits.Len64(v) // > subBits
	shift := l - subBits - 1
	m := v >> shift // in [subBuckets, 2*subBuckets)
	return (l-subBits)<<subBits + int(m) - subBuckets
}

// bucketRange returns the values [low, high] of bucket i.
func bucketRange(i int) (low, high uint64) {
	block := i >> subBits
	if block == 0 {
		return uint64(i), uint64(i)
	}
	shift := block - 1
	m := uint64(i&(subBuckets-1)) + subBuckets
	low = m << shift
	return low, low + (1 << shift) - 1
}

func (h *histogram) record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucketOf(uint64(v))].Add(1)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// histStripes is the number of histograms a hist spreads clients over.
const histStripes = 16

// hist is a striped histogram: client i records into stripe i%histStripes.
type hist struct{ s [histStripes]histogram }

func (h *hist) record(client int, d time.Duration) { h.s[client%histStripes].record(d) }

// snapshot merges the stripes.
func (h *hist) snapshot() *histSnapshot {
	out := &histSnapshot{}
	for i := range h.s {
		out.add(&h.s[i])
	}
	return out
}

// histSnapshot is a merged, plain copy of histograms.
type histSnapshot struct {
	counts [numBuckets]uint64
	total  uint64
	max    int64
}

func (s *histSnapshot) add(h *histogram) {
	for i := range h.counts {
		c := h.counts[i].Load()
		s.counts[i] += c
		s.total += c
	}
	s.max = max(s.max, h.max.Load())
}

func (s *histSnapshot) merge(o *histSnapshot) {
	for i := range o.counts {
		s.counts[i] += o.counts[i]
	}
	s.total += o.total
	s.max = max(s.max, o.max)
}

// quantile returns the value at quantile q in [0, 1]: the middle of the
// bucket holding it, never above the largest value recorded.
func (s *histSnapshot) quantile(q float64) time.Duration {
	if s.total == 0 {
		return 0
	}
	if q >= 1 {
		return time.Duration(s.max)
	}
	rank := uint64(q * float64(s.total))
	if rank >= s.total {
		rank = s.total - 1
	}
	var seen uint64
	for i, c := range s.counts {
		seen += c
		if seen > rank {
			low, high := bucketRange(i)
			return time.Duration(min(int64(low+(high-low)/2), s.max))
		}
	}
	return time.Duration(s.max)
}
