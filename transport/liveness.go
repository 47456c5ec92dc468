package transport

import "time"

// monitor reports peers unreachable and reachable. It is the only writer
// of peer.unreachable and the only caller of the Handler's liveness
// methods, so each change is reported once, in order, holding no lock.
//
// It checks every half ping interval, so a peer that falls silent is
// reported between MissedPings and MissedPings+½ ping intervals after it
// was last heard from.
func (t *GRPC) monitor() {
	defer t.wg.Done()
	ticker := time.NewTicker(max(t.cfg.PingInterval/2, time.Millisecond))
	defer ticker.Stop()
	bound := int64(t.cfg.unreachableAfter())
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-ticker.C:
		}
		now := t.now()
		for _, p := range t.peerList {
			silent := now-p.lastHeard.Load() > bound
			if silent == p.unreachable.Load() {
				continue
			}
			p.unreachable.Store(silent)
			if silent {
				t.lg.Info("transport: peer unreachable", "peer", p.id, "silent", time.Duration(now-p.lastHeard.Load()))
				p.breakStream()
				t.cfg.Handler.NodeUnreachable(p.id)
			} else {
				t.lg.Info("transport: peer reachable", "peer", p.id)
				t.cfg.Handler.NodeReachable(p.id)
			}
		}
	}
}
