// Package engine holds the write semantics shared by the peerstate backends:
// it turns a request (set, delete, compare-and-set, create, transaction) and
// the current records of its keys into the records to store and the events to
// publish, so that every backend computes versions, tombstones and errors the
// same way and only has to read and write records atomically.
package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/univrs/peerstate/datastore"
)

// Record is a key's stored state. A deleted key keeps a tombstone record:
// Deleted set, Value nil, and the version its delete produced.
type Record struct {
	Key       string
	Value     []byte
	Version   uint64
	CreatedAt time.Time
	UpdatedAt time.Time
	Revision  uint64
	Deleted   bool
	// ExpiresAt is when a live record written with a TTL expires; zero:
	// never. Tombstones have none.
	ExpiresAt time.Time
}

// Live reports whether the record holds a value (is neither a tombstone nor
// absent).
func (r Record) Live() bool { return r.Version > 0 && !r.Deleted }

// Entry returns the record as a datastore.Entry.
func (r Record) Entry() datastore.Entry {
	return datastore.Entry{
		Key:       r.Key,
		Value:     r.Value,
		Version:   r.Version,
		CreatedAt: r.CreatedAt,
		UpdatedAt: r.UpdatedAt,
		Revision:  r.Revision,
		ExpiresAt: r.ExpiresAt,
	}
}

// Kind says which Store method a request came from; it decides which error
// a failed check becomes.
type Kind int

// The request kinds.
const (
	KindTxn Kind = iota
	KindSet
	KindDelete
	KindCAS
	KindCreate
	// KindExpire deletes expired entries: its ops are pairs of
	// OpCheckVersion(key, v) and OpDelete(key), and each key is deleted only
	// if it is still live at version v and has an expiry; a key written
	// since is left alone rather than failing the request.
	KindExpire
)

// Request is one logical commit.
type Request struct {
	Kind Kind
	Ops  []datastore.Op
}

// Reader returns the stored record of key, tombstones included; found is
// false for a key never written.
type Reader func(key string) (rec Record, found bool, err error)

// Plan is what a request commits.
type Plan struct {
	Writes []Record          // records to store, tombstones included; empty: nothing to commit
	Events []datastore.Event // one per write, in op order
	Result datastore.TxnResult
}

// Timestamp normalizes t to the precision and form every backend stores: Unix
// nanoseconds, no monotonic reading, local time zone.
func Timestamp(t time.Time) time.Time { return time.Unix(0, t.UnixNano()) }

// Build plans req as the commit at revision rev. Checks see the state before
// the request. When the request writes nothing (only checks, or a tolerated
// delete of an absent key), Plan.Writes is empty and Result.Revision is rev-1.
func Build(req Request, rev uint64, now time.Time, deleteMissingOK bool, read Reader) (Plan, error) {
	now = Timestamp(now)
	plan := Plan{Result: datastore.TxnResult{Revision: rev, Versions: make([]uint64, len(req.Ops))}}
	current := make(map[string]Record, len(req.Ops))
	get := func(key string) (Record, error) {
		if r, ok := current[key]; ok {
			return r, nil
		}
		r, found, err := read(key)
		if err != nil {
			return Record{}, err
		}
		if !found {
			r = Record{Key: key}
		}
		current[key] = r
		return r, nil
	}
	if req.Kind == KindExpire {
		return buildExpire(req, rev, now, get)
	}
	// Checks first, all against the state before the request.
	for i, op := range req.Ops {
		if op.Kind != datastore.OpKindCheckVersion {
			continue
		}
		r, err := get(op.Key)
		if err != nil {
			return Plan{}, err
		}
		actual := liveVersion(r)
		if actual != op.Version {
			return Plan{}, checkError(req.Kind, i, op, actual)
		}
		plan.Result.Versions[i] = actual
	}
	for i, op := range req.Ops {
		if !op.IsWrite() {
			continue
		}
		old, err := get(op.Key)
		if err != nil {
			return Plan{}, err
		}
		if old.Version >= datastore.MaxVersion {
			return Plan{}, fmt.Errorf("op %d: %q at version %d: %w", i, op.Key, old.Version, datastore.ErrVersionCeiling)
		}
		next := old.Version + 1
		switch op.Kind {
		case datastore.OpKindSet:
			if req.Kind == KindCreate && old.Live() {
				return Plan{}, fmt.Errorf("%q at version %d: %w", op.Key, old.Version, datastore.ErrAlreadyExists)
			}
			rec := Record{Key: op.Key, Value: clone(op.Value), Version: next, CreatedAt: now, UpdatedAt: now, Revision: rev}
			if op.TTL > 0 {
				rec.ExpiresAt = Timestamp(now.Add(op.TTL))
			}
			ev := datastore.Event{Type: datastore.Created, Key: op.Key, NewValue: rec.Value, Version: next, Revision: rev}
			if old.Live() {
				rec.CreatedAt = old.CreatedAt
				ev.Type, ev.OldValue = datastore.Updated, old.Value
			}
			plan.Writes = append(plan.Writes, rec)
			plan.Events = append(plan.Events, ev)
			plan.Result.Versions[i] = next
		case datastore.OpKindDelete:
			if !old.Live() {
				if deleteMissingOK {
					plan.Result.Versions[i] = old.Version
					continue
				}
				if req.Kind == KindTxn {
					return Plan{}, fmt.Errorf("op %d: delete %q: %w", i, op.Key, datastore.ErrKeyNotFound)
				}
				return Plan{}, fmt.Errorf("delete %q: %w", op.Key, datastore.ErrKeyNotFound)
			}
			rec := Record{Key: op.Key, Version: next, CreatedAt: old.CreatedAt, UpdatedAt: now, Revision: rev, Deleted: true}
			plan.Writes = append(plan.Writes, rec)
			plan.Events = append(plan.Events, datastore.Event{Type: datastore.Deleted, Key: op.Key, OldValue: old.Value, Version: next, Revision: rev})
			plan.Result.Versions[i] = next
		}
	}
	if len(plan.Writes) == 0 {
		plan.Result.Revision = rev - 1
	}
	return plan, nil
}

