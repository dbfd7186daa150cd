package datastore

import (
	"context"
	"errors"
	"time"
)

// ErrTTLUnsupported reports a write with a time to live to a store that
// cannot expire entries (it does not implement Expirer).
var ErrTTLUnsupported = errors.New("datastore: this store does not support TTL")

// OpSetTTL writes value to key with a time to live: the entry expires ttl
// after the commit, by the store's clock, and is then deleted like any key —
// a tombstone keeps its version and watchers get a Deleted event. A later
// write without a TTL makes the key permanent again; one with a TTL restarts
// the countdown. ttl must be positive. Only stores that implement Expirer
// accept it; others fail with ErrTTLUnsupported.
func OpSetTTL(key string, value []byte, ttl time.Duration) Op {
	return Op{Kind: OpKindSet, Key: key, Value: value, TTL: ttl}
}

// Expirer is implemented by stores whose entries can expire. Such a store
// accepts OpSetTTL in Txn and reports each entry's expiry in
// Entry.ExpiresAt. It deletes an expired entry in a commit of its own, only
// if the entry has not been written since (a renewal always wins over a
// pending expiry); the delete is an ordinary Deleted event with Origin "".
//
// Until that commit an expired entry is still readable: how soon it goes is
// the backend's expiry latency, which each backend documents.
type Expirer interface {
	// SetTTL is Set with a time to live.
	SetTTL(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error)
	// ExpireDue deletes now every entry whose expiry time has passed by the
	// store's clock and returns how many it deleted. The store also does
	// this by itself; calling it is for tests with an injected clock and for
	// callers that want an expiry applied before they go on.
	ExpireDue(ctx context.Context) (int, error)
}

// HasTTL reports whether s accepts writes with a time to live.
func HasTTL(s Store) bool {
	_, ok := s.(Expirer)
	return ok
}
