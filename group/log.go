package group

import (
	"errors"
	"fmt"

	"github.com/shardd/shardd/raftpb"
)

// raftLog is the replica's view of its log: the durable part behind a
// LogReader and the unstable part in memory, plus the commit and applying
// positions.
//
// Invariant: applying <= committed <= lastIndex().
// Invariant: entries released for applying are durable (below
// unstable.offset) and committed.
type raftLog struct {
	storage  LogReader
	unstable unstable

	// committed is the highest index known committed.
	committed raftpb.Index
	// applying is the highest index handed out for applying (through
	// CommittedEntries or a snapshot).
	applying raftpb.Index

	maxApplyBytes uint64

	// err is the first storage failure; once set the group is stopped.
	err error
}

func newLog(storage LogReader, maxApplyBytes uint64) (*raftLog, error) {
	first, err := storage.FirstIndex()
	if err != nil {
		return nil, fmt.Errorf("%w: first index: %w", ErrStorage, err)
	}
	last, err := storage.LastIndex()
	if err != nil {
		return nil, fmt.Errorf("%w: last index: %w", ErrStorage, err)
	}
	if last+1 < first {
		return nil, fmt.Errorf("%w: last index %d before first index %d", ErrStorage, last, first)
	}
	l := &raftLog{storage: storage, maxApplyBytes: maxApplyBytes}
	l.unstable.offset = last + 1
	l.unstable.offsetInProgress = last + 1
	l.committed = first - 1
	l.applying = first - 1
	return l, nil
}

// fail records a storage failure (the first one wins).
func (l *raftLog) fail(op string, err error) {
	if l.err == nil {
		l.err = fmt.Errorf("%w: %s: %w", ErrStorage, op, err)
	}
}

func (l *raftLog) firstIndex() raftpb.Index {
	if i, ok := l.unstable.maybeFirstIndex(); ok {
		return i
	}
	i, err := l.storage.FirstIndex()
	if err != nil {
		l.fail("first index", err)
	}
	return i
}

func (l *raftLog) lastIndex() raftpb.Index {
	if i, ok := l.unstable.maybeLastIndex(); ok {
		return i
	}
	// Nothing unstable: the durable log ends just before offset.
	return l.unstable.offset - 1
}

// term returns the term of entry i, ErrCompacted below the log and
// ErrUnavailable beyond it. Other storage errors stop the group.
func (l *raftLog) term(i raftpb.Index) (raftpb.Term, error) {
	if t, ok := l.unstable.maybeTerm(i); ok {
		return t, nil
	}
	if i >= l.unstable.offset {
		// Never read the durable log here: it may hold a suffix the
		// unstable entries replace.
		return 0, ErrUnavailable
	}
	if l.unstable.snapshot != nil {
		return 0, ErrCompacted
	}
	t, err := l.storage.Term(i)
	if err == nil || errors.Is(err, ErrCompacted) || errors.Is(err, ErrUnavailable) {
		return t, err
	}
	l.fail(fmt.Sprintf("term(%d)", i), err)
	return 0, err
}

func (l *raftLog) lastTerm() raftpb.Term {
	t, err := l.term(l.lastIndex())
	if err != nil {
		l.fail("last term", err)
	}
	return t
}

func (l *raftLog) matchTerm(i raftpb.Index, t raftpb.Term) bool {
	lt, err := l.term(i)
	return err == nil && lt == t
}

// isUpToDate reports whether a log ending at (lastTerm, lastIndex) is at
// least as fresh as ours: terms first, then indexes (dictionary order, S01).
func (l *raftLog) isUpToDate(lastIndex raftpb.Index, lastTerm raftpb.Term) bool {
	return compareLogID(lastTerm, lastIndex, l.lastTerm(), l.lastIndex()) >= 0
}

// compareLogID orders log positions (term, index) in dictionary order.
func compareLogID(t1 raftpb.Term, i1 raftpb.Index, t2 raftpb.Term, i2 raftpb.Index) int {
	switch {
	case t1 != t2:
		if t1 < t2 {
			return -1
		}
		return 1
	case i1 < i2:
		return -1
	case i1 > i2:
		return 1
	}
	return 0
}

// slice returns entries [lo, hi) limited to maxBytes (at least one).
func (l *raftLog) slice(lo, hi raftpb.Index, maxBytes uint64) ([]raftpb.Entry, error) {
	if lo >= hi {
		return nil, nil
	}
	if lo < l.firstIndex() {
		return nil, ErrCompacted
	}
	if hi > l.lastIndex()+1 {
		return nil, fmt.Errorf("%w: slice [%d,%d) beyond last index %d", ErrUnavailable, lo, hi, l.lastIndex())
	}
	var ents []raftpb.Entry
	if lo < l.unstable.offset {
		stored, err := l.storage.Entries(lo, min(hi, l.unstable.offset), maxBytes)
		if err != nil {
			if errors.Is(err, ErrCompacted) {
				return nil, err
			}
			l.fail(fmt.Sprintf("entries [%d,%d)", lo, hi), err)
			return nil, err
		}
		if n := raftpb.Index(len(stored)); n == 0 || (stored[0].Index != lo) {
			err := fmt.Errorf("entries [%d,%d): got %d entries starting at %v", lo, hi, n, firstIdx(stored))
			l.fail("entries", err)
			return nil, err
		}
		// Stopped early by the byte limit: return what fits.
		if n := raftpb.Index(len(stored)); n < min(hi, l.unstable.offset)-lo {
			return stored, nil
		}
		ents = stored
	}
	if hi > l.unstable.offset {
		u := l.unstable.slice(max(lo, l.unstable.offset), hi)
		if len(ents) == 0 {
			ents = u
		} else {
			ents = append(append(make([]raftpb.Entry, 0, len(ents)+len(u)), ents...), u...)
		}
	}
	return limitSize(ents, maxBytes), nil
}

