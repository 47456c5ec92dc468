package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// Fuzz targets for the config parser of `shardd serve`: the --config file
// (applyConfigFile, through parseServeFlags) and the peer lists.

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpus of this package's fuzz targets under testdata/fuzz")

// validConfig is a config file that parses.
const validConfig = "# node 2 of 3\nnode-id = 2\ncluster-id = 7\nlisten = 127.0.0.1:7002\nclient-listen = 127.0.0.1:8002\n" +
	"metrics-listen = 127.0.0.1:9002\npeers = 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003\n" +
	"client-peers = 1=127.0.0.1:8001,2=127.0.0.1:8002,3=127.0.0.1:8003\ndata-dir = \"/var/lib/shardd\"\n" +
	"shards = 64\nreplicas = 2\ntick = 5ms\nlog-format = json\nlog-level = debug\n"

// FuzzServeConfig: any config file gives flags or a usage error naming
// what is wrong (never a panic, never another error); flags that parse,
// written back as a config file, parse to the same flags; and the command
// line overrides the file.
func FuzzServeConfig(f *testing.F) {
	for _, s := range configSeeds() {
		f.Add(s)
	}
	dir := f.TempDir()
	path, path2 := filepath.Join(dir, "a.conf"), filepath.Join(dir, "b.conf")
	f.Fuzz(func(t *testing.T, conf string) {
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		fl, err := parseServeFlags([]string{"--config", path}, io.Discard)
		if err != nil {
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("error %v (%T) is not a usage error", err, err)
			}
			return
		}
		if err := fl.validate(); err != nil {
			t.Fatalf("parsed flags do not validate: %v", err)
		}
		if text, ok := renderConfig(fl); ok {
			if err := os.WriteFile(path2, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			fl2, err := parseServeFlags([]string{"--config", path2}, io.Discard)
			if err != nil {
				t.Fatalf("flags written back do not parse: %v\n%s", err, text)
			}
			if !reflect.DeepEqual(fl, fl2) {
				t.Fatalf("flags written back parse differently:\nfirst  %+v\nsecond %+v\n%s", fl, fl2, text)
			}
		}
		fl3, err := parseServeFlags([]string{"--config", path, "--data-dir", "/override", "--tick", "7ms"}, io.Discard)
		if err != nil {
			t.Fatalf("overriding valid settings on the command line: %v", err)
		}
		if fl3.dataDir != "/override" || fl3.tick != 7*time.Millisecond {
			t.Fatalf("the file won over the command line: data-dir %q, tick %v", fl3.dataDir, fl3.tick)
		}
		fl3.dataDir, fl3.tick = fl.dataDir, fl.tick
		if !reflect.DeepEqual(fl, fl3) {
			t.Fatalf("overriding two flags changed others:\nfile only %+v\noverridden %+v", fl, fl3)
		}
	})
}

// renderConfig writes f as a config file, each value quoted; ok is false
// if a value cannot be written (the parser strips quotes at a value's
// ends, so a value that starts or ends with one cannot be).
func renderConfig(f *serveFlags) (text string, ok bool) {
	var b strings.Builder
	ok = true
	put := func(name, value string) {
		if strings.HasPrefix(value, `"`) || strings.HasSuffix(value, `"`) {
			ok = false
		}
		fmt.Fprintf(&b, "%s = \"%s\"\n", name, value)
	}
	put("node-id", fmt.Sprint(f.nodeID))
	put("cluster-id", fmt.Sprint(f.clusterID))
	put("listen", f.listen)
	put("client-listen", f.clientListen)
	put("metrics-listen", f.metricsListen)
	put("peers", renderPeers(f.peers))
	put("client-peers", renderPeers(f.clientPeers))
	put("data-dir", f.dataDir)
	put("shards", fmt.Sprint(f.shards))
	put("replicas", fmt.Sprint(f.replicas))
	put("tls-cert", f.tlsCert)
	put("tls-key", f.tlsKey)
	put("tls-ca", f.tlsCA)
	put("tick", f.tick.String())
	put("log-format", f.logFormat)
	put("log-level", f.logLevel)
	return b.String(), ok
}

