// Package sqlite is the default, durable datastore.Store backend, built on
// modernc.org/sqlite (pure Go, no cgo).
//
// The database runs in WAL mode with synchronous=FULL, so a write has
// reached the disk when Set, Delete, CompareAndSet, CreateIfNotExists or Txn
// returns; Open reads both settings back and fails if either did not take.
//
// One writer goroutine owns the only write connection. Concurrent write
// requests queue for it, and it commits everything queued (up to
// Config.MaxBatch requests) in one SQLite transaction with one fsync: group
// commit. Each request still gets its own revision and its own result; a
// request whose check fails fails alone. A request whose context is
// cancelled before the writer takes it is not applied; once taken it is
// applied and its result reported, whatever its context says. Events reach
// watchers only after their commit is durable.
//
// Reads (Get, List and the change log behind Watch(FromRevision)) use a
// separate bounded pool of read-only connections, which WAL lets run
// alongside the writer. A List page is read in one read transaction, so its
// Revision matches its entries.
//
// The schema is managed by numbered SQL migrations embedded in the binary
// and applied at open; a database written by a newer binary is refused with
// ErrSchemaTooNew. A database file must be used by one Store at a time.
//
// Open checks the files before it trusts them: the database header, the
// write-ahead log's header and length, then SQLite's quick_check. A damaged
// database is refused with an error matching datastore.ErrCorrupt, and
// nothing is changed on disk, so it can be copied away, inspected or
// restored from a backup.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/internal/engine"
	"github.com/univrs/peerstate/internal/hub"
)

var (
	_ datastore.Store     = (*Store)(nil)
	_ datastore.Compacter = (*Store)(nil)
	_ datastore.Expirer   = (*Store)(nil)
)

// DefaultMaxValueSize is the largest value a store accepts unless
// Options.MaxValueSize says otherwise.
const DefaultMaxValueSize = 64 << 20

// Config configures OpenConfig. Zero fields take their defaults.
type Config struct {
	// Path is the database file, created if missing.
	Path string
	// Options are the settings every backend understands. MaxValueSize 0
	// means DefaultMaxValueSize.
	Options datastore.Options
	// ReadConns bounds the pool of read-only connections; 0 means 4.
	ReadConns int
	// MaxBatch caps how many write requests one commit groups; 0 means 256.
	MaxBatch int
	// BusyTimeout is how long a connection waits for a lock held by another
	// connection; 0 means 5 s.
	BusyTimeout time.Duration
	// MaxPages caps the database at this many pages (PRAGMA
	// max_page_count): a commit that needs more fails with
	// datastore.ErrStorageFull, as on a full disk. 0 means no cap.
	MaxPages int64
}

// DefaultConfig returns the configuration Open uses for path.
func DefaultConfig(path string) Config {
	return Config{
		Path:        path,
		Options:     datastore.ApplyOptions(datastore.Options{MaxValueSize: DefaultMaxValueSize}),
		ReadConns:   4,
		MaxBatch:    256,
		BusyTimeout: 5 * time.Second,
	}
}

// Validate reports a configuration OpenConfig cannot use.
func (c Config) Validate() error {
	switch {
	case c.Path == "":
		return errors.New("sqlite: config: empty path")
	case c.ReadConns < 0, c.MaxBatch < 0, c.BusyTimeout < 0, c.Options.MaxValueSize < 0, c.MaxPages < 0:
		return errors.New("sqlite: config: negative size or timeout")
	}
	return nil
}

// withDefaults fills the zero fields of c.
func (c Config) withDefaults() Config {
	d := DefaultConfig(c.Path)
	if c.Options.MaxValueSize == 0 {
		c.Options.MaxValueSize = d.Options.MaxValueSize
	}
	c.Options = datastore.ApplyOptions(c.Options)
	if c.ReadConns == 0 {
		c.ReadConns = d.ReadConns
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = d.MaxBatch
	}
	if c.BusyTimeout == 0 {
		c.BusyTimeout = d.BusyTimeout
	}
	return c
}

