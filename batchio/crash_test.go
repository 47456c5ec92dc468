package batchio

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/goleak"

	"github.com/shardd/shardd/raftpb"
)

// Crash safety on Pebble's crash-simulating in-memory file system: writers
// submit random workloads; at a random moment the file system is cloned as
// a crash would leave it (everything synced, plus a random part of what was
// not), and the store reopened on the clone must hold, for every shard, the
// state after some prefix of its submitted updates that includes every
// acknowledged one — and, across shards, after some prefix of the accepted
// requests (a request's updates are atomic, flushes are a prefix).

var crashSeed = flag.Uint64("batchio.crashseed", 0, "base seed of TestCrashRandomWorkload (0: time-based)")

// modelShard is the expected state of one replica.
type modelShard struct {
	exists    bool
	first     raftpb.Index   // the log holds [first, last]
	ents      []raftpb.Entry // entries first..last
	truncTerm raftpb.Term    // term of first-1
	hs        raftpb.HardState
	snap      raftpb.Index // index of the latest snapshot record
	// snapRec is the latest snapshot record (nil: none); conf and
	// confIndex are the membership in force.
	snapRec   *SnapshotRecord
	conf      raftpb.ConfState
	confIndex raftpb.Index
}

func (m *modelShard) last() raftpb.Index { return m.first + raftpb.Index(len(m.ents)) - 1 }

func (m *modelShard) term(i raftpb.Index) raftpb.Term {
	if i+1 == m.first {
		return m.truncTerm
	}
	return m.ents[i-m.first].Term
}

// apply applies u as the store documents it (fields in declaration order).
func (m *modelShard) apply(u *Update) {
	if u.Create != nil {
		*m = modelShard{exists: true, first: 1, conf: u.Create.ConfState, confIndex: u.Create.ConfIndex}
	}
	if s := u.InstallSnapshot; s != nil {
		m.first, m.ents, m.truncTerm, m.snap = s.Meta.Index+1, nil, s.Meta.Term, s.Meta.Index
		m.snapRec, m.conf, m.confIndex = s, s.Meta.ConfState, s.Meta.Index
	}
	if len(u.Entries) > 0 {
		k := int(u.Entries[0].Index - m.first)
		m.ents = append(m.ents[:k:k], u.Entries...)
	}
	if !u.HardState.IsEmpty() {
		m.hs = u.HardState
	}
	if u.ConfState != nil {
		m.conf, m.confIndex = *u.ConfState, u.ConfIndex
	}
	if u.SaveSnapshot != nil {
		m.snap, m.snapRec = u.SaveSnapshot.Meta.Index, u.SaveSnapshot
	}
	if c := u.CompactTo; c >= m.first {
		m.truncTerm = m.term(c)
		m.ents = m.ents[c+1-m.first:]
		m.first = c + 1
	}
	if u.Remove {
		*m = modelShard{}
	}
}

// observed is a replica's state as read back from a store.
type observed struct {
	exists      bool
	first, last raftpb.Index
	ents        []raftpb.Entry
	truncTerm   raftpb.Term
	hs          raftpb.HardState
	snap        raftpb.Index
	snapRec     *SnapshotRecord
	conf        raftpb.ConfState
	confIndex   raftpb.Index
}

