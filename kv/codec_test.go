package kv

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/shardd/shardd/shard"
)

func TestCommandRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("v"), MaxValueBytes)
	bigKey := bytes.Repeat([]byte("k"), MaxKeyBytes)
	for _, c := range []Command{
		{Op: OpPut, Key: []byte("a"), Value: []byte{}},
		{Op: OpPut, Key: []byte("key"), Value: []byte("value")},
		{Op: OpPut, Key: bigKey, Value: big},
		{Op: OpPut, Key: bytes.Repeat([]byte{0}, 200), Value: []byte{0, 1, 2}},
		{Op: OpDelete, Key: []byte("gone")},
		{Op: OpDelete, Key: bigKey},
		{Op: OpCAS, Key: []byte("k"), Expected: []byte("old"), ExpectExists: true, Value: []byte("new")},
		{Op: OpCAS, Key: []byte("k"), Expected: []byte{}, ExpectExists: true, Value: []byte{}},
		{Op: OpCAS, Key: []byte("k"), Expected: []byte{}, ExpectExists: false, Value: []byte("first")},
		{Op: OpCAS, Key: bigKey, Expected: big, ExpectExists: true, Value: big},
	} {
		enc := c.Encode()
		got, err := DecodeCommand(enc)
		if err != nil {
			t.Fatalf("%c %d-byte key: %v", c.Op, len(c.Key), err)
		}
		norm := func(c Command) Command {
			// Decoding yields empty, non-nil slices for absent fields.
			for _, p := range []*[]byte{&c.Key, &c.Value, &c.Expected} {
				if len(*p) == 0 {
					*p = nil
				}
			}
			return c
		}
		if !reflect.DeepEqual(norm(got), norm(c)) {
			t.Fatalf("round trip of %c: got %+v", c.Op, got)
		}
		if !bytes.Equal(got.Encode(), enc) {
			t.Fatalf("re-encoding of %c differs", c.Op)
		}
	}
}

