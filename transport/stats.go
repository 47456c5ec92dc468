package transport

import "sync/atomic"

// counters are a transport's cumulative counters, updated without locks.
type counters struct {
	messagesSent, messagesReceived                    atomic.Uint64
	framesSent, framesReceived                        atomic.Uint64
	bytesSent, bytesReceived                          atomic.Uint64
	heartbeatsCoalesced                               atomic.Uint64
	dropped, rejected                                 atomic.Uint64
	snapshotsSent, snapshotsReceived, snapshotsFailed atomic.Uint64
}

func (c *counters) load() Stats {
	return Stats{
		MessagesSent:        c.messagesSent.Load(),
		MessagesReceived:    c.messagesReceived.Load(),
		FramesSent:          c.framesSent.Load(),
		FramesReceived:      c.framesReceived.Load(),
		BytesSent:           c.bytesSent.Load(),
		BytesReceived:       c.bytesReceived.Load(),
		HeartbeatsCoalesced: c.heartbeatsCoalesced.Load(),
		Dropped:             c.dropped.Load(),
		Rejected:            c.rejected.Load(),
		SnapshotsSent:       c.snapshotsSent.Load(),
		SnapshotsReceived:   c.snapshotsReceived.Load(),
		SnapshotsFailed:     c.snapshotsFailed.Load(),
	}
}

// peerCounters are the counters of one peer.
type peerCounters struct {
	messagesSent, messagesReceived atomic.Uint64
	bytesSent, bytesReceived       atomic.Uint64
	dropped                        atomic.Uint64
}
