// Package codec gives applications typed access to a datastore.Store: values
// are Go types, encoded as JSON by default or as CBOR (the compact
// alternative) for chosen key prefixes, with optional validators per key
// pattern — a Go func or a JSON Schema document — enforced before every local
// write, and available to a replica for remote changes (Registry.CheckChange).
//
// A Registry holds the choices; Wrap puts it in front of a store; Of gives a
// typed handle on the wrapped store:
//
//	reg := codec.NewRegistry()
//	reg.Use("/topics/", codec.CBOR)
//	reg.Validate("/peers/*/info", codec.Func(func(key string, p PeerInfo) error { ... }))
//	s := codec.Wrap(store, reg)
//	peers := codec.Of[PeerInfo](s)
//	v, err := peers.Put(ctx, "/peers/a/info", PeerInfo{Addr: "..."})
//
// Bytes that do not decode as the key's codec are a *DecodeError naming the
// key (ErrDecode); a value a validator refuses is a *ValidationError naming
// the key and the rule (ErrInvalidValue), and changes nothing.
package codec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"

	"github.com/fxamacker/cbor/v2"

	"github.com/univrs/peerstate/datastore"
)

// Sentinel errors; check them with errors.Is.
var (
	// ErrDecode reports bytes that are not a valid encoding of the wanted
	// type under the key's codec.
	ErrDecode = errors.New("codec: cannot decode value")
	// ErrEncode reports a Go value the key's codec cannot encode.
	ErrEncode = errors.New("codec: cannot encode value")
	// ErrInvalidValue reports a value a validator refused.
	ErrInvalidValue = errors.New("codec: invalid value")
)

// Codec turns Go values into bytes and back.
type Codec interface {
	// Name is the codec's short name ("json", "cbor").
	Name() string
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
	// Generic decodes data into plain Go values: map[string]any, []any,
	// string, bool, nil and numbers, the shape JSON Schema validates.
	Generic(data []byte) (any, error)
}

// JSON is encoding/json; the default codec.
var JSON Codec = jsonCodec{}

// CBOR is RFC 8949 CBOR in core deterministic encoding (github.com/fxamacker/cbor),
// so one value always encodes to the same bytes.
var CBOR Codec = newCBOR()

type jsonCodec struct{}

func (jsonCodec) Name() string                  { return "json" }
func (jsonCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

func (c jsonCodec) Generic(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON value")
	}
	return v, nil
}

type cborCodec struct {
	enc     cbor.EncMode
	dec     cbor.DecMode
	generic cbor.DecMode
}

func newCBOR() cborCodec {
	// These options are fixed and valid, so the modes never fail to build
	// (TestCBOR_RoundTrip exercises all three).
	enc, _ := cbor.CoreDetEncOptions().EncMode()
	dec, _ := cbor.DecOptions{}.DecMode()
	generic, _ := cbor.DecOptions{DefaultMapType: reflect.TypeOf(map[string]any(nil))}.DecMode()
	return cborCodec{enc: enc, dec: dec, generic: generic}
}

func (cborCodec) Name() string                         { return "cbor" }
func (c cborCodec) Marshal(v any) ([]byte, error)      { return c.enc.Marshal(v) }
func (c cborCodec) Unmarshal(data []byte, v any) error { return c.dec.Unmarshal(data, v) }
func (c cborCodec) Generic(data []byte) (any, error) {
	var v any
	if err := c.generic.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	return v, nil
}

// DecodeError reports a value that did not decode. It matches ErrDecode.
type DecodeError struct {
	Key   string
	Codec string
	Err   error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("codec: %s: value is not valid %s: %v", e.Key, e.Codec, e.Err)
}

// Is makes errors.Is(err, ErrDecode) true.
func (e *DecodeError) Is(target error) bool { return target == ErrDecode }
func (e *DecodeError) Unwrap() error        { return e.Err }

// ValidationError reports a value a validator refused. It matches
// ErrInvalidValue.
type ValidationError struct {
	Key     string
	Pattern string // the pattern of the validator that refused it
	Err     error
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("codec: %s: invalid value (rule %s): %v", e.Key, e.Pattern, e.Err)
}

// Is makes errors.Is(err, ErrInvalidValue) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalidValue }
func (e *ValidationError) Unwrap() error        { return e.Err }

