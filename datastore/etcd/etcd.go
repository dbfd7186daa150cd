// Package etcd is the datastore.Store backend for clusters that want
// consensus instead of gossip: every entry lives in an etcd v3 cluster, so
// compare-and-set and transactions are linearizable across machines.
//
// # Layout
//
// A store keeps its keys under a root prefix (Config.Root, "/peerstate" by
// default): the key /a/b is the etcd key "/peerstate/a/b". Several stores
// may share a cluster under different roots.
//
// # Records, versions and revisions
//
// etcd's own per-key version restarts at 1 after a delete, which would break
// the rule that versions never repeat. So the etcd value is not the raw
// value but a small CBOR record (see wireRecord): our version, the created
// and updated times, a deleted flag and the value. A delete writes a
// tombstone record carrying the next version instead of deleting the etcd
// key, and a re-created key continues from it.
//
// The store's revision is etcd's revision: Entry.Revision is the record's
// ModRevision, TxnResult.Revision the header revision of the committing etcd
// transaction, Page.Revision the revision a List read at. etcd bumps its
// revision once per write transaction, so a commit is one revision; when
// several stores or other clients share the cluster, the revisions a store
// sees have gaps, but they still only grow.
//
// # Writes
//
// Every write method is one optimistic etcd transaction: the store reads the
// current records of the request's keys in one read, plans the commit with
// the shared engine (versions, tombstones, check failures), and commits with
// a transaction that compares each key's ModRevision (or CreateRevision 0 for
// a key never written) with what it read. If another writer got there first,
// the transaction's else branch returns the fresh records and the store
// plans again, with a growing jittered backoff, up to maxAttempts times; then
// it gives up with ErrContended.
//
// The first read is serializable (the member's local state, no consensus
// round), which is safe because the compares catch a stale read. A request
// that fails a check or writes nothing is answered only from records read
// linearizably (re-read if needed) or returned by a failed commit. So every
// outcome is linearizable: a commit at its revision, a failed
// compare-and-set at the point its records were read.
//
// # Watch
//
// Watch is etcd's native watch on the pattern's literal prefix, with
// previous values, started at the revision after FromRevision (or after the
// current revision), filtered by the pattern and translated to
// datastore.Events: a tombstone record is Deleted, a record whose previous
// record was absent or a tombstone is Created, anything else Updated. The
// change log is etcd's MVCC history: its window is the cluster's compaction
// policy (Compact, or etcd's auto-compaction), not
// datastore.WithChangeLogRetention, which this backend ignores. Compacting
// affects the whole cluster, not only this store's root.
//
// # Errors
//
// An unreachable cluster, a lost leader or a request that outlives
// Config.RequestTimeout is datastore.ErrConnection; a request etcd refuses
// as too large is ErrValueTooLarge (values are also checked against
// Config.MaxValueSize before they are sent); the NOSPACE alarm is
// ErrStorageFull; a revision compacted away is ErrCompacted. The etcd error
// stays in the chain for errors.Is. A write that failed with ErrConnection
// may or may not have been committed.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/internal/engine"
)

var (
	_ datastore.Store     = (*Store)(nil)
	_ datastore.Compacter = (*Store)(nil)
)

// Defaults for Config.
const (
	DefaultRoot           = "/peerstate"
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	// DefaultMaxValueSize matches etcd's default request limit
	// (--max-request-bytes, 1.5 MiB).
	DefaultMaxValueSize = 3 << 19
)

// Config configures Open. The zero value of each field means its default.
type Config struct {
	// Endpoints are the cluster's client URLs; required unless Client is
	// set.
	Endpoints []string
	// Root is the etcd key prefix every key is stored under: "" or a key
	// such as "/peerstate" (the default when empty). Use a distinct root per
	// store sharing a cluster.
	Root string
	// DialTimeout bounds how long Open waits for the cluster to answer.
	DialTimeout time.Duration
	// RequestTimeout bounds each request to the cluster; a request that
	// takes longer fails with datastore.ErrConnection.
	RequestTimeout time.Duration
	// Client, when set, is used instead of dialing Endpoints; Close then
	// leaves it open.
	Client *clientv3.Client
	// Logger is the logger of the client Open creates; nil logs nothing.
	Logger *zap.Logger

	// DeleteMissingOK makes Delete of an absent key succeed.
	DeleteMissingOK bool
	// Now is the clock for CreatedAt and UpdatedAt; time.Now when nil.
	Now func() time.Time
	// MaxValueSize caps a value, in bytes (default DefaultMaxValueSize).
	MaxValueSize int
}

// DefaultConfig returns a Config with every default filled in except the
// endpoints.
func DefaultConfig() Config {
	return Config{
		Root:           DefaultRoot,
		DialTimeout:    DefaultDialTimeout,
		RequestTimeout: DefaultRequestTimeout,
		Now:            time.Now,
		MaxValueSize:   DefaultMaxValueSize,
	}
}

// withDefaults fills in the zero fields.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Root == "" {
		c.Root = d.Root
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = d.DialTimeout
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	if c.MaxValueSize <= 0 {
		c.MaxValueSize = d.MaxValueSize
	}
	return c
}

