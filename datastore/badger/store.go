package badger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	badgerdb "github.com/dgraph-io/badger/v4"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/internal/engine"
	"github.com/univrs/peerstate/internal/hub"
)

var (
	_ datastore.Store     = (*Store)(nil)
	_ datastore.Compacter = (*Store)(nil)
	_ datastore.Expirer   = (*Store)(nil)
)

// hubRetain caps the revisions the watch hub keeps in memory; older ones
// are read back from the change log in Badger.
const hubRetain = 1024

// Store is a datastore.Store on a Badger database. Create it with Open or
// OpenConfig and release it with Close.
type Store struct {
	engine.Writes
	db   *badgerdb.DB
	cfg  Config
	opts datastore.Options // resolved
	hub  *hub.Hub

	ttl    *engine.ExpiryIndex
	expiry *engine.Expiry

	// Lifetime: every call that touches db holds an ops slot, taken under
	// mu while closed is false; Close sets closed and waits for the slots.
	mu     sync.RWMutex
	closed bool
	ops    sync.WaitGroup

	// The writer goroutine owns every commit; see commit.go.
	queue    chan *pending
	rev      uint64        // last committed revision; writer goroutine only
	head     atomic.Uint64 // last committed revision, for everyone else
	compact  sync.Mutex    // serializes Compact
	floor    atomic.Uint64 // revisions <= floor were compacted by Compact
	physical atomic.Uint64 // change-log entries of revisions <= physical are deleted
	trim     chan struct{} // wakes the maintenance goroutine to trim the change log

	// Background goroutines: the writer and the maintenance loop.
	stop context.CancelFunc
	wg   sync.WaitGroup

	gcRuns atomic.Int64 // value-log GC passes, for tests

	// beforeCommit, when set (tests only), runs in the writer goroutine
	// just before a Badger commit; attempt counts from 0 per segment.
	beforeCommit func(attempt int)
}

// Open opens (or creates) the store in dir with the default Config.
func Open(dir string, opts ...datastore.Option) (*Store, error) {
	cfg := DefaultConfig(dir)
	cfg.Store = datastore.ApplyOptions(datastore.Options{}, opts...)
	return OpenConfig(cfg)
}

// OpenConfig opens (or creates) the store described by cfg.
func OpenConfig(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts := datastore.ApplyOptions(cfg.Store)
	if opts.MaxValueSize == 0 {
		opts.MaxValueSize = DefaultMaxValueSize
	}
	if err := checkDir(cfg.Dir); err != nil {
		return nil, fmt.Errorf("badger: open %s: %w", cfg.Dir, err)
	}
	db, err := badgerdb.Open(cfg.badgerOptions(opts.MaxValueSize))
	if err != nil {
		return nil, fmt.Errorf("badger: open %s: %w", cfg.Dir, err)
	}
	// Every table's checksums, once at open: a damaged table is refused
	// here rather than found by a read later.
	if err := db.VerifyChecksum(); err != nil {
		return nil, errors.Join(fmt.Errorf("badger: open %s: %w: %w", cfg.Dir, datastore.ErrCorrupt, err), db.Close())
	}
	s := &Store{
		db:    db,
		cfg:   cfg,
		opts:  opts,
		queue: make(chan *pending, maxBatchRequests),
		trim:  make(chan struct{}, 1),
	}
	if err := s.load(); err != nil {
		return nil, errors.Join(fmt.Errorf("badger: open %s: %w", cfg.Dir, err), db.Close())
	}
	s.ttl = engine.NewExpiryIndex()
	if err := s.scheduleExpiries(); err != nil {
		return nil, errors.Join(fmt.Errorf("badger: open %s: %w", cfg.Dir, err), db.Close())
	}
	s.expiry = engine.NewExpiry(s.ttl, committer{s}, opts.Now)
	s.Writes = engine.Writes{C: committer{s}, MaxValueSize: opts.MaxValueSize, TTL: true}
	s.hub = hub.New(s.rev, min(opts.ChangeLogRetention, hubRetain), changeLog{s})
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.wg.Add(2)
	go s.writer(ctx)
	go s.maintain(ctx)
	return s, nil
}