// Registry maps key prefixes to codecs and key patterns to validators. It is
// safe for concurrent use; configure it before use, since a rule added later
// does not re-check stored values.
type Registry struct {
	mu       sync.RWMutex
	codecs   []prefixCodec // longest prefix first
	rules    []rule
	fallback Codec
}

type prefixCodec struct {
	prefix string
	codec  Codec
}

type rule struct {
	pattern datastore.Pattern
	v       Validator
}

// NewRegistry returns a registry that encodes every key as JSON and
// validates nothing.
func NewRegistry() *Registry { return &Registry{fallback: JSON} }

// Use chooses c for every key under prefix ("/topics/" or "/topics"); the
// longest matching prefix wins, keys under no prefix use JSON.
func (r *Registry) Use(prefix string, c Codec) error {
	if c == nil {
		return fmt.Errorf("codec: use %q: nil codec", prefix)
	}
	if err := datastore.ValidatePrefix(prefix); err != nil {
		return fmt.Errorf("codec: use %q: %w", prefix, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, pc := range r.codecs {
		if pc.prefix == prefix {
			r.codecs[i].codec = c
			return nil
		}
	}
	r.codecs = append(r.codecs, prefixCodec{prefix, c})
	sort.SliceStable(r.codecs, func(i, j int) bool { return len(r.codecs[i].prefix) > len(r.codecs[j].prefix) })
	return nil
}

// CodecFor returns the codec of key.
func (r *Registry) CodecFor(key string) Codec {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, pc := range r.codecs {
		if underPrefix(key, pc.prefix) {
			return pc.codec
		}
	}
	return r.fallback
}

// underPrefix reports whether key is prefix itself or lies below it; "/a"
// and "/a/" both cover "/a/b" but not "/ab".
func underPrefix(key, prefix string) bool {
	p := strings.TrimSuffix(prefix, "/")
	return key == p || strings.HasPrefix(key, p+"/") || p == ""
}

// Validate adds v for every key matching pattern (a prefix such as
// "/workloads/" or a glob such as "/peers/*/info"). A key must pass every
// validator whose pattern it matches.
func (r *Registry) Validate(pattern string, v Validator) error {
	if v == nil {
		return fmt.Errorf("codec: validate %q: nil validator", pattern)
	}
	p, err := datastore.ParsePattern(pattern)
	if err != nil {
		return fmt.Errorf("codec: validate %q: %w", pattern, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rules = append(r.rules, rule{p, v})
	return nil
}

// Check validates an encoded value for key against every matching
// validator; nil when none matches or all accept it.
func (r *Registry) Check(key string, value []byte) error {
	r.mu.RLock()
	rules := r.rules
	r.mu.RUnlock()
	if len(rules) == 0 {
		return nil
	}
	c := r.CodecFor(key)
	for _, ru := range rules {
		if !ru.pattern.Match(key) {
			continue
		}
		if err := ru.v.validate(key, value, c); err != nil {
			var de *DecodeError
			if errors.As(err, &de) {
				return err
			}
			return &ValidationError{Key: key, Pattern: ru.pattern.String(), Err: err}
		}
	}
	return nil
}

// CheckChange is Check in the shape a replica's remote-change hook takes: a
// delete (deleted true) is always accepted, since it carries no value.
func (r *Registry) CheckChange(key string, value []byte, deleted bool) error {
	if deleted {
		return nil
	}
	return r.Check(key, value)
}

// CheckOps checks every set of a transaction.
func (r *Registry) CheckOps(ops []datastore.Op) error {
	for i, op := range ops {
		if op.Kind != datastore.OpKindSet {
			continue
		}
		if err := r.Check(op.Key, op.Value); err != nil {
			return fmt.Errorf("op %d: %w", i, err)
		}
	}
	return nil
}

// Encode encodes v with key's codec.
func (r *Registry) Encode(key string, v any) ([]byte, error) {
	c := r.CodecFor(key)
	b, err := c.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("codec: %s: encode %T as %s: %v: %w", key, v, c.Name(), err, ErrEncode)
	}
	return b, nil
}

// Decode decodes key's value into v with key's codec; a failure is a
// *DecodeError.
func (r *Registry) Decode(key string, value []byte, v any) error {
	c := r.CodecFor(key)
	if err := c.Unmarshal(value, v); err != nil {
		return &DecodeError{Key: key, Codec: c.Name(), Err: err}
	}
	return nil
}
