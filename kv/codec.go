package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/shardd/shardd/shard"
)

// Limits. They are part of the replicated semantics: a command beyond them
// is refused when it is applied (CodeInvalid), identically on every
// replica, so they may not change while a log written under other limits
// can still be replayed.
const (
	// MaxKeyBytes is the largest key, in bytes. Keys are never empty.
	MaxKeyBytes = 4 << 10
	// MaxValueBytes is the largest value (and CompareAndSwap expected
	// value), in bytes. Values may be empty.
	MaxValueBytes = 1 << 20
)

// Validation errors, returned (wrapped, with the sizes and the limit
// named) by Validate and ValidateCAS, and carried in the Data of a
// command refused at apply.
var (
	// ErrKeyEmpty reports an empty key.
	ErrKeyEmpty = errors.New("kv: empty key")
	// ErrKeyTooLarge reports a key longer than MaxKeyBytes.
	ErrKeyTooLarge = errors.New("kv: key too large")
	// ErrValueTooLarge reports a value (or expected value) longer than
	// MaxValueBytes.
	ErrValueTooLarge = errors.New("kv: value too large")
)

// Encoding errors.
var (
	// ErrInvalidCommand reports a command that does not decode: unknown
	// version or operation, truncated, trailing bytes, non-canonical
	// lengths. The state machine applies such a command as a no-op with
	// CodeInvalid.
	ErrInvalidCommand = errors.New("kv: invalid command")
	// ErrInvalidQuery reports a query that does not decode; Lookup returns
	// it.
	ErrInvalidQuery = errors.New("kv: invalid query")
	// ErrInvalidResult reports a Lookup answer or a Result that does not
	// decode.
	ErrInvalidResult = errors.New("kv: invalid result")
	// ErrCASFailed is what ResultError returns for a CompareAndSwap whose
	// expectation did not hold (the key holds another value, or none).
	ErrCASFailed = errors.New("kv: compare-and-swap failed")
)

// Validate checks a key and a value against the limits. A nil value is
// fine (Get and Delete pass nil). The errors wrap ErrKeyEmpty,
// ErrKeyTooLarge or ErrValueTooLarge and name the limit.
func Validate(key, value []byte) error {
	switch {
	case len(key) == 0:
		return fmt.Errorf("%w: keys are 1 to %d bytes (MaxKeyBytes)", ErrKeyEmpty, MaxKeyBytes)
	case len(key) > MaxKeyBytes:
		return fmt.Errorf("%w: %d bytes exceeds the limit of %d bytes (MaxKeyBytes)", ErrKeyTooLarge, len(key), MaxKeyBytes)
	case len(value) > MaxValueBytes:
		return fmt.Errorf("%w: %d bytes exceeds the limit of %d bytes (MaxValueBytes)", ErrValueTooLarge, len(value), MaxValueBytes)
	}
	return nil
}

// ValidateCAS is Validate for a CompareAndSwap: the expected value has the
// value's limit.
func ValidateCAS(key, expected, value []byte) error {
	if err := Validate(key, value); err != nil {
		return err
	}
	if len(expected) > MaxValueBytes {
		return fmt.Errorf("%w: expected value of %d bytes exceeds the limit of %d bytes (MaxValueBytes)",
			ErrValueTooLarge, len(expected), MaxValueBytes)
	}
	return nil
}

// Wire formats. Every command and query starts with a version byte
// (formatV1); the second byte is the operation. Lengths are unsigned
// varints (encoding/binary) in their shortest form; the last field takes
// the rest of the buffer, so no encoding has trailing bytes.
//
//	Put     1 'P' uvarint(len(key)) key value
//	Delete  1 'D' key
//	CAS     1 'C' flags uvarint(len(key)) key uvarint(len(expected)) expected value
//	        flags: bit 0 = the key must exist and hold expected; clear =
//	        the key must be absent (then expected is empty). Other bits are
//	        reserved and must be zero.
//	Get     1 'G' key                                   (a query)
//
// A decoded command or query always satisfies the limits (Validate).
const formatV1 = 1

// Op is a command's operation.
type Op byte

// Operations.
const (
	OpPut    Op = 'P'
	OpDelete Op = 'D'
	OpCAS    Op = 'C'
	opGet    Op = 'G' // the only query
)

