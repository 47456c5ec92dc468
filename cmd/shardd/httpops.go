package main

import (
	"encoding/json"
	"net/http"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
)

// opsHandler serves /metrics (Prometheus text: the node's metrics plus the
// Go runtime and process), /healthz and /status (JSON).
func (s *server) opsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		s.node.WritePrometheus(w)
		vm.WriteProcessMetrics(w)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		st := s.status()
		if st.Failed != "" {
			http.Error(w, st.Failed, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s.status())
	})
	return mux
}

// nodeStatus is the JSON of /status (and the source of the KV Status RPC).
type nodeStatus struct {
	Node        uint64        `json:"node"`
	Shards      uint64        `json:"shards"`
	Replicas    int           `json:"replicas"`
	UptimeS     float64       `json:"uptime_s"`
	Failed      string        `json:"failed,omitempty"`
	Peers       []peerStatus  `json:"peers"`
	LocalShards []shardStatus `json:"local_shards"`
}

type peerStatus struct {
	Node      uint64 `json:"node"`
	Address   string `json:"address"`
	Reachable bool   `json:"reachable"`
}

type shardStatus struct {
	Shard    uint64   `json:"shard"`
	Role     string   `json:"role"`
	Term     uint64   `json:"term"`
	Leader   uint64   `json:"leader"`
	Commit   uint64   `json:"commit"`
	Applied  uint64   `json:"applied"`
	Lag      uint64   `json:"lag"`
	Voters   []uint64 `json:"voters"`
	Learners []uint64 `json:"learners,omitempty"`
	Quiesced bool     `json:"quiesced"`
	Error    string   `json:"error,omitempty"`
}

func (s *server) status() nodeStatus {
	st := nodeStatus{Node: s.f.nodeID, Shards: s.f.shards, Replicas: s.f.replicas,
		UptimeS: time.Since(s.start).Seconds()}
	for _, p := range s.node.Peers() {
		st.Peers = append(st.Peers, peerStatus{Node: p.NodeID, Address: s.f.peers[p.NodeID], Reachable: p.Reachable})
	}
	for _, id := range s.node.Shards() {
		ss, err := s.node.ShardStatus(id)
		if err != nil {
			continue
		}
		sh := shardStatus{Shard: id, Role: ss.Role, Term: ss.Term, Leader: ss.Leader, Commit: ss.Commit,
			Applied: ss.Applied, Voters: ss.Voters, Learners: ss.Learners, Quiesced: ss.Quiesced}
		if ss.Commit > ss.Applied {
			sh.Lag = ss.Commit - ss.Applied
		}
		if ss.Err != nil {
			sh.Error = ss.Err.Error()
		}
		st.LocalShards = append(st.LocalShards, sh)
	}
	return st
}
