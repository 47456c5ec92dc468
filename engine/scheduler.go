package engine

import "sync"

// The scheduler hands replicas that have work to a fixed pool of workers.
// It knows nothing about replicas beyond two flags kept in each: queued (in
// the ready queue, at most once) and processing (a worker has it; at most
// one). Work that arrives while a worker processes a replica sets dirty, and
// the replica is queued again when the worker is done, so nothing is lost
// and no replica is ever processed by two workers at once.
//
// Workers wait on a sync.Cond. One instance drives the step workers, another
// the apply workers.

// schedSlot is a replica's scheduling state in one scheduler; it is guarded
// by that scheduler's mutex.
type schedSlot struct {
	queued, processing, dirty bool
}

type scheduler struct {
	mu     sync.Mutex
	cond   sync.Cond
	queue  []*replica // ring buffer
	head   int
	n      int
	closed bool
	slot   func(r *replica) *schedSlot
}

func newScheduler(slot func(r *replica) *schedSlot) *scheduler {
	s := &scheduler{slot: slot, queue: make([]*replica, 64)}
	s.cond.L = &s.mu
	return s
}

// enqueue marks r as having work.
func (s *scheduler) enqueue(r *replica) {
	s.mu.Lock()
	s.enqueueLocked(r)
	s.mu.Unlock()
}

// enqueueMany marks several replicas at once under one lock acquisition.
func (s *scheduler) enqueueMany(rs []*replica) {
	s.mu.Lock()
	for _, r := range rs {
		s.enqueueLocked(r)
	}
	s.mu.Unlock()
}

func (s *scheduler) enqueueLocked(r *replica) {
	if s.closed {
		return
	}
	sl := s.slot(r)
	switch {
	case sl.queued:
	case sl.processing:
		sl.dirty = true
	default:
		sl.queued = true
		s.push(r)
		s.cond.Signal()
	}
}

func (s *scheduler) push(r *replica) {
	if s.n == len(s.queue) {
		nq := make([]*replica, 2*len(s.queue))
		for i := 0; i < s.n; i++ {
			nq[i] = s.queue[(s.head+i)%len(s.queue)]
		}
		s.queue, s.head = nq, 0
	}
	s.queue[(s.head+s.n)%len(s.queue)] = r
	s.n++
}

// next waits for work and moves up to max replicas from the queue into
// batch, marking them processing. It returns nil once closed.
func (s *scheduler) next(batch []*replica, max int) []*replica {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.n == 0 && !s.closed {
		s.cond.Wait()
	}
	if s.closed {
		return nil
	}
	for s.n > 0 && len(batch) < max {
		r := s.queue[s.head]
		s.queue[s.head] = nil
		s.head = (s.head + 1) % len(s.queue)
		s.n--
		sl := s.slot(r)
		sl.queued, sl.processing = false, true
		batch = append(batch, r)
	}
	if s.n > 0 {
		// More work than this worker took: wake another.
		s.cond.Signal()
	}
	return batch
}

// done returns the replicas of a batch; those that got work meanwhile are
// queued again.
func (s *scheduler) done(batch []*replica) {
	s.mu.Lock()
	for _, r := range batch {
		sl := s.slot(r)
		sl.processing = false
		if sl.dirty {
			sl.dirty = false
			if !s.closed {
				sl.queued = true
				s.push(r)
				s.cond.Signal()
			}
		}
	}
	s.mu.Unlock()
}

// close wakes every worker; next returns nil from now on.
func (s *scheduler) close() {
	s.mu.Lock()
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
}
