// Package ipfsds exposes any datastore.Store as a github.com/ipfs/go-datastore
// Batching and TxnDatastore, so that IPFS and libp2p components that take a
// go-datastore (the libp2p peerstore, DHT provider records, ...) keep their
// data in a peerstate store, where it is versioned, watchable and, with the
// replica, replicated.
//
//	d := ipfsds.New(store, ipfsds.WithPrefix("/ipfs"))
//	ps, err := pstoreds.NewPeerstore(ctx, d, pstoreds.DefaultOpts())
//
// The adapter passes go-datastore's own test suite (dstest.SubtestAll).
//
// # Key mapping
//
// A go-datastore key is a "/"-separated path; each of its segments becomes
// the segment of a store key at the same position, so the hierarchy is kept:
// a query with prefix "/a" selects /a/b but never /ab, in both key spaces.
// By default the mapping is the identity for every key that is also a valid
// store key and contains no "%" — that is, for the keys IPFS and libp2p write
// in practice ("/peers/addrs/CIQ...", "/providers/...") — so their byte order
// is kept too. The other keys are escaped reversibly, segment by segment:
//
//   - "%" becomes "%25";
//   - every byte of a control character (U+0000–U+001F, U+007F–U+009F) and
//     every byte of an invalid UTF-8 sequence becomes "%XX", in upper-case
//     hex: "/a\x00b" is stored as "/a%00b";
//   - an empty segment becomes "%": the root key "/" is stored as "/%", and
//     the (malformed) RawKey "/a//b" as "/a/%/b".
//
// WithPrefix puts the whole key space under a store key: with
// WithPrefix("/ipfs"), "/peers/x" is stored as "/ipfs/peers/x" and the root
// key as "/ipfs/%". The prefix is itself read as a go-datastore key and
// escaped the same way.
//
// A key whose stored form would be longer than datastore.MaxKeyLen (1024
// bytes) cannot be stored: Put fails with an error wrapping
// datastore.ErrInvalidKey. Since such a key can never exist, Get and GetSize
// report ds.ErrNotFound for it, Has false, and Delete does nothing.
//
// Queries list the store under the namespace and skip store keys that are
// not the canonical form of any go-datastore key (written to the store by
// something other than the adapter, such as "/a%zz" or "/a%41"); Get never
// reaches them either.
//
// # Semantics
//
//   - Put is a store Set and is durable when it returns (as durable as the
//     store), so Sync does nothing.
//   - Get and GetSize of a missing key return exactly ds.ErrNotFound (and
//     size -1); Delete of a missing key succeeds.
//   - Query pages through the store's List, applying go-datastore's own
//     filters, orders, offset and limit (query.NaiveQueryApply). It is not a
//     snapshot: each page is read at its own revision. Results are in store
//     key order unless the query asks for an order. There is no TTL support:
//     Expiration is always the zero time.
//   - A Batch commits all its puts and deletes as one store transaction, so
//     it is atomic (go-datastore does not require it to be). A later write to
//     a key in the same batch replaces the earlier one.
//   - NewTransaction returns an optimistic transaction: reads go to the store
//     (and see the transaction's own writes), writes are buffered, and Commit
//     applies them in one store transaction together with a version check of
//     every key the transaction read, including the entries its queries
//     returned. If any of them changed meanwhile, nothing is written and
//     Commit returns an error wrapping datastore.ErrTxnFailed. Keys created
//     under a queried prefix after the query (phantoms) are not detected.
//     A read-only transaction's Commit checks its reads the same way.
//
// Close does not close the wrapped store, which the caller still owns,
// unless the adapter was made WithCloseStore.
package ipfsds

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"

	"github.com/univrs/peerstate/datastore"
)

var (
	_ ds.Batching     = (*Datastore)(nil)
	_ ds.TxnDatastore = (*Datastore)(nil)
)

// Errors of the adapter's transactions.
var (
	// ErrReadOnly is returned by Put and Delete on a read-only transaction.
	ErrReadOnly = errors.New("ipfsds: read-only transaction")
	// ErrTxnDone is returned by a transaction used after Commit or Discard.
	ErrTxnDone = errors.New("ipfsds: transaction already committed or discarded")
)

// Datastore is a go-datastore Batching and TxnDatastore over a
// datastore.Store. It is safe for concurrent use.
type Datastore struct {
	s          datastore.Store
	keys       keyMap
	closeStore bool
	closed     atomic.Bool
}

// Option configures New.
type Option func(*config)

type config struct {
	prefix     string
	closeStore bool
}

// WithPrefix keeps every key under prefix in the store's key space. The
// prefix is read as a go-datastore key ("ipfs", "/ipfs" and "/ipfs/" are the
// same) and escaped like any key; "" and "/" mean no prefix.
func WithPrefix(prefix string) Option { return func(c *config) { c.prefix = prefix } }

// WithCloseStore makes Close close the wrapped store too.
func WithCloseStore() Option { return func(c *config) { c.closeStore = true } }

// New returns a go-datastore over s.
func New(s datastore.Store, opts ...Option) *Datastore {
	var c config
	for _, opt := range opts {
		opt(&c)
	}
	return &Datastore{s: s, keys: newKeyMap(c.prefix), closeStore: c.closeStore}
}