// observe reads shard id's whole state from s: bounds, hard state, the
// snapshot's index, the term at the truncation point and every entry
// (through Entries, which proves the log contiguous; Term for a sample).
func observe(s *Store, id raftpb.ShardID) (observed, error) {
	l, err := s.Shard(id)
	if errors.Is(err, ErrUnknownShard) {
		return observed{}, nil
	} else if err != nil {
		return observed{}, err
	}
	o := observed{exists: true}
	o.first, _ = l.FirstIndex()
	o.last, _ = l.LastIndex()
	ds, _ := l.InitialState()
	o.hs, o.conf, o.confIndex = ds.HardState, ds.ConfState, ds.ConfIndex
	if m, err := l.Snapshot(); err == nil {
		o.snap = m.Index
	} else if !errors.Is(err, raftpb.ErrSnapshotTemporarilyUnavailable) {
		return o, err
	}
	if r, ok := l.SnapshotRecord(); ok {
		o.snapRec = &r
	}
	if o.first == 0 || o.last+1 < o.first {
		return o, fmt.Errorf("bounds [%d, %d]", o.first, o.last)
	}
	if o.truncTerm, err = l.Term(o.first - 1); err != nil {
		return o, fmt.Errorf("term at the truncation point %d: %w", o.first-1, err)
	}
	if o.last >= o.first {
		if o.ents, err = l.Entries(o.first, o.last+1, math.MaxUint64); err != nil {
			return o, fmt.Errorf("reading [%d, %d]: %w", o.first, o.last, err)
		}
		if n := raftpb.Index(len(o.ents)); n != o.last+1-o.first {
			return o, fmt.Errorf("reading [%d, %d] returned %d entries", o.first, o.last, n)
		}
		for i := range o.ents {
			if o.ents[i].Index != o.first+raftpb.Index(i) {
				return o, fmt.Errorf("entry %d holds index %d", o.first+raftpb.Index(i), o.ents[i].Index)
			}
		}
		// Term reads one entry by key (a Pebble Get each: slow under -race);
		// the first, middle and last ones are enough.
		for _, i := range []int{0, len(o.ents) / 2, len(o.ents) - 1} {
			if tm, err := l.Term(o.ents[i].Index); err != nil || tm != o.ents[i].Term {
				return o, fmt.Errorf("term(%d) = %d, %v; the entry has term %d", o.ents[i].Index, tm, err, o.ents[i].Term)
			}
		}
	}
	return o, nil
}

// diff describes how o differs from m ("" if it does not).
func (m *modelShard) diff(o *observed) string {
	switch {
	case m.exists != o.exists:
		return fmt.Sprintf("replica exists: %v, model %v", o.exists, m.exists)
	case !m.exists:
		return ""
	case o.first != m.first || o.last != m.last():
		return fmt.Sprintf("log [%d, %d], model [%d, %d]", o.first, o.last, m.first, m.last())
	case o.hs != m.hs:
		return fmt.Sprintf("hard state %+v, model %+v", o.hs, m.hs)
	case o.snap != m.snap:
		return fmt.Sprintf("snapshot at %d, model %d", o.snap, m.snap)
	case !equalSnapshotRecords(o.snapRec, m.snapRec):
		return fmt.Sprintf("snapshot record %s, model %s", fmtSnapshotRecord(o.snapRec), fmtSnapshotRecord(m.snapRec))
	case o.confIndex != m.confIndex || !o.conf.Equal(&m.conf):
		return fmt.Sprintf("membership %v at %d, model %v at %d", o.conf, o.confIndex, m.conf, m.confIndex)
	case o.truncTerm != m.truncTerm:
		return fmt.Sprintf("term %d at the truncation point %d, model %d", o.truncTerm, m.first-1, m.truncTerm)
	}
	for i := range m.ents {
		g, w := &o.ents[i], &m.ents[i]
		if g.Index != w.Index || g.Term != w.Term || g.Key != w.Key || g.Type != w.Type || !bytes.Equal(g.Data, w.Data) {
			return fmt.Sprintf("entry %d = {term %d key %d data %q}, model {term %d key %d data %q}",
				w.Index, g.Term, g.Key, g.Data, w.Term, w.Key, w.Data)
		}
	}
	return ""
}

func equalSnapshotRecords(a, b *SnapshotRecord) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Meta.Index == b.Meta.Index && a.Meta.Term == b.Meta.Term &&
		a.Meta.ConfState.Equal(&b.Meta.ConfState) && bytes.Equal(a.Data, b.Data)
}

func fmtSnapshotRecord(r *SnapshotRecord) string {
	if r == nil {
		return "none"
	}
	return fmt.Sprintf("{index %d term %d %v data %q}", r.Meta.Index, r.Meta.Term, r.Meta.ConfState, r.Data)
}

// shardGen generates a valid random stream of updates for one shard, the
// way a Raft replica would produce them: appends at the tail, sometimes a
// conflicting suffix (never below the commit index) replaced in a higher
// term, hard states whose term and commit never decrease, snapshots of
// committed entries and compactions below them, and rarely a snapshot
// installed past the log's end.
type shardGen struct {
	id   raftpb.ShardID
	m    modelShard // after every update generated so far
	term raftpb.Term
	n    int // updates generated

	replaced, snaps, compactions, installs int // updates of each kind generated
}

func (g *shardGen) ents(from raftpb.Index, n int) []raftpb.Entry {
	out := make([]raftpb.Entry, n)
	for i := range out {
		idx := from + raftpb.Index(i)
		out[i] = raftpb.Entry{Index: idx, Term: g.term, Key: uint64(g.n)<<32 | uint64(idx),
			Data: fmt.Appendf(nil, "s%d-u%d-i%d-t%d", g.id, g.n, idx, g.term)}
	}
	return out
}

