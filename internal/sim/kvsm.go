package sim

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"slices"

	"github.com/shardd/shardd/shard"
)

// kvSM is the simulated clients' state machine: an in-memory map of
// string keys to values. A command is a put, encoded by putCmd; a query is
// a key. It is an in-memory state machine, so a restarted replica restores
// it from its latest snapshot and replays the log after it.
//
// The replica calls it only from the goroutine driving the simulation.
type kvSM struct {
	kv map[string][]byte
}

func newKVSM() *kvSM { return &kvSM{kv: map[string][]byte{}} }

var _ shard.StateMachine = (*kvSM)(nil)

// putCmd encodes a put of value under key.
func putCmd(key string, value []byte) []byte {
	b := binary.AppendUvarint(nil, uint64(len(key)))
	b = append(b, key...)
	return append(b, value...)
}

func decodePut(cmd []byte) (string, []byte, error) {
	n, k := binary.Uvarint(cmd)
	if k <= 0 || uint64(len(cmd)-k) < n {
		return "", nil, fmt.Errorf("sim: undecodable command %x", cmd)
	}
	return string(cmd[k : k+int(n)]), cmd[k+int(n):], nil
}

// Update implements shard.StateMachine.
func (s *kvSM) Update(ents []shard.Entry) error {
	for i := range ents {
		key, val, err := decodePut(ents[i].Cmd)
		if err != nil {
			return err
		}
		s.kv[key] = bytes.Clone(val)
		ents[i].Result.Value = uint64(len(s.kv))
	}
	return nil
}

// Lookup implements shard.StateMachine: the value of a key (nil if none).
func (s *kvSM) Lookup(query []byte) ([]byte, error) {
	return bytes.Clone(s.kv[string(query)]), nil
}

// SaveSnapshot implements shard.StateMachine: the pairs in key order.
func (s *kvSM) SaveSnapshot(w io.Writer) error {
	keys := make([]string, 0, len(s.kv))
	for k := range s.kv {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		v := s.kv[k]
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	_, err := w.Write(b)
	return err
}

// RecoverFromSnapshot implements shard.StateMachine.
func (s *kvSM) RecoverFromSnapshot(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	next := func() ([]byte, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, fmt.Errorf("sim: truncated snapshot")
		}
		v := b[k : k+int(n)]
		b = b[k+int(n):]
		return v, nil
	}
	count, k := binary.Uvarint(b)
	if k <= 0 {
		return fmt.Errorf("sim: truncated snapshot")
	}
	b = b[k:]
	kv := make(map[string][]byte, count)
	for range count {
		key, err := next()
		if err != nil {
			return err
		}
		val, err := next()
		if err != nil {
			return err
		}
		kv[string(key)] = bytes.Clone(val)
	}
	if len(b) != 0 {
		return fmt.Errorf("sim: %d bytes after the snapshot's pairs", len(b))
	}
	s.kv = kv
	return nil
}

// Close implements shard.StateMachine.
func (s *kvSM) Close() error { return nil }
