package shard

import (
	"errors"
	"sync"

	"github.com/shardd/shardd/raftpb"
)

var (
	// ErrResultUnknown is the outcome of a proposal whose fate cannot be
	// known: leadership changed after it was handed to Raft and it was not
	// applied before the new leader's first entry; it may still be applied
	// later (a delayed forward) or never.
	ErrResultUnknown = errors.New("shard: proposal outcome unknown")
	// ErrBusy is returned when the replica's proposal queue is full: back
	// off and retry.
	ErrBusy = errors.New("shard: busy")
	// ErrStopped is returned for requests to a stopped replica.
	ErrStopped = errors.New("shard: replica stopped")
	// ErrRejected is the outcome of a membership change the leader refused
	// (another change was in progress, or it was invalid).
	ErrRejected = errors.New("shard: membership change rejected")
)

// Proposal is a command (or membership change) waiting to be applied on
// this replica.
type Proposal struct {
	// owner's outstanding count is released once when the proposal
	// completes (nil: not counted).
	owner *Replica
	key   uint64
	cmd   []byte
	cc    *raftpb.ConfChange
	term  raftpb.Term // the replica's term when the proposal entered Raft
	// expires is the replica's tick count after which a proposal forwarded
	// to the leader is given up as ErrResultUnknown (0: not forwarded).
	expires uint64
	// appended: a forwarded proposal seen in this replica's log (it no
	// longer expires).
	appended bool

	once   sync.Once
	done   chan struct{}
	result Result
	err    error
}

func newProposal(key uint64, cmd []byte, cc *raftpb.ConfChange) *Proposal {
	return &Proposal{key: key, cmd: cmd, cc: cc, done: make(chan struct{})}
}

// Done is closed when the proposal has an outcome.
func (p *Proposal) Done() <-chan struct{} { return p.done }

// Result returns the outcome. REQUIRES: Done closed.
func (p *Proposal) Result() (Result, error) { return p.result, p.err }

func (p *Proposal) complete(r Result, err error) {
	p.once.Do(func() {
		p.result, p.err = r, err
		if p.owner != nil {
			p.owner.outstanding.Add(-1)
		}
		close(p.done)
	})
}

// ReadRequest is a linearizable read waiting for its read index to be
// applied. When Done is closed with a nil error, the state machine holds
// everything committed before the read began.
type ReadRequest struct {
	once sync.Once
	done chan struct{}
	err  error
}

// Done is closed when the read may run (or failed).
func (r *ReadRequest) Done() <-chan struct{} { return r.done }

// Err is the read's error. REQUIRES: Done closed.
func (r *ReadRequest) Err() error { return r.err }

func (r *ReadRequest) complete(err error) {
	r.once.Do(func() {
		r.err = err
		close(r.done)
	})
}

// readBatch is the reads that share one ReadIndex round.
type readBatch struct {
	id    uint64
	index raftpb.Index
	reads []*ReadRequest
}