func (g *shardGen) next(rng *rand.Rand) Update {
	g.n++
	if !g.m.exists {
		g.term = 1
		u := Update{Shard: g.id, Create: &ReplicaRecord{Initial: voters3}, ConfState: &voters3, ConfIndex: 1,
			Entries: g.ents(1, 1), HardState: raftpb.HardState{Term: 1, Vote: 1, Commit: 1}}
		g.m.apply(&u)
		return u
	}
	u := Update{Shard: g.id}
	last := g.m.last()
	from := last + 1
	if rng.IntN(50) == 0 {
		// A snapshot received from a leader ahead of the log replaces the
		// whole log; entries follow it in the same update.
		idx := last + 1 + raftpb.Index(rng.IntN(20))
		g.term++
		u.InstallSnapshot = &SnapshotRecord{Meta: raftpb.SnapshotMeta{Index: idx, Term: g.term, ConfState: voters3},
			Data: fmt.Appendf(nil, "installed-%d-%d", g.id, idx)}
		u.Entries = g.ents(idx+1, 1+rng.IntN(8))
		newLast := u.Entries[len(u.Entries)-1].Index
		u.HardState = raftpb.HardState{Term: g.term, Vote: raftpb.NodeID(1 + rng.IntN(3)),
			Commit: idx + raftpb.Index(rng.IntN(int(newLast-idx)+1))}
		g.installs++
		g.m.apply(&u)
		return u
	}
	if rng.IntN(10) == 0 {
		// Replace the last 1-3 entries, never a committed one.
		k := raftpb.Index(1 + rng.IntN(3))
		from = max(g.m.hs.Commit+1, g.m.first, last+1-min(k, last))
		if from <= last {
			g.term++
			g.replaced++
		}
	}
	u.Entries = g.ents(from, 1+rng.IntN(8))
	newLast := u.Entries[len(u.Entries)-1].Index
	termAt := func(i raftpb.Index) raftpb.Term {
		if i >= from {
			return u.Entries[i-from].Term
		}
		return g.m.term(i)
	}
	hs := g.m.hs
	if g.term > hs.Term || rng.IntN(2) == 0 {
		if g.term > hs.Term {
			hs.Term, hs.Vote = g.term, raftpb.NodeID(1+rng.IntN(3))
		}
		hs.Commit += raftpb.Index(rng.IntN(int(newLast-hs.Commit) + 1))
		u.HardState = hs
	}
	if rng.IntN(20) == 0 {
		// A snapshot of committed entries, and a compaction below it.
		lo := max(g.m.snap+1, g.m.first-1, 1)
		if lo <= hs.Commit {
			idx := lo + raftpb.Index(rng.IntN(int(hs.Commit-lo)+1))
			u.SaveSnapshot = &SnapshotRecord{Meta: raftpb.SnapshotMeta{Index: idx, Term: termAt(idx), ConfState: voters3},
				Data: fmt.Appendf(nil, "snap-%d-%d", g.id, idx)}
			if rng.IntN(4) != 0 && idx >= g.m.first {
				u.CompactTo = g.m.first + raftpb.Index(rng.IntN(int(idx-g.m.first)+1))
			}
		}
	} else if rng.IntN(30) == 0 && g.m.snap >= g.m.first {
		u.CompactTo = g.m.first + raftpb.Index(rng.IntN(int(g.m.snap-g.m.first)+1))
	}
	if u.SaveSnapshot != nil {
		g.snaps++
	}
	if u.CompactTo >= g.m.first {
		g.compactions++
	}
	g.m.apply(&u)
	return u
}

// workload is the record of what was submitted and acknowledged: per
// shard, the ordered updates, the global sequence number of the request
// each came in and how many were acknowledged.
type workload struct {
	s    *Store
	gens []*shardGen // shard i+1 is gens[i]

	mu        sync.Mutex
	updates   [][]Update
	reqOf     [][]int // reqOf[i][k]: request sequence of updates[i][k]
	acked     []int   // per shard
	submitted int     // requests accepted
	ackedReqs int     // requests acknowledged (a prefix)
	errs      []error // failed Dones, out-of-order completions
}

