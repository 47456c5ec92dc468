package engine

import (
	"sync"

	"github.com/shardd/shardd/raftpb"
	"github.com/shardd/shardd/shard"
)

// eventQueue calls the user's EventListener from one dedicated goroutine,
// never from a worker: workers append to a queue and go on.
type eventQueue struct {
	l      EventListener
	mu     sync.Mutex
	cond   sync.Cond
	queue  []func(EventListener)
	closed bool
	done   chan struct{}
}

var _ shard.Events = (*eventQueue)(nil)

func newEventQueue(l EventListener) *eventQueue {
	q := &eventQueue{l: l, done: make(chan struct{})}
	q.cond.L = &q.mu
	return q
}

func (q *eventQueue) start() {
	if q.l == nil {
		close(q.done)
		return
	}
	go q.run()
}

func (q *eventQueue) run() {
	defer close(q.done)
	for {
		q.mu.Lock()
		for len(q.queue) == 0 && !q.closed {
			q.cond.Wait()
		}
		batch := q.queue
		q.queue = nil
		closed := q.closed
		q.mu.Unlock()
		for _, f := range batch {
			f(q.l)
		}
		if closed {
			return
		}
	}
}

func (q *eventQueue) push(f func(EventListener)) {
	if q.l == nil {
		return
	}
	q.mu.Lock()
	if !q.closed {
		q.queue = append(q.queue, f)
		q.cond.Signal()
	}
	q.mu.Unlock()
}

// close delivers what is queued and stops the goroutine.
func (q *eventQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Signal()
	q.mu.Unlock()
	<-q.done
}

// LeaderChanged implements shard.Events.
func (q *eventQueue) LeaderChanged(s raftpb.ShardID, lead raftpb.NodeID, term raftpb.Term) {
	q.push(func(l EventListener) { l.LeaderChanged(uint64(s), uint64(lead), uint64(term)) })
}

// MembershipChanged implements shard.Events.
func (q *eventQueue) MembershipChanged(s raftpb.ShardID, cs raftpb.ConfState) {
	voters, learners := fromNodeIDs(cs.Voters), fromNodeIDs(cs.Learners)
	q.push(func(l EventListener) { l.MembershipChanged(uint64(s), voters, learners) })
}

func (q *eventQueue) shardStopped(s uint64, err error) {
	q.push(func(l EventListener) { l.ShardStopped(s, err) })
}

func fromNodeIDs(ids []raftpb.NodeID) []uint64 {
	out := make([]uint64, len(ids))
	for i, id := range ids {
		out[i] = uint64(id)
	}
	return out
}
