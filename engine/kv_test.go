package engine

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// kvSM is a small in-memory key-value state machine for engine tests:
// commands are "key=value", queries are keys.
type kvSM struct {
	mu   sync.Mutex
	data map[string]string
}

func newKV(shardID, nodeID uint64) StateMachine { return &kvSM{data: map[string]string{}} }

func (k *kvSM) Update(ents []Entry) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range ents {
		kv := bytes.SplitN(ents[i].Cmd, []byte("="), 2)
		if len(kv) != 2 {
			return fmt.Errorf("bad command %q", ents[i].Cmd)
		}
		k.data[string(kv[0])] = string(kv[1])
		ents[i].Result.Value = uint64(len(k.data))
	}
	return nil
}

func (k *kvSM) Lookup(q []byte) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.data[string(q)]
	if !ok {
		return nil, nil
	}
	return []byte(v), nil
}

func (k *kvSM) SaveSnapshot(w io.Writer) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	var b []byte
	for key, v := range k.data {
		b = binary.AppendUvarint(b, uint64(len(key)))
		b = append(b, key...)
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	_, err := w.Write(b)
	return err
}

func (k *kvSM) RecoverFromSnapshot(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	data := map[string]string{}
	for len(b) > 0 {
		n, l := binary.Uvarint(b)
		b = b[l:]
		key := string(b[:n])
		b = b[n:]
		n, l = binary.Uvarint(b)
		b = b[l:]
		data[key] = string(b[:n])
		b = b[n:]
	}
	k.mu.Lock()
	k.data = data
	k.mu.Unlock()
	return nil
}

func (k *kvSM) Close() error { return nil }
