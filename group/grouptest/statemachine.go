package grouptest

import (
	"encoding/binary"
	"hash/fnv"

	"github.com/shardd/shardd/raftpb"
)

// chainHash extends a running hash with one log entry:
// h[i] = H(h[i-1], term, index, type, data). Equal hashes at an index mean
// equal prefixes up to it, which is how the oracle checks log matching and
// state-machine safety incrementally.
func chainHash(prev uint64, e *raftpb.Entry) uint64 {
	h := fnv.New64a()
	var b [33]byte
	binary.BigEndian.PutUint64(b[0:], prev)
	binary.BigEndian.PutUint64(b[8:], uint64(e.Term))
	binary.BigEndian.PutUint64(b[16:], uint64(e.Index))
	binary.BigEndian.PutUint64(b[24:], e.Key)
	b[32] = byte(e.Type)
	h.Write(b[:])
	h.Write(e.Data)
	return h.Sum64()
}

// StateMachine is the harness's state machine: it keeps the hash chain of
// every entry applied and the order of applies. Its snapshot is
// (index, term, hash).
type StateMachine struct {
	Applied raftpb.Index
	Term    raftpb.Term
	Hash    uint64
	// Count is the number of entries applied since the last restore.
	Count int
	// Values holds the last value written per key, for read checks.
	Values map[string]string
}

// SnapshotData is what a snapshot of StateMachine holds.
type SnapshotData struct {
	Index  raftpb.Index
	Term   raftpb.Term
	Hash   uint64
	Values map[string]string
}

func (sm *StateMachine) snapshot() SnapshotData {
	return SnapshotData{Index: sm.Applied, Term: sm.Term, Hash: sm.Hash, Values: cloneMap(sm.Values)}
}

func (sm *StateMachine) restore(d SnapshotData) {
	sm.Applied, sm.Term, sm.Hash = d.Index, d.Term, d.Hash
	sm.Values = cloneMap(d.Values)
}

func cloneMap(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// EncodePut makes the Data of an entry that sets key to value.
func EncodePut(key, value string) []byte {
	b := make([]byte, 0, 2+len(key)+len(value))
	b = append(b, byte(len(key)))
	b = append(b, key...)
	return append(b, value...)
}

func decodePut(d []byte) (key, value string, ok bool) {
	if len(d) < 1 || int(d[0]) > len(d)-1 {
		return "", "", false
	}
	n := int(d[0])
	return string(d[1 : 1+n]), string(d[1+n:]), true
}

func (sm *StateMachine) apply(e *raftpb.Entry) {
	sm.Applied = e.Index
	sm.Term = e.Term
	sm.Hash = chainHash(sm.Hash, e)
	sm.Count++
	if e.Type == raftpb.EntryNormal {
		if k, v, ok := decodePut(e.Data); ok {
			if sm.Values == nil {
				sm.Values = map[string]string{}
			}
			sm.Values[k] = v
		}
	}
}
