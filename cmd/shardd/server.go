package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	sharddv1 "github.com/shardd/shardd/api/shardd/v1"
	"github.com/shardd/shardd/engine"
	"github.com/shardd/shardd/kv"
)

// server is one shardd node: the engine with the built-in KV state
// machine, the client KV gRPC service and the operations HTTP endpoints.
type server struct {
	f     *serveFlags
	lg    *slog.Logger
	node  *engine.Node
	kv    *kv.Store
	place placement
	start time.Time

	grpcSrv *grpc.Server
	httpSrv *http.Server
	wg      sync.WaitGroup

	fwdMu sync.Mutex
	fwd   map[uint64]*grpc.ClientConn // client connections to other nodes
	conns []*grpc.ClientConn
}

// listeners lets the demo and the tests bind ephemeral ports first; nil
// fields are opened from the flags.
type listeners struct {
	raft, client, metrics net.Listener
}

func newServer(f *serveFlags, lg *slog.Logger, ls listeners) (*server, error) {
	// The engine attaches node=<id> to its own lines; ours get it here.
	s := &server{f: f, lg: lg.With("node", f.nodeID), kv: kv.NewStore(), fwd: map[uint64]*grpc.ClientConn{}, start: time.Now()}
	var nodes []uint64
	for id := range f.peers {
		nodes = append(nodes, id)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i] < nodes[j] })
	s.place = newPlacement(f.shards, f.replicas, nodes)
	tlsCfg, err := f.tlsConfig()
	if err != nil {
		return nil, err
	}
	cfg := engine.Config{
		NodeID:          f.nodeID,
		ClusterID:       f.clusterID,
		ListenAddr:      f.listen,
		Listener:        ls.raft,
		Peers:           f.peers,
		DataDir:         f.dataDir,
		TickInterval:    f.tick,
		TLS:             tlsCfg,
		Logger:          lg,
		NewStateMachine: s.kv.NewStateMachine,
		OnStoreOpen:     s.kv.OnStoreOpen,
	}
	node, err := engine.Open(cfg)
	if err != nil {
		return nil, err
	}
	s.node = node
	if err := s.startShards(); err != nil {
		node.Close()
		return nil, err
	}
	if err := s.serve(ls); err != nil {
		node.Close()
		return nil, err
	}
	return s, nil
}

// startShards starts every shard placement gives this node that is not
// already running (restarted from disk by Open).
func (s *server) startShards() error {
	running := map[uint64]bool{}
	for _, id := range s.node.Shards() {
		running[id] = true
	}
	var todo []uint64
	for sh := uint64(1); sh <= s.f.shards; sh++ {
		if !running[sh] && s.place.hosts(sh, s.f.nodeID) {
			todo = append(todo, sh)
		}
	}
	// Concurrently, so that the creations share flushes.
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	const workers = 32
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < len(todo); i += workers {
				sh := todo[i]
				err := s.node.StartShard(engine.ShardConfig{ShardID: sh, Members: s.place.replicasOf(sh)})
				if err != nil && !errors.Is(err, engine.ErrShardExists) {
					select {
					case errs <- fmt.Errorf("starting shard %d: %w", sh, err):
					default:
					}
					return
				}
			}
		}(w)
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	s.lg.Info("shards started", "hosted", len(todo)+len(running), "created", len(todo))
	return nil
}

func (s *server) serve(ls listeners) error {
	cl := ls.client
	if cl == nil {
		var err error
		if cl, err = net.Listen("tcp", s.f.clientListen); err != nil {
			return fmt.Errorf("client listen %s: %w", s.f.clientListen, err)
		}
	}
	s.grpcSrv = grpc.NewServer()
	sharddv1.RegisterKVServer(s.grpcSrv, &kvService{s: s})
	sharddv1.RegisterAdminServer(s.grpcSrv, &adminService{s: s})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.grpcSrv.Serve(cl); err != nil {
			s.lg.Error("client API stopped", "err", err)
		}
	}()
	ml := ls.metrics
	if ml == nil && s.f.metricsListen != "" {
		var err error
		if ml, err = net.Listen("tcp", s.f.metricsListen); err != nil {
			return fmt.Errorf("metrics listen %s: %w", s.f.metricsListen, err)
		}
	}
	if ml != nil {
		s.httpSrv = &http.Server{Handler: s.opsHandler(), ReadHeaderTimeout: 5 * time.Second}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.httpSrv.Serve(ml); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.lg.Error("ops HTTP stopped", "err", err)
			}
		}()
	}
	s.lg.Info("serving", "raft", s.f.listen, "client", cl.Addr().String())
	return nil
}

// stop drains: the client API stops taking requests and finishes those in
// flight (up to ctx), then the node closes (everything acknowledged is
// durable already).
func (s *server) stop(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.grpcSrv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpcSrv.Stop()
		<-done
	}
	if s.httpSrv != nil {
		_ = s.httpSrv.Shutdown(ctx)
	}
	s.wg.Wait()
	err := s.node.Close()
	s.fwdMu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.fwdMu.Unlock()
	return err
}

// forwarder returns a client of a node hosting shard (for keys of shards
// this node does not host), one whose connection is up if any is: a write
// must only leave over a live connection, so that a failure before it left
// is told from a lost reply (kvService.forwardErr).
func (s *server) forwarder(ctx context.Context, shard uint64) (sharddv1.KVClient, error) {
	reps := s.place.replicasOf(shard)
	first := int(time.Now().UnixNano() % int64(len(reps)))
	var last error
	for k := range reps {
		target := reps[(first+k)%len(reps)]
		if target == s.f.nodeID {
			continue
		}
		conn, err := s.fwdConn(target)
		if err != nil {
			last = err
			continue
		}
		if connUp(ctx, conn) {
			return sharddv1.NewKVClient(conn), nil
		}
		last = fmt.Errorf("node %d: connection not up", target)
	}
	return nil, fmt.Errorf("no replica of shard %d reachable: %v", shard, last)
}

func (s *server) fwdConn(target uint64) (*grpc.ClientConn, error) {
	s.fwdMu.Lock()
	defer s.fwdMu.Unlock()
	if c, ok := s.fwd[target]; ok {
		return c, nil
	}
	addr, ok := s.f.clientPeers[target]
	if !ok {
		return nil, fmt.Errorf("no client address for node %d (--client-peers)", target)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	s.conns = append(s.conns, conn)
	s.fwd[target] = conn
	return conn, nil
}

// connUp reports whether conn is up, connecting it and waiting briefly if
// it is not.
func connUp(ctx context.Context, conn *grpc.ClientConn) bool {
	st := conn.GetState()
	if st == connectivity.Ready {
		return true
	}
	conn.Connect()
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	for st != connectivity.Ready {
		if st == connectivity.TransientFailure || st == connectivity.Shutdown || !conn.WaitForStateChange(wctx, st) {
			return false
		}
		st = conn.GetState()
	}
	return true
}
