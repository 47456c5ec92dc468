package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/shardd/shardd/raftpb"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a certificate for 127.0.0.1 usable as server and client.
func (ca *testCA) issue(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsConfig is a node's mutual-TLS configuration: its certificate from
// issuer, trusting trust.
func tlsConfig(t *testing.T, issuer, trust *testCA, name string) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{issuer.issue(t, name)},
		RootCAs:      trust.pool,
		MinVersion:   tls.VersionTLS13,
	}
}

// Mutual TLS: nodes with certificates from the configured CA talk; a node
// whose certificate comes from another CA is refused in both directions,
// and so is a client without a certificate.
func TestMutualTLS(t *testing.T) {
	good, wrong := newTestCA(t, "good"), newTestCA(t, "wrong")
	configs := map[raftpb.NodeID]*tls.Config{
		1: tlsConfig(t, good, good, "n1"),
		2: tlsConfig(t, good, good, "n2"),
		3: tlsConfig(t, wrong, wrong, "n3"), // another cluster's PKI
	}
	c := newCluster(t, 3, func(cfg *Config) { cfg.TLS = configs[cfg.NodeID] })
	n1, n2, n3 := c.node(1), c.node(2), c.node(3)

	// Good certificates: messages flow both ways.
	waitFor(t, 10*time.Second, "1->2 over TLS", func() bool {
		n1.tr.Send([]raftpb.Message{app(1, 2, 1, 1, nil)})
		time.Sleep(5 * time.Millisecond)
		return n2.h.received() > 0
	})
	waitFor(t, 10*time.Second, "2->1 over TLS", func() bool {
		n2.tr.Send([]raftpb.Message{app(2, 1, 1, 1, nil)})
		time.Sleep(5 * time.Millisecond)
		return n1.h.received() > 0
	})

	// The wrong CA: nothing gets through either way, and both sides see
	// the other as unreachable.
	bound := n1.tr.cfg.unreachableAfter()
	deadline := time.Now().Add(3 * bound)
	for time.Now().Before(deadline) {
		n1.tr.Send([]raftpb.Message{app(1, 3, 1, 1, nil)})
		n3.tr.Send([]raftpb.Message{app(3, 1, 1, 1, nil)})
		time.Sleep(5 * time.Millisecond)
	}
	for _, m := range n1.h.messages() {
		if m.From == 3 {
			t.Fatalf("node 1 received %v from the node of the wrong CA", m)
		}
	}
	if r := n3.h.received(); r != 0 {
		t.Fatalf("the node of the wrong CA received %d messages", r)
	}
	waitFor(t, 10*bound, "unreachable over a refused TLS link", func() bool {
		return !n1.h.eventTime("unreachable 3").IsZero() && !n3.h.eventTime("unreachable 1").IsZero()
	})
	if n1.h.eventTime("unreachable 2").After(time.Time{}) {
		t.Fatal("node 2, with a good certificate, was reported unreachable")
	}

	// Directly: a client presenting a wrong-CA certificate, or none, is
	// refused by the server; a client trusting the wrong CA refuses the
	// server.
	dial := func(cfg *tls.Config) error {
		conn, err := tls.Dial("tcp", n1.addr, cfg)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		// In TLS 1.3 the server checks the client's certificate after the
		// client finished; its verdict arrives on the first read.
		_, err = conn.Read(make([]byte, 1))
		return err
	}
	alpn := []string{"h2"}
	// Control: with a good certificate the server answers (HTTP/2 SETTINGS).
	if err := dial(&tls.Config{RootCAs: good.pool, NextProtos: alpn,
		Certificates: []tls.Certificate{good.issue(t, "client")}}); err != nil {
		t.Fatalf("a client with a good certificate was refused: %v", err)
	}
	if err := dial(&tls.Config{RootCAs: good.pool, NextProtos: alpn,
		Certificates: []tls.Certificate{wrong.issue(t, "intruder")}}); err == nil {
		t.Fatal("server accepted a certificate from the wrong CA")
	}
	if err := dial(&tls.Config{RootCAs: good.pool, NextProtos: alpn}); err == nil {
		t.Fatal("server accepted a client without a certificate")
	}
	if err := dial(&tls.Config{RootCAs: wrong.pool, NextProtos: alpn,
		Certificates: []tls.Certificate{wrong.issue(t, "intruder")}}); err == nil {
		t.Fatal("client trusting the wrong CA accepted the server")
	}
}
