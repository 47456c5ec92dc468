package engine

import "sync"

// awakeSet holds the replicas the ticker must tick: those not quiesced.
// The ticker walks only this set, never every replica: with 100000s of
// quiesced replicas, even reading one flag in each was most of an idle
// node's CPU (a cache miss per replica, every heartbeat period).
//
// Each replica has a fixed phase, given round-robin when it joins, and the
// set keeps one list per phase: tick t visits the list of phase t%chunk.
// A step worker moves a replica in or out when its quiescence changes
// (the scheduler never lets two workers step one replica, so a replica's
// moves are ordered); a stopped replica leaves for good.
type awakeSet struct {
	mu     sync.Mutex
	phases [][]*replica
	next   int // phase of the next replica to join
	n      int // replicas in the set
}

// awakeSlot is a replica's place in the set; guarded by awakeSet.mu.
type awakeSlot struct {
	phase int
	idx   int // in phases[phase]; -1 when not in the set
	gone  bool
}

func newAwakeSet(chunk int) *awakeSet {
	return &awakeSet{phases: make([][]*replica, chunk)}
}

// join adds a new replica, awake.
func (s *awakeSet) join(r *replica) {
	s.mu.Lock()
	r.awake = awakeSlot{phase: s.next, idx: -1}
	s.next = (s.next + 1) % len(s.phases)
	s.addLocked(r)
	s.mu.Unlock()
}

// set moves r in (awake) or out of the set.
func (s *awakeSet) set(r *replica, awake bool) {
	s.mu.Lock()
	switch {
	case r.awake.gone:
	case awake:
		s.addLocked(r)
	default:
		s.removeLocked(r)
	}
	s.mu.Unlock()
}

// leave removes r for good (the replica stopped).
func (s *awakeSet) leave(r *replica) {
	s.mu.Lock()
	s.removeLocked(r)
	r.awake.gone = true
	s.mu.Unlock()
}

func (s *awakeSet) addLocked(r *replica) {
	if r.awake.idx >= 0 {
		return
	}
	l := s.phases[r.awake.phase]
	r.awake.idx = len(l)
	s.phases[r.awake.phase] = append(l, r)
	s.n++
}

func (s *awakeSet) removeLocked(r *replica) {
	i := r.awake.idx
	if i < 0 {
		return
	}
	l := s.phases[r.awake.phase]
	last := len(l) - 1
	l[i] = l[last]
	l[i].awake.idx = i
	l[last] = nil
	s.phases[r.awake.phase] = l[:last]
	r.awake.idx = -1
	s.n--
}

// phase appends the replicas of phase p to out, and reports how many
// replicas the whole set holds.
func (s *awakeSet) phase(p int, out []*replica) ([]*replica, int) {
	s.mu.Lock()
	out = append(out, s.phases[p]...)
	n := s.n
	s.mu.Unlock()
	return out, n
}