// StoreKey returns the store key that k is kept under. It fails, wrapping
// datastore.ErrInvalidKey, when that key would be too long.
func (d *Datastore) StoreKey(k ds.Key) (string, error) { return d.keys.encode(k) }

// DatastoreKey returns the go-datastore key kept under the store key key,
// and false when no go-datastore key maps to it (for example a key outside
// the prefix). Use it to read the keys of the store's watch events.
func (d *Datastore) DatastoreKey(key string) (ds.Key, bool) {
	if datastore.ValidateKey(key) != nil {
		return ds.Key{}, false
	}
	return d.keys.decode(key)
}

func (d *Datastore) check() error {
	if d.closed.Load() {
		return fmt.Errorf("ipfsds: %w", datastore.ErrClosed)
	}
	return nil
}

// Get implements ds.Datastore. A missing key is exactly ds.ErrNotFound.
func (d *Datastore) Get(ctx context.Context, key ds.Key) ([]byte, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	k, err := d.keys.encode(key)
	if err != nil {
		return nil, ds.ErrNotFound
	}
	e, err := d.s.Get(ctx, k)
	if err != nil {
		return nil, notFound(key, err)
	}
	return value(e), nil
}

// Has implements ds.Datastore.
func (d *Datastore) Has(ctx context.Context, key ds.Key) (bool, error) {
	if err := d.check(); err != nil {
		return false, err
	}
	k, err := d.keys.encode(key)
	if err != nil {
		return false, nil
	}
	v, err := d.version(ctx, k)
	if err != nil {
		return false, fmt.Errorf("ipfsds: has %s: %w", key, err)
	}
	return v > 0, nil
}

// GetSize implements ds.Datastore: -1 and ds.ErrNotFound for a missing key.
func (d *Datastore) GetSize(ctx context.Context, key ds.Key) (int, error) {
	v, err := d.Get(ctx, key)
	if err != nil {
		return -1, err
	}
	return len(v), nil
}

// Put implements ds.Datastore.
func (d *Datastore) Put(ctx context.Context, key ds.Key, value []byte) error {
	if err := d.check(); err != nil {
		return err
	}
	k, err := d.keys.encode(key)
	if err != nil {
		return err
	}
	if _, err := d.s.Set(ctx, k, value); err != nil {
		return fmt.Errorf("ipfsds: put %s: %w", key, err)
	}
	return nil
}

// Delete implements ds.Datastore; deleting a missing key is not an error.
func (d *Datastore) Delete(ctx context.Context, key ds.Key) error {
	if err := d.check(); err != nil {
		return err
	}
	k, err := d.keys.encode(key)
	if err != nil {
		return nil // such a key cannot exist
	}
	if err := d.s.Delete(ctx, k); err != nil && !errors.Is(err, datastore.ErrKeyNotFound) {
		return fmt.Errorf("ipfsds: delete %s: %w", key, err)
	}
	return nil
}

// Sync implements ds.Datastore. Store writes are durable when they return,
// so there is nothing to do.
func (d *Datastore) Sync(ctx context.Context, prefix ds.Key) error {
	return d.check()
}

// Query implements ds.Datastore.
func (d *Datastore) Query(ctx context.Context, q dsq.Query) (dsq.Results, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	return d.query(ctx, q, nil, nil), nil
}

// Batch implements ds.Batching.
func (d *Datastore) Batch(ctx context.Context) (ds.Batch, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	return &batch{d: d, writes: map[string]write{}}, nil
}

// NewTransaction implements ds.TxnDatastore; see the package doc for its
// semantics.
func (d *Datastore) NewTransaction(ctx context.Context, readOnly bool) (ds.Txn, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	return &txn{d: d, readOnly: readOnly, reads: map[string]uint64{}, writes: map[string]write{}}, nil
}

// Close implements ds.Datastore: later calls fail with datastore.ErrClosed.
// It closes the wrapped store only if the adapter was made WithCloseStore.
// Calling it again returns nil.
func (d *Datastore) Close() error {
	if d.closed.Swap(true) || !d.closeStore {
		return nil
	}
	return d.s.Close()
}

// version returns the version of the store key k, 0 if it is absent,
// without reading its value.
func (d *Datastore) version(ctx context.Context, k string) (uint64, error) {
	p, err := d.s.List(ctx, k, datastore.ListOptions{Limit: 1, KeysOnly: true})
	if err != nil {
		return 0, err
	}
	// k sorts before every key under it, so if it exists it comes first.
	if len(p.Entries) == 0 || p.Entries[0].Key != k {
		return 0, nil
	}
	return p.Entries[0].Version, nil
}

// notFound turns the store's not-found into exactly ds.ErrNotFound, as
// go-datastore callers compare it with ==.
func notFound(key ds.Key, err error) error {
	if errors.Is(err, datastore.ErrKeyNotFound) {
		return ds.ErrNotFound
	}
	return fmt.Errorf("ipfsds: get %s: %w", key, err)
}

// value returns the entry's value, never nil for a key that exists.
func value(e datastore.Entry) []byte {
	if e.Value == nil {
		return []byte{}
	}
	return e.Value
}