// Store is a durable datastore.Store kept in one SQLite database file.
type Store struct {
	engine.Writes
	cfg Config
	hub *hub.Hub

	w          *writer
	wdb        *sql.DB // the writer's pool of one connection
	reqs       chan *request
	closing    chan struct{} // closed by Close
	writerDone chan struct{}

	rdb *sql.DB // read-only pool
	get *sql.Stmt
	// list[keysOnly][exclusive] selects a page of live entries.
	list [2][2]*sql.Stmt
	meta *sql.Stmt
	log  *sql.Stmt

	ttl    *engine.ExpiryIndex
	expiry *engine.Expiry

	closed    atomic.Bool
	closeOnce sync.Once
}

// Open opens (creating if needed) the store in the database file at path.
func Open(path string, opts ...datastore.Option) (*Store, error) {
	cfg := DefaultConfig(path)
	cfg.Options = datastore.ApplyOptions(cfg.Options, opts...)
	return OpenConfig(cfg)
}

// OpenConfig opens the store described by cfg.
func OpenConfig(cfg Config) (_ *Store, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	abs, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", cfg.Path, err)
	}
	ctx := context.Background()
	s := &Store{cfg: cfg, reqs: make(chan *request), closing: make(chan struct{}), writerDone: make(chan struct{})}
	defer func() {
		if err != nil {
			s.closeDBs()
			err = fmt.Errorf("sqlite: open %s: %w", cfg.Path, err)
		}
	}()

	if err := checkFiles(abs); err != nil {
		return nil, err
	}
	s.wdb, err = sql.Open("sqlite", writerDSN(abs, cfg.BusyTimeout))
	if err != nil {
		return nil, err
	}
	s.wdb.SetMaxOpenConns(1)
	conn, err := s.wdb.Conn(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkPragmas(ctx, conn); err != nil {
		conn.Close()
		if isCorruptErr(err) {
			err = damaged(abs, "%v", err)
		}
		return nil, err
	}
	if err := quickCheck(ctx, conn, abs); err != nil {
		conn.Close()
		return nil, err
	}
	if cfg.MaxPages > 0 {
		if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", cfg.MaxPages)); err != nil {
			conn.Close()
			return nil, fmt.Errorf("set max_page_count: %w", err)
		}
	}
	if err := migrate(ctx, conn); err != nil {
		conn.Close()
		return nil, err
	}
	if s.w, err = newWriter(ctx, conn, cfg.Options); err != nil {
		return nil, err
	}

	s.rdb, err = sql.Open("sqlite", readerDSN(abs, cfg.BusyTimeout))
	if err != nil {
		return nil, err
	}
	s.rdb.SetMaxOpenConns(cfg.ReadConns)
	s.rdb.SetMaxIdleConns(cfg.ReadConns)
	if err := s.prepareReads(ctx); err != nil {
		return nil, err
	}

	s.hub = hub.New(s.w.rev, min(1024, cfg.Options.ChangeLogRetention), changeLog{s})
	s.w.hub = s.hub
	s.ttl = engine.NewExpiryIndex()
	s.w.ttl = s.ttl
	s.expiry = engine.NewExpiry(s.ttl, committer{s}, cfg.Options.Now)
	s.Writes = engine.Writes{C: committer{s}, MaxValueSize: cfg.Options.MaxValueSize, TTL: true}
	go s.run()
	if err := s.scheduleExpiries(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", cfg.Path, err)
	}
	return s, nil
}

const recordCols = `value, version, created_at, updated_at, revision, deleted, expires_at`

func (s *Store) prepareReads(ctx context.Context) error {
	prep := func(dst **sql.Stmt, query string) error {
		st, err := s.rdb.PrepareContext(ctx, query)
		*dst = st
		return err
	}
	errs := []error{
		prep(&s.get, `SELECT `+recordCols+` FROM kv WHERE key = ?`),
		prep(&s.meta, `SELECT (`+headRevisionSQL+`), compacted FROM meta`),
		prep(&s.log, `SELECT revision, type, key, old_value, new_value, version FROM changelog
			WHERE revision > ? AND revision <= ? ORDER BY revision, idx`),
	}
	for keysOnly, value := range []string{"value", "NULL"} {
		for excl, op := range []string{">=", ">"} {
			errs = append(errs, prep(&s.list[keysOnly][excl], `SELECT key, `+value+`, version, created_at, updated_at, revision, deleted, expires_at
				FROM kv WHERE key `+op+` ? AND key < ? AND deleted = 0 ORDER BY key LIMIT ?`))
		}
	}
	return errors.Join(errs...)
}

