package batchio

import "github.com/shardd/shardd/raftpb"

// The entry cache keeps the most recently written entries of every shard,
// bounded in bytes across all shards. Leaders catching followers up at line
// rate, and every replica applying what it just wrote, read from it instead
// of Pebble.
//
// Each shard caches one contiguous run of entries that always ends at its
// last durable index (every write extends or replaces the tail; eviction
// only trims the front). So a read whose first index is cached is entirely
// cached. Age order across shards is kept by a queue of write segments;
// eviction pops the oldest and trims that shard's front up to it.
//
// Only the writer goroutine changes the cache (holding the shard's lock);
// readers hold the shard's read lock. Slices handed to readers are never
// written into: truncation copies.

type cacheSegment struct {
	st   *shardState
	upto raftpb.Index
}

type entryCache struct {
	maxBytes int64
	bytes    int64
	segs     []cacheSegment // oldest first, from head
	head     int
}

// add caches ents (just made durable) for st.
// REQUIRES: st.mu held for writing; ents contiguous, non-empty.
func (c *entryCache) add(st *shardState, ents []raftpb.Entry) {
	if c.maxBytes <= 0 {
		return
	}
	from := ents[0].Index
	n := len(st.cache)
	switch {
	case n > 0 && from == st.cache[n-1].Index+1:
		st.cache = append(st.cache, ents...)
	case n > 0 && from > st.cache[0].Index && from <= st.cache[n-1].Index:
		keep := st.cache[:from-st.cache[0].Index]
		c.drop(st, st.cache[len(keep):])
		st.cache = append(append(make([]raftpb.Entry, 0, len(keep)+len(ents)), keep...), ents...)
	default:
		c.drop(st, st.cache)
		st.cache = append([]raftpb.Entry(nil), ents...)
	}
	b := int64(raftpb.EntriesSize(ents))
	st.cacheBytes += b
	c.bytes += b
	c.segs = append(c.segs, cacheSegment{st: st, upto: ents[len(ents)-1].Index})
}

// drop accounts for cached entries leaving the cache.
func (c *entryCache) drop(st *shardState, ents []raftpb.Entry) {
	b := int64(raftpb.EntriesSize(ents))
	st.cacheBytes -= b
	c.bytes -= b
}

// trimTo drops st's cached entries up to and including i.
// REQUIRES: st.mu held for writing.
func (c *entryCache) trimTo(st *shardState, i raftpb.Index) {
	if len(st.cache) == 0 || i < st.cache[0].Index {
		return
	}
	k := int(min(i+1-st.cache[0].Index, raftpb.Index(len(st.cache))))
	c.drop(st, st.cache[:k])
	st.cache = st.cache[k:]
	if len(st.cache) == 0 {
		st.cache = nil
	}
}

// clear drops everything st caches. REQUIRES: st.mu held for writing.
func (c *entryCache) clear(st *shardState) {
	c.drop(st, st.cache)
	st.cache = nil
}

// evict trims the oldest segments until the cache is within its bound.
// Called by the writer after a flush, without any shard lock held.
func (c *entryCache) evict() {
	for c.bytes > c.maxBytes && c.head < len(c.segs) {
		seg := c.segs[c.head]
		c.segs[c.head] = cacheSegment{}
		c.head++
		seg.st.mu.Lock()
		c.trimTo(seg.st, seg.upto)
		seg.st.mu.Unlock()
	}
	// Compact the segment queue once its dead head dominates.
	if c.head > 1024 && c.head*2 > len(c.segs) {
		c.segs = append(c.segs[:0], c.segs[c.head:]...)
		c.head = 0
	}
}

// get returns the cached entries [lo, hi) within maxBytes (at least one),
// or ok=false if lo is not cached. REQUIRES: st.mu held.
func (c *entryCache) get(st *shardState, lo, hi raftpb.Index, maxBytes uint64) ([]raftpb.Entry, bool) {
	n := len(st.cache)
	if n == 0 || lo < st.cache[0].Index || hi > st.cache[n-1].Index+1 {
		return nil, false
	}
	off := st.cache[0].Index
	ents := st.cache[lo-off : hi-off : hi-off]
	return limitSize(ents, maxBytes), true
}

// term returns the cached term of i.
func (c *entryCache) term(st *shardState, i raftpb.Index) (raftpb.Term, bool) {
	n := len(st.cache)
	if n == 0 || i < st.cache[0].Index || i > st.cache[n-1].Index {
		return 0, false
	}
	return st.cache[i-st.cache[0].Index].Term, true
}

// limitSize keeps the longest prefix of ents within maxBytes, and at least
// one entry.
func limitSize(ents []raftpb.Entry, maxBytes uint64) []raftpb.Entry {
	if len(ents) == 0 {
		return ents
	}
	size := ents[0].SizeBytes()
	n := 1
	for ; n < len(ents); n++ {
		size += ents[n].SizeBytes()
		if size > maxBytes {
			break
		}
	}
	return ents[:n:n]
}
