package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/shardd/shardd/engine"
)

// kvSM is the in-process mode's state machine: an in-memory map. A
// command is a put, encoded by encodePut: one byte of key length, the key,
// then the value (so a command of --payload bytes carries a value of
// payload-1-len(key) bytes). A query is a key; it returns the value, or nil
// when the key was never written.
type kvSM struct {
	mu sync.Mutex
	// data holds pointers so that overwriting a key reuses its buffer
	// without a map assignment (which would allocate the key string).
	data map[string]*[]byte
}

func newKV(shardID, nodeID uint64) engine.StateMachine {
	return &kvSM{data: map[string]*[]byte{}}
}

// maxKeyLen is what one length byte can say.
const maxKeyLen = 255

// encodePut returns the command that sets key to value, padded with zero
// bytes to at least size bytes.
func encodePut(key, value []byte, size int) []byte {
	n := max(1+len(key)+len(value), size)
	cmd := make([]byte, n)
	cmd[0] = byte(len(key))
	copy(cmd[1:], key)
	copy(cmd[1+len(key):], value)
	return cmd
}

// decodePut splits a command into key and value.
func decodePut(cmd []byte) (key, value []byte, err error) {
	if len(cmd) == 0 || len(cmd) < 1+int(cmd[0]) {
		return nil, nil, fmt.Errorf("bench kv: bad command of %d bytes", len(cmd))
	}
	kl := int(cmd[0])
	return cmd[1 : 1+kl], cmd[1+kl:], nil
}

func (k *kvSM) Update(ents []engine.Entry) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range ents {
		key, value, err := decodePut(ents[i].Cmd)
		if err != nil {
			return err
		}
		// Entries' data may alias a frame or the entry cache: keep a copy,
		// in the key's old buffer (Lookup hands out copies).
		if v, ok := k.data[string(key)]; ok {
			*v = append((*v)[:0], value...)
		} else {
			b := append([]byte(nil), value...)
			k.data[string(key)] = &b
		}
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
	return append([]byte{}, *v...), nil
}

func (k *kvSM) SaveSnapshot(w io.Writer) error {
	k.mu.Lock()
	b := binary.AppendUvarint(nil, uint64(len(k.data)))
	for key, v := range k.data {
		b = binary.AppendUvarint(b, uint64(len(key)))
		b = append(b, key...)
		b = binary.AppendUvarint(b, uint64(len(*v)))
		b = append(b, *v...)
	}
	k.mu.Unlock()
	_, err := w.Write(b)
	return err
}

var errBadSnapshot = errors.New("bench kv: malformed snapshot")

func (k *kvSM) RecoverFromSnapshot(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	next := func() ([]byte, error) {
		n, l := binary.Uvarint(b)
		if l <= 0 || uint64(len(b)-l) < n {
			return nil, errBadSnapshot
		}
		v := b[l : l+int(n)]
		b = b[l+int(n):]
		return v, nil
	}
	count, l := binary.Uvarint(b)
	if l <= 0 {
		return errBadSnapshot
	}
	b = b[l:]
	data := make(map[string]*[]byte, min(count, 1<<20))
	for i := uint64(0); i < count; i++ {
		key, err := next()
		if err != nil {
			return err
		}
		v, err := next()
		if err != nil {
			return err
		}
		b := append([]byte{}, v...)
		data[string(key)] = &b
	}
	if len(b) != 0 {
		return errBadSnapshot
	}
	k.mu.Lock()
	k.data = data
	k.mu.Unlock()
	return nil
}

func (k *kvSM) Close() error { return nil }
