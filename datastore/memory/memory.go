// Package memory is the in-memory reference implementation of
// datastore.Store and the semantics oracle the other backends are checked
// against. It is not durable, by design: it is for tests and simulations.
package memory

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/btree"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/internal/engine"
	"github.com/univrs/peerstate/internal/hub"
)

var (
	_ datastore.Store     = (*Store)(nil)
	_ datastore.Compacter = (*Store)(nil)
	_ datastore.Expirer   = (*Store)(nil)
)

// DefaultChangeLogRetention is how many revisions a memory store's change
// log keeps by default: smaller than the durable backends', since the log
// lives in memory beside the data (simulations run many stores).
const DefaultChangeLogRetention = 10_000

// Store is an in-memory datastore.Store. Its change log is the hub's
// in-memory tail, which keeps Options.ChangeLogRetention revisions.
type Store struct {
	engine.Writes
	opts   datastore.Options
	hub    *hub.Hub
	expiry *engine.Expiry
	ttl    *engine.ExpiryIndex

	mu     sync.RWMutex
	tree   *btree.BTreeG[engine.Record] // by key; tombstones included
	rev    uint64
	closed bool
}

// New returns an empty store.
func New(opts ...datastore.Option) *Store {
	o := datastore.ApplyOptions(datastore.Options{ChangeLogRetention: DefaultChangeLogRetention}, opts...)
	s := &Store{
		opts: o,
		tree: btree.NewG(32, func(a, b engine.Record) bool { return a.Key < b.Key }),
		hub:  hub.New(0, o.ChangeLogRetention, nil),
		ttl:  engine.NewExpiryIndex(),
	}
	s.Writes = engine.Writes{C: committer{s}, MaxValueSize: o.MaxValueSize, TTL: true}
	s.expiry = engine.NewExpiry(s.ttl, committer{s}, o.Now)
	return s
}

type committer struct{ s *Store }

// Commit applies one request under the write lock and publishes its events
// before releasing it, so watchers see commits in revision order.
func (c committer) Commit(ctx context.Context, req engine.Request) (datastore.TxnResult, error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return datastore.TxnResult{}, datastore.ErrClosed
	}
	plan, err := engine.Build(req, s.rev+1, s.opts.Now(), s.opts.DeleteMissingOK, s.read)
	if err != nil {
		return datastore.TxnResult{}, fmt.Errorf("memory: %w", err)
	}
	if len(plan.Writes) == 0 {
		return plan.Result, nil
	}
	for _, r := range plan.Writes {
		s.tree.ReplaceOrInsert(r)
	}
	s.rev++
	s.ttl.Note(plan.Writes)
	s.hub.Publish(plan.Events)
	return plan.Result, nil
}

func (s *Store) read(key string) (engine.Record, bool, error) {
	r, ok := s.tree.Get(engine.Record{Key: key})
	return r, ok, nil
}

// Get implements datastore.Store.
func (s *Store) Get(ctx context.Context, key string) (datastore.Entry, error) {
	if err := datastore.ValidateKey(key); err != nil {
		return datastore.Entry{}, err
	}
	if err := ctx.Err(); err != nil {
		return datastore.Entry{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return datastore.Entry{}, datastore.ErrClosed
	}
	r, ok := s.tree.Get(engine.Record{Key: key})
	if !ok || !r.Live() {
		return datastore.Entry{}, fmt.Errorf("memory: get %q: %w", key, datastore.ErrKeyNotFound)
	}
	e := r.Entry()
	e.Value = append([]byte{}, e.Value...)
	return e, nil
}

// List implements datastore.Store.
func (s *Store) List(ctx context.Context, prefix string, opts datastore.ListOptions) (datastore.Page, error) {
	if err := datastore.ValidatePrefix(prefix); err != nil {
		return datastore.Page{}, err
	}
	if err := ctx.Err(); err != nil {
		return datastore.Page{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return datastore.Page{}, datastore.ErrClosed
	}
	b := engine.NewPage(prefix, opts, s.rev)
	rng := b.Range()
	start, _ := rng.Start(opts.After)
	s.tree.AscendRange(engine.Record{Key: start}, engine.Record{Key: rng.Hi}, b.Add)
	p := b.Page()
	for i := range p.Entries {
		if p.Entries[i].Value != nil {
			p.Entries[i].Value = append([]byte{}, p.Entries[i].Value...)
		}
	}
	return p, nil
}

// Watch implements datastore.Store.
func (s *Store) Watch(ctx context.Context, pattern string, opts ...datastore.WatchOption) (datastore.Watcher, error) {
	return s.hub.Watch(ctx, pattern, opts...)
}

// Compact implements datastore.Compacter: the change log forgets revisions
// up to rev.
func (s *Store) Compact(ctx context.Context, rev uint64) error {
	s.hub.Compact(rev)
	return nil
}

// SetTTL implements datastore.Expirer.
func (s *Store) SetTTL(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error) {
	return s.SetWithTTL(ctx, key, value, ttl)
}

// ExpireDue implements datastore.Expirer. The store's own expiry loop runs
// it when the earliest expiry comes (by a timer on the wall clock, so within
// a millisecond or so of it) and at least once a second, which is when an
// injected clock moved forward is noticed without a call.
func (s *Store) ExpireDue(ctx context.Context) (int, error) {
	n, err := s.expiry.Run(ctx)
	if err != nil {
		return n, fmt.Errorf("memory: expire: %w", err)
	}
	return n, nil
}

// Close implements datastore.Store.
func (s *Store) Close() error {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	if !already {
		s.expiry.Close()
		s.hub.Close()
	}
	return nil
}