// Validate reports whether the config can be used.
func (c Config) Validate() error {
	if c.Client == nil && len(c.Endpoints) == 0 {
		return errors.New("etcd: config: no endpoints and no client")
	}
	if c.Root != "" {
		if err := datastore.ValidateKey(c.Root); err != nil {
			return fmt.Errorf("etcd: config: root: %w", err)
		}
	}
	if c.DialTimeout < 0 || c.RequestTimeout < 0 || c.MaxValueSize < 0 {
		return errors.New("etcd: config: negative timeout or size")
	}
	return nil
}

// Store is a datastore.Store kept in etcd.
type Store struct {
	engine.Writes
	client     *clientv3.Client
	ownClient  bool
	root       string
	reqTimeout time.Duration
	opts       datastore.Options

	ctx    context.Context // cancelled by Close; ends the watchers
	cancel context.CancelFunc

	mu       sync.Mutex
	closed   bool
	watchers sync.WaitGroup // the watchers and the TTL loop

	ttl *ttlLoop
}

// Open connects to the cluster, checks that it answers within
// cfg.DialTimeout, and returns a store rooted at cfg.Root. An unreachable
// cluster is datastore.ErrConnection.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	client, own := cfg.Client, false
	if client == nil {
		logger := cfg.Logger
		if logger == nil {
			logger = zap.NewNop()
		}
		var err error
		client, err = clientv3.New(clientv3.Config{
			Endpoints:   cfg.Endpoints,
			DialTimeout: cfg.DialTimeout,
			Logger:      logger,
		})
		if err != nil {
			return nil, fmt.Errorf("etcd: open: %w: %w", datastore.ErrConnection, err)
		}
		own = true
	}
	s := newStore(client, own, cfg)
	pingCtx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if _, err := s.client.Get(pingCtx, s.root, clientv3.WithCountOnly()); err != nil {
		err = s.fail(ctx, fmt.Sprintf("open %v", cfg.Endpoints), err)
		s.Close()
		return nil, err
	}
	if has, err := s.scheduled(pingCtx); err != nil {
		s.Close()
		return nil, err
	} else if has {
		s.ttl.start()
	}
	return s, nil
}

// New returns a store over an existing client, rooted at root ("" for
// DefaultRoot), with the given options (WithClock, WithDeleteMissingOK,
// WithMaxValueSize; WithChangeLogRetention is ignored, see the package doc).
// Close leaves the client open. Unlike Open, New does not contact the
// cluster.
func New(client *clientv3.Client, root string, opts ...datastore.Option) (*Store, error) {
	o := datastore.ApplyOptions(datastore.Options{}, opts...)
	cfg := Config{
		Client:          client,
		Root:            root,
		DeleteMissingOK: o.DeleteMissingOK,
		Now:             o.Now,
		MaxValueSize:    o.MaxValueSize,
	}
	if client == nil {
		return nil, errors.New("etcd: new: nil client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newStore(client, false, cfg.withDefaults()), nil
}

func newStore(client *clientv3.Client, own bool, cfg Config) *Store {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		client:     client,
		ownClient:  own,
		root:       cfg.Root,
		reqTimeout: cfg.RequestTimeout,
		opts: datastore.Options{
			Now:             cfg.Now,
			DeleteMissingOK: cfg.DeleteMissingOK,
			MaxValueSize:    cfg.MaxValueSize,
		},
		ctx:    ctx,
		cancel: cancel,
	}
	s.Writes = engine.Writes{C: committer{s}, MaxValueSize: cfg.MaxValueSize, TTL: true}
	s.ttl = &ttlLoop{s: s}
	return s
}

// Client returns the etcd client the store uses.
func (s *Store) Client() *clientv3.Client { return s.client }

// Root returns the etcd key prefix of the store.
func (s *Store) Root() string { return s.root }

// etcdKey maps a store key to its etcd key.
func (s *Store) etcdKey(key string) string { return s.root + key }

// storeKey maps an etcd key under the root back to its store key.
func (s *Store) storeKey(k []byte) string { return strings.TrimPrefix(string(k), s.root) }

// request derives the context of one request to the cluster.
func (s *Store) request(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.reqTimeout)
}

// isClosed reports whether the store, or the client under it, is closed.
func (s *Store) isClosed() bool {
	return s.ctx.Err() != nil || s.client.Ctx().Err() != nil
}

// currentRevision returns the cluster's current revision.
func (s *Store) currentRevision(ctx context.Context, op string) (int64, error) {
	if s.isClosed() {
		return 0, fmt.Errorf("etcd: %s: %w", op, datastore.ErrClosed)
	}
	rctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.client.Get(rctx, s.root, clientv3.WithCountOnly())
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}
	return resp.Header.Revision, nil
}

