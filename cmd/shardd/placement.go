package main

import (
	"encoding/binary"
	"hash/fnv"
	"sort"
)

// Placement maps keys to shards and shards to nodes. Every node computes
// the same answers from the same flags: keys by a stable hash, replicas by
// rendezvous (highest random weight) hashing over node ids, so adding a
// node moves only the shards it wins.
type placement struct {
	shards   uint64
	replicas int
	nodes    []uint64 // sorted
}

func newPlacement(shards uint64, replicas int, nodes []uint64) placement {
	ns := append([]uint64(nil), nodes...)
	sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
	if replicas > len(ns) {
		replicas = len(ns)
	}
	return placement{shards: shards, replicas: replicas, nodes: ns}
}

// shardOf is the shard holding key: 1 + FNV-1a(key) mod shards.
func (p placement) shardOf(key []byte) uint64 {
	h := fnv.New64a()
	h.Write(key)
	return 1 + h.Sum64()%p.shards
}

// weight is the rendezvous weight of node for shard: a mix of both ids
// that does not depend on anything else.
func weight(shard, node uint64) uint64 {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], shard)
	binary.BigEndian.PutUint64(b[8:], node)
	h := fnv.New64a()
	h.Write(b[:])
	x := h.Sum64()
	// A final avalanche so that neighbouring ids spread well.
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	return x
}

// replicasOf returns the nodes hosting shard, sorted by id.
func (p placement) replicasOf(shard uint64) []uint64 {
	type nw struct{ node, w uint64 }
	ws := make([]nw, len(p.nodes))
	for i, n := range p.nodes {
		ws[i] = nw{n, weight(shard, n)}
	}
	sort.Slice(ws, func(i, j int) bool {
		if ws[i].w != ws[j].w {
			return ws[i].w > ws[j].w
		}
		return ws[i].node < ws[j].node
	})
	out := make([]uint64, p.replicas)
	for i := range out {
		out[i] = ws[i].node
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// hosts reports whether node hosts shard.
func (p placement) hosts(shard, node uint64) bool {
	for _, n := range p.replicasOf(shard) {
		if n == node {
			return true
		}
	}
	return false
}