const casExpectExists = 1 << 0

// Command is a decoded command. Its slices alias the encoded bytes.
type Command struct {
	Op    Op
	Key   []byte
	Value []byte // Put, CAS: the new value
	// Expected and ExpectExists are CAS's condition: with ExpectExists the
	// key must hold Expected; without, it must be absent.
	Expected     []byte
	ExpectExists bool
}

// EncodePut returns the command that sets key to value.
func EncodePut(key, value []byte) []byte {
	b := make([]byte, 0, 2+binary.MaxVarintLen32+len(key)+len(value))
	b = append(b, formatV1, byte(OpPut))
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	return append(b, value...)
}

// EncodeDelete returns the command that deletes key (a no-op when it is
// absent).
func EncodeDelete(key []byte) []byte {
	b := make([]byte, 0, 2+len(key))
	b = append(b, formatV1, byte(OpDelete))
	return append(b, key...)
}

// EncodeCAS returns the command that sets key to value if the key holds
// expected (expectedExists) or is absent (!expectedExists; expected is then
// ignored). A failed CAS changes nothing; its Result says so and carries the
// current value (see CASCurrent).
func EncodeCAS(key, expected []byte, expectedExists bool, value []byte) []byte {
	var flags byte
	if expectedExists {
		flags |= casExpectExists
	} else {
		expected = nil
	}
	b := make([]byte, 0, 3+2*binary.MaxVarintLen32+len(key)+len(expected)+len(value))
	b = append(b, formatV1, byte(OpCAS), flags)
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = binary.AppendUvarint(b, uint64(len(expected)))
	b = append(b, expected...)
	return append(b, value...)
}

// EncodeGet returns the query that reads key. Its answer decodes with
// DecodeLookup.
func EncodeGet(key []byte) []byte {
	b := make([]byte, 0, 2+len(key))
	b = append(b, formatV1, byte(opGet))
	return append(b, key...)
}

// Encode returns c's encoding (the inverse of DecodeCommand).
func (c Command) Encode() []byte {
	switch c.Op {
	case OpPut:
		return EncodePut(c.Key, c.Value)
	case OpDelete:
		return EncodeDelete(c.Key)
	case OpCAS:
		return EncodeCAS(c.Key, c.Expected, c.ExpectExists, c.Value)
	}
	panic(fmt.Sprintf("kv: encoding a command with unknown op %q", byte(c.Op)))
}

// DecodeCommand decodes a command. Errors wrap ErrInvalidCommand, or one of
// the validation errors for a well-formed command beyond the limits.
func DecodeCommand(b []byte) (Command, error) {
	if len(b) < 2 {
		return Command{}, fmt.Errorf("%w: %d bytes", ErrInvalidCommand, len(b))
	}
	if b[0] != formatV1 {
		return Command{}, fmt.Errorf("%w: unknown version %d", ErrInvalidCommand, b[0])
	}
	c := Command{Op: Op(b[1])}
	rest := b[2:]
	var err error
	switch c.Op {
	case OpPut:
		if c.Key, rest, err = lengthPrefixed(rest); err != nil {
			return Command{}, fmt.Errorf("%w: put key: %w", ErrInvalidCommand, err)
		}
		c.Value = rest
	case OpDelete:
		c.Key = rest
	case OpCAS:
		if len(rest) == 0 || rest[0]&^casExpectExists != 0 {
			return Command{}, fmt.Errorf("%w: bad compare-and-swap flags", ErrInvalidCommand)
		}
		c.ExpectExists = rest[0]&casExpectExists != 0
		if c.Key, rest, err = lengthPrefixed(rest[1:]); err != nil {
			return Command{}, fmt.Errorf("%w: compare-and-swap key: %w", ErrInvalidCommand, err)
		}
		if c.Expected, rest, err = lengthPrefixed(rest); err != nil {
			return Command{}, fmt.Errorf("%w: compare-and-swap expected value: %w", ErrInvalidCommand, err)
		}
		if !c.ExpectExists && len(c.Expected) > 0 {
			return Command{}, fmt.Errorf("%w: compare-and-swap expects an absent key and a value", ErrInvalidCommand)
		}
		c.Value = rest
	default:
		return Command{}, fmt.Errorf("%w: unknown operation %q", ErrInvalidCommand, b[1])
	}
	if err := ValidateCAS(c.Key, c.Expected, c.Value); err != nil {
		return Command{}, err
	}
	return c, nil
}

