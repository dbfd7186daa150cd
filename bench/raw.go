package bench

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	badgerdb "github.com/dgraph-io/badger/v4"

	"github.com/univrs/peerstate/datastore/badger"
	"github.com/univrs/peerstate/datastore/storetest"
)

// RawSQLite returns the raw modernc.org/sqlite reference for a workload:
// one table, prepared statements, WAL with synchronous=FULL as our store
// uses. Writes are one transaction per write ("txn-per-write"); for
// SetParallel64 the reference is 64 rows per transaction, what perfect group
// commit of 64 writers does; a CAS is one conditional UPDATE; Txn5 is five
// upserts in one transaction.
func RawSQLite(workload string) func(b *testing.B) {
	return func(b *testing.B) {
		r := openRaw(b)
		defer r.close()
		switch workload {
		case "Get":
			r.populate(b)
			b.ResetTimer()
			i := 0
			for range b.N {
				var v []byte
				if err := r.get.QueryRow([]byte(storetest.BenchKey(i))).Scan(&v); err != nil {
					b.Fatal(err)
				}
				i += 7919
			}
		case "ListPage":
			r.populate(b)
			b.ResetTimer()
			i := 0
			for range b.N {
				r.list100(b, storetest.BenchKey(i%(storetest.BenchKeys-100)))
				i += 7919
			}
		case "Set":
			for i := range b.N {
				r.write(b, i, 1)
			}
		case "SetParallel64":
			for i := 0; i < b.N; i += 64 {
				r.write(b, i, min(64, b.N-i))
			}
		case "CASContended":
			r.casContended(b)
			return
		case "Txn5":
			for i := range b.N {
				r.write(b, i*storetest.BenchTxnOps, storetest.BenchTxnOps)
			}
		default:
			b.Fatalf("no raw reference for %s", workload)
		}
		storetest.ReportOps(b, b.N)
	}
}

type rawDB struct {
	db                                         *sql.DB
	conn                                       *sql.Conn
	begin, commit, upsert, get, list, ver, cas *sql.Stmt
	mu                                         sync.Mutex
}

func openRaw(b *testing.B) *rawDB {
	b.Helper()
	ctx := context.Background()
	path := b.TempDir() + "/raw.db"
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(5000)")
	if err != nil {
		b.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	r := &rawDB{db: db}
	if r.conn, err = db.Conn(ctx); err != nil {
		b.Fatal(err)
	}
	var mode string
	if err := r.conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		b.Fatalf("raw sqlite journal mode %q, %v", mode, err)
	}
	if _, err := r.conn.ExecContext(ctx, `CREATE TABLE t (k BLOB PRIMARY KEY, v BLOB, ver INTEGER NOT NULL) WITHOUT ROWID`); err != nil {
		b.Fatal(err)
	}
	for _, p := range []struct {
		dst **sql.Stmt
		sql string
	}{
		{&r.begin, `BEGIN IMMEDIATE`},
		{&r.commit, `COMMIT`},
		{&r.upsert, `INSERT INTO t (k, v, ver) VALUES (?, ?, 1) ON CONFLICT (k) DO UPDATE SET v = excluded.v, ver = ver + 1`},
		{&r.get, `SELECT v FROM t WHERE k = ?`},
		{&r.list, `SELECT k, v FROM t WHERE k > ? ORDER BY k LIMIT 100`},
		{&r.ver, `SELECT ver FROM t WHERE k = ?`},
		{&r.cas, `UPDATE t SET v = ?, ver = ver + 1 WHERE k = ? AND ver = ?`},
	} {
		if *p.dst, err = r.conn.PrepareContext(ctx, p.sql); err != nil {
			b.Fatal(err)
		}
	}
	return r
}

func (r *rawDB) close() {
	for _, st := range []*sql.Stmt{r.begin, r.commit, r.upsert, r.get, r.list, r.ver, r.cas} {
		st.Close()
	}
	r.conn.Close()
	r.db.Close()
}

// write upserts n keys from i on in one transaction.
func (r *rawDB) write(b *testing.B, i, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.begin.Exec(); err != nil {
		b.Fatal(err)
	}
	for j := i; j < i+n; j++ {
		if _, err := r.upsert.Exec([]byte(storetest.BenchKey(j)), storetest.BenchValue()); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := r.commit.Exec(); err != nil {
		b.Fatal(err)
	}
}

func (r *rawDB) populate(b *testing.B) {
	for i := 0; i < storetest.BenchKeys; i += 100 {
		r.write(b, i, 100)
	}
}

func (r *rawDB) list100(b *testing.B, after string) {
	rows, err := r.list.Query([]byte(after))
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var k, v []byte
		if err := rows.Scan(&k, &v); err != nil {
			b.Fatal(err)
		}
		n++
	}
	if err := rows.Close(); err != nil || n != 100 {
		b.Fatalf("%d rows, %v", n, err)
	}
}

