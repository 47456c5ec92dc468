package group

import "github.com/shardd/shardd/raftpb"

// unstable holds what the core has decided to write but is not yet known to
// be durable: new entries and possibly a snapshot to install. Entries at or
// after offset are read from here, never from the LogReader, which may still
// hold an old suffix that these entries replace.
//
// Persistence is asynchronous: Ready hands the not-yet-handed-out part to the
// caller (acceptInProgress) and Advance reports it durable (stableTo,
// stableSnapTo). Between the two the part is "in progress".
//
// Invariant: offset <= offsetInProgress <= offset+len(entries).
// Invariant: snapshot == nil || offset == snapshot.Index+1 at restore time.
type unstable struct {
	snapshot           *raftpb.SnapshotMeta
	snapshotInProgress bool

	entries          []raftpb.Entry
	offset           raftpb.Index
	offsetInProgress raftpb.Index

	// prevTerm is the term of entry offset-1, the last durable one, when
	// prevKnown: appends and heartbeats check exactly that entry, and
	// asking the LogReader (a lock and a cache lookup in another struct)
	// was a measurable part of every step at 10000 shards.
	prevTerm  raftpb.Term
	prevKnown bool
}

// maybeFirstIndex is the first index after a pending snapshot.
func (u *unstable) maybeFirstIndex() (raftpb.Index, bool) {
	if u.snapshot != nil {
		return u.snapshot.Index + 1, true
	}
	return 0, false
}

// maybeLastIndex is the last index held here, if any.
func (u *unstable) maybeLastIndex() (raftpb.Index, bool) {
	if n := len(u.entries); n > 0 {
		return u.offset + raftpb.Index(n) - 1, true
	}
	if u.snapshot != nil {
		return u.snapshot.Index, true
	}
	return 0, false
}

// maybeTerm is the term at i if it is held here.
func (u *unstable) maybeTerm(i raftpb.Index) (raftpb.Term, bool) {
	if i < u.offset {
		if u.snapshot != nil && u.snapshot.Index == i {
			return u.snapshot.Term, true
		}
		if i+1 == u.offset && u.prevKnown {
			return u.prevTerm, true
		}
		return 0, false
	}
	last, ok := u.maybeLastIndex()
	if !ok || i > last {
		return 0, false
	}
	return u.entries[i-u.offset].Term, true
}

// nextEntries are the entries not yet handed out for persisting.
func (u *unstable) nextEntries() []raftpb.Entry {
	n := int(u.offsetInProgress - u.offset)
	if n >= len(u.entries) {
		return nil
	}
	return u.entries[n:len(u.entries):len(u.entries)]
}

// nextSnapshot is the snapshot to hand out for installing, if not yet.
func (u *unstable) nextSnapshot() *raftpb.SnapshotMeta {
	if u.snapshot == nil || u.snapshotInProgress {
		return nil
	}
	return u.snapshot
}

// acceptInProgress marks everything here as handed out.
func (u *unstable) acceptInProgress() {
	if n := len(u.entries); n > 0 {
		u.offsetInProgress = u.offset + raftpb.Index(n)
	}
	if u.snapshot != nil {
		u.snapshotInProgress = true
	}
}

// stableTo drops entries up to (i, t) now that they are durable. An
// acknowledgement for an entry that has since been replaced (different term
// at i) is ignored: the replacement is still to be written.
func (u *unstable) stableTo(i raftpb.Index, t raftpb.Term) {
	if i < u.offset {
		return
	}
	gt, ok := u.maybeTerm(i)
	if !ok || gt != t {
		return
	}
	n := int(i + 1 - u.offset)
	u.entries = u.entries[n:]
	u.offset = i + 1
	u.prevTerm, u.prevKnown = t, true
	u.offsetInProgress = max(u.offsetInProgress, u.offset)
	u.shrink()
}

// shrink releases the backing array once most of it is dead, so a long run
// does not pin every entry ever appended.
func (u *unstable) shrink() {
	if len(u.entries) == 0 {
		u.entries = nil
		return
	}
	if c := cap(u.entries); len(u.entries)*4 < c && c > 64 {
		u.entries = append([]raftpb.Entry(nil), u.entries...)
	}
}

// stableSnapTo forgets the pending snapshot at i now that it is durable.
func (u *unstable) stableSnapTo(i raftpb.Index) {
	if u.snapshot != nil && u.snapshot.Index == i {
		u.snapshot = nil
		u.snapshotInProgress = false
	}
}

// restore replaces everything with a snapshot to install.
func (u *unstable) restore(s raftpb.SnapshotMeta) {
	u.offset = s.Index + 1
	u.offsetInProgress = u.offset
	u.entries = nil
	u.snapshot = &s
	u.prevTerm, u.prevKnown = s.Term, true
	u.snapshotInProgress = false
}

// truncateAndAppend appends ents, first dropping any entries at or after
// ents[0].Index. The dropped entries may be in progress or durable: the
// caller persists ents as a replacement of the suffix from ents[0].Index, in
// one write (never delete-then-append in two).
func (u *unstable) truncateAndAppend(ents []raftpb.Entry) {
	from := ents[0].Index
	switch {
	case from == u.offset+raftpb.Index(len(u.entries)):
		u.entries = append(u.entries, ents...)
	case from <= u.offset:
		// Replace everything held here (and the durable suffix from from).
		// Copy: earlier slices handed out (messages, Readys) must not see
		// their elements overwritten.
		u.entries = append([]raftpb.Entry(nil), ents...)
		if from < u.offset {
			// Entry from-1 is durable and was never cached.
			u.prevKnown = false
		}
		u.offset = from
	default:
		keep := u.entries[:from-u.offset]
		u.entries = append(append(make([]raftpb.Entry, 0, len(keep)+len(ents)), keep...), ents...)
	}
	u.offsetInProgress = min(u.offsetInProgress, from)
	u.offsetInProgress = max(u.offsetInProgress, u.offset)
}

// slice returns entries [lo, hi) held here.
// REQUIRES: u.offset <= lo <= hi <= u.offset+len(u.entries).
func (u *unstable) slice(lo, hi raftpb.Index) []raftpb.Entry {
	return u.entries[lo-u.offset : hi-u.offset : hi-u.offset]
}