// liveVersion is the version a check compares against: 0 for an absent or
// deleted key.
func liveVersion(r Record) uint64 {
	if r.Live() {
		return r.Version
	}
	return 0
}

func checkError(kind Kind, i int, op datastore.Op, actual uint64) error {
	switch kind {
	case KindCAS:
		return fmt.Errorf("%q at version %d, expected %d: %w", op.Key, actual, op.Version, datastore.ErrVersionConflict)
	default:
		return &datastore.TxnError{Index: i, Key: op.Key, Expected: op.Version, Actual: actual}
	}
}

// clone copies a value; an empty or nil value becomes an empty, non-nil one.
func clone(b []byte) []byte { return append([]byte{}, b...) }

// Committer commits one request atomically and durably, returning its
// result. Backends implement it; Writes builds the Store write methods on it.
type Committer interface {
	Commit(ctx context.Context, req Request) (datastore.TxnResult, error)
}

// Writes implements the write methods of datastore.Store over a Committer,
// validating input before anything is committed. Backends embed it.
type Writes struct {
	C            Committer
	MaxValueSize int // 0: no limit
	// TTL says the backend expires entries (it runs an Expiry); without
	// it, an op with a TTL is refused with datastore.ErrTTLUnsupported.
	TTL bool
}

func (w Writes) commit(ctx context.Context, kind Kind, ops ...datastore.Op) (datastore.TxnResult, error) {
	if err := datastore.ValidateOps(ops, w.MaxValueSize); err != nil {
		return datastore.TxnResult{}, err
	}
	if !w.TTL {
		for i, op := range ops {
			if op.TTL != 0 {
				return datastore.TxnResult{}, fmt.Errorf("op %d: %q: %w", i, op.Key, datastore.ErrTTLUnsupported)
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return datastore.TxnResult{}, err
	}
	return w.C.Commit(ctx, Request{Kind: kind, Ops: ops})
}

// Set implements datastore.Store.
func (w Writes) Set(ctx context.Context, key string, value []byte) (uint64, error) {
	res, err := w.commit(ctx, KindSet, datastore.OpSet(key, value))
	if err != nil {
		return 0, err
	}
	return res.Versions[0], nil
}

// SetWithTTL is Set with a time to live; backends that expire entries
// expose it as datastore.Expirer's SetTTL.
func (w Writes) SetWithTTL(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error) {
	if ttl <= 0 {
		return 0, fmt.Errorf("set %q: TTL %v is not positive: %w", key, ttl, datastore.ErrInvalidTxn)
	}
	res, err := w.commit(ctx, KindSet, datastore.OpSetTTL(key, value, ttl))
	if err != nil {
		return 0, err
	}
	return res.Versions[0], nil
}

// Delete implements datastore.Store.
func (w Writes) Delete(ctx context.Context, key string) error {
	_, err := w.commit(ctx, KindDelete, datastore.OpDelete(key))
	return err
}

// CompareAndSet implements datastore.Store.
func (w Writes) CompareAndSet(ctx context.Context, key string, expected uint64, value []byte) (uint64, error) {
	res, err := w.commit(ctx, KindCAS, datastore.OpCheckVersion(key, expected), datastore.OpSet(key, value))
	if err != nil {
		return 0, err
	}
	return res.Versions[1], nil
}

// CreateIfNotExists implements datastore.Store.
func (w Writes) CreateIfNotExists(ctx context.Context, key string, value []byte) (uint64, error) {
	res, err := w.commit(ctx, KindCreate, datastore.OpSet(key, value))
	if err != nil {
		return 0, err
	}
	return res.Versions[0], nil
}

// Txn implements datastore.Store.
func (w Writes) Txn(ctx context.Context, ops ...datastore.Op) (datastore.TxnResult, error) {
	return w.commit(ctx, KindTxn, ops...)
}

// ListLimit resolves ListOptions.Limit.
func ListLimit(opts datastore.ListOptions) int {
	switch {
	case opts.Limit <= 0:
		return datastore.DefaultListLimit
	case opts.Limit > datastore.MaxListLimit:
		return datastore.MaxListLimit
	}
	return opts.Limit
}

// Range is the set of keys a List of a prefix covers. A prefix ending in "/"
// (or "" and "/", everything) covers the keys under it; a prefix without the
// trailing "/" also covers the key itself: "/a" covers /a and /a/..., never
// /ab.
type Range struct {
	Exact string // a key covered on its own, "" for none; it sorts before Lo
	Lo    string // the subtree range [Lo, Hi), compared as bytes
	Hi    string
}

// PrefixRange returns the range a List of prefix covers.
func PrefixRange(prefix string) Range {
	switch {
	case prefix == "" || prefix == "/":
		return Range{Lo: "/", Hi: datastore.PrefixEnd("/")}
	case prefix[len(prefix)-1] == '/':
		return Range{Lo: prefix, Hi: datastore.PrefixEnd(prefix)}
	}
	sub := prefix + "/"
	return Range{Exact: prefix, Lo: sub, Hi: datastore.PrefixEnd(sub)}
}

// Contains reports whether key is in the range.
func (r Range) Contains(key string) bool {
	return (r.Exact != "" && key == r.Exact) || (key >= r.Lo && key < r.Hi)
}

// Start returns the key a scan of the range begins at and whether that key
// is excluded, given the List cursor.
func (r Range) Start(after string) (key string, exclusive bool) {
	first := r.Lo
	if r.Exact != "" {
		first = r.Exact
	}
	if after >= first {
		return after, true
	}
	return first, false
}

// PageBuilder collects one List page from records visited in key order.
type PageBuilder struct {
	rng      Range
	after    string
	limit    int
	keysOnly bool
	page     datastore.Page
}

// NewPage starts a page of a List of prefix read at revision rev.
func NewPage(prefix string, opts datastore.ListOptions, rev uint64) *PageBuilder {
	return &PageBuilder{
		rng:      PrefixRange(prefix),
		after:    opts.After,
		limit:    ListLimit(opts),
		keysOnly: opts.KeysOnly,
		page:     datastore.Page{Revision: rev, Entries: []datastore.Entry{}},
	}
}

// Range returns the key range the page draws from.
func (b *PageBuilder) Range() Range { return b.rng }

// Limit returns the page size.
func (b *PageBuilder) Limit() int { return b.limit }

// Add offers the next record in key order; tombstones, keys outside the
// range and keys at or before the cursor are skipped. It returns false once
// the page is complete and the scan can stop.
func (b *PageBuilder) Add(r Record) bool {
	if !r.Live() || !b.rng.Contains(r.Key) || (b.after != "" && r.Key <= b.after) {
		return true
	}
	if len(b.page.Entries) == b.limit {
		b.page.More = true
		return false
	}
	e := r.Entry()
	if b.keysOnly {
		e.Value = nil
	}
	b.page.Entries = append(b.page.Entries, e)
	return true
}

// Page returns the collected page.
func (b *PageBuilder) Page() datastore.Page {
	if b.page.More {
		b.page.Next = b.page.Entries[len(b.page.Entries)-1].Key
	}
	return b.page
}
