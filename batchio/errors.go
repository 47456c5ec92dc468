package batchio

import (
	"errors"
	"fmt"

	"github.com/shardd/shardd/raftpb"
)

var (
	// ErrClosed is returned by every call after Close.
	ErrClosed = errors.New("batchio: store closed")
	// ErrFailed is returned once a write has failed (an fsync error, say):
	// whether that write is durable is unknown, so the store refuses every
	// further write and the node must restart from disk.
	ErrFailed = errors.New("batchio: store failed; restart from disk")
	// ErrUnknownShard is returned for a shard the store holds no replica of.
	ErrUnknownShard = errors.New("batchio: unknown shard")
	// ErrShardExists is returned when creating a replica that exists.
	ErrShardExists = errors.New("batchio: shard exists")
	// ErrInvalidUpdate is returned for a request that cannot be applied (a
	// gap in the log, a compaction past the snapshot, ...). Nothing of the
	// request is written; other requests of the same flush are unaffected.
	ErrInvalidUpdate = errors.New("batchio: invalid update")
	// ErrCorrupt is wrapped by every CorruptionError.
	ErrCorrupt = errors.New("batchio: corrupt record")
)

// CorruptionError reports a stored record that fails validation: a bad
// checksum, an undecodable value, a key holding another index, a missing
// entry inside the log. It names the shard and, for log entries, the index.
type CorruptionError struct {
	Shard  raftpb.ShardID
	Index  raftpb.Index // 0 for records other than log entries
	Record string       // "log entry", "hard state", "snapshot record", "replica record"
	Err    error
}

func (e *CorruptionError) Error() string {
	if e.Index != 0 || e.Record == "log entry" {
		return fmt.Sprintf("batchio: shard %d index %d: corrupt %s: %v", e.Shard, e.Index, e.Record, e.Err)
	}
	return fmt.Sprintf("batchio: shard %d: corrupt %s: %v", e.Shard, e.Record, e.Err)
}

// Unwrap lets errors.Is match ErrCorrupt and the cause.
func (e *CorruptionError) Unwrap() []error { return []error{ErrCorrupt, e.Err} }

func corrupt(shard raftpb.ShardID, index raftpb.Index, record string, err error) error {
	return &CorruptionError{Shard: shard, Index: index, Record: record, Err: err}
}

func invalidUpdate(shard raftpb.ShardID, format string, args ...any) error {
	return fmt.Errorf("%w: shard %d: %s", ErrInvalidUpdate, shard, fmt.Sprintf(format, args...))
}
