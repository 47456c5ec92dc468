package chaos

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"

	"github.com/shardd/shardd/kv"
)

// After the clean shutdown the test opens every node's store read-only
// and reads each hosted shard's key-value state through the kv package's
// own SaveSnapshot (the stream a follower would install), so it can
// compare what the replicas hold, not only their indexes: /status has no
// applied hash yet, and equal applied indexes say nothing about equal
// states.

// replicaData is one replica's state machine at rest.
type replicaData struct {
	applied uint64            // applied index recorded in the store
	data    map[string]string // user key -> value
	digest  [sha256.Size]byte // of the records, in key order
}

// readStore reads the state of the given shards from the store in a
// stopped node's data dir. The store is opened read-only and closed
// before it returns.
func readStore(dataDir string, shards []uint64) (out map[uint64]replicaData, err error) {
	db, err := pebble.Open(filepath.Join(dataDir, "store"), &pebble.Options{ReadOnly: true, Logger: quietLogger{}})
	if err != nil {
		return nil, fmt.Errorf("opening %s read-only: %w", dataDir, err)
	}
	defer func() {
		if cerr := db.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing %s: %w", dataDir, cerr)
		}
	}()
	st := kv.NewStore()
	if err := st.OnStoreOpen(db); err != nil {
		return nil, fmt.Errorf("%s: %w", dataDir, err)
	}
	out = map[uint64]replicaData{}
	for _, shard := range shards {
		sm := st.NewStateMachine(shard, 0)
		var buf bytes.Buffer
		err := sm.SaveSnapshot(&buf)
		_ = sm.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: shard %d: %w", dataDir, shard, err)
		}
		rd, err := parseKVSnapshot(buf.Bytes())
		if err != nil {
			return nil, fmt.Errorf("%s: shard %d: %w", dataDir, shard, err)
		}
		out[shard] = rd
	}
	return out, nil
}

// quietLogger keeps Pebble's informational lines out of the test's
// output; its errors reach readStore as returned errors.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("pebble (reading a stopped node's store): "+format, args...))
}

// parseKVSnapshot decodes kv's snapshot stream (kv/snapshot.go): a
// 4-byte header, records u32 len | key | u32 len | value until a u32 0,
// then applied index u64, record count u64 and a CRC, all big-endian.
func parseKVSnapshot(b []byte) (replicaData, error) {
	rd := replicaData{data: map[string]string{}}
	if len(b) < 4 || string(b[:3]) != "kvs" {
		return rd, fmt.Errorf("kv snapshot: bad header %q", b[:min(4, len(b))])
	}
	r := bytes.NewReader(b[4:])
	h := sha256.New()
	field := func() ([]byte, error) {
		var n uint32
		if err := binary.Read(r, binary.BigEndian, &n); err != nil {
			return nil, err
		}
		if int64(n) > int64(r.Len()) {
			return nil, fmt.Errorf("kv snapshot: field of %d bytes, %d left", n, r.Len())
		}
		f := make([]byte, n)
		_, err := io.ReadFull(r, f)
		return f, err
	}
	var records uint64
	for {
		k, err := field()
		if err != nil {
			return rd, fmt.Errorf("kv snapshot: record %d: %w", records, err)
		}
		if len(k) == 0 {
			break
		}
		v, err := field()
		if err != nil {
			return rd, fmt.Errorf("kv snapshot: record %d: %w", records, err)
		}
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(k)))
		h.Write(n[:])
		h.Write(k)
		binary.BigEndian.PutUint32(n[:], uint32(len(v)))
		h.Write(n[:])
		h.Write(v)
		rd.data[string(k)] = string(v)
		records++
	}
	var trailer struct {
		Applied, Count uint64
		CRC            uint32
	}
	if err := binary.Read(r, binary.BigEndian, &trailer); err != nil {
		return rd, fmt.Errorf("kv snapshot: trailer: %w", err)
	}
	if trailer.Count != records {
		return rd, fmt.Errorf("kv snapshot: %d records, the trailer says %d", records, trailer.Count)
	}
	if r.Len() != 0 {
		return rd, fmt.Errorf("kv snapshot: %d bytes after the trailer", r.Len())
	}
	rd.applied = trailer.Applied
	copy(rd.digest[:], h.Sum(nil))
	return rd, nil
}