func firstIdx(ents []raftpb.Entry) any {
	if len(ents) == 0 {
		return "none"
	}
	return ents[0].Index
}

// limitSize keeps the longest prefix of ents within maxBytes, and at least
// one entry.
func limitSize(ents []raftpb.Entry, maxBytes uint64) []raftpb.Entry {
	if len(ents) == 0 {
		return ents
	}
	size := ents[0].SizeBytes()
	n := 1
	for ; n < len(ents); n++ {
		size += ents[n].SizeBytes()
		if size > maxBytes {
			break
		}
	}
	return ents[:n:n]
}

// entriesFrom returns entries from i on, limited to maxBytes.
func (l *raftLog) entriesFrom(i raftpb.Index, maxBytes uint64) ([]raftpb.Entry, error) {
	if i > l.lastIndex() {
		return nil, nil
	}
	return l.slice(i, l.lastIndex()+1, maxBytes)
}

// findConflict returns the index of the first entry of ents that is not in
// the log with the same term (a conflict or simply new), or 0 if all are
// present. Entries equal to what the log holds are never rewritten (S08).
func (l *raftLog) findConflict(ents []raftpb.Entry) raftpb.Index {
	for i := range ents {
		if !l.matchTerm(ents[i].Index, ents[i].Term) {
			return ents[i].Index
		}
	}
	return 0
}

// findConflictByTerm returns the largest index <= index whose term is at
// most term, with that term. A rejecting follower uses it to tell the leader
// where its log might match; the leader uses it to jump over a whole
// divergent term per round trip (S10).
func (l *raftLog) findConflictByTerm(index raftpb.Index, term raftpb.Term) (raftpb.Index, raftpb.Term) {
	for ; index > 0; index-- {
		t, err := l.term(index)
		if err != nil {
			// Compacted (or failed): everything at or below here is either
			// committed or unknown; let the peer probe from here.
			return index, 0
		}
		if t <= term {
			return index, t
		}
	}
	return 0, 0
}

// errConflictCommitted signals an append that would rewrite a committed
// entry: a safety violation by the sender or by our own storage.
var errConflictCommitted = errors.New("append conflicts with a committed entry")

// maybeAppend appends ents after (prevIndex, prevTerm) if the log matches
// there, replacing only the conflicting suffix, and moves commit up to
// min(commit, last index this request proved). It returns that last index.
func (l *raftLog) maybeAppend(prevIndex raftpb.Index, prevTerm raftpb.Term, commit raftpb.Index,
	ents []raftpb.Entry) (raftpb.Index, bool, error) {
	if !l.matchTerm(prevIndex, prevTerm) {
		return 0, false, nil
	}
	lastNew := prevIndex + raftpb.Index(len(ents))
	if ci := l.findConflict(ents); ci != 0 {
		if ci <= l.committed {
			return 0, false, fmt.Errorf("%w: index %d, committed %d", errConflictCommitted, ci, l.committed)
		}
		l.append(ents[ci-(prevIndex+1):])
	}
	// S09: never commit beyond what this request proved consistent.
	l.commitTo(min(commit, lastNew))
	return lastNew, true, nil
}

// append adds ents, replacing any suffix from ents[0].Index.
// REQUIRES: ents[0].Index > committed.
func (l *raftLog) append(ents []raftpb.Entry) raftpb.Index {
	if len(ents) == 0 {
		return l.lastIndex()
	}
	l.unstable.truncateAndAppend(ents)
	return l.lastIndex()
}

func (l *raftLog) commitTo(c raftpb.Index) {
	if c > l.committed {
		l.committed = c
	}
}

// maybeCommit commits up to i if entry i is of term t: only entries of the
// leader's own term commit by counting replicas (S11).
func (l *raftLog) maybeCommit(i raftpb.Index, t raftpb.Term) bool {
	if i > l.committed && l.matchTerm(i, t) {
		l.commitTo(i)
		return true
	}
	return false
}

// restore resets the log to a snapshot.
func (l *raftLog) restore(s raftpb.SnapshotMeta) {
	l.committed = s.Index
	l.unstable.restore(s)
}

// applicableLimit is the highest index that may be released for applying:
// committed and durable, and nothing while a snapshot is pending.
func (l *raftLog) applicableLimit() raftpb.Index {
	if l.unstable.snapshot != nil {
		return l.applying
	}
	return max(l.applying, min(l.committed, l.unstable.offset-1))
}

func (l *raftLog) hasNextCommittedEnts() bool {
	return l.applicableLimit() > l.applying
}

// nextCommittedEnts returns the next committed entries to release.
func (l *raftLog) nextCommittedEnts() []raftpb.Entry {
	hi := l.applicableLimit()
	if hi <= l.applying {
		return nil
	}
	ents, err := l.slice(l.applying+1, hi+1, l.maxApplyBytes)
	if err != nil {
		l.fail("committed entries", err)
		return nil
	}
	return ents
}

// hasUnreleasedConfChange reports whether a committed membership change
// after inForce (the index of the change already in force) is not yet
// released for applying; a replica must not campaign then, as its
// membership is about to change.
func (l *raftLog) hasUnreleasedConfChange(inForce raftpb.Index) bool {
	lo, hi := max(l.applying, inForce)+1, l.committed+1
	for lo < hi {
		ents, err := l.slice(lo, hi, l.maxApplyBytes)
		if err != nil || len(ents) == 0 {
			return false
		}
		for i := range ents {
			if ents[i].Type == raftpb.EntryConfChange {
				return true
			}
		}
		lo = ents[len(ents)-1].Index + 1
	}
	return false
}
