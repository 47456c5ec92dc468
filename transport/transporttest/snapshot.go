package transporttest

import (
	"container/heap"
	"fmt"
	"io"

	"github.com/shardd/shardd/raftpb"
	"github.com/shardd/shardd/transport"
)

// snapJob is a snapshot waiting to be transferred.
type snapJob struct {
	from *memTransport
	m    raftpb.Message
	open func() (io.ReadCloser, int64, error)
	done func(error)
}

// runSnapshots transfers snapshots one at a time (real-time mode).
func (n *Network) runSnapshots() {
	defer n.wg.Done()
	for {
		n.mu.Lock()
		var job snapJob
		ok := len(n.snaps) > 0
		if ok {
			job = n.snaps[0]
			n.snaps = n.snaps[1:]
		}
		n.mu.Unlock()
		if ok {
			n.transfer(job)
			continue
		}
		select {
		case <-n.stop:
			return
		case <-n.snapWake:
		}
	}
}

// transfer moves one snapshot from the sender's open to the receiver's
// sink, under the same contract as the real transport: the receiver's
// sink gets exactly size bytes, is committed, and only then is the
// MsgSnap delivered (through the receiver's inbox, without delay); any
// failure aborts the sink and reports an error to done.
func (n *Network) transfer(j snapJob) {
	err := n.transferErr(j)
	if err != nil {
		j.from.stats.snapshotsFailed.Add(1)
	} else {
		j.from.stats.snapshotsSent.Add(1)
	}
	j.done(err)
}

func (n *Network) transferErr(j snapJob) error {
	m := j.m
	if m.Type != raftpb.MsgSnap || m.Snapshot == nil || m.From != j.from.id {
		return fmt.Errorf("transporttest: SendSnapshot needs a MsgSnap from %d, got %v", j.from.id, m)
	}
	n.mu.Lock()
	dst := n.nodes[m.To]
	switch {
	case j.from.closed || n.closed:
		n.mu.Unlock()
		return transport.ErrClosed
	case dst == nil:
		n.mu.Unlock()
		return fmt.Errorf("%w: snapshot to node %d", transport.ErrUnknownNode, m.To)
	case n.blockedLocked(m.From, m.To):
		n.mu.Unlock()
		return fmt.Errorf("transporttest: snapshot %d->%d: node down or link cut", m.From, m.To)
	}
	if f := n.faultsLocked(link{m.From, m.To}); f.DropRate > 0 && n.rnd.Float64() < f.DropRate {
		n.mu.Unlock()
		return fmt.Errorf("transporttest: snapshot %d->%d lost", m.From, m.To)
	}
	n.mu.Unlock()

	r, size, err := j.open()
	if err != nil {
		return fmt.Errorf("transporttest: opening snapshot: %w", err)
	}
	defer r.Close()
	sink, err := dst.h.SnapshotSink(clone(m), size)
	if err != nil {
		return fmt.Errorf("%w: %v", transport.ErrSnapshotRejected, err)
	}
	abort := func(err error) error {
		dst.stats.snapshotsFailed.Add(1)
		_ = sink.Abort()
		return err
	}
	copied, err := io.Copy(sink, io.LimitReader(r, size))
	if err != nil {
		return abort(fmt.Errorf("transporttest: copying snapshot: %w", err))
	}
	if copied != size {
		return abort(fmt.Errorf("%w: %d of %d bytes", transport.ErrSnapshotRejected, copied, size))
	}
	if err := sink.Commit(); err != nil {
		return abort(fmt.Errorf("%w: %v", transport.ErrSnapshotRejected, err))
	}
	dst.stats.snapshotsRecv.Add(1)

	n.mu.Lock()
	if !dst.closed && !n.down[dst.id] {
		n.seq++
		heap.Push(&dst.inbox, envelope{at: n.nowLocked(), seq: n.seq, from: m.From, m: clone(m)})
	}
	n.mu.Unlock()
	dst.signal()
	return nil
}