// compareStores checks the replicas' states at rest: every shard's
// replicas hold the same keys and values; every key read at the end
// (final: "" = absent; a key missing from final could not be read) is
// held with that value by every replica of exactly one shard, or by none
// when absent; and no key but the clients' (keys) is held at all. stores
// maps node -> shard -> state. It returns one line per problem (at most a
// few of each kind) and a summary.
func compareStores(hosting map[uint64][]uint64, stores map[uint64]map[uint64]replicaData,
	final map[string]string, keys []string) ([]string, string) {
	var bad []string
	report := func(limit *int, format string, args ...any) {
		if *limit > 0 {
			bad = append(bad, fmt.Sprintf(format, args...))
		}
		*limit--
	}
	differ, missing := 5, 5
	ndiff := 0                      // shards whose replicas differ
	keysIn := map[string][]uint64{} // key -> shards holding it (by their first replica)
	holding, total := 0, 0
	for _, shard := range sortedKeys(hosting) {
		nodes := hosting[shard]
		var first *replicaData
		var firstNode uint64
		differs := false
		for _, id := range nodes {
			rd, ok := stores[id][shard]
			if !ok {
				report(&missing, "shard %d: node %d's store was not read", shard, id)
				continue
			}
			if first == nil {
				first, firstNode = &rd, id
				continue
			}
			if rd.digest != first.digest && !differs {
				differs = true
				ndiff++
				report(&differ, "shard %d: replicas differ at rest: node %d (applied %d) %s; node %d (applied %d) %s",
					shard, firstNode, first.applied, describeDiff(first.data, rd.data), id, rd.applied,
					describeDiff(rd.data, first.data))
			}
		}
		if first == nil {
			continue
		}
		total += len(first.data)
		if len(first.data) > 0 {
			holding++
		}
		for k := range first.data {
			keysIn[k] = append(keysIn[k], shard)
		}
	}
	if differ < 0 {
		bad = append(bad, fmt.Sprintf("… and %d more shards whose replicas differ", -differ))
	}
	wrong := 5
	for _, k := range sortedKeys(final) {
		want, in := final[k], keysIn[k]
		switch {
		case want == "" && len(in) > 0:
			report(&wrong, "key %s: read as absent at the end, but held at rest by shard %v", k, in)
		case want != "" && len(in) != 1:
			report(&wrong, "key %s: read as %s at the end, but held at rest by shards %v", k, want, in)
		case want != "":
			shard := in[0]
			for _, id := range hosting[shard] {
				rd, read := stores[id][shard]
				if got, ok := rd.data[k]; read && (!ok || got != want) {
					report(&wrong, "key %s: read as %s at the end, node %d holds %q at rest (shard %d)",
						k, want, id, got, shard)
				}
			}
		}
	}
	for _, k := range sortedKeys(keysIn) {
		if in := keysIn[k]; !slices.Contains(keys, k) {
			report(&wrong, "key %s: held at rest by shards %v, but the clients never use it", k, in)
		}
	}
	if wrong < 0 {
		bad = append(bad, fmt.Sprintf("… and %d more keys at fault", -wrong))
	}
	return bad, fmt.Sprintf("stores of %d nodes read at rest: %d shards' replicas hold equal states; %d keys in %d shards",
		len(stores), len(hosting)-ndiff, total, holding)
}

// describeDiff names a few keys a has and b lacks or holds otherwise.
func describeDiff(a, b map[string]string) string {
	var parts []string
	for _, k := range sortedKeys(a) {
		if v, ok := b[k]; !ok || v != a[k] {
			parts = append(parts, k+"="+a[k])
			if len(parts) == 3 {
				break
			}
		}
	}
	if len(parts) == 0 {
		return fmt.Sprintf("%d keys, nothing the other lacks", len(a))
	}
	return fmt.Sprintf("%d keys, unlike the other %s", len(a), strings.Join(parts, " "))
}

func sortedKeys[K interface{ ~string | ~uint64 }, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