func renderPeers(m map[uint64]string) string {
	ids := make([]uint64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("%d=%s", id, m[id])
	}
	return strings.Join(parts, ",")
}

// FuzzParsePeers: a peer list parses to ids > 0 with non-empty addresses,
// or to a usage error naming the flag; written back, it parses the same.
func FuzzParsePeers(f *testing.F) {
	for _, s := range peersSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parsePeers("peers", s)
		if err != nil {
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--peers") {
				t.Fatalf("error %v (%T) is not a usage error naming --peers", err, err)
			}
			return
		}
		for id, addr := range m {
			if id == 0 || addr == "" {
				t.Fatalf("parsed %q to %d=%q", s, id, addr)
			}
		}
		again, err := parsePeers("peers", renderPeers(m))
		if err != nil || !reflect.DeepEqual(m, again) {
			t.Fatalf("%q parses to %v, written back as %q to %v, %v", s, m, renderPeers(m), again, err)
		}
	})
}

func configSeeds() []string {
	return []string{
		validConfig,
		// Minimal, with CRLF line ends and comments.
		"node-id=1\r\nlisten=a:1\r\nclient-listen=a:2\r\ndata-dir=d\r\npeers=1=a:1\r\nreplicas=1\r\n# end\r\n",
		// TLS and hexadecimal numbers.
		"node-id = 0x1\nlisten = a:1\nclient-listen = a:2\ndata-dir = d\npeers = 1=a:1\nreplicas = 1\n" +
			"tls-cert = c.pem\ntls-key = k.pem\ntls-ca = ca.pem\nshards = 0x400\n",
		// Errors: unknown name, no '=', bad value, the config itself.
		validConfig + "bogus = 1\n",
		validConfig + "listen 127.0.0.1:1\n",
		validConfig + "tick = -1s\n",
		validConfig + "config = other.conf\n",
		strings.Replace(validConfig, "peers = 1=", "peers = 1=,0=", 1),
		"",
	}
}

func peersSeeds() []string {
	return []string{"1=127.0.0.1:7001,2=127.0.0.1:7002,3=[::1]:7003", " 1=a:1 , 2=b:2 ", "", "1=a,1=b", "0=a", "x=a", "1=", "1=a=b"}
}

// A config file the scanner cannot read (a line over its 64 KiB limit, a
// directory) is a usage error naming --config and the file, like every
// other bad config.
func TestServeConfigUnreadable(t *testing.T) {
	dir := t.TempDir()
	long := filepath.Join(dir, "long.conf")
	if err := os.WriteFile(long, []byte(validConfig+"# "+strings.Repeat("x", 70<<10)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{long, dir} {
		_, err := parseServeFlags([]string{"--config", path}, io.Discard)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--config") || !strings.Contains(err.Error(), path) {
			t.Errorf("config %s: %v (%T), want a usage error naming --config and the file", path, err, err)
		}
	}
}

// TestFuzzSeedsCommitted checks that the committed corpus holds the seeds
// of this package's fuzz targets (regenerate with -update-corpus).
func TestFuzzSeedsCommitted(t *testing.T) {
	for target, seeds := range map[string][]string{"FuzzServeConfig": configSeeds(), "FuzzParsePeers": peersSeeds()} {
		dir := filepath.Join("testdata", "fuzz", target)
		for i, s := range seeds {
			path := filepath.Join(dir, fmt.Sprintf("seed-%02d", i))
			want := fmt.Sprintf("go test fuzz v1\nstring(%q)\n", s)
			if *updateCorpus {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if got, err := os.ReadFile(path); err != nil || string(got) != want {
				t.Errorf("%s is missing or stale (%v); run go test ./cmd/shardd -run '^TestFuzzSeedsCommitted$' -update-corpus", path, err)
			}
		}
	}
}