// casContended is storetest.BenchCASContended on the raw table: read the
// version, then a conditional UPDATE (its own durable transaction).
func (r *rawDB) casContended(b *testing.B) {
	hot := make([][]byte, storetest.BenchHotKeys)
	for k := range hot {
		hot[k] = []byte(storetest.BenchHotKey(k))
		r.mu.Lock()
		_, err := r.upsert.Exec(hot[k], storetest.BenchValue())
		r.mu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.ResetTimer()
	conflicts := storetest.RunContended(b, func() (bool, error) {
		key := hot[int(next.Add(1))%len(hot)]
		r.mu.Lock()
		defer r.mu.Unlock()
		var ver int64
		if err := r.ver.QueryRow(key).Scan(&ver); err != nil {
			return false, err
		}
		res, err := r.cas.Exec(storetest.BenchValue(), key, ver)
		if err != nil {
			return false, err
		}
		n, err := res.RowsAffected()
		return n == 1, err
	})
	storetest.ReportOps(b, b.N)
	b.ReportMetric(float64(conflicts)/float64(b.N), "conflicts/op")
}

// RawBadger returns the raw Badger reference for a workload: Badger opened
// with the options our Badger store uses (SyncWrites, conflict detection),
// one Badger transaction per write, per CAS (read, compare, write; a
// conflict retries) and per Txn5.
func RawBadger(workload string) func(b *testing.B) {
	return func(b *testing.B) {
		cfg := badger.DefaultConfig(b.TempDir())
		db, err := badgerdb.Open(badgerdb.DefaultOptions(cfg.Dir).
			WithSyncWrites(true).WithLogger(nil).WithMetricsEnabled(false).
			WithMemTableSize(cfg.MemTableSize).WithNumMemtables(cfg.NumMemtables).
			WithBlockCacheSize(cfg.BlockCacheSize).WithIndexCacheSize(cfg.IndexCacheSize).
			WithValueThreshold(cfg.ValueThreshold).WithNumCompactors(2).WithNumGoroutines(2).
			WithDetectConflicts(true))
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		set := func(txn *badgerdb.Txn, i int) error {
			return txn.Set([]byte(storetest.BenchKey(i)), storetest.BenchValue())
		}
		populate := func() {
			for i := 0; i < storetest.BenchKeys; i += 100 {
				if err := db.Update(func(txn *badgerdb.Txn) error {
					for j := i; j < i+100; j++ {
						if err := set(txn, j); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
		}
		switch workload {
		case "Get":
			populate()
			i := 0
			for range b.N {
				if err := db.View(func(txn *badgerdb.Txn) error {
					item, err := txn.Get([]byte(storetest.BenchKey(i)))
					if err != nil {
						return err
					}
					_, err = item.ValueCopy(nil)
					return err
				}); err != nil {
					b.Fatal(err)
				}
				i += 7919
			}
		case "ListPage":
			populate()
			i := 0
			for range b.N {
				after := []byte(storetest.BenchKey(i % (storetest.BenchKeys - 100)))
				n := 0
				if err := db.View(func(txn *badgerdb.Txn) error {
					it := txn.NewIterator(badgerdb.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte("/bench/")})
					defer it.Close()
					for it.Seek(after); it.Valid() && n < 100; it.Next() {
						item := it.Item()
						if bytes.Equal(item.Key(), after) {
							continue
						}
						if _, err := item.ValueCopy(nil); err != nil {
							return err
						}
						n++
					}
					return nil
				}); err != nil || n != 100 {
					b.Fatalf("%d entries, %v", n, err)
				}
				i += 7919
			}
		case "Set":
			for i := range b.N {
				if err := db.Update(func(txn *badgerdb.Txn) error { return set(txn, i) }); err != nil {
					b.Fatal(err)
				}
			}
		case "SetParallel64":
			procs := runtime.GOMAXPROCS(0)
			b.SetParallelism((64 + procs - 1) / procs)
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := db.Update(func(txn *badgerdb.Txn) error { return set(txn, int(next.Add(1))) }); err != nil {
						b.Error(err)
						return
					}
				}
			})
		case "CASContended":
			hot := make([][]byte, storetest.BenchHotKeys)
			for k := range hot {
				hot[k] = []byte(storetest.BenchHotKey(k))
				if err := db.Update(func(txn *badgerdb.Txn) error { return txn.Set(hot[k], storetest.BenchValue()) }); err != nil {
					b.Fatal(err)
				}
			}
			var next atomic.Int64
			b.ResetTimer()
			conflicts := storetest.RunContended(b, func() (bool, error) {
				key := hot[int(next.Add(1))%len(hot)]
				var seen uint64
				if err := db.View(func(txn *badgerdb.Txn) error {
					item, err := txn.Get(key)
					if err == nil {
						seen = item.Version()
					}
					return err
				}); err != nil {
					return false, err
				}
				won := false
				err := db.Update(func(txn *badgerdb.Txn) error {
					item, err := txn.Get(key)
					if err != nil || item.Version() != seen {
						return err
					}
					won = true
					return txn.Set(key, storetest.BenchValue())
				})
				if errors.Is(err, badgerdb.ErrConflict) {
					return false, nil
				}
				return won, err
			})
			storetest.ReportOps(b, b.N)
			b.ReportMetric(float64(conflicts)/float64(b.N), "conflicts/op")
			return
		case "Txn5":
			for i := range b.N {
				if err := db.Update(func(txn *badgerdb.Txn) error {
					for j := range storetest.BenchTxnOps {
						if err := set(txn, i*storetest.BenchTxnOps+j); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
		default:
			b.Fatalf("no raw reference for %s", workload)
		}
		storetest.ReportOps(b, b.N)
	}
}