func newWorkload(s *Store, shards int) *workload {
	w := &workload{s: s, updates: make([][]Update, shards), reqOf: make([][]int, shards), acked: make([]int, shards)}
	for i := range shards {
		w.gens = append(w.gens, &shardGen{id: raftpb.ShardID(i + 1)})
	}
	return w
}

// request generates a request updating 1-4 distinct shards among gens.
func (w *workload) request(rng *rand.Rand, gens []*shardGen) []Update {
	n := 1 + rng.IntN(min(4, len(gens)))
	us := make([]Update, 0, n)
	for _, k := range rng.Perm(len(gens))[:n] {
		us = append(us, gens[k].next(rng))
	}
	return us
}

// submit records us and submits them; done (if not nil) runs after the
// completion is recorded.
func (w *workload) submit(us []Update, done func(error)) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	seq := w.submitted
	pos := make([]int, len(us))
	for k := range us {
		i := us[k].Shard - 1
		pos[k] = len(w.updates[i])
	}
	r := &Request{Updates: us, Done: func(err error) {
		w.complete(seq, us, pos, err)
		if done != nil {
			done(err)
		}
	}}
	if err := w.s.Submit(r); err != nil {
		return err
	}
	for k := range us {
		i := us[k].Shard - 1
		w.updates[i] = append(w.updates[i], us[k])
		w.reqOf[i] = append(w.reqOf[i], seq)
	}
	w.submitted++
	return nil
}

func (w *workload) complete(seq int, us []Update, pos []int, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.errs = append(w.errs, fmt.Errorf("request %d: %w", seq, err))
		return
	}
	if seq != w.ackedReqs {
		w.errs = append(w.errs, fmt.Errorf("request %d acknowledged after %d requests", seq, w.ackedReqs))
	}
	w.ackedReqs = max(w.ackedReqs, seq+1)
	for k := range us {
		w.acked[us[k].Shard-1] = pos[k] + 1
	}
}

// cut is what the model knew at one moment (taken with w.mu held).
type cut struct {
	acked, submitted []int // per shard
	ackedReqs        int
	submittedReqs    int
}

func (w *workload) cutLocked() cut {
	c := cut{acked: slices.Clone(w.acked), ackedReqs: w.ackedReqs, submittedReqs: w.submitted}
	for i := range w.updates {
		c.submitted = append(c.submitted, len(w.updates[i]))
	}
	return c
}

// verify checks the store s (reopened after a crash at cut c) against the
// workload: every shard's state is the model after some j of its updates,
// acknowledged(c) <= j <= submitted(c); its hard state has not regressed;
// and one prefix of the accepted requests explains every shard at once.
// It reports problems prefixed with tag and returns their number.
func (w *workload) verify(t *testing.T, s *Store, c cut, tag string) int {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	bad := 0
	report := func(format string, args ...any) {
		bad++
		if bad <= 8 {
			t.Errorf("%s: %s", tag, fmt.Sprintf(format, args...))
		}
	}
	matches := make([][]bool, len(w.updates))
	existing := 0
	for i := range w.updates {
		id := raftpb.ShardID(i + 1)
		ups := w.updates[i][:c.submitted[i]]
		o, err := observe(s, id)
		if err != nil {
			report("shard %d: %v", id, err)
			continue
		}
		if o.exists {
			existing++
		}
		var m modelShard
		for j := range c.acked[i] {
			m.apply(&ups[j])
		}
		if o.exists && (o.hs.Term < m.hs.Term || o.hs.Commit < m.hs.Commit) {
			report("shard %d: hard state %+v regressed from the acknowledged %+v", id, o.hs, m.hs)
		}
		matches[i] = make([]bool, len(ups)+1)
		var diffAcked, diffAll string
		found := false
		for j := c.acked[i]; ; j++ {
			d := m.diff(&o)
			if j == c.acked[i] {
				diffAcked = d
			}
			if d == "" {
				matches[i][j], found = true, true
			}
			if j == len(ups) {
				diffAll = d
				break
			}
			m.apply(&ups[j])
		}
		if !found {
			report("shard %d: recovered state matches no prefix of its updates from the %d acknowledged to the %d submitted; "+
				"versus the acknowledged: %s; versus all submitted: %s", id, c.acked[i], len(ups), diffAcked, diffAll)
		}
	}
	if reps := s.Replicas(); len(reps) != existing {
		report("Replicas lists %d replicas, Shard finds %d", len(reps), existing)
	}
	if bad > 0 {
		return bad
	}
	// One prefix of the requests must explain every shard: flushes are
	// atomic and recovered in order.
	for g := c.ackedReqs; g <= c.submittedReqs; g++ {
		ok := true
		for i := range w.updates {
			j := sort.SearchInts(w.reqOf[i][:c.submitted[i]], g) // updates of requests < g
			if !matches[i][j] {
				ok = false
				break
			}
		}
		if ok {
			return 0
		}
	}
	report("no prefix of the requests from the %d acknowledged to the %d submitted explains every shard "+
		"(a request's updates were not recovered atomically, or flushes out of order)", c.ackedReqs, c.submittedReqs)
	return bad
}