// Get implements datastore.Store.
func (s *Store) Get(ctx context.Context, key string) (datastore.Entry, error) {
	if err := datastore.ValidateKey(key); err != nil {
		return datastore.Entry{}, err
	}
	if err := ctx.Err(); err != nil {
		return datastore.Entry{}, err
	}
	if s.isClosed() {
		return datastore.Entry{}, fmt.Errorf("etcd: get %q: %w", key, datastore.ErrClosed)
	}
	rctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.client.Get(rctx, s.etcdKey(key))
	if err != nil {
		return datastore.Entry{}, s.fail(ctx, fmt.Sprintf("get %q", key), err)
	}
	if len(resp.Kvs) == 0 {
		return datastore.Entry{}, fmt.Errorf("etcd: get %q: %w", key, datastore.ErrKeyNotFound)
	}
	kv := resp.Kvs[0]
	r, err := decodeRecord(key, kv.ModRevision, kv.Value)
	if err != nil {
		return datastore.Entry{}, err
	}
	if !r.Live() {
		return datastore.Entry{}, fmt.Errorf("etcd: get %q: %w", key, datastore.ErrKeyNotFound)
	}
	return r.Entry(), nil
}

// List implements datastore.Store. One call reads one page, every read
// pinned to the revision of its first one; tombstones occupy etcd keys, so
// the page reads on until it has its entries or the range ends.
func (s *Store) List(ctx context.Context, prefix string, opts datastore.ListOptions) (datastore.Page, error) {
	if err := datastore.ValidatePrefix(prefix); err != nil {
		return datastore.Page{}, err
	}
	if err := ctx.Err(); err != nil {
		return datastore.Page{}, err
	}
	if s.isClosed() {
		return datastore.Page{}, fmt.Errorf("etcd: list %q: %w", prefix, datastore.ErrClosed)
	}
	b := engine.NewPage(prefix, opts, 0)
	rng := b.Range()
	var rev int64 // the revision of the first read; every later read is pinned to it
	read := func(key string, ropts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
		if rev != 0 {
			ropts = append(ropts, clientv3.WithRev(rev))
		}
		rctx, cancel := s.request(ctx)
		defer cancel()
		resp, err := s.client.Get(rctx, key, ropts...)
		if err != nil {
			return nil, s.fail(ctx, fmt.Sprintf("list %q", prefix), err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		return resp, nil
	}
	add := func(kvs []*mvccpb.KeyValue) (more bool, err error) {
		for _, kv := range kvs {
			r, err := decodeRecord(s.storeKey(kv.Key), kv.ModRevision, kv.Value)
			if err != nil {
				return false, err
			}
			if !b.Add(r) {
				return false, nil
			}
		}
		return true, nil
	}
	if rng.Exact != "" && opts.After < rng.Exact {
		resp, err := read(s.etcdKey(rng.Exact))
		if err != nil {
			return datastore.Page{}, err
		}
		if _, err := add(resp.Kvs); err != nil {
			return datastore.Page{}, err
		}
	}
	begin := rng.Lo
	if opts.After >= begin {
		begin = opts.After + "\x00"
	}
	end := s.etcdKey(rng.Hi)
	for begin < rng.Hi {
		// Enough for the rest of the page plus the one entry that tells
		// whether there is more, and a little slack for tombstones.
		need := b.Limit() - len(b.Page().Entries) + 1
		resp, err := read(s.etcdKey(begin), clientv3.WithRange(end), clientv3.WithLimit(int64(need+8)))
		if err != nil {
			return datastore.Page{}, err
		}
		more, err := add(resp.Kvs)
		if err != nil {
			return datastore.Page{}, err
		}
		if !more || !resp.More || len(resp.Kvs) == 0 {
			break
		}
		begin = s.storeKey(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	if rev == 0 { // nothing to read: the cursor is past the range
		r, err := s.currentRevision(ctx, fmt.Sprintf("list %q", prefix))
		if err != nil {
			return datastore.Page{}, err
		}
		rev = r
	}
	p := b.Page()
	p.Revision = uint64(rev)
	return p, nil
}

// Compact implements datastore.Compacter with etcd's compaction: afterwards
// Watch(FromRevision(r)) fails with ErrCompacted for r < rev. It compacts
// the whole cluster's history, not only this store's root; a rev beyond the
// current revision compacts at the current one.
func (s *Store) Compact(ctx context.Context, rev uint64) error {
	if rev == 0 {
		return nil
	}
	cur, err := s.currentRevision(ctx, fmt.Sprintf("compact %d", rev))
	if err != nil {
		return err
	}
	r := cur
	if rev < uint64(cur) {
		r = int64(rev)
	}
	rctx, cancel := s.request(ctx)
	defer cancel()
	if _, err := s.client.Compact(rctx, r); err != nil {
		err = s.fail(ctx, fmt.Sprintf("compact %d", r), err)
		if errors.Is(err, datastore.ErrCompacted) {
			return nil // already compacted at or beyond r
		}
		return err
	}
	return nil
}

// Close implements datastore.Store: it ends every watcher, waits for them,
// and closes the client if Open created it.
func (s *Store) Close() error {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	if already {
		return nil
	}
	s.cancel()
	s.watchers.Wait()
	if s.ownClient {
		if err := s.client.Close(); err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("etcd: close: %w", err)
		}
	}
	return nil
}
