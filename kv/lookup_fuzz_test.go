package kv

import (
	"bytes"
	"errors"
	"testing"

	"github.com/shardd/shardd/shard"
)

// FuzzDecodeLookup: decoding a Get answer (or a failed CAS's current
// value) never panics and fails only with ErrInvalidResult; an answer that
// decodes is the one encodeLookup makes for what it decodes to (one
// encoding per answer), and CASCurrent reads the same from a failed CAS's
// result.
func FuzzDecodeLookup(f *testing.F) {
	f.Add(encodeLookup([]byte("v"), true))
	f.Add(encodeLookup(nil, true))
	f.Add(encodeLookup(nil, false))
	f.Add([]byte{lookupNotFound, 'x'})
	f.Add([]byte{})
	f.Add([]byte{7})
	f.Fuzz(func(t *testing.T, b []byte) {
		value, found, err := DecodeLookup(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidResult) {
				t.Fatalf("error %v does not wrap ErrInvalidResult", err)
			}
			return
		}
		if !found && value != nil {
			t.Fatalf("%x: not found, with value %q", b, value)
		}
		if found && value == nil {
			t.Fatalf("%x: found with a nil value (an empty value must be non-nil)", b)
		}
		if enc := encodeLookup(value, found); !bytes.Equal(enc, b) {
			t.Fatalf("%x decodes to (%q, %v), which encodes as %x", b, value, found, enc)
		}
		v2, f2, err := CASCurrent(shard.Result{Value: CodeCASFailed, Data: b})
		if err != nil || f2 != found || !bytes.Equal(v2, value) {
			t.Fatalf("CASCurrent(%x) = %q, %v, %v; DecodeLookup gave %q, %v", b, v2, f2, err, value, found)
		}
	})
}
