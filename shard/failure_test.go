package shard

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardd/shardd/group"
	"github.com/shardd/shardd/raftpb"
)

// failingLog is a MemoryLog whose reads can be made to fail.
type failingLog struct {
	*group.MemoryLog
	fail atomic.Bool
}

var errDiskRead = errors.New("disk read failed")

func (l *failingLog) Entries(lo, hi raftpb.Index, maxBytes uint64) ([]raftpb.Entry, error) {
	if l.fail.Load() {
		return nil, errDiskRead
	}
	return l.MemoryLog.Entries(lo, hi, maxBytes)
}

func (l *failingLog) Term(i raftpb.Index) (raftpb.Term, error) {
	if l.fail.Load() {
		return 0, errDiskRead
	}
	return l.MemoryLog.Term(i)
}

func TestStorageFailureStopsReplica(t *testing.T) {
	mem := group.NewMemoryLog(raftpb.ConfState{Voters: []raftpb.NodeID{1}})
	fl := &failingLog{MemoryLog: mem}
	n := newNode(t, 1, nodeOpts{log: mem, core: func(c *group.Config) { c.Log = fl }})
	n.electSingle()
	p := n.propose(1, "a=1")
	// Appended and persisted; its release for applying reads the log.
	rds, _ := n.r.Step(nil, n.ev, 0)
	for i := range rds {
		rd := rds[i]
		if err := n.log.Persist(&rd); err != nil {
			t.Fatal(err)
		}
		n.r.Persisted(rd)
	}
	fl.fail.Store(true)
	rr := n.read()
	queued := n.propose(2, "b=1")
	// The failure may surface in the step that hits it or in the next one
	// (the engine steps again after persisting what a step returned).
	for range 3 {
		n.step(0)
	}
	err := n.r.Err()
	if !errors.Is(err, group.ErrStorage) || !errors.Is(err, errDiskRead) {
		t.Fatalf("Err = %v, want ErrStorage wrapping the read error", err)
	}
	if st := n.r.Status(); !errors.Is(st.Err, errDiskRead) {
		t.Fatalf("Status().Err = %v", st.Err)
	}
	if _, perr := mustResult(t, p); !errors.Is(perr, ErrResultUnknown) {
		t.Fatalf("proposal in Raft: %v, want ErrResultUnknown", perr)
	}
	if !isDone(rr.Done()) || rr.Err() == nil {
		t.Fatalf("read: done=%v err=%v", isDone(rr.Done()), rr.Err())
	}
	if !isDone(queued.Done()) {
		t.Fatal("queued proposal not resolved")
	}
	if _, perr := n.r.Propose(3, []byte("c=1")); !errors.Is(perr, ErrStopped) {
		t.Fatalf("Propose after failure: %v", perr)
	}
}

func TestAdvanceOutOfOrderStopsReplica(t *testing.T) {
	n := newLeader(t, nodeOpts{})
	n.propose(1, "a=1")
	rds1, _ := n.r.Step(nil, n.ev, 0)
	n.propose(2, "b=1")
	rds2, _ := n.r.Step(nil, n.ev, 0)
	if len(rds1) == 0 || len(rds2) == 0 {
		t.Fatalf("setup: Readys %d %d", len(rds1), len(rds2))
	}
	n.r.Persisted(rds2[0])
	n.r.Persisted(rds1[0])
	n.r.Step(nil, n.ev, 0)
	if err := n.r.Err(); !errors.Is(err, group.ErrAdvanceOutOfOrder) {
		t.Fatalf("Err = %v, want ErrAdvanceOutOfOrder", err)
	}
}

func TestInvalidMessageIsIgnored(t *testing.T) {
	n := newLeader(t, nodeOpts{})
	n.r.AddMessages(raftpb.Message{Type: raftpb.MsgApp, Shard: testShard + 1, From: 2, To: 1, Term: 2})
	_, res := n.step(0)
	if !res.Active || n.r.Err() != nil {
		t.Fatalf("res %+v err %v", res, n.r.Err())
	}
	n.r.AddMessages(raftpb.Message{Type: raftpb.MsgHeartbeatResp, Shard: testShard, From: 2, To: 1, Term: 2})
	if _, res := n.step(0); res.Active {
		t.Fatal("a heartbeat response is activity")
	}
}

// TestConcurrentUse drives a replica the way the engine does: one step
// goroutine, one apply goroutine, and clients on other goroutines (run it
// under -race).
func TestConcurrentUse(t *testing.T) {
	n := newLeader(t, nodeOpts{maxPending: 16})
	r := n.r
	stop := make(chan struct{})
	var workers sync.WaitGroup
	var logMu sync.Mutex // the MemoryLog is not safe for concurrent use
	workers.Add(2)
	go func() { // step worker
		defer workers.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			logMu.Lock()
			rds, _ := r.Step(nil, n.ev, 0)
			for i := range rds {
				rd := rds[i]
				if err := n.log.Persist(&rd); err != nil {
					t.Error(err)
				}
				r.Persisted(rd)
			}
			logMu.Unlock()
			if len(rds) == 0 {
				time.Sleep(20 * time.Microsecond)
			}
		}
	}()
	go func() { // apply worker
		defer workers.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if r.HasWork() {
				r.Apply(n.ev)
			} else {
				time.Sleep(20 * time.Microsecond)
			}
		}
	}()

	const clients, perClient = 4, 50
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perClient {
				key := uint64(c*1000 + i + 1)
				var p *Proposal
				for {
					var err error
					p, err = r.Propose(key, fmt.Appendf(nil, "c%d=%d", c, i))
					if err == nil {
						break
					}
					if !errors.Is(err, ErrBusy) {
						t.Error(err)
						return
					}
					time.Sleep(50 * time.Microsecond)
				}
				select {
				case <-p.Done():
				case <-time.After(10 * time.Second):
					t.Errorf("proposal %d not completed", key)
					return
				}
				res, err := p.Result()
				if err != nil || string(res.Data) != fmt.Sprintf("c%d", c) {
					t.Errorf("proposal %d: %+v %v", key, res, err)
				}
				if i%10 == 0 {
					rr, err := r.Read()
					if err != nil {
						t.Error(err)
						return
					}
					waitDone(t, rr.Done(), "read")
					v, err := r.Lookup(fmt.Appendf(nil, "c%d", c))
					if err != nil || string(v) != fmt.Sprint(i) {
						t.Errorf("read after own write: %q %v", v, err)
					}
					_ = r.Status()
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	workers.Wait()
	if got := r.outstanding.Load(); got != 0 {
		t.Fatalf("outstanding = %d", got)
	}
	if got := len(n.kv.appliedIndexes()); got != clients*perClient {
		t.Fatalf("applied %d commands, want %d", got, clients*perClient)
	}
	r.Stop(nil)
}
