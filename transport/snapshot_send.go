package transport

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/shardd/shardd/raftpb"
)

// permanentError marks a snapshot failure that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// SendSnapshot implements Transport. Each transfer runs on its own
// goroutine, owned by the transport; at most MaxConcurrentSnapshots stream
// at once, the others wait their turn. Each attempt dials a connection of
// its own, so snapshot data never queues ahead of Raft messages. Once the
// transport is closed, done(ErrClosed) is called before SendSnapshot
// returns.
func (t *GRPC) SendSnapshot(m raftpb.Message, open func() (io.ReadCloser, int64, error), done func(error)) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		done(ErrClosed)
		return
	}
	t.wg.Add(1)
	t.mu.Unlock()
	go func() {
		defer t.wg.Done()
		err := t.sendSnapshot(m, open)
		if err != nil {
			t.stats.snapshotsFailed.Add(1)
			t.lg.Warn("transport: snapshot not sent", "peer", m.To, "shard", m.Shard, "err", err)
		} else {
			t.stats.snapshotsSent.Add(1)
		}
		done(err)
	}()
}

// sendSnapshot sends one snapshot, retrying from the start with backoff
// when an attempt fails for a reason a retry may fix.
func (t *GRPC) sendSnapshot(m raftpb.Message, open func() (io.ReadCloser, int64, error)) error {
	p := t.peers[m.To]
	switch {
	case p == nil:
		return fmt.Errorf("%w: snapshot to node %d", ErrUnknownNode, m.To)
	case m.Type != raftpb.MsgSnap || m.Snapshot == nil || m.From != t.self || len(m.Entries) > 0:
		return fmt.Errorf("transport: SendSnapshot needs a MsgSnap from %d with snapshot metadata, got %v", t.self, m)
	}
	ctx := t.ctx
	select {
	case t.snapSend <- struct{}{}:
		defer func() { <-t.snapSend }()
	case <-ctx.Done():
		return ErrClosed
	}
	bo := newJitterBackoff(t.cfg.DialBackoffMin, t.cfg.DialBackoffMax, t.cfg.JitterSeed, uint64(m.Shard))
	for attempt := 0; ; attempt++ {
		err := t.snapshotAttempt(ctx, p, m, open)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ErrClosed
		}
		var perm permanentError
		if errors.As(err, &perm) || isRefusal(err) || attempt >= t.cfg.SnapshotRetries {
			return err
		}
		t.lg.Info("transport: snapshot attempt failed, retrying from the start",
			"peer", m.To, "shard", m.Shard, "attempt", attempt+1, "err", err)
		timer := time.NewTimer(bo.NextBackOff())
		select {
		case <-ctx.Done():
			timer.Stop()
			return ErrClosed
		case <-timer.C:
		}
	}
}

// snapshotAttempt streams the snapshot once, from the beginning.
func (t *GRPC) snapshotAttempt(ctx context.Context, p *peer, m raftpb.Message, open func() (io.ReadCloser, int64, error)) error {
	r, size, err := open()
	if err != nil {
		return permanentError{fmt.Errorf("transport: opening snapshot: %w", err)}
	}
	defer closeQuietly(r)
	if size < 0 || size > t.cfg.MaxSnapshotBytes {
		return permanentError{fmt.Errorf("transport: snapshot of %d bytes (MaxSnapshotBytes %d)", size, t.cfg.MaxSnapshotBytes)}
	}

	// Every chunk must get through within SnapshotTimeout; the watchdog is
	// pushed back after each one and cancels the stream when it fires.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watchdog := time.AfterFunc(t.cfg.SnapshotTimeout, cancel)
	defer watchdog.Stop()

	conn, err := t.dial(p.addr)
	if err != nil {
		return err
	}
	defer closeQuietly(conn)
	id := identity{cluster: t.cfg.ClusterID, from: t.self, to: p.id}
	cs, err := conn.NewStream(id.outgoing(ctx), snapshotStreamDesc, snapshotMethod)
	if err != nil {
		return err
	}
	// finish reports why the stream ended: after a failed SendMsg the
	// receiver's status is the better reason.
	finish := func(err error) error {
		var resp inFrame
		if rerr := cs.RecvMsg(&resp); rerr != nil && rerr != io.EOF {
			return snapshotStatusErr(rerr)
		}
		if err == nil && (len(resp.data) != 1 || resp.data[0] != chunkOK) {
			return fmt.Errorf("%w: unexpected reply", ErrSnapshotRejected)
		}
		return err
	}

	batch := raftpb.Batch{ClusterID: t.cfg.ClusterID, From: t.self, To: p.id, Messages: []raftpb.Message{m}}
	out := outFrame{data: frameSlice(appendBegin(nil, uint64(size), batch.MarshalAppend(nil)))}
	if err := cs.SendMsg(&out); err != nil {
		return finish(err)
	}
	dataBytes := int64(t.cfg.SnapshotChunkBytes - chunkHeaderBytes)
	var sent int64
	var crc uint32
	for sent < size {
		n := min(dataBytes, size-sent)
		bufp := t.pool.Get(chunkHeaderBytes + int(n))
		if _, err := io.ReadFull(r, (*bufp)[chunkHeaderBytes:]); err != nil {
			t.pool.Put(bufp)
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				err = fmt.Errorf("snapshot ended at %d of %d bytes announced: %w", sent, size, err)
			}
			return fmt.Errorf("transport: reading snapshot: %w", err)
		}
		crc = crc32.Update(crc, castagnoli, (*bufp)[chunkHeaderBytes:])
		putDataHeader(*bufp, uint64(sent))
		out.data = mem.BufferSlice{t.pool.buffer(bufp)}
		if err := cs.SendMsg(&out); err != nil {
			return finish(err)
		}
		sent += n
		watchdog.Reset(t.cfg.SnapshotTimeout)
	}
	out.data = frameSlice(appendEnd(nil, uint64(size), crc))
	if err := cs.SendMsg(&out); err != nil {
		return finish(err)
	}
	if err := cs.CloseSend(); err != nil {
		return finish(err)
	}
	return finish(nil)
}

// snapshotStatusErr turns the receiver's refusal into ErrSnapshotRejected;
// other errors (a broken stream) stay as they are, to be retried.
func snapshotStatusErr(err error) error {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.PermissionDenied,
		codes.Internal, codes.DataLoss, codes.ResourceExhausted:
		return fmt.Errorf("%w: %w", ErrSnapshotRejected, err)
	}
	return err
}
