package kv

import (
	"encoding/binary"

	"github.com/shardd/shardd/batchio"
)

// Key layout in the node's Pebble store. Everything lives under
// batchio.StateMachinePrefix ('m'), which batchio never reads or deletes,
// then "kv", then either nothing (the layout record) or the shard id,
// big-endian, and a one-byte kind:
//
//	'm' "kv"                          -> layout version (1 byte)
//	'm' "kv" | shard u64 | 'a'        -> last applied index (u64 BE)
//	'm' "kv" | shard u64 | 'd' | key  -> value
//	'm' "kv" | shard u64 | 'r'        -> empty: a snapshot recovery is under way
//
// The kind byte keeps user keys ('d' | key, at least 2 bytes after the
// shard id) apart from the two one-byte records, and makes a shard's data
// the contiguous range ['d', 'e') after its shard prefix, so a snapshot is
// one iterator and a recovery one DeleteRange. The layout record, 3 bytes
// long, sorts before every shard's keys (at least 12 bytes).
const (
	kindApplied  = 'a'
	kindData     = 'd'
	kindRecovery = 'r'

	shardPrefixLen = 3 + 8
)

// layoutKey holds the layout version of the whole kv keyspace.
var layoutKey = []byte{batchio.StateMachinePrefix, 'k', 'v'}

// layoutVersion is the layout above.
const layoutVersion = 1

// shardKeys builds the keys of one shard. Its methods allocate; dataKey
// reuses a buffer and is for the single-threaded Update and Recover paths.
type shardKeys struct {
	prefix   [shardPrefixLen]byte
	applied  []byte
	recovery []byte
	// dataStart and dataEnd bound the shard's data: [dataStart, dataEnd).
	dataStart, dataEnd []byte
}

func newShardKeys(shardID uint64) *shardKeys {
	k := &shardKeys{}
	copy(k.prefix[:], layoutKey)
	binary.BigEndian.PutUint64(k.prefix[3:], shardID)
	k.applied = k.withKind(kindApplied)
	k.recovery = k.withKind(kindRecovery)
	k.dataStart = k.withKind(kindData)
	k.dataEnd = k.withKind(kindData + 1)
	return k
}

func (k *shardKeys) withKind(kind byte) []byte {
	b := make([]byte, shardPrefixLen+1)
	copy(b, k.prefix[:])
	b[shardPrefixLen] = kind
	return b
}

// appendDataKey appends the store key of user key to buf.
func (k *shardKeys) appendDataKey(buf, key []byte) []byte {
	buf = append(buf, k.prefix[:]...)
	buf = append(buf, kindData)
	return append(buf, key...)
}

// userKey strips the data prefix off a store key of this shard's data
// range.
func userKey(storeKey []byte) []byte { return storeKey[shardPrefixLen+1:] }
