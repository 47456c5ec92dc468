package group_test

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

// The Step fuzz target drives one replica (id 1 of voters {1,2,3}, with a
// log spanning several terms and a commit index) through an arbitrary
// sequence of operations: messages decoded from the input (from members
// and from a stranger), ticks, persists, proposals, reads, transfers,
// compactions and reports. Whatever the input, the replica must not panic
// and must keep every safety property it can keep on its own: term and
// commit never go back, its vote never changes within a term, commit never
// passes its log, the committed prefix never changes, durable state obeys
// the same rules, and entries are released for applying once, in order.
//
// The seed corpus under testdata/fuzz/FuzzStep is rewritten with
//
//	go test ./group -run '^TestStepFuzzCorpus$' -update-corpus

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpus under testdata/fuzz")

// Operation codes of the fuzz input: one byte, then (for messages) a
// two-byte big-endian length and an encoded raftpb.Message.
const (
	opMsg = iota
	opTick
	opPersist
	opPropose
	opRead
	opTransfer
	opCompact
	opReport
	numOps
)

type fuzzReplica struct {
	t       *testing.T
	log     *group.MemoryLog
	g       *group.Group
	pending []group.Ready

	prev        group.BasicStatus
	prevDurable raftpb.HardState
	applied     raftpb.Index
	// committed holds the term of every entry known committed (durably).
	committed map[raftpb.Index]raftpb.Term
}

func newFuzzReplica(t *testing.T) *fuzzReplica {
	log := group.NewMemoryLog(raftpb.ConfState{Voters: []raftpb.NodeID{1, 2, 3}})
	// Entries 2..9 over terms 1..3; 1..6 committed.
	var ents []raftpb.Entry
	for i := raftpb.Index(2); i <= 9; i++ {
		ents = append(ents, raftpb.Entry{Index: i, Term: raftpb.Term(1 + (i-2)/3), Data: []byte{byte(i)}})
	}
	rd := group.Ready{Entries: ents, HardState: raftpb.HardState{Term: 3, Vote: 2, Commit: 6}}
	if err := log.Persist(&rd); err != nil {
		t.Fatal(err)
	}
	g, err := group.New(group.Config{ID: 1, Shard: 1, Log: log, ElectionTicks: 5, MaxInflightMsgs: 4})
	if err != nil {
		t.Fatal(err)
	}
	f := &fuzzReplica{t: t, log: log, g: g, committed: map[raftpb.Index]raftpb.Term{}}
	f.prev = g.BasicStatus()
	f.prevDurable = log.HardState()
	f.recordCommitted()
	return f
}

func (f *fuzzReplica) recordCommitted() {
	hs := f.log.HardState()
	first, _ := f.log.FirstIndex()
	for i := first; i <= hs.Commit; i++ {
		t, err := f.log.Term(i)
		if err != nil {
			f.t.Fatalf("committed entry %d unreadable: %v", i, err)
		}
		if prev, ok := f.committed[i]; ok && prev != t {
			f.t.Fatalf("committed entry %d changed term %d -> %d", i, prev, t)
		}
		f.committed[i] = t
	}
}

func (f *fuzzReplica) drain() {
	for f.g.HasReady() {
		f.pending = append(f.pending, f.g.Ready())
	}
}

func (f *fuzzReplica) persistOne() {
	f.drain()
	if len(f.pending) == 0 {
		return
	}
	rd := f.pending[0]
	f.pending = f.pending[1:]
	if err := f.log.Persist(&rd); err != nil {
		f.t.Fatalf("persist: %v", err)
	}
	hs := f.log.HardState()
	checkHS(f.t, "durable", f.prevDurable, hs)
	if last, _ := f.log.LastIndex(); hs.Commit > last {
		f.t.Fatalf("durable commit %d beyond durable log %d", hs.Commit, last)
	}
	f.prevDurable = hs
	f.recordCommitted()
	if rd.Snapshot != nil {
		f.applied = max(f.applied, rd.Snapshot.Index)
	}
	for _, e := range rd.CommittedEntries {
		if e.Index != f.applied+1 {
			f.t.Fatalf("released %d after %d", e.Index, f.applied)
		}
		if t, ok := f.committed[e.Index]; ok && t != e.Term {
			f.t.Fatalf("released entry %d of term %d, committed term %d", e.Index, e.Term, t)
		}
		f.applied = e.Index
	}
	if err := f.g.Advance(rd); err != nil {
		f.t.Fatalf("advance: %v", err)
	}
}