func TestCrashRandomWorkload(t *testing.T) {
	seed := *crashSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	iters := 6
	if testing.Short() {
		iters = 3
	}
	for it := range iters {
		s := seed + uint64(it)
		pct := []int{0, 10, 50}[it%3]
		small := it%2 == 1
		name := fmt.Sprintf("seed=%d,unsynced=%d,smallmemtable=%v", s, pct, small)
		if !t.Run(name, func(t *testing.T) { crashIteration(t, s, pct, small) }) {
			// The seed fixes the workload, the crash's moment and what of the
			// unsynced data survives; goroutine scheduling stays free.
			t.Logf("base seed %d; replay with -run 'TestCrashRandomWorkload/seed=%d,' -batchio.crashseed=%d", seed, s, seed)
			return
		}
	}
}

func crashIteration(t *testing.T, seed uint64, pct int, smallMemTable bool) {
	const (
		writers     = 4
		perWriter   = 32
		outstanding = 8
	)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	tag := fmt.Sprintf("seed %d (unsynced %d%%)", seed, pct)
	rng := rand.New(rand.NewPCG(seed, 0x6a09e667f3bcc908))
	fs := vfs.NewCrashableMem()
	s := openMem(t, fs, func(o *Options) {
		if smallMemTable {
			// Memtable flushes, WAL rotation and sstables in the picture.
			o.MemTableBytes = 256 << 10
		}
	})
	w := newWorkload(s, writers*perWriter)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	submitErrs := make(chan error, writers)
	for g := range writers {
		wrng := rand.New(rand.NewPCG(seed, uint64(g+1)))
		gens := w.gens[g*perWriter : (g+1)*perWriter]
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem := make(chan struct{}, outstanding)
			for {
				select {
				case <-stop:
					return
				case sem <- struct{}{}:
				}
				if err := w.submit(w.request(wrng, gens), func(error) { <-sem }); err != nil {
					submitErrs <- err
					return
				}
			}
		}()
	}

	// Crash early now and then (creations in flight), mostly once the logs
	// have seen replacements, snapshots and compactions.
	delay := time.Duration(60+rng.IntN(200)) * time.Millisecond
	if rng.IntN(6) == 0 {
		delay = time.Duration(rng.IntN(20)) * time.Millisecond
	}
	time.Sleep(delay)
	w.mu.Lock()
	c := w.cutLocked()
	// Holding w.mu: nothing is submitted between the cut and the crash.
	clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rng})
	w.mu.Unlock()

	close(stop)
	wg.Wait()
	_ = s.Close() // the original store lives on past the crash; whatever it says is moot
	close(submitErrs)
	for err := range submitErrs {
		t.Errorf("%s: Submit: %v", tag, err)
	}
	w.mu.Lock()
	for _, err := range w.errs {
		t.Errorf("%s: %v", tag, err)
	}
	w.mu.Unlock()
	if t.Failed() {
		return
	}

	s2, err := Open(Options{Dir: "db", FS: clone, Logger: quiet, CacheBytes: -1})
	if err != nil {
		t.Fatalf("%s: reopening after the crash: %v", tag, err)
	}
	defer s2.Close()
	if w.verify(t, s2, c, tag) == 0 {
		var replaced, snaps, compactions, installs int
		for _, g := range w.gens {
			replaced, snaps, compactions, installs = replaced+g.replaced, snaps+g.snaps, compactions+g.compactions, installs+g.installs
		}
		t.Logf("%s: %d requests submitted, %d acknowledged at the crash (over the run: %d suffix replacements, "+
			"%d snapshots saved, %d compactions, %d snapshots installed)",
			tag, c.submittedReqs, c.ackedReqs, replaced, snaps, compactions, installs)
	}
}
