package ipfsds

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"

	"github.com/univrs/peerstate/datastore"
)

// txn is an optimistic transaction: it remembers the version of every key it
// read and buffers its writes; Commit applies the writes with a check of
// every read version, in one store transaction.
type txn struct {
	d        *Datastore
	readOnly bool

	mu     sync.Mutex
	done   bool
	reads  map[string]uint64 // store key → version first read (0: absent)
	writes map[string]write  // store key → pending write
}

var _ ds.Txn = (*txn)(nil)

// begin locks the transaction for one call; end must follow when it
// succeeds.
func (t *txn) begin() error {
	t.mu.Lock()
	if t.done {
		t.mu.Unlock()
		return ErrTxnDone
	}
	if err := t.d.check(); err != nil {
		t.mu.Unlock()
		return err
	}
	return nil
}

func (t *txn) end() { t.mu.Unlock() }

// read records the version a key was read at; the first read counts.
func (t *txn) read(k string, version uint64) {
	if _, ok := t.reads[k]; !ok {
		t.reads[k] = version
	}
}

// Get implements ds.Txn.
func (t *txn) Get(ctx context.Context, key ds.Key) ([]byte, error) {
	if err := t.begin(); err != nil {
		return nil, err
	}
	defer t.end()
	return t.get(ctx, key)
}

func (t *txn) get(ctx context.Context, key ds.Key) ([]byte, error) {
	k, err := t.d.keys.encode(key)
	if err != nil {
		return nil, ds.ErrNotFound
	}
	if w, ok := t.writes[k]; ok {
		if w.del {
			return nil, ds.ErrNotFound
		}
		return slices.Clone(w.value), nil
	}
	e, err := t.d.s.Get(ctx, k)
	switch {
	case err == nil:
		t.read(k, e.Version)
		return value(e), nil
	case errors.Is(err, datastore.ErrKeyNotFound):
		t.read(k, 0)
	}
	return nil, notFound(key, err)
}

// Has implements ds.Txn.
func (t *txn) Has(ctx context.Context, key ds.Key) (bool, error) {
	if err := t.begin(); err != nil {
		return false, err
	}
	defer t.end()
	k, err := t.d.keys.encode(key)
	if err != nil {
		return false, nil
	}
	if w, ok := t.writes[k]; ok {
		return !w.del, nil
	}
	v, err := t.d.version(ctx, k)
	if err != nil {
		return false, fmt.Errorf("ipfsds: has %s: %w", key, err)
	}
	t.read(k, v)
	return v > 0, nil
}

// GetSize implements ds.Txn: -1 and ds.ErrNotFound for a missing key.
func (t *txn) GetSize(ctx context.Context, key ds.Key) (int, error) {
	if err := t.begin(); err != nil {
		return -1, err
	}
	defer t.end()
	v, err := t.get(ctx, key)
	if err != nil {
		return -1, err
	}
	return len(v), nil
}

// Query implements ds.Txn: the results include the transaction's own
// writes, and every entry read from the store is checked at Commit.
func (t *txn) Query(ctx context.Context, q dsq.Query) (dsq.Results, error) {
	if err := t.begin(); err != nil {
		return nil, err
	}
	// Not locked while the query runs: it records its reads as it goes, and
	// an ordered query reads everything before returning.
	overlay := maps.Clone(t.writes)
	t.end()
	record := func(k string, version uint64) {
		t.mu.Lock()
		defer t.mu.Unlock()
		if !t.done {
			t.read(k, version)
		}
	}
	return t.d.query(ctx, q, overlay, record), nil
}

// Put implements ds.Txn.
func (t *txn) Put(ctx context.Context, key ds.Key, value []byte) error {
	if err := t.begin(); err != nil {
		return err
	}
	defer t.end()
	if t.readOnly {
		return ErrReadOnly
	}
	k, err := t.d.keys.encode(key)
	if err != nil {
		return err
	}
	t.writes[k] = putOf(k, value)
	return nil
}

// Delete implements ds.Txn; deleting a missing key is not an error.
func (t *txn) Delete(ctx context.Context, key ds.Key) error {
	if err := t.begin(); err != nil {
		return err
	}
	defer t.end()
	if t.readOnly {
		return ErrReadOnly
	}
	k, err := t.d.keys.encode(key)
	if err != nil {
		return nil // such a key cannot exist
	}
	t.writes[k] = write{key: k, del: true}
	return nil
}

// Commit implements ds.Txn. It applies the writes if no key the transaction
// read has changed since, and otherwise fails with an error wrapping
// datastore.ErrTxnFailed and writes nothing. Either way the transaction is
// over.
func (t *txn) Commit(ctx context.Context) error {
	if err := t.begin(); err != nil {
		return err
	}
	defer t.end()
	reads, writes := t.reads, t.writes
	t.finish()
	return t.d.commit(ctx, reads, writes)
}

// Discard implements ds.Txn; it is a no-op after Commit.
func (t *txn) Discard(ctx context.Context) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.finish()
}

func (t *txn) finish() {
	t.done = true
	t.reads, t.writes = nil, nil
}