// DecodeQuery decodes a query and returns the key it reads. Errors wrap
// ErrInvalidQuery or a validation error.
func DecodeQuery(b []byte) (key []byte, err error) {
	if len(b) < 2 || b[0] != formatV1 || Op(b[1]) != opGet {
		return nil, fmt.Errorf("%w: %d bytes not starting with version %d and %q", ErrInvalidQuery, len(b), formatV1, opGet)
	}
	key = b[2:]
	if err := Validate(key, nil); err != nil {
		return nil, err
	}
	return key, nil
}

var errShortLength = errors.New("truncated or non-canonical length")

// lengthPrefixed splits a uvarint-length-prefixed field off b. The length
// must be in its shortest form, so that each command has one encoding.
func lengthPrefixed(b []byte) (field, rest []byte, err error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || w != uvarintLen(n) || n > uint64(len(b)-w) {
		return nil, nil, errShortLength
	}
	end := w + int(n)
	return b[w:end:end], b[end:], nil
}

func uvarintLen(n uint64) int {
	w := 1
	for n >= 0x80 {
		n >>= 7
		w++
	}
	return w
}

// Lookup answers and the Data of a failed CAS share one encoding, so that
// "absent" differs from "empty":
//
//	found      1 value      (value may be empty)
//	not found  0            (exactly one byte)
const (
	lookupNotFound = 0
	lookupFound    = 1
)

func encodeLookup(value []byte, found bool) []byte {
	if !found {
		return []byte{lookupNotFound}
	}
	b := make([]byte, 1+len(value))
	b[0] = lookupFound
	copy(b[1:], value)
	return b
}

// DecodeLookup decodes the answer of a Get query (from Node.Read or
// Node.StaleRead): the value and whether the key exists. An existing key
// with an empty value gives a non-nil empty value and found = true.
func DecodeLookup(b []byte) (value []byte, found bool, err error) {
	switch {
	case len(b) == 1 && b[0] == lookupNotFound:
		return nil, false, nil
	case len(b) >= 1 && b[0] == lookupFound:
		return b[1:], true, nil
	}
	return nil, false, fmt.Errorf("%w: lookup answer of %d bytes", ErrInvalidResult, len(b))
}

// Result codes: what an applied command sets as its Result.Value.
const (
	// CodeCASFailed: a CompareAndSwap whose condition did not hold;
	// nothing changed; Data is the key's current value, encoded as a Lookup
	// answer (CASCurrent decodes it). Zero, so that a zero Result never
	// reads as a success.
	CodeCASFailed uint64 = 0
	// CodeApplied: the command took effect (a Delete of an absent key
	// included). Data is nil.
	CodeApplied uint64 = 1
	// CodeInvalid: the command did not decode or broke the limits; nothing
	// changed; Data is the error text.
	CodeInvalid uint64 = 2
)

// Applied reports whether a command took effect.
func Applied(res shard.Result) bool { return res.Value == CodeApplied }

// ResultError returns nil for an applied command, an error wrapping
// ErrCASFailed for a failed CompareAndSwap, and one wrapping
// ErrInvalidCommand for a refused command.
func ResultError(res shard.Result) error {
	switch res.Value {
	case CodeApplied:
		return nil
	case CodeCASFailed:
		return ErrCASFailed
	case CodeInvalid:
		return fmt.Errorf("%w: refused at index %d: %s", ErrInvalidCommand, res.Index, res.Data)
	}
	return fmt.Errorf("%w: unknown result code %d", ErrInvalidResult, res.Value)
}

// CASCurrent returns the value a failed CompareAndSwap found: the key's
// value and whether it exists.
func CASCurrent(res shard.Result) (value []byte, found bool, err error) {
	if res.Value != CodeCASFailed {
		return nil, false, fmt.Errorf("%w: result code %d is not a failed compare-and-swap", ErrInvalidResult, res.Value)
	}
	return DecodeLookup(res.Data)
}

// casHolds reports whether a CAS's condition holds for the current value.
func casHolds(c *Command, cur []byte, found bool) bool {
	if !c.ExpectExists {
		return !found
	}
	return found && bytes.Equal(cur, c.Expected)
}
