package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
)

// The benchmarks compare, in one run, the memory store, this store and raw
// modernc.org/sqlite with the same durability settings (WAL,
// synchronous=FULL):
//
//	go test -run '^$' -bench . -benchtime=2s ./datastore/sqlite/
//
// Each reports ops/s. Files live in b.TempDir().

const (
	benchKeys  = 10_000
	benchValue = 100 // bytes
)

var benchKeyList = func() []string {
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("/bench/%06d", i)
	}
	return keys
}()

func benchVal() []byte { return make([]byte, benchValue) }

func reportOps(b *testing.B, ops int) {
	b.ReportMetric(float64(ops)/b.Elapsed().Seconds(), "ops/s")
}

// reportBatching, deferred around a write benchmark of a SQLite store,
// reports how many writes shared each commit.
func reportBatching(b *testing.B, s datastore.Store) func() {
	st, ok := s.(*Store)
	if !ok {
		return func() {}
	}
	before := st.w.commits.Load()
	return func() {
		if n := st.w.commits.Load() - before; n > 0 {
			b.ReportMetric(float64(b.N)/float64(n), "writes/commit")
		}
	}
}

// benchStores runs fn on a fresh memory store and a fresh SQLite store.
func benchStores(b *testing.B, fn func(b *testing.B, s datastore.Store)) {
	b.Run("memory", func(b *testing.B) {
		s := memory.New()
		defer s.Close()
		fn(b, s)
	})
	b.Run("sqlite", func(b *testing.B) {
		s, err := Open(filepath.Join(b.TempDir(), "bench.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		fn(b, s)
	})
}

// populate writes every bench key, 1000 per transaction.
func populate(b *testing.B, s datastore.Store) {
	b.Helper()
	for i := 0; i < benchKeys; i += 1000 {
		ops := make([]datastore.Op, 0, 1000)
		for _, k := range benchKeyList[i:min(i+1000, benchKeys)] {
			ops = append(ops, datastore.OpSet(k, benchVal()))
		}
		if _, err := s.Txn(context.Background(), ops...); err != nil {
			b.Fatal(err)
		}
	}
}

// rawDB is a bare modernc.org/sqlite database with one table, opened with the
// store's writer settings, for reference figures.
type rawDB struct {
	db                               *sql.DB
	conn                             *sql.Conn
	begin, commit, upsert, get, list *sql.Stmt
}

func openRaw(b *testing.B) *rawDB {
	b.Helper()
	ctx := context.Background()
	path, _ := filepath.Abs(filepath.Join(b.TempDir(), "raw.db"))
	db, err := sql.Open("sqlite", writerDSN(path, 5*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	r := &rawDB{db: db}
	b.Cleanup(func() { r.close() })
	if r.conn, err = db.Conn(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := r.conn.ExecContext(ctx, `CREATE TABLE t (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID`); err != nil {
		b.Fatal(err)
	}
	for _, p := range []struct {
		dst **sql.Stmt
		sql string
	}{
		{&r.begin, `BEGIN IMMEDIATE`},
		{&r.commit, `COMMIT`},
		{&r.upsert, `INSERT INTO t (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v`},
		{&r.get, `SELECT v FROM t WHERE k = ?`},
		{&r.list, `SELECT k, v FROM t WHERE k > ? ORDER BY k LIMIT 100`},
	} {
		if *p.dst, err = r.conn.PrepareContext(ctx, p.sql); err != nil {
			b.Fatal(err)
		}
	}
	return r
}

func (r *rawDB) close() {
	for _, st := range []*sql.Stmt{r.begin, r.commit, r.upsert, r.get, r.list} {
		if st != nil {
			st.Close()
		}
	}
	if r.conn != nil {
		r.conn.Close()
	}
	r.db.Close()
}

// writeTxn upserts keys in one transaction.
func (r *rawDB) writeTxn(b *testing.B, keys []string) {
	if _, err := r.begin.Exec(); err != nil {
		b.Fatal(err)
	}
	for _, k := range keys {
		if _, err := r.upsert.Exec([]byte(k), benchVal()); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := r.commit.Exec(); err != nil {
		b.Fatal(err)
	}
}

func (r *rawDB) populate(b *testing.B) {
	for i := 0; i < benchKeys; i += 1000 {
		r.writeTxn(b, benchKeyList[i:min(i+1000, benchKeys)])
	}
}

func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	benchStores(b, func(b *testing.B, s datastore.Store) {
		populate(b, s)
		i := 0
		for b.Loop() {
			if _, err := s.Get(ctx, benchKeyList[i%benchKeys]); err != nil {
				b.Fatal(err)
			}
			i += 7919 // a prime: hop around the key space
		}
		reportOps(b, b.N)
	})
	b.Run("raw-sqlite/select", func(b *testing.B) {
		r := openRaw(b)
		r.populate(b)
		i := 0
		for b.Loop() {
			var v []byte
			if err := r.get.QueryRow([]byte(benchKeyList[i%benchKeys])).Scan(&v); err != nil {
				b.Fatal(err)
			}
			i += 7919
		}
		reportOps(b, b.N)
	})
}

func BenchmarkListPage(b *testing.B) {
	ctx := context.Background()
	benchStores(b, func(b *testing.B, s datastore.Store) {
		populate(b, s)
		i := 0
		for b.Loop() {
			after := benchKeyList[i%(benchKeys-100)]
			p, err := s.List(ctx, "/bench/", datastore.ListOptions{Limit: 100, After: after})
			if err != nil || len(p.Entries) != 100 {
				b.Fatalf("List = %d entries, %v", len(p.Entries), err)
			}
			i += 7919
		}
		reportOps(b, b.N)
	})
	b.Run("raw-sqlite/select-100", func(b *testing.B) {
		r := openRaw(b)
		r.populate(b)
		i := 0
		for b.Loop() {
			rows, err := r.list.Query([]byte(benchKeyList[i%(benchKeys-100)]))
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
			i += 7919
		}
		reportOps(b, b.N)
	})
}

// rawWrites adds the raw SQLite write references: one transaction per
// write, and 64 rows per transaction (what perfect group commit of 64
// writers would do). Each reports rows written per second.
func rawWrites(b *testing.B) {
	b.Run("raw-sqlite/txn-per-write", func(b *testing.B) {
		r := openRaw(b)
		for i := range b.N {
			r.writeTxn(b, benchKeyList[i%benchKeys:i%benchKeys+1])
		}
		reportOps(b, b.N)
	})
	b.Run("raw-sqlite/64-rows-per-txn", func(b *testing.B) {
		r := openRaw(b)
		for i := 0; i < b.N; i += 64 {
			n := min(64, b.N-i)
			start := i % (benchKeys - 64)
			r.writeTxn(b, benchKeyList[start:start+n])
		}
		reportOps(b, b.N)
	})
}

func BenchmarkSet(b *testing.B) {
	ctx := context.Background()
	benchStores(b, func(b *testing.B, s datastore.Store) {
		defer reportBatching(b, s)()
		for i := range b.N {
			if _, err := s.Set(ctx, benchKeyList[i%benchKeys], benchVal()); err != nil {
				b.Fatal(err)
			}
		}
		reportOps(b, b.N)
	})
	rawWrites(b)
}

func BenchmarkSetParallel64(b *testing.B) {
	ctx := context.Background()
	const writers = 64
	procs := runtime.GOMAXPROCS(0)
	parallel := func(b *testing.B, write func(i int)) {
		b.SetParallelism((writers + procs - 1) / procs)
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				write(int(next.Add(1)))
			}
		})
		reportOps(b, b.N)
	}
	benchStores(b, func(b *testing.B, s datastore.Store) {
		defer reportBatching(b, s)()
		parallel(b, func(i int) {
			if _, err := s.Set(ctx, benchKeyList[i%benchKeys], benchVal()); err != nil {
				b.Error(err)
			}
		})
	})
	// Raw SQLite without group commit: 64 writers, a transaction each, in
	// turn on the one write connection.
	b.Run("raw-sqlite/txn-per-write-64-writers", func(b *testing.B) {
		r := openRaw(b)
		var mu sync.Mutex
		parallel(b, func(i int) {
			mu.Lock()
			defer mu.Unlock()
			r.writeTxn(b, benchKeyList[i%benchKeys:i%benchKeys+1])
		})
	})
	rawWrites(b)
}