// scheduleExpiries finds the records with an expiry (marked in Badger's user
// meta byte, so the scan reads keys only) and puts them in the index.
func (s *Store) scheduleExpiries() error {
	return s.db.View(func(txn *badgerdb.Txn) error {
		it := txn.NewIterator(badgerdb.IteratorOptions{Prefix: []byte{prefixRecord}})
		defer it.Close()
		var recs []engine.Record
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			if item.UserMeta()&userMetaExpires == 0 {
				continue
			}
			key := string(item.Key()[1:])
			err := item.Value(func(b []byte) error {
				r, err := decodeRecord(key, b)
				if err == nil && r.Live() {
					r.Value = []byte{}
					recs = append(recs, r)
				}
				return err
			})
			if err != nil {
				return err
			}
		}
		s.ttl.Note(recs)
		return nil
	})
}

// SetTTL implements datastore.Expirer.
func (s *Store) SetTTL(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error) {
	return s.SetWithTTL(ctx, key, value, ttl)
}

// ExpireDue implements datastore.Expirer. The store's expiry loop runs it
// by itself when the earliest expiry comes (a wall-clock timer, so within
// about a millisecond plus one commit) and at least once a second; entries
// that expired while the store was closed go right after Open.
func (s *Store) ExpireDue(ctx context.Context) (int, error) {
	n, err := s.expiry.Run(ctx)
	if err != nil {
		return n, fmt.Errorf("badger: expire: %w", err)
	}
	return n, nil
}

// load reads the meta keys, writing the format marker into a new database,
// and finds the oldest change-log revision still stored.
func (s *Store) load() error {
	err := s.db.Update(func(txn *badgerdb.Txn) error {
		format, found, err := getUint64(txn, metaFormat)
		switch {
		case err != nil:
			return err
		case !found:
			if err := txn.Set(metaFormat, encodeUint64(formatVersion)); err != nil {
				return err
			}
		case format != formatVersion:
			return fmt.Errorf("on-disk format %d, this build reads %d", format, formatVersion)
		}
		if s.rev, _, err = getUint64(txn, metaRevision); err != nil {
			return err
		}
		floor, _, err := getUint64(txn, metaFloor)
		if err != nil {
			return err
		}
		s.floor.Store(floor)
		s.head.Store(s.rev)
		// The oldest change-log entry still stored tells how far trimming got.
		it := txn.NewIterator(badgerdb.IteratorOptions{Prefix: []byte{prefixChange}})
		defer it.Close()
		it.Rewind()
		physical := s.rev
		if it.Valid() {
			rev, _, _, err := parseChangeKey(it.Item().Key())
			if err != nil {
				return err
			}
			physical = rev - 1
		}
		s.physical.Store(physical)
		return nil
	})
	if err != nil {
		return fmt.Errorf("load meta: %w", err)
	}
	return nil
}

func getUint64(txn *badgerdb.Txn, key []byte) (v uint64, found bool, err error) {
	item, err := txn.Get(key)
	if errors.Is(err, badgerdb.ErrKeyNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	err = item.Value(func(b []byte) error {
		v, err = decodeUint64(b)
		return err
	})
	if err != nil {
		return 0, false, fmt.Errorf("meta %q: %w", key[1:], err)
	}
	return v, true, nil
}

// enter takes an ops slot, or fails with ErrClosed.
func (s *Store) enter() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return datastore.ErrClosed
	}
	s.ops.Add(1)
	return nil
}

func (s *Store) leave() { s.ops.Done() }

// readRecord reads key's record, tombstones included, in txn.
func readRecord(txn *badgerdb.Txn, key string) (engine.Record, bool, error) {
	item, err := txn.Get(recordKey(key))
	if errors.Is(err, badgerdb.ErrKeyNotFound) {
		return engine.Record{}, false, nil
	}
	if err != nil {
		return engine.Record{}, false, fmt.Errorf("read %q: %w", key, err)
	}
	b, err := item.ValueCopy(nil)
	if err != nil {
		return engine.Record{}, false, fmt.Errorf("read %q: %w", key, err)
	}
	r, err := decodeRecord(key, b)
	if err != nil {
		return engine.Record{}, false, err
	}
	return r, true, nil
}

