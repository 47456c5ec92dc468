package engine

import (
	"fmt"
	"io"
	"sync/atomic"

	vm "github.com/VictoriaMetrics/metrics"
)

// metrics are the node's Prometheus metrics, in a Set of their own so that
// several nodes in one process (tests, the demo, bench) do not collide.
type metrics struct {
	set *vm.Set

	proposals, proposalErrors          *vm.Counter
	applied                            *vm.Counter
	messagesSent, messagesReceived     *vm.Counter
	unknownShard                       *vm.Counter
	leaderChanges                      *vm.Counter
	quiesces, replicaSteps             *vm.Counter
	snapshotsTaken, snapshotsSent      *vm.Counter
	stepBatch, stepPass, proposalTime  *vm.Histogram
	readTime                           *vm.Histogram
	quiescedShards                     atomic.Int64
	reads, readErrors, staleReads      *vm.Counter
	membershipChanges, transfers       *vm.Counter
	storeFailures                      *vm.Counter
	applyLagFn, shardsFn, quiescedFunc func() float64
}

func newMetrics(n *Node) *metrics {
	s := vm.NewSet()
	m := &metrics{
		set:               s,
		proposals:         s.NewCounter("shardd_proposals_total"),
		proposalErrors:    s.NewCounter("shardd_proposal_errors_total"),
		applied:           s.NewCounter("shardd_applied_entries_total"),
		messagesSent:      s.NewCounter("shardd_raft_messages_sent_total"),
		messagesReceived:  s.NewCounter("shardd_raft_messages_received_total"),
		unknownShard:      s.NewCounter("shardd_raft_messages_unknown_shard_total"),
		leaderChanges:     s.NewCounter("shardd_leader_changes_total"),
		quiesces:          s.NewCounter("shardd_quiesces_total"),
		replicaSteps:      s.NewCounter("shardd_replica_steps_total"),
		snapshotsTaken:    s.NewCounter("shardd_snapshots_taken_total"),
		snapshotsSent:     s.NewCounter("shardd_snapshots_sent_total"),
		stepBatch:         s.NewHistogram("shardd_step_batch_replicas"),
		stepPass:          s.NewHistogram("shardd_step_pass_seconds"),
		proposalTime:      s.NewHistogram("shardd_proposal_duration_seconds"),
		readTime:          s.NewHistogram("shardd_read_duration_seconds"),
		reads:             s.NewCounter("shardd_reads_total"),
		readErrors:        s.NewCounter("shardd_read_errors_total"),
		staleReads:        s.NewCounter("shardd_stale_reads_total"),
		membershipChanges: s.NewCounter("shardd_membership_changes_total"),
		transfers:         s.NewCounter("shardd_leader_transfers_total"),
		storeFailures:     s.NewCounter("shardd_store_failures_total"),
	}
	s.NewGauge("shardd_quiesced_shards", func() float64 { return float64(m.quiescedShards.Load()) })
	s.NewGauge("shardd_shards", func() float64 {
		n.mu.RLock()
		defer n.mu.RUnlock()
		return float64(len(n.replicas))
	})
	s.NewGauge("shardd_apply_lag_entries", func() float64 {
		n.mu.RLock()
		list := n.list
		n.mu.RUnlock()
		var lag uint64
		for _, r := range list {
			st := r.Status()
			if st.Commit > st.Applied {
				lag += uint64(st.Commit - st.Applied)
			}
		}
		return float64(lag)
	})
	s.NewGauge("shardd_fsyncs_total", func() float64 { return float64(n.store.Stats().Flushes) })
	s.NewGauge("shardd_persisted_entries_total", func() float64 { return float64(n.store.Stats().Entries) })
	s.NewGauge("shardd_persist_requests_total", func() float64 { return float64(n.store.Stats().Requests) })
	s.NewGauge("shardd_entries_per_fsync", func() float64 {
		st := n.store.Stats()
		if st.Flushes == 0 {
			return 0
		}
		return float64(st.Entries) / float64(st.Flushes)
	})
	s.NewGauge("shardd_entry_cache_bytes", func() float64 { return float64(n.store.Stats().CacheBytes) })
	s.NewGauge("shardd_transport_frames_sent_total", func() float64 { return float64(n.tr.Stats().FramesSent) })
	s.NewGauge("shardd_transport_frames_received_total", func() float64 { return float64(n.tr.Stats().FramesReceived) })
	s.NewGauge("shardd_transport_dropped_total", func() float64 { return float64(n.tr.Stats().Dropped) })
	s.NewGauge("shardd_transport_rejected_total", func() float64 { return float64(n.tr.Stats().Rejected) })
	s.NewGauge("shardd_transport_heartbeats_coalesced_total", func() float64 {
		return float64(n.tr.Stats().HeartbeatsCoalesced)
	})
	return m
}

// WritePrometheus writes the node's metrics in Prometheus text format,
// including per-peer transport counters.
func (n *Node) WritePrometheus(w io.Writer) {
	n.m.set.WritePrometheus(w)
	for _, p := range n.tr.PeerStats() {
		peer := fmt.Sprintf(`{peer="%d"}`, uint64(p.Node))
		vm.WriteCounterUint64(w, "shardd_peer_messages_sent_total"+peer, p.MessagesSent)
		vm.WriteCounterUint64(w, "shardd_peer_messages_received_total"+peer, p.MessagesReceived)
		vm.WriteCounterUint64(w, "shardd_peer_bytes_sent_total"+peer, p.BytesSent)
		vm.WriteCounterUint64(w, "shardd_peer_bytes_received_total"+peer, p.BytesReceived)
		vm.WriteCounterUint64(w, "shardd_peer_dropped_total"+peer, p.Dropped)
		reach := 0
		if p.Reachable {
			reach = 1
		}
		vm.WriteGaugeUint64(w, "shardd_peer_reachable"+peer, uint64(reach))
	}
}