// scanRecord reads the columns of recordCols into a record of key.
func scanRecord(row interface{ Scan(...any) error }, key string, withKey bool) (engine.Record, error) {
	var (
		r                                    = engine.Record{Key: key}
		k                                    []byte
		version, created, updated, rev, dead int64
		expires                              int64
	)
	dest := []any{&r.Value, &version, &created, &updated, &rev, &dead, &expires}
	if withKey {
		dest = append([]any{&k}, dest...)
	}
	if err := row.Scan(dest...); err != nil {
		return engine.Record{}, err
	}
	if withKey {
		r.Key = string(k)
	}
	r.Version, r.Revision, r.Deleted = uint64(version), uint64(rev), dead != 0
	r.CreatedAt, r.UpdatedAt = time.Unix(0, created), time.Unix(0, updated)
	if expires != 0 {
		r.ExpiresAt = time.Unix(0, expires)
	}
	if !r.Deleted && r.Value == nil {
		r.Value = []byte{} // an empty value reads back as empty, not nil
	}
	return r, nil
}

// readRecord reads key's record with stmt; found is false for a key never
// written.
func readRecord(ctx context.Context, stmt *sql.Stmt, key string) (rec engine.Record, found bool, err error) {
	rec, err = scanRecord(stmt.QueryRowContext(ctx, []byte(key)), key, false)
	if errors.Is(err, sql.ErrNoRows) {
		return engine.Record{}, false, nil
	}
	return rec, err == nil, err
}

// Get implements datastore.Store.
func (s *Store) Get(ctx context.Context, key string) (datastore.Entry, error) {
	if err := datastore.ValidateKey(key); err != nil {
		return datastore.Entry{}, err
	}
	if s.closed.Load() {
		return datastore.Entry{}, datastore.ErrClosed
	}
	r, found, err := readRecord(ctx, s.get, key)
	if err != nil {
		return datastore.Entry{}, s.readErr(fmt.Errorf("sqlite: get %q: %w", key, err))
	}
	if !found || !r.Live() {
		return datastore.Entry{}, fmt.Errorf("sqlite: get %q: %w", key, datastore.ErrKeyNotFound)
	}
	return r.Entry(), nil
}

// List implements datastore.Store.
func (s *Store) List(ctx context.Context, prefix string, opts datastore.ListOptions) (datastore.Page, error) {
	if err := datastore.ValidatePrefix(prefix); err != nil {
		return datastore.Page{}, err
	}
	if s.closed.Load() {
		return datastore.Page{}, datastore.ErrClosed
	}
	page, err := s.listPage(ctx, prefix, opts)
	if err != nil {
		return datastore.Page{}, s.readErr(fmt.Errorf("sqlite: list %q: %w", prefix, err))
	}
	return page, nil
}

func (s *Store) listPage(ctx context.Context, prefix string, opts datastore.ListOptions) (datastore.Page, error) {
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return datastore.Page{}, err
	}
	defer tx.Rollback()
	var rev, compacted int64
	if err := tx.StmtContext(ctx, s.meta).QueryRowContext(ctx).Scan(&rev, &compacted); err != nil {
		return datastore.Page{}, err
	}
	b := engine.NewPage(prefix, opts, uint64(rev))
	rng := b.Range()
	// The key the prefix names sorts before its subtree; look it up alone so
	// that keys between the two (/a!, /a-b for /a) are never scanned.
	if rng.Exact != "" && opts.After < rng.Exact {
		r, found, err := readRecord(ctx, tx.StmtContext(ctx, s.get), rng.Exact)
		if err != nil {
			return datastore.Page{}, err
		}
		if found {
			b.Add(r)
		}
	}
	lo, excl := rng.Lo, 0
	if opts.After >= lo {
		lo, excl = opts.After, 1
	}
	if lo < rng.Hi {
		keysOnly := 0
		if opts.KeysOnly {
			keysOnly = 1
		}
		rows, err := tx.StmtContext(ctx, s.list[keysOnly][excl]).QueryContext(ctx, []byte(lo), []byte(rng.Hi), b.Limit()+1)
		if err != nil {
			return datastore.Page{}, err
		}
		defer rows.Close()
		for rows.Next() {
			r, err := scanRecord(rows, "", true)
			if err != nil {
				return datastore.Page{}, err
			}
			if !b.Add(r) {
				break
			}
		}
		if err := rows.Err(); err != nil {
			return datastore.Page{}, err
		}
	}
	return b.Page(), nil
}

