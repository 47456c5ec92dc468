package batchio

import (
	"encoding/binary"

	"github.com/shardd/shardd/raftpb"
)

// Key layout (DESIGN.md, "Storage"): a kind byte, then the shard id and, for
// log entries, the index, both big-endian so that one shard's log is one
// contiguous, ordered key range.
//
//	'l' | shard | index  -> entry
//	'h' | shard          -> hard state
//	's' | shard          -> latest snapshot record
//	'r' | shard          -> replica record (membership, truncation point)
//
// Other kinds are free for state machines that share the store (see
// StateMachinePrefix).
const (
	kindLog       = 'l'
	kindHardState = 'h'
	kindSnapshot  = 's'
	kindReplica   = 'r'
	// StateMachinePrefix starts every key a co-located state machine writes
	// into the node's store; batchio never reads or deletes under it.
	StateMachinePrefix = 'm'
)

const (
	shardKeyLen = 1 + 8
	logKeyLen   = 1 + 8 + 8
)

func shardKey(kind byte, shard raftpb.ShardID) []byte {
	k := make([]byte, shardKeyLen)
	putShardKey(k, kind, shard)
	return k
}

func putShardKey(k []byte, kind byte, shard raftpb.ShardID) {
	k[0] = kind
	binary.BigEndian.PutUint64(k[1:], uint64(shard))
}

func putLogKey(k []byte, shard raftpb.ShardID, index raftpb.Index) {
	k[0] = kindLog
	binary.BigEndian.PutUint64(k[1:], uint64(shard))
	binary.BigEndian.PutUint64(k[9:], uint64(index))
}

func logKey(shard raftpb.ShardID, index raftpb.Index) []byte {
	k := make([]byte, logKeyLen)
	putLogKey(k, shard, index)
	return k
}

// logSpan is the key range holding every log entry of shard.
func logSpan(shard raftpb.ShardID) (start, end []byte) {
	start = shardKey(kindLog, shard)
	end = shardKey(kindLog, shard+1)
	if shard+1 == 0 {
		end = []byte{kindLog + 1}
	}
	return start, end
}

// parseLogKey returns the shard and index of a log key.
func parseLogKey(k []byte) (raftpb.ShardID, raftpb.Index, bool) {
	if len(k) != logKeyLen || k[0] != kindLog {
		return 0, 0, false
	}
	return raftpb.ShardID(binary.BigEndian.Uint64(k[1:])), raftpb.Index(binary.BigEndian.Uint64(k[9:])), true
}

func parseShardKey(k []byte, kind byte) (raftpb.ShardID, bool) {
	if len(k) != shardKeyLen || k[0] != kind {
		return 0, false
	}
	return raftpb.ShardID(binary.BigEndian.Uint64(k[1:])), true
}