// The documented layouts, byte for byte.
func TestCommandEncodingLayout(t *testing.T) {
	for _, tc := range []struct {
		got, want []byte
	}{
		{EncodePut([]byte("ab"), []byte("xyz")), []byte("\x01P\x02abxyz")},
		{EncodeDelete([]byte("ab")), []byte("\x01Dab")},
		{EncodeCAS([]byte("ab"), []byte("o"), true, []byte("n")), []byte("\x01C\x01\x02ab\x01on")},
		// Expecting absence drops the expected value.
		{EncodeCAS([]byte("ab"), []byte("ignored"), false, []byte("n")), []byte("\x01C\x00\x02ab\x00n")},
		{EncodeGet([]byte("ab")), []byte("\x01Gab")},
	} {
		if !bytes.Equal(tc.got, tc.want) {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestDecodeCommandRejects(t *testing.T) {
	long := make([]byte, 0, MaxKeyBytes+8)
	long = append(long, 1, 'P', 0x81, 0x20) // key length 4097
	long = append(long, bytes.Repeat([]byte("k"), MaxKeyBytes+1)...)
	for _, tc := range []struct {
		name string
		cmd  []byte
		want error
	}{
		{"empty", nil, ErrInvalidCommand},
		{"one byte", []byte{1}, ErrInvalidCommand},
		{"version", []byte("\x02Dab"), ErrInvalidCommand},
		{"op", []byte("\x01Xab"), ErrInvalidCommand},
		{"get is a query", []byte("\x01Gab"), ErrInvalidCommand},
		{"put without length", []byte("\x01P"), ErrInvalidCommand},
		{"put length beyond", []byte("\x01P\x05ab"), ErrInvalidCommand},
		{"put non-canonical length", []byte("\x01P\x82\x00abv"), ErrInvalidCommand},
		{"put varint overflow", []byte("\x01P\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"), ErrInvalidCommand},
		{"put empty key", []byte("\x01P\x00v"), ErrKeyEmpty},
		{"put key too large", long, ErrKeyTooLarge},
		{"delete empty key", []byte("\x01D"), ErrKeyEmpty},
		{"cas no flags", []byte("\x01C"), ErrInvalidCommand},
		{"cas reserved flag", []byte("\x01C\x03\x01k\x00v"), ErrInvalidCommand},
		{"cas truncated key", []byte("\x01C\x01\x05k"), ErrInvalidCommand},
		{"cas truncated expected", []byte("\x01C\x01\x01k\x05o"), ErrInvalidCommand},
		{"cas absent with expected", []byte("\x01C\x00\x01k\x01ov"), ErrInvalidCommand},
		{"cas empty key", []byte("\x01C\x01\x00\x00v"), ErrKeyEmpty},
	} {
		_, err := DecodeCommand(tc.cmd)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := DecodeCommand(EncodePut([]byte("k"), make([]byte, MaxValueBytes+1))); !errors.Is(err, ErrValueTooLarge) {
		t.Errorf("oversized value: %v", err)
	}
	if _, err := DecodeCommand(EncodeCAS([]byte("k"), make([]byte, MaxValueBytes+1), true, nil)); !errors.Is(err, ErrValueTooLarge) {
		t.Errorf("oversized expected: %v", err)
	}
}

func TestQueryRoundTrip(t *testing.T) {
	for _, k := range [][]byte{[]byte("a"), []byte("\x00\xff"), bytes.Repeat([]byte("k"), MaxKeyBytes)} {
		got, err := DecodeQuery(EncodeGet(k))
		if err != nil || !bytes.Equal(got, k) {
			t.Fatalf("query %q: %q %v", k, got, err)
		}
	}
	for _, q := range [][]byte{nil, {1}, []byte("\x02Gk"), []byte("\x01Pk")} {
		if _, err := DecodeQuery(q); !errors.Is(err, ErrInvalidQuery) {
			t.Errorf("query %q: %v", q, err)
		}
	}
	if _, err := DecodeQuery([]byte("\x01G")); !errors.Is(err, ErrKeyEmpty) {
		t.Errorf("empty key: %v", err)
	}
	if _, err := DecodeQuery(EncodeGet(make([]byte, MaxKeyBytes+1))); !errors.Is(err, ErrKeyTooLarge) {
		t.Errorf("key too large: %v", err)
	}
}

// Validation errors name the limit, so clients can act on them.
func TestValidate(t *testing.T) {
	if err := Validate([]byte("k"), nil); err != nil {
		t.Fatal(err)
	}
	if err := Validate(make([]byte, MaxKeyBytes), make([]byte, MaxValueBytes)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		err   error
		want  error
		limit string
	}{
		{Validate(nil, nil), ErrKeyEmpty, "MaxKeyBytes"},
		{Validate(make([]byte, MaxKeyBytes+1), nil), ErrKeyTooLarge, "4096 bytes (MaxKeyBytes)"},
		{Validate([]byte("k"), make([]byte, MaxValueBytes+1)), ErrValueTooLarge, "1048576 bytes (MaxValueBytes)"},
		{ValidateCAS([]byte("k"), make([]byte, MaxValueBytes+1), nil), ErrValueTooLarge, "expected value of 1048577 bytes"},
		{ValidateCAS(nil, nil, nil), ErrKeyEmpty, "MaxKeyBytes"},
	} {
		if !errors.Is(tc.err, tc.want) || !strings.Contains(tc.err.Error(), tc.limit) {
			t.Errorf("error %q, want %v naming %q", tc.err, tc.want, tc.limit)
		}
	}
}

func TestDecodeLookup(t *testing.T) {
	v, found, err := DecodeLookup(encodeLookup(nil, false))
	if err != nil || found || v != nil {
		t.Fatalf("not found: %q %v %v", v, found, err)
	}
	v, found, err = DecodeLookup(encodeLookup([]byte{}, true))
	if err != nil || !found || v == nil || len(v) != 0 {
		t.Fatalf("empty value: %q %v %v", v, found, err)
	}
	v, found, err = DecodeLookup(encodeLookup([]byte("x"), true))
	if err != nil || !found || string(v) != "x" {
		t.Fatalf("value: %q %v %v", v, found, err)
	}
	for _, b := range [][]byte{nil, {0, 0}, {2}} {
		if _, _, err := DecodeLookup(b); !errors.Is(err, ErrInvalidResult) {
			t.Errorf("%q: %v", b, err)
		}
	}
}

func TestResultHelpers(t *testing.T) {
	ok := shard.Result{Value: CodeApplied}
	if !Applied(ok) || ResultError(ok) != nil {
		t.Fatal("applied result")
	}
	failed := shard.Result{Value: CodeCASFailed, Data: encodeLookup([]byte("cur"), true)}
	if Applied(failed) || !errors.Is(ResultError(failed), ErrCASFailed) {
		t.Fatal("failed result")
	}
	if v, found, err := CASCurrent(failed); err != nil || !found || string(v) != "cur" {
		t.Fatalf("CASCurrent: %q %v %v", v, found, err)
	}
	bad := shard.Result{Index: 7, Value: CodeInvalid, Data: []byte("why")}
	if err := ResultError(bad); !errors.Is(err, ErrInvalidCommand) || !strings.Contains(err.Error(), "why") {
		t.Fatalf("invalid result: %v", err)
	}
	if _, _, err := CASCurrent(bad); !errors.Is(err, ErrInvalidResult) {
		t.Fatalf("CASCurrent of another code: %v", err)
	}
	if err := ResultError(shard.Result{Value: 99}); !errors.Is(err, ErrInvalidResult) {
		t.Fatalf("unknown code: %v", err)
	}
}

func TestEncodeUnknownOpPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	Command{Op: 'Z'}.Encode()
}

// FuzzDecodeCommand: decoding never panics, and a command that decodes is
// valid and re-encodes to the same bytes (one encoding per command).
func FuzzDecodeCommand(f *testing.F) {
	f.Add(EncodePut([]byte("k"), []byte("v")))
	f.Add(EncodeDelete([]byte("k")))
	f.Add(EncodeCAS([]byte("k"), []byte("o"), true, []byte("n")))
	f.Add(EncodeCAS([]byte("k"), nil, false, []byte("n")))
	f.Add([]byte("\x01P\x82\x00ab"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidCommand) && !errors.Is(err, ErrKeyEmpty) &&
				!errors.Is(err, ErrKeyTooLarge) && !errors.Is(err, ErrValueTooLarge) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if err := ValidateCAS(c.Key, c.Expected, c.Value); err != nil {
			t.Fatalf("decoded an invalid command: %v", err)
		}
		if enc := c.Encode(); !bytes.Equal(enc, b) {
			t.Fatalf("re-encoded %q as %q", b, enc)
		}
	})
}

// FuzzDecodeQuery: decoding never panics, and a query that decodes
// re-encodes to the same bytes.
func FuzzDecodeQuery(f *testing.F) {
	f.Add(EncodeGet([]byte("k")))
	f.Add([]byte("\x01G"))
	f.Add([]byte("\x01P"))
	f.Fuzz(func(t *testing.T, b []byte) {
		key, err := DecodeQuery(b)
		if err != nil {
			return
		}
		if err := Validate(key, nil); err != nil {
			t.Fatalf("decoded an invalid key: %v", err)
		}
		if enc := EncodeGet(key); !bytes.Equal(enc, b) {
			t.Fatalf("re-encoded %q as %q", b, enc)
		}
	})
}
