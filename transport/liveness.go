package transport

import "time"

// monitor reports peers unreachable and reachable. It is the only writer
// of peer.unreachable and the only caller of the Handler's liveness
// methods, so each change is reported once, in order, holding no lock.
//
// It checks every half ping interval, so a peer that falls silent is
// reported between MissedPings and MissedPings+½ ping intervals after it
// was last heard from. A check that runs late by more than a ping interval
// means this process was stalled (CPU starvation, a long GC pause): the
// silence may be ours, not the peer's, so that check reports no peer
// unreachable.
func (t *GRPC) monitor() {
	defer t.wg.Done()
	lv := liveness{
		period: max(t.cfg.PingInterval/2, time.Millisecond),
		ping:   t.cfg.PingInterval,
		bound:  t.cfg.unreachableAfter(),
	}
	ticker := time.NewTicker(lv.period)
	defer ticker.Stop()
	last := t.now()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-ticker.C:
		}
		now := t.now()
		late := lv.late(now - last)
		last = now
		for _, p := range t.peerList {
			silent := time.Duration(now - p.lastHeard.Load())
			was := p.unreachable.Load()
			is := lv.unreachable(silent, was, late)
			if is == was {
				continue
			}
			p.unreachable.Store(is)
			if is {
				t.lg.Info("transport: peer unreachable", "peer", p.id, "silent", silent)
				p.breakStream()
				t.cfg.Handler.NodeUnreachable(p.id)
			} else {
				t.lg.Info("transport: peer reachable", "peer", p.id)
				t.cfg.Handler.NodeReachable(p.id)
			}
		}
	}
}

// liveness is the monitor's judgement, apart from its clock and peers.
type liveness struct {
	period, ping, bound time.Duration
}

// late reports whether a check came more than a ping interval after it
// was due (sinceLast is the time since the previous check).
func (lv liveness) late(sinceLast int64) bool {
	return time.Duration(sinceLast) > lv.period+lv.ping
}

// unreachable is a peer's new state: silent for longer than the bound
// makes it unreachable, anything heard within it reachable; a late check
// only ever declares reachable.
func (lv liveness) unreachable(silent time.Duration, was, late bool) bool {
	if silent <= lv.bound {
		return false
	}
	if late {
		return was
	}
	return true
}
