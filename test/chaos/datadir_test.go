package chaos

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/shardd/shardd/kv"
	"github.com/shardd/shardd/shard"
)

// writeStore writes a node's store as shardd's kv state machine would:
// per shard, the commands applied from index 2 on.
func writeStore(t *testing.T, dataDir string, cmds map[uint64][][]byte) {
	t.Helper()
	db, err := pebble.Open(filepath.Join(dataDir, "store"), &pebble.Options{Logger: quietLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st := kv.NewStore()
	if err := st.OnStoreOpen(db); err != nil {
		t.Fatal(err)
	}
	for sh, cs := range cmds {
		sm := st.NewStateMachine(sh, 1).(shard.OnDiskStateMachine)
		if _, err := sm.Open(); err != nil {
			t.Fatal(err)
		}
		var ents []shard.Entry
		for i, c := range cs {
			ents = append(ents, shard.Entry{Index: uint64(i + 2), Cmd: c})
		}
		if err := sm.Update(ents); err != nil {
			t.Fatal(err)
		}
		if err := sm.Sync(); err != nil {
			t.Fatal(err)
		}
		sm.Close()
	}
}

func TestReadStore(t *testing.T) {
	dir := t.TempDir()
	writeStore(t, dir, map[uint64][][]byte{
		1: {kv.EncodePut([]byte("a"), []byte("1")), kv.EncodePut([]byte("b"), []byte("2")),
			kv.EncodeCAS([]byte("a"), []byte("1"), true, []byte("3")), kv.EncodeDelete([]byte("b"))},
		2: {kv.EncodePut([]byte("c"), []byte("x"))},
	})
	got, err := readStore(dir, []uint64{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	if d := got[1].data; len(d) != 1 || d["a"] != "3" || got[1].applied != 5 {
		t.Fatalf("shard 1: applied %d, data %v", got[1].applied, d)
	}
	if d := got[2].data; len(d) != 1 || d["c"] != "x" || got[2].applied != 2 {
		t.Fatalf("shard 2: applied %d, data %v", got[2].applied, d)
	}
	if d := got[3].data; len(d) != 0 || got[3].applied != 0 {
		t.Fatalf("shard 3 (never written): applied %d, data %v", got[3].applied, d)
	}
	if got[1].digest == got[2].digest || got[2].digest == got[3].digest {
		t.Fatal("different states have the same digest")
	}
	// Read-only: a second read sees the same.
	again, err := readStore(dir, []uint64{1})
	if err != nil || again[1].digest != got[1].digest {
		t.Fatalf("second read: %v, digest equal %v", err, again[1].digest == got[1].digest)
	}
}

func TestParseKVSnapshotRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, []byte("xyz1"), []byte("kvs\x01\x00\x00\x00\x05ab"), []byte("kvs\x01\x00\x00\x00\x00")} {
		if _, err := parseKVSnapshot(b); err == nil {
			t.Errorf("%q: no error", b)
		}
	}
}

func TestCompareStores(t *testing.T) {
	state := func(applied uint64, kvs ...string) replicaData {
		b := []byte("kvs\x01")
		u32 := func(n int) { b = append(b, byte(n>>24), byte(n>>16), byte(n>>8), byte(n)) }
		for i := 0; i < len(kvs); i += 2 {
			u32(len(kvs[i]))
			b = append(b, kvs[i]...)
			u32(len(kvs[i+1]))
			b = append(b, kvs[i+1]...)
		}
		u32(0)
		for _, v := range []uint64{applied, uint64(len(kvs) / 2)} {
			for s := 56; s >= 0; s -= 8 {
				b = append(b, byte(v>>s))
			}
		}
		u32(0) // the CRC is kv's business
		rd, err := parseKVSnapshot(b)
		if err != nil {
			t.Fatal(err)
		}
		return rd
	}
	hosting := map[uint64][]uint64{1: {1, 2}, 2: {2, 3}}
	good := func() map[uint64]map[uint64]replicaData {
		return map[uint64]map[uint64]replicaData{
			1: {1: state(9, "k1", "a")},
			2: {1: state(7, "k1", "a"), 2: state(3, "k2", "b")},
			3: {2: state(3, "k2", "b")},
		}
	}
	keys := []string{"k1", "k2", "k3"}
	final := map[string]string{"k1": "a", "k2": "b", "k3": ""}
	if bad, _ := compareStores(hosting, good(), final, keys); len(bad) != 0 {
		t.Fatalf("equal replicas (applied indexes may differ): %v", bad)
	}
	for _, tc := range []struct {
		name  string
		edit  func(map[uint64]map[uint64]replicaData)
		final map[string]string
		want  string
	}{
		{"replica lacks a key", func(s map[uint64]map[uint64]replicaData) { s[3][2] = state(3) },
			final, "replicas differ"},
		{"replica holds another value", func(s map[uint64]map[uint64]replicaData) { s[1][1] = state(9, "k1", "z") },
			final, "holds \"z\""},
		{"store not read", func(s map[uint64]map[uint64]replicaData) { delete(s, 3) }, final, "not read"},
		{"acknowledged value lost at rest", nil, map[string]string{"k1": "a", "k2": "c"}, "node 2 holds \"b\""},
		{"deleted key held", nil, map[string]string{"k1": "", "k2": "b"}, "read as absent"},
		{"key in two shards", func(s map[uint64]map[uint64]replicaData) {
			s[2][2], s[3][2] = state(3, "k1", "a", "k2", "b"), state(3, "k1", "a", "k2", "b")
		}, final, "held at rest by shards [1 2]"},
		{"foreign key", func(s map[uint64]map[uint64]replicaData) {
			s[2][2], s[3][2] = state(3, "k2", "b", "zz", "q"), state(3, "k2", "b", "zz", "q")
		}, final, "zz: held at rest"},
	} {
		s := good()
		if tc.edit != nil {
			tc.edit(s)
		}
		bad, _ := compareStores(hosting, s, tc.final, keys)
		if len(bad) == 0 || !strings.Contains(strings.Join(bad, "\n"), tc.want) {
			t.Errorf("%s: got %q, want a line with %q", tc.name, bad, tc.want)
		}
	}
}

func TestScanLogs(t *testing.T) {
	dir := t.TempDir()
	logs := map[string]string{
		"node1.log": `=== chaos: start 1 of node 1
time=2026-01-01T00:00:00Z level=INFO msg="became leader" shard=3
time=2026-01-01T00:00:01Z level=WARN msg="transport: snapshot not sent" peer=2 err="rpc error"
time=2026-01-01T00:00:02Z level=WARN msg="transport: snapshot not sent" peer=3
time=2026-01-01T00:00:03Z level=WARN msg=plain shard=1
`,
		"node2.log": `time=2026-01-01T00:00:00Z level=INFO msg="became leader" shard=4
time=2026-01-01T00:00:05Z level=ERROR msg="replica stopped" err="boom"
panic: runtime error: index out of range
`,
	}
	c := &cluster{}
	for i, name := range []string{"node1.log", "node2.log"} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(logs[name]), 0o644); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, &node{id: uint64(i + 1), logPath: path})
	}
	got, err := c.scanLogs()
	if err != nil {
		t.Fatal(err)
	}
	if len(got.bad) != 2 || !strings.Contains(got.bad[0], "node2.log:2: ") || !strings.Contains(got.bad[1], "panic: runtime") {
		t.Errorf("bad lines: %q", got.bad)
	}
	if len(got.warns) != 2 || got.warns[`"transport: snapshot not sent"`] != 2 || got.warns["plain"] != 1 {
		t.Errorf("warnings: %v", got.warns)
	}
}