func checkHS(t *testing.T, what string, prev, hs raftpb.HardState) {
	if hs.Term < prev.Term || hs.Commit < prev.Commit {
		t.Fatalf("%s hard state went back: %+v -> %+v", what, prev, hs)
	}
	if hs.Term == prev.Term && prev.Vote != raftpb.None && hs.Vote != prev.Vote {
		t.Fatalf("%s vote changed within term %d: %d -> %d", what, hs.Term, prev.Vote, hs.Vote)
	}
}

func (f *fuzzReplica) check() {
	st := f.g.BasicStatus()
	checkHS(f.t, "in-memory", f.prev.HardState, st.HardState)
	if st.HardState.Commit > st.LastIndex {
		f.t.Fatalf("commit %d beyond last index %d", st.HardState.Commit, st.LastIndex)
	}
	if st.Applying > st.HardState.Commit {
		f.t.Fatalf("applying %d beyond commit %d", st.Applying, st.HardState.Commit)
	}
	f.prev = st
}

func (f *fuzzReplica) run(data []byte) {
	var key uint64
	for len(data) > 0 {
		op := data[0] % numOps
		data = data[1:]
		switch op {
		case opMsg:
			if len(data) < 2 {
				return
			}
			n := int(binary.BigEndian.Uint16(data))
			data = data[2:]
			if n > len(data) {
				n = len(data)
			}
			var m raftpb.Message
			err := m.Unmarshal(data[:n])
			data = data[n:]
			if err != nil {
				continue
			}
			// Route it here, from a member (2, 3) or a stranger (4).
			m.Shard, m.To = 1, 1
			m.From = raftpb.NodeID(2 + uint64(m.From)%3)
			_ = f.g.Step(m)
		case opTick:
			f.g.Tick()
		case opPersist:
			f.persistOne()
		case opPropose:
			key++
			_ = f.g.Propose([]raftpb.Entry{{Key: key, Data: []byte{byte(key)}}})
		case opRead:
			key++
			_ = f.g.ReadIndex(key)
		case opTransfer:
			_ = f.g.TransferLeader(raftpb.NodeID(2 + key%3))
		case opCompact:
			if s, err := f.log.Snapshot(); err == nil {
				_ = f.g.Compact(s.Index)
			}
		case opReport:
			f.g.ReportUnreachable(raftpb.NodeID(2 + key%2))
			f.g.ReportSnapshot(raftpb.NodeID(2+key%2), key%2 == 0)
		}
		if err := f.g.Err(); err != nil {
			f.t.Fatalf("group stopped: %v", err)
		}
		f.check()
	}
	for len(f.pending) > 0 || f.g.HasReady() {
		f.persistOne()
		f.check()
	}
}

func FuzzStep(f *testing.F) {
	for _, s := range stepSeeds() {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		newFuzzReplica(t).run(data)
	})
}

type stepSeed struct {
	name string
	data []byte
}

func msgOp(m raftpb.Message) []byte {
	enc := m.MarshalAppend(nil)
	b := []byte{opMsg, 0, 0}
	binary.BigEndian.PutUint16(b[1:], uint16(len(enc)))
	return append(b, enc...)
}

