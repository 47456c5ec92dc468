package engine

import (
	"encoding/binary"
)

// encodeShardSettings keeps a shard's settings in its replica record, so a
// restart uses them.
func encodeShardSettings(sc ShardConfig) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, sc.SnapshotEvery)
	binary.BigEndian.PutUint64(b[8:], sc.CompactionLag)
	return b
}

func decodeShardSettings(b []byte) ShardConfig {
	var sc ShardConfig
	if len(b) >= 16 {
		sc.SnapshotEvery = binary.BigEndian.Uint64(b)
		sc.CompactionLag = binary.BigEndian.Uint64(b[8:])
	}
	return sc
}
