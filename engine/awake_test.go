package engine

import (
	"slices"
	"testing"
)

// The ticker's set: replicas join awake and round-robin over the phases,
// leave and rejoin it as they quiesce and wake, and a stopped replica
// never comes back, whatever a late step says.
func TestAwakeSet(t *testing.T) {
	s := newAwakeSet(3)
	rs := make([]*replica, 7)
	for i := range rs {
		rs[i] = &replica{}
		s.join(rs[i])
	}
	ids := func(p int) []int {
		got, _ := s.phase(p, nil)
		var out []int
		for _, r := range got {
			out = append(out, slices.Index(rs, r))
		}
		slices.Sort(out)
		return out
	}
	check := func(p int, want []int, wantN int) {
		t.Helper()
		if got := ids(p); !slices.Equal(got, want) {
			t.Errorf("phase %d holds %v, want %v", p, got, want)
		}
		if _, n := s.phase(p, nil); n != wantN {
			t.Errorf("set holds %d replicas, want %d", n, wantN)
		}
	}
	check(0, []int{0, 3, 6}, 7)
	check(1, []int{1, 4}, 7)
	check(2, []int{2, 5}, 7)

	s.set(rs[0], false) // quiesced: swap-deleted from the middle
	s.set(rs[0], false) // twice is harmless
	check(0, []int{3, 6}, 6)
	s.set(rs[6], false)
	s.set(rs[3], false)
	check(0, nil, 4)
	s.set(rs[3], true) // woken: back in its own phase
	s.set(rs[3], true)
	check(0, []int{3}, 5)

	s.leave(rs[4])
	s.set(rs[4], true) // a step after the stop must not bring it back
	check(1, []int{1}, 4)
	s.leave(rs[5]) // leaving while quiesced or awake alike
	s.set(rs[5], false)
	check(2, []int{2}, 3)
}