// Get implements datastore.Store.
func (s *Store) Get(ctx context.Context, key string) (datastore.Entry, error) {
	if err := datastore.ValidateKey(key); err != nil {
		return datastore.Entry{}, err
	}
	if err := ctx.Err(); err != nil {
		return datastore.Entry{}, err
	}
	if err := s.enter(); err != nil {
		return datastore.Entry{}, err
	}
	defer s.leave()
	var (
		r     engine.Record
		found bool
	)
	err := s.db.View(func(txn *badgerdb.Txn) error {
		var err error
		r, found, err = readRecord(txn, key)
		return err
	})
	if err != nil {
		return datastore.Entry{}, fmt.Errorf("badger: get %q: %w", key, err)
	}
	if !found || !r.Live() {
		return datastore.Entry{}, fmt.Errorf("badger: get %q: %w", key, datastore.ErrKeyNotFound)
	}
	return r.Entry(), nil
}

// List implements datastore.Store. The page and its revision come from one
// Badger snapshot.
func (s *Store) List(ctx context.Context, prefix string, opts datastore.ListOptions) (datastore.Page, error) {
	if err := datastore.ValidatePrefix(prefix); err != nil {
		return datastore.Page{}, err
	}
	if err := ctx.Err(); err != nil {
		return datastore.Page{}, err
	}
	if err := s.enter(); err != nil {
		return datastore.Page{}, err
	}
	defer s.leave()
	var page datastore.Page
	err := s.db.View(func(txn *badgerdb.Txn) error {
		rev, _, err := getUint64(txn, metaRevision)
		if err != nil {
			return err
		}
		b := engine.NewPage(prefix, opts, rev)
		rng := b.Range()
		start, _ := rng.Start(opts.After)
		hi := recordKey(rng.Hi)
		// No value prefetching: Badger fetches each prefetched value in a
		// goroutine of its own, which costs more than reading it in place.
		it := txn.NewIterator(badgerdb.IteratorOptions{Prefix: []byte{prefixRecord}})
		defer it.Close()
		n := 0
		for it.Seek(recordKey(start)); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if rng.Hi != "" && bytes.Compare(k, hi) >= 0 {
				break
			}
			if n++; n%256 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			var r engine.Record
			err := item.Value(func(v []byte) error {
				var err error
				r, err = decodeRecord(string(k[1:]), v)
				if r.Value != nil && !opts.KeysOnly {
					r.Value = bytes.Clone(r.Value)
				}
				return err
			})
			if err != nil {
				return err
			}
			if !b.Add(r) {
				break
			}
		}
		page = b.Page()
		return nil
	})
	if err != nil {
		return datastore.Page{}, fmt.Errorf("badger: list %q: %w", prefix, err)
	}
	return page, nil
}

// Watch implements datastore.Store. Events come from the in-memory tail of
// recent commits, or from the change log in Badger for a watcher that fell
// behind it; a watcher behind the change log's window ends with
// ErrCompacted.
func (s *Store) Watch(ctx context.Context, pattern string, opts ...datastore.WatchOption) (datastore.Watcher, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	w, err := s.hub.Watch(ctx, pattern, opts...)
	if err != nil {
		return nil, fmt.Errorf("badger: watch %q: %w", pattern, err)
	}
	return w, nil
}

// Compact implements datastore.Compacter: the change log forgets revisions
// up to rev (at most the current revision), durably.
func (s *Store) Compact(ctx context.Context, rev uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	s.compact.Lock()
	defer s.compact.Unlock()
	rev = min(rev, s.head.Load())
	if rev <= s.floor.Load() {
		return nil
	}
	err := s.db.Update(func(txn *badgerdb.Txn) error {
		return txn.Set(metaFloor, encodeUint64(rev))
	})
	if err != nil {
		return fmt.Errorf("badger: compact to %d: %w", rev, storageErr(err))
	}
	s.floor.Store(rev)
	s.hub.Compact(rev)
	s.wakeTrim()
	return nil
}

// Close implements datastore.Store: it waits for calls in progress, ends
// the watchers, stops the writer and maintenance goroutines and closes
// Badger. Calling it again returns nil.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.expiry.Close()
	s.ops.Wait() // commits in progress are answered by the writer first
	s.hub.Close()
	s.stop()
	s.wg.Wait()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("badger: close: %w", err)
	}
	return nil
}
