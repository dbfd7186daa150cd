package ipfsds

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	ds "github.com/ipfs/go-datastore"

	"github.com/univrs/peerstate/datastore"
)

// write is a pending put or delete of a store key.
type write struct {
	key   string
	value []byte // a private copy, never nil for a put
	del   bool
}

func putOf(key string, value []byte) write {
	return write{key: key, value: append(make([]byte, 0, len(value)), value...)}
}

// batch buffers writes and commits them as one store transaction.
type batch struct {
	d      *Datastore
	mu     sync.Mutex
	writes map[string]write // by store key: a later write replaces an earlier one
}

var _ ds.Batch = (*batch)(nil)

// Put implements ds.Batch.
func (b *batch) Put(ctx context.Context, key ds.Key, value []byte) error {
	if err := b.d.check(); err != nil {
		return err
	}
	k, err := b.d.keys.encode(key)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writes[k] = putOf(k, value)
	return nil
}

// Delete implements ds.Batch; deleting a missing key is not an error.
func (b *batch) Delete(ctx context.Context, key ds.Key) error {
	if err := b.d.check(); err != nil {
		return err
	}
	k, err := b.d.keys.encode(key)
	if err != nil {
		return nil // such a key cannot exist
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writes[k] = write{key: k, del: true}
	return nil
}

// Commit implements ds.Batch: every buffered write applies in one store
// transaction, or none does. The batch is empty afterwards.
func (b *batch) Commit(ctx context.Context) error {
	b.mu.Lock()
	writes := b.writes
	b.writes = map[string]write{}
	b.mu.Unlock()
	if err := b.d.check(); err != nil {
		return err
	}
	return b.d.commit(ctx, nil, writes)
}

// maxCommitAttempts bounds the retries of a commit whose deletes race with
// concurrent writers of the same keys.
const maxCommitAttempts = 10

// commit applies writes in one store transaction that also checks that
// every key in reads still has the version read (0: absent).
//
// The store refuses to delete a missing key, go-datastore does not. A delete
// of a key read as absent becomes no op at all (its read check covers it).
// A blind delete (of a key not read) is first tried as a delete; if the store
// reports a missing key, the blind deletes of keys that are absent are
// replaced by checks that they still are, and the commit is tried again.
// Those checks failing means a concurrent writer just created the key, so
// the commit is retried; a failed read check is a conflict and is returned.
func (d *Datastore) commit(ctx context.Context, reads map[string]uint64, writes map[string]write) error {
	var checks, ops []datastore.Op
	for _, k := range slices.Sorted(maps.Keys(reads)) {
		checks = append(checks, datastore.OpCheckVersion(k, reads[k]))
	}
	var blind []string
	for _, k := range slices.Sorted(maps.Keys(writes)) {
		w := writes[k]
		v, read := reads[k]
		switch {
		case !w.del:
			ops = append(ops, datastore.OpSet(k, w.value))
		case !read:
			blind = append(blind, k)
		case v > 0:
			ops = append(ops, datastore.OpDelete(k))
		}
	}
	if len(checks) == 0 && len(ops) == 0 && len(blind) == 0 {
		return nil
	}
	absent := make(map[string]bool, len(blind))
	for attempt := 1; ; attempt++ {
		all := slices.Clone(checks)
		for _, k := range blind {
			if absent[k] {
				all = append(all, datastore.OpCheckVersion(k, 0))
			}
		}
		resolved := len(all)
		all = append(all, ops...)
		for _, k := range blind {
			if !absent[k] {
				all = append(all, datastore.OpDelete(k))
			}
		}
		_, err := d.s.Txn(ctx, all...)
		if err == nil {
			return nil
		}
		var te *datastore.TxnError
		retry := (len(blind) > 0 && errors.Is(err, datastore.ErrKeyNotFound)) ||
			(errors.As(err, &te) && te.Index >= len(checks) && te.Index < resolved)
		if !retry || attempt == maxCommitAttempts {
			return fmt.Errorf("ipfsds: commit: %w", err)
		}
		for _, k := range blind {
			v, err := d.version(ctx, k)
			if err != nil {
				return fmt.Errorf("ipfsds: commit: %w", err)
			}
			absent[k] = v == 0
		}
	}
}
