package transporttest

import (
	"time"

	"github.com/shardd/shardd/raftpb"
)

// livenessEvent is a report due to one handler.
type livenessEvent struct {
	to          *memTransport
	node        raftpb.NodeID
	unreachable bool
}

// runLiveness checks liveness four times per UnreachableAfter (real-time
// mode).
func (n *Network) runLiveness() {
	defer n.wg.Done()
	ticker := time.NewTicker(max(n.cfg.UnreachableAfter/4, time.Millisecond))
	defer ticker.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-ticker.C:
			n.checkLiveness()
		}
	}
}

// checkLiveness reports, edge-triggered, each node that another node
// cannot hear from (down, closed, or its link to the observer cut) for
// UnreachableAfter, and each that it can hear from again. Reports are made
// without the lock, by the observer's goroutine (or, in manual mode, the
// caller's); nodes that are down or closed are told nothing.
func (n *Network) checkLiveness() {
	n.mu.Lock()
	now := n.nowLocked()
	var events []livenessEvent
	for _, oid := range n.order {
		obs := n.nodes[oid]
		if obs.closed || n.down[oid] {
			continue
		}
		for _, sid := range n.order {
			if sid == oid {
				continue
			}
			r := obs.reach[sid]
			if r == nil {
				r = &reach{silentSince: -1}
				obs.reach[sid] = r
			}
			if n.blockedLocked(sid, oid) {
				if r.silentSince < 0 {
					r.silentSince = now
				}
				if !r.unreachable && now-r.silentSince >= n.cfg.UnreachableAfter {
					r.unreachable = true
					events = append(events, livenessEvent{obs, sid, true})
				}
				continue
			}
			r.silentSince = -1
			if r.unreachable {
				r.unreachable = false
				events = append(events, livenessEvent{obs, sid, false})
			}
		}
	}
	if !n.cfg.Manual {
		// The observer's own goroutine makes the reports.
		for _, e := range events {
			e.to.events = append(e.to.events, e)
		}
	}
	n.mu.Unlock()
	if n.cfg.Manual {
		for _, e := range events {
			e.report()
		}
		return
	}
	for _, e := range events {
		e.to.signal()
	}
}

// report makes the report to its handler.
func (e livenessEvent) report() {
	if e.unreachable {
		e.to.h.NodeUnreachable(e.node)
	} else {
		e.to.h.NodeReachable(e.node)
	}
}