// readErr reports a read that failed because the store was closed under it
// as ErrClosed.
func (s *Store) readErr(err error) error {
	if s.closed.Load() {
		return fmt.Errorf("%w (%w)", datastore.ErrClosed, err)
	}
	return err
}

// Watch implements datastore.Store.
func (s *Store) Watch(ctx context.Context, pattern string, opts ...datastore.WatchOption) (datastore.Watcher, error) {
	return s.hub.Watch(ctx, pattern, opts...)
}

// Compact implements datastore.Compacter: the change log forgets revisions
// up to rev (at most the current revision), durably.
func (s *Store) Compact(ctx context.Context, rev uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	res := s.submit(ctx, &request{compact: true, compactTo: rev})
	if res.err != nil {
		return fmt.Errorf("sqlite: compact to %d: %w", rev, res.err)
	}
	return nil
}

// scheduleExpiries loads the entries that have an expiry into the index,
// through the partial index on expires_at.
func (s *Store) scheduleExpiries(ctx context.Context) error {
	rows, err := s.rdb.QueryContext(ctx, `SELECT key, version, expires_at FROM kv WHERE expires_at > 0 AND deleted = 0`)
	if err != nil {
		return err
	}
	defer rows.Close()
	var recs []engine.Record
	for rows.Next() {
		var k []byte
		var v, at int64
		if err := rows.Scan(&k, &v, &at); err != nil {
			return err
		}
		recs = append(recs, engine.Record{Key: string(k), Version: uint64(v), ExpiresAt: time.Unix(0, at), Value: []byte{}})
	}
	if err := rows.Err(); err != nil {
		return err
	}
	s.ttl.Note(recs)
	return nil
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
		return n, fmt.Errorf("sqlite: expire: %w", err)
	}
	return n, nil
}

// Close implements datastore.Store. Write requests already taken by the
// writer are committed and answered; later ones fail with ErrClosed.
// Watchers end with ErrClosed.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.expiry.Close()
		s.closed.Store(true)
		close(s.closing)
		<-s.writerDone
		s.hub.Close()
		err = s.closeDBs()
	})
	return err
}

// closeDBs releases the statements and both pools; it also cleans up after
// a failed open.
func (s *Store) closeDBs() error {
	var errs []error
	if s.w != nil {
		errs = append(errs, s.w.close())
	}
	if s.wdb != nil {
		errs = append(errs, s.wdb.Close())
	}
	for _, st := range []*sql.Stmt{s.get, s.meta, s.log, s.list[0][0], s.list[0][1], s.list[1][0], s.list[1][1]} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	if s.rdb != nil {
		errs = append(errs, s.rdb.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sqlite: close: %w", err)
	}
	return nil
}

// mapErr gives SQLite errors their datastore meaning.
func mapErr(err error) error {
	var se *msqlite.Error
	if !errors.As(err, &se) {
		return err
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_FULL:
		return fmt.Errorf("%w: %w", datastore.ErrStorageFull, err)
	case sqlite3.SQLITE_TOOBIG:
		return fmt.Errorf("%w: %w", datastore.ErrValueTooLarge, err)
	}
	return err
}

// headRevisionSQL reads the store's revision: the change log's last
// revision, or meta's when trimming or compaction left the log empty.
const headRevisionSQL = `SELECT max(revision, coalesce((SELECT max(revision) FROM changelog), 0)) FROM meta`
