package engine

import (
	"errors"
	"fmt"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/shard"
)

// Errors callers can test with errors.Is / errors.As.
var (
	// ErrShardNotFound: this node hosts no replica of the shard.
	ErrShardNotFound = errors.New("engine: shard not found")
	// ErrShardExists: StartShard for a shard this node already hosts.
	ErrShardExists = errors.New("engine: shard exists")
	// ErrClosed: the node is closed (or the replica stopped with it).
	ErrClosed = errors.New("engine: node closed")
	// ErrBusy: the shard's proposal queue is full; back off and retry.
	ErrBusy = shard.ErrBusy
	// ErrMembershipChangeInProgress: another membership change is not yet
	// applied (or the leader refused the change).
	ErrMembershipChangeInProgress = group.ErrMembershipChangeInProgress
	// ErrResultUnknown: leadership changed after the proposal was handed to
	// Raft; it may or may not be applied.
	ErrResultUnknown = shard.ErrResultUnknown
	// ErrIdentity: the data dir belongs to another cluster id or node id.
	ErrIdentity = errors.New("engine: data dir belongs to another cluster or node")
)

// NotLeaderError is returned where a request cannot be forwarded to the
// leader; LeaderID is the leader if known (0 otherwise).
type NotLeaderError struct{ LeaderID uint64 }

func (e *NotLeaderError) Error() string {
	return fmt.Sprintf("engine: not leader (leader %d)", e.LeaderID)
}

// mapError turns replica-level outcomes into the engine's documented
// errors.
func mapError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, shard.ErrStopped):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	case errors.Is(err, shard.ErrRejected):
		return fmt.Errorf("%w: %w", ErrMembershipChangeInProgress, err)
	}
	return err
}
