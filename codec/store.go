package codec

import (
	"context"
	"errors"
	"fmt"

	"github.com/univrs/peerstate/datastore"
)

// Store is a datastore.Store whose writes are checked against a Registry's
// validators before they reach the store underneath: a refused value is a
// *ValidationError (or *DecodeError) and nothing is written. Reads, deletes
// and watches pass through.
type Store struct {
	datastore.Store
	reg *Registry
}

var _ datastore.Store = (*Store)(nil)

// Wrap puts reg in front of s. Closing the result closes s.
func Wrap(s datastore.Store, reg *Registry) *Store {
	if reg == nil {
		reg = NewRegistry()
	}
	return &Store{Store: s, reg: reg}
}

// Registry returns the store's registry.
func (s *Store) Registry() *Registry { return s.reg }

// Unwrap returns the store underneath.
func (s *Store) Unwrap() datastore.Store { return s.Store }

// Set checks value, then writes it.
func (s *Store) Set(ctx context.Context, key string, value []byte) (uint64, error) {
	if err := s.reg.Check(key, value); err != nil {
		return 0, err
	}
	return s.Store.Set(ctx, key, value)
}

// CompareAndSet checks value, then writes it if key is at expected.
func (s *Store) CompareAndSet(ctx context.Context, key string, expected uint64, value []byte) (uint64, error) {
	if err := s.reg.Check(key, value); err != nil {
		return 0, err
	}
	return s.Store.CompareAndSet(ctx, key, expected, value)
}

// CreateIfNotExists checks value, then writes it if key is absent.
func (s *Store) CreateIfNotExists(ctx context.Context, key string, value []byte) (uint64, error) {
	if err := s.reg.Check(key, value); err != nil {
		return 0, err
	}
	return s.Store.CreateIfNotExists(ctx, key, value)
}

// Txn checks every set, then runs the transaction.
func (s *Store) Txn(ctx context.Context, ops ...datastore.Op) (datastore.TxnResult, error) {
	if err := s.reg.CheckOps(ops); err != nil {
		return datastore.TxnResult{}, err
	}
	return s.Store.Txn(ctx, ops...)
}

// Typed is a typed view of a Store: values of type T, encoded with each
// key's codec. It is a small value; copy it freely.
type Typed[T any] struct {
	s *Store
}

// Of returns the typed view of s for values of type T.
func Of[T any](s *Store) Typed[T] { return Typed[T]{s} }

// Get reads key and decodes its value; the entry is returned as well (its
// Value holds the encoded bytes). Bytes that do not decode are a
// *DecodeError naming the key.
func (t Typed[T]) Get(ctx context.Context, key string) (T, datastore.Entry, error) {
	var v T
	e, err := t.s.Get(ctx, key)
	if err != nil {
		return v, e, err
	}
	err = t.s.reg.Decode(key, e.Value, &v)
	return v, e, err
}

// Put encodes and writes v, and returns the key's new version.
func (t Typed[T]) Put(ctx context.Context, key string, v T) (uint64, error) {
	b, err := t.s.reg.Encode(key, v)
	if err != nil {
		return 0, err
	}
	return t.s.Set(ctx, key, b)
}

// CompareAndSet writes v only if key is at version expected (0: only if
// absent), else ErrVersionConflict.
func (t Typed[T]) CompareAndSet(ctx context.Context, key string, expected uint64, v T) (uint64, error) {
	b, err := t.s.reg.Encode(key, v)
	if err != nil {
		return 0, err
	}
	return t.s.CompareAndSet(ctx, key, expected, b)
}

// Create writes v only if key is absent, else ErrAlreadyExists.
func (t Typed[T]) Create(ctx context.Context, key string, v T) (uint64, error) {
	b, err := t.s.reg.Encode(key, v)
	if err != nil {
		return 0, err
	}
	return t.s.CreateIfNotExists(ctx, key, b)
}

// OpSet encodes v into a transaction op.
func (t Typed[T]) OpSet(key string, v T) (datastore.Op, error) {
	b, err := t.s.reg.Encode(key, v)
	if err != nil {
		return datastore.Op{}, err
	}
	return datastore.OpSet(key, b), nil
}

// Update reads key, calls fn with its value (the zero T and found false when
// absent) and writes fn's result with compare-and-set, retrying from a fresh
// read while another writer gets there first. It returns the new version.
// An error from fn stops it and is returned as is.
func (t Typed[T]) Update(ctx context.Context, key string, fn func(v T, found bool) (T, error)) (uint64, error) {
	for {
		cur, e, err := t.Get(ctx, key)
		found := err == nil
		if err != nil && !errors.Is(err, datastore.ErrKeyNotFound) {
			return 0, err
		}
		expected := uint64(0)
		if found {
			expected = e.Version
		}
		next, err := fn(cur, found)
		if err != nil {
			return 0, err
		}
		v, err := t.CompareAndSet(ctx, key, expected, next)
		if errors.Is(err, datastore.ErrVersionConflict) {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			continue
		}
		return v, err
	}
}

// Item is one decoded entry of a List.
type Item[T any] struct {
	Entry datastore.Entry
	Value T
}

// List returns one page of the entries under prefix, decoded. The first
// entry that does not decode fails the whole call with a *DecodeError.
func (t Typed[T]) List(ctx context.Context, prefix string, opts datastore.ListOptions) ([]Item[T], datastore.Page, error) {
	opts.KeysOnly = false
	p, err := t.s.List(ctx, prefix, opts)
	if err != nil {
		return nil, p, err
	}
	items := make([]Item[T], 0, len(p.Entries))
	for _, e := range p.Entries {
		var v T
		if err := t.s.reg.Decode(e.Key, e.Value, &v); err != nil {
			return nil, p, err
		}
		items = append(items, Item[T]{e, v})
	}
	return items, p, nil
}

// Decode decodes an event's new value (Created, Updated) or, for Deleted,
// its old value, with the key's codec.
func (t Typed[T]) Decode(ev datastore.Event) (T, error) {
	var v T
	b := ev.NewValue
	if ev.Type == datastore.Deleted {
		b = ev.OldValue
	}
	if b == nil {
		return v, fmt.Errorf("codec: %s: %s event carries no value", ev.Key, ev.Type)
	}
	err := t.s.reg.Decode(ev.Key, b, &v)
	return v, err
}
