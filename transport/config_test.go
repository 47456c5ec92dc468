package transport

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/shardd/shardd/raftpb"
)

func TestConfigDefaults(t *testing.T) {
	var c Config
	c.EnsureDefaults()
	if c.MaxFrameBytes != 4<<20 || c.SendQueueBytes != 16<<20 || c.SendQueueMessages != 65536 ||
		c.PingInterval != 100*time.Millisecond || c.MissedPings != 5 || c.SnapshotChunkBytes != 1<<20 ||
		c.DialBackoffMin != 50*time.Millisecond || c.DialBackoffMax != time.Second ||
		c.MaxSnapshotBytes != 64<<30 || c.SnapshotRetries != 3 || c.Logger == nil || c.JitterSeed == 0 {
		t.Fatalf("defaults: %+v", c)
	}
	if got := c.unreachableAfter(); got != 500*time.Millisecond {
		t.Fatalf("unreachable after %v", got)
	}
}

// Validate names every invalid field at once.
func TestConfigValidate(t *testing.T) {
	c := Config{
		Peers:              map[raftpb.NodeID]string{0: "x", 2: ""},
		TLS:                &tls.Config{},
		MaxFrameBytes:      100,
		SendQueueBytes:     -1,
		SendQueueMessages:  -1,
		PingInterval:       -1,
		MissedPings:        -1,
		DialTimeout:        -1,
		DialBackoffMin:     time.Second,
		DialBackoffMax:     time.Millisecond,
		SnapshotChunkBytes: 5,
		SnapshotTimeout:    -1,
		MaxSnapshotBytes:   -1,
	}
	c.EnsureDefaults()
	err := c.Validate()
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("got %v", err)
	}
	for _, field := range []string{"NodeID", "ClusterID", "ListenAddr", "Handler", "Peers has node id 0",
		"Peers[2]", "TLS", "MaxFrameBytes", "SendQueueBytes", "SendQueueMessages", "PingInterval",
		"MissedPings", "DialTimeout", "DialBackoffMin", "SnapshotChunkBytes", "SnapshotTimeout", "MaxSnapshotBytes"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s:\n%v", field, err)
		}
	}

	good := Config{NodeID: 1, ClusterID: 1, ListenAddr: "127.0.0.1:0", Handler: &recorder{},
		Peers: map[raftpb.NodeID]string{1: "", 2: "127.0.0.1:1"}}
	good.EnsureDefaults()
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	missingSelf := good
	missingSelf.Peers = map[raftpb.NodeID]string{2: "127.0.0.1:1"}
	if err := missingSelf.Validate(); err == nil || !strings.Contains(err.Error(), "must list this node") {
		t.Fatalf("got %v", err)
	}
}

// New refuses an invalid config, and closes the listener it was given.
func TestNewInvalid(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Listener: lis}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("got %v", err)
	}
	if _, err := lis.Accept(); err == nil {
		t.Fatal("listener left open")
	}
}

// New with ListenAddr port 0 listens on a free port and reports it.
func TestListenAddr(t *testing.T) {
	tr, err := New(Config{NodeID: 1, ClusterID: 1, ListenAddr: "127.0.0.1:0", Handler: &recorder{},
		Peers: map[raftpb.NodeID]string{1: ""}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if a, ok := tr.Addr().(*net.TCPAddr); !ok || a.Port == 0 {
		t.Fatalf("Addr() = %v", tr.Addr())
	}
}