func ops(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func repeat(op byte, n int) []byte { return bytes.Repeat([]byte{op}, n) }

// stepSeeds are plausible histories: an election won, appends with and
// without conflicts, a snapshot, reads and transfers, stale and garbage
// messages.
func stepSeeds() []stepSeed {
	ents := func(from raftpb.Index, term raftpb.Term, n int) []raftpb.Entry {
		var es []raftpb.Entry
		for i := 0; i < n; i++ {
			es = append(es, raftpb.Entry{Index: from + raftpb.Index(i), Term: term, Data: []byte("x")})
		}
		return es
	}
	return []stepSeed{
		{"elect", ops(repeat(opTick, 12), []byte{opPersist},
			msgOp(raftpb.Message{Type: raftpb.MsgPreVoteResp, From: 2, Term: 4}),
			[]byte{opPersist},
			msgOp(raftpb.Message{Type: raftpb.MsgVoteResp, From: 2, Term: 4}),
			[]byte{opPersist, opPropose, opPersist},
			msgOp(raftpb.Message{Type: raftpb.MsgAppResp, From: 2, Term: 4, Index: 11}),
			[]byte{opPersist, opRead, opPersist},
			msgOp(raftpb.Message{Type: raftpb.MsgHeartbeatResp, From: 2, Term: 4, Context: 1}),
			[]byte{opPersist, opTransfer, opPersist})},
		{"follow", ops(
			msgOp(raftpb.Message{Type: raftpb.MsgApp, From: 2, Term: 4, LogTerm: 3, Index: 9, Commit: 9,
				Entries: ents(10, 4, 3)}),
			[]byte{opPersist, opPersist},
			msgOp(raftpb.Message{Type: raftpb.MsgHeartbeat, From: 2, Term: 4, Commit: 12, Context: 3}),
			[]byte{opPersist})},
		{"conflict", ops(
			msgOp(raftpb.Message{Type: raftpb.MsgApp, From: 3, Term: 5, LogTerm: 2, Index: 7,
				Commit: 8, Entries: ents(8, 5, 4)}),
			[]byte{opPersist},
			msgOp(raftpb.Message{Type: raftpb.MsgApp, From: 3, Term: 5, LogTerm: 1, Index: 4,
				Commit: 6, Entries: ents(5, 5, 2)}),
			[]byte{opPersist, opPersist})},
		{"snapshot", ops(
			msgOp(raftpb.Message{Type: raftpb.MsgSnap, From: 2, Term: 6, Snapshot: &raftpb.SnapshotMeta{
				Index: 20, Term: 5, ConfState: raftpb.ConfState{Voters: []raftpb.NodeID{1, 2, 3}}}}),
			[]byte{opPersist, opPersist, opCompact},
			msgOp(raftpb.Message{Type: raftpb.MsgApp, From: 2, Term: 6, LogTerm: 5, Index: 20,
				Commit: 21, Entries: ents(21, 6, 1)}),
			[]byte{opPersist})},
		{"votes", ops(
			msgOp(raftpb.Message{Type: raftpb.MsgPreVote, From: 2, Term: 4, LogTerm: 3, Index: 9}),
			msgOp(raftpb.Message{Type: raftpb.MsgVote, From: 3, Term: 5, LogTerm: 3, Index: 9}),
			[]byte{opPersist},
			msgOp(raftpb.Message{Type: raftpb.MsgVote, From: 2, Term: 5, LogTerm: 3, Index: 9}),
			msgOp(raftpb.Message{Type: raftpb.MsgVote, From: 4, Term: 9, LogTerm: 9, Index: 99}),
			[]byte{opPersist})},
		{"garbage", ops(
			msgOp(raftpb.Message{Type: raftpb.MsgApp, From: 2, Term: 1 << 62}),
			msgOp(raftpb.Message{Type: raftpb.MsgHeartbeat, From: 2, Term: 3, Commit: 1 << 40}),
			msgOp(raftpb.Message{Type: raftpb.MsgApp, From: 2, Term: 3, LogTerm: 3, Index: 9,
				Entries: []raftpb.Entry{{Index: 11, Term: 3}}}),
			msgOp(raftpb.Message{Type: raftpb.MsgTimeoutNow, From: 4, Term: 3}),
			[]byte{opReport, opPersist})},
		{"quiesce", ops(
			msgOp(raftpb.Message{Type: raftpb.MsgApp, From: 2, Term: 3, LogTerm: 3, Index: 9, Commit: 9}),
			[]byte{opPersist},
			msgOp(raftpb.Message{Type: raftpb.MsgQuiesce, From: 2, Term: 3, LogTerm: 3, Index: 9, Commit: 9}),
			repeat(opTick, 20), []byte{opRead, opPersist})},
	}
}

// TestStepFuzzCorpus keeps the committed seed corpus equal to stepSeeds.
func TestStepFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzStep")
	for i, s := range stepSeeds() {
		path := filepath.Join(dir, fmt.Sprintf("seed-%02d-%s", i, s.name))
		want := []byte("go test fuzz v1\n[]byte(" + strconv.Quote(string(s.data)) + ")\n")
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is missing or stale (%v); run go test ./group -run '^TestStepFuzzCorpus$' -update-corpus", path, err)
		}
	}
}

// TestStepSeedsRun runs every seed, so they stay meaningful (and are run
// under -race by make test).
func TestStepSeedsRun(t *testing.T) {
	for _, s := range stepSeeds() {
		t.Run(s.name, func(t *testing.T) { newFuzzReplica(t).run(s.data) })
	}
}
