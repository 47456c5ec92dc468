package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// serveFlags are the flags of `shardd serve`; a config file (--config) may
// set the same names, one `name = value` per line (# comments); flags given
// on the command line win.
type serveFlags struct {
	nodeID        uint64
	clusterID     uint64
	listen        string
	clientListen  string
	metricsListen string
	peers         map[uint64]string
	clientPeers   map[uint64]string
	dataDir       string
	shards        uint64
	replicas      int
	tlsCert       string
	tlsKey        string
	tlsCA         string
	tick          time.Duration
	logFormat     string
	logLevel      string
}

// usageError names the flag that is wrong; main prints usage for it.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func badFlag(name, format string, args ...any) error {
	return usageError{fmt.Sprintf("flag --%s: %s", name, fmt.Sprintf(format, args...))}
}

func parseServeFlags(args []string, stderr io.Writer) (*serveFlags, error) {
	fs := flag.NewFlagSet("shardd serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		f                  serveFlags
		peers, clientPeers string
		configFile         string
	)
	fs.StringVar(&configFile, "config", "", "file of `name = value` lines setting the same flags")
	fs.Uint64Var(&f.nodeID, "node-id", 0, "this node's id (required, > 0)")
	fs.Uint64Var(&f.clusterID, "cluster-id", 1, "cluster id; frames of other clusters are refused")
	fs.StringVar(&f.listen, "listen", "", "Raft gRPC address, e.g. 127.0.0.1:7001 (required)")
	fs.StringVar(&f.clientListen, "client-listen", "", "client KV gRPC address, e.g. 127.0.0.1:8001 (required)")
	fs.StringVar(&f.metricsListen, "metrics-listen", "", "HTTP address for /metrics, /healthz, /status (optional)")
	fs.StringVar(&peers, "peers", "", "every node's Raft address: 1=host:port,2=host:port,... (required)")
	fs.StringVar(&clientPeers, "client-peers", "", "every node's client address, to forward keys of shards this node does not host (needed when --replicas < nodes)")
	fs.StringVar(&f.dataDir, "data-dir", "", "directory of the node's store (required)")
	fs.Uint64Var(&f.shards, "shards", 1000, "number of shards of the key space")
	fs.IntVar(&f.replicas, "replicas", 3, "replicas per shard")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "certificate (PEM) for mutual TLS between nodes")
	fs.StringVar(&f.tlsKey, "tls-key", "", "private key (PEM) for --tls-cert")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "CA (PEM) that signs every node's certificate")
	fs.DurationVar(&f.tick, "tick", 10*time.Millisecond, "Raft tick interval")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return nil, usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	if configFile != "" {
		set := map[string]bool{}
		fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
		if err := applyConfigFile(fs, configFile, set); err != nil {
			return nil, err
		}
		peers = fs.Lookup("peers").Value.String()
		clientPeers = fs.Lookup("client-peers").Value.String()
	}
	var err error
	if f.peers, err = parsePeers("peers", peers); err != nil {
		return nil, err
	}
	if f.clientPeers, err = parsePeers("client-peers", clientPeers); err != nil {
		return nil, err
	}
	return &f, f.validate()
}

// applyConfigFile sets from the file every flag not set on the command line.
func applyConfigFile(fs *flag.FlagSet, path string, set map[string]bool) error {
	file, err := os.Open(path)
	if err != nil {
		return badFlag("config", "%v", err)
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, value, ok := strings.Cut(text, "=")
		if !ok {
			return badFlag("config", "%s:%d: want `name = value`", path, line)
		}
		name, value = strings.TrimSpace(name), strings.Trim(strings.TrimSpace(value), `"`)
		if fs.Lookup(name) == nil || name == "config" {
			return badFlag("config", "%s:%d: unknown flag %q", path, line, name)
		}
		if set[name] {
			continue
		}
		if err := fs.Set(name, value); err != nil {
			return badFlag(name, "%s:%d: %v", path, line, err)
		}
	}
	if err := sc.Err(); err != nil {
		// A line over the scanner's limit, or a path that is a directory.
		return badFlag("config", "%s: %v", path, err)
	}
	return nil
}

// parsePeers parses "1=host:port,2=host:port".
func parsePeers(name, s string) (map[uint64]string, error) {
	out := map[uint64]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.ParseUint(id, 10, 64)
		if !ok || err != nil || n == 0 || addr == "" {
			return nil, badFlag(name, "%q is not id=host:port", part)
		}
		if _, dup := out[n]; dup {
			return nil, badFlag(name, "node %d listed twice", n)
		}
		out[n] = addr
	}
	return out, nil
}

func (f *serveFlags) validate() error {
	var errs []error
	if f.nodeID == 0 {
		errs = append(errs, badFlag("node-id", "is required (> 0)"))
	}
	if f.listen == "" {
		errs = append(errs, badFlag("listen", "is required"))
	}
	if f.clientListen == "" {
		errs = append(errs, badFlag("client-listen", "is required"))
	}
	if f.dataDir == "" {
		errs = append(errs, badFlag("data-dir", "is required"))
	}
	if len(f.peers) == 0 {
		errs = append(errs, badFlag("peers", "is required"))
	} else if _, ok := f.peers[f.nodeID]; !ok && f.nodeID != 0 {
		errs = append(errs, badFlag("peers", "must include this node (%d)", f.nodeID))
	}
	if f.shards == 0 {
		errs = append(errs, badFlag("shards", "must be positive"))
	}
	if f.replicas < 1 || (len(f.peers) > 0 && f.replicas > len(f.peers)) {
		errs = append(errs, badFlag("replicas", "must be in [1, number of peers], got %d", f.replicas))
	}
	if f.replicas < len(f.peers) && len(f.clientPeers) != len(f.peers) {
		errs = append(errs, badFlag("client-peers", "must list every node when --replicas (%d) < nodes (%d)",
			f.replicas, len(f.peers)))
	}
	if (f.tlsCert == "") != (f.tlsKey == "") || (f.tlsCert != "" && f.tlsCA == "") {
		errs = append(errs, badFlag("tls-cert", "--tls-cert, --tls-key and --tls-ca go together"))
	}
	if f.tick <= 0 {
		errs = append(errs, badFlag("tick", "must be positive"))
	}
	if f.logFormat != "text" && f.logFormat != "json" {
		errs = append(errs, badFlag("log-format", "must be text or json, got %q", f.logFormat))
	}
	switch f.logLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, badFlag("log-level", "must be debug, info, warn or error, got %q", f.logLevel))
	}
	if len(errs) > 0 {
		return usageError{errors.Join(errs...).Error()}
	}
	return nil
}

// tlsConfig loads the mutual-TLS configuration, if any.
func (f *serveFlags) tlsConfig() (*tls.Config, error) {
	if f.tlsCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
	if err != nil {
		return nil, badFlag("tls-cert", "%v", err)
	}
	pem, err := os.ReadFile(f.tlsCA)
	if err != nil {
		return nil, badFlag("tls-ca", "%v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, badFlag("tls-ca", "no certificate in %s", f.tlsCA)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}, nil
}
