package grouptest

import (
	"strings"
	"testing"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

// The oracle is only worth its silence if it speaks up: feed it each kind
// of violation and check it names it.
func TestOracleDetectsViolations(t *testing.T) {
	withLog := func(id raftpb.NodeID, terms ...raftpb.Term) *Replica {
		r := &Replica{ID: id, Log: group.NewMemoryLog(raftpb.ConfState{})}
		var ents []raftpb.Entry
		for i, tm := range terms {
			ents = append(ents, raftpb.Entry{Index: raftpb.Index(i + 1), Term: tm, Data: []byte{byte(id)}})
		}
		r.mirror = mirror{baseOK: true}
		r.mirror.append(ents)
		return r
	}
	for name, tc := range map[string]struct {
		run  func(o *oracle)
		want string
	}{
		"two leaders": {func(o *oracle) {
			o.onLeader(withLog(1, 1), 2)
			o.onLeader(withLog(2, 1), 2)
		}, "election safety"},
		"log matching": {func(o *oracle) {
			o.checkLogMatching(withLog(1, 1, 2), 1)
			o.checkLogMatching(withLog(2, 1, 2), 1) // same (index, term), other data
		}, "log matching"},
		"commit divergence": {func(o *oracle) {
			o.recordCommitted(withLog(1, 1, 1), 0, 2, 1)
			o.recordCommitted(withLog(2, 1, 1), 0, 2, 1)
		}, "state machine safety"},
		"leader incomplete": {func(o *oracle) {
			o.recordCommitted(withLog(1, 1, 1, 1), 0, 3, 1)
			o.onLeader(withLog(1, 1), 2)
		}, "leader completeness"},
		"term regress": {func(o *oracle) {
			o.checkHSMonotonic(1, "x", raftpb.HardState{Term: 3}, raftpb.HardState{Term: 2})
		}, "term went back"},
		"commit regress": {func(o *oracle) {
			o.checkHSMonotonic(1, "x", raftpb.HardState{Term: 3, Commit: 5}, raftpb.HardState{Term: 3, Commit: 4})
		}, "commit went back"},
		"vote change": {func(o *oracle) {
			o.checkHSMonotonic(1, "x", raftpb.HardState{Term: 3, Vote: 1}, raftpb.HardState{Term: 3, Vote: 2})
		}, "vote changed"},
		"apply gap": {func(o *oracle) {
			r := withLog(1, 1, 1)
			o.beforeApply(r, &raftpb.Entry{Index: 2, Term: 1})
		}, "apply order"},
	} {
		o := newOracle()
		tc.run(o)
		if o.err == nil || !strings.Contains(o.err.Error(), tc.want) {
			t.Errorf("%s: oracle said %v, want %q", name, o.err, tc.want)
		}
	}
}
