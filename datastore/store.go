package datastore

import (
	"context"
	"time"
)

// Entry is a key's current state.
type Entry struct {
	Key       string
	Value     []byte
	Version   uint64 // per key: 1 on first write, +1 on every write; 0 means absent
	CreatedAt time.Time
	UpdatedAt time.Time
	Revision  uint64 // store-wide revision of the commit that produced this entry
	// ExpiresAt is when the entry expires, for one written with a TTL on a
	// store that implements Expirer; the zero time means never.
	ExpiresAt time.Time
}

// EventType says what a change did to its key.
type EventType int

// The event types.
const (
	Created EventType = iota + 1 // the key did not exist (or was deleted) before
	Updated                      // the key existed and got a new value
	Deleted                      // the key was removed; a tombstone keeps its version
)

func (t EventType) String() string {
	switch t {
	case Created:
		return "created"
	case Updated:
		return "updated"
	case Deleted:
		return "deleted"
	}
	return "unknown"
}

// Event is one committed change, as seen by watchers.
type Event struct {
	Type     EventType
	Key      string
	OldValue []byte // Updated, Deleted
	NewValue []byte // Created, Updated
	Version  uint64 // the key's version after the event
	Revision uint64 // store-wide revision of the commit; all events of one txn share it
	Origin   string // "" for a write made on this peer; the writer's peer ID for a replicated one
}

// DefaultListLimit is the page size List uses when ListOptions.Limit is 0.
const DefaultListLimit = 1000

// MaxListLimit caps ListOptions.Limit; larger values are clamped.
const MaxListLimit = 100_000

// ListOptions selects one page of a List.
type ListOptions struct {
	Limit    int    // page size; 0 = default (1000)
	After    string // cursor: only keys strictly greater than this
	KeysOnly bool   // Entry.Value left nil
}

// Page is one page of a List, read at one revision.
type Page struct {
	Entries  []Entry // lexicographic (byte) order by key
	More     bool
	Next     string // pass as ListOptions.After for the next page
	Revision uint64 // store revision this page was read at
}

// TxnResult reports a committed transaction.
type TxnResult struct {
	// Revision is the revision of the commit, or the store's current
	// revision when the transaction wrote nothing.
	Revision uint64
	// Versions holds, for each op in order, the key's version after the
	// commit: the new version for a set, the tombstone's version for a delete,
	// and the checked version for a check.
	Versions []uint64
}

// Store is a versioned hierarchical key-value store. Every method is safe for
// concurrent use.
type Store interface {
	// Get returns the key's entry, or ErrKeyNotFound.
	Get(ctx context.Context, key string) (Entry, error)
	// Set writes the value and returns the key's new version.
	Set(ctx context.Context, key string, value []byte) (uint64, error)
	// Delete removes the key, leaving a tombstone that keeps its version.
	// An absent key is ErrKeyNotFound unless the store was opened with
	// WithDeleteMissingOK.
	Delete(ctx context.Context, key string) error
	// List returns one page of the entries under prefix, in byte order of
	// their keys, all read at the page's revision.
	List(ctx context.Context, prefix string, opts ListOptions) (Page, error)
	// CompareAndSet writes the value only if the key's version is expected
	// (0: only if absent), and returns the new version; otherwise it fails
	// with ErrVersionConflict.
	CompareAndSet(ctx context.Context, key string, expected uint64, value []byte) (uint64, error)
	// CreateIfNotExists writes the value only if the key is absent, and
	// returns its new version; otherwise it fails with ErrAlreadyExists.
	CreateIfNotExists(ctx context.Context, key string, value []byte) (uint64, error)
	// Txn applies ops as one commit: every check passes and every write
	// applies, or nothing changes and the error is a *TxnError (ErrTxnFailed)
	// for a failed check.
	Txn(ctx context.Context, ops ...Op) (TxnResult, error)
	// Watch streams the changes to keys matching pattern; see Watcher.
	Watch(ctx context.Context, pattern string, opts ...WatchOption) (Watcher, error)
	// Close releases the store; it ends every watcher and waits for the
	// store's goroutines. Calling it again returns nil.
	Close() error
}

// Watcher is a stream of events from Store.Watch.
//
// Events arrive in revision order, without duplicates or gaps, and the events
// of one transaction arrive together. A watcher that reads slowly never blocks
// writers and never silently loses events: it is caught up from the store's
// change log, or, if it fell behind the log's retention window, its channel is
// closed and Err reports ErrCompacted.
type Watcher interface {
	// Events is closed when the watch ends.
	Events() <-chan Event
	// Err tells why the watch ended: nil after Close or cancellation of the
	// watch's context, otherwise the error that ended it.
	Err() error
	// Close ends the watch and waits for its delivery to stop.
	Close() error
}

// Compacter is implemented by stores whose change log can be trimmed on
// demand. After Compact(ctx, rev), Watch with FromRevision(r) for r < rev
// fails with ErrCompacted.
type Compacter interface {
	Compact(ctx context.Context, revision uint64) error
}
