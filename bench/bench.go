// Package bench runs the standard store workloads (package storetest) on
// every backend side by side in one run — memory, SQLite, Badger, the
// replication layer over SQLite, and etcd running in-process as the
// reference — next to raw modernc.org/sqlite with
// the same durability settings, so each figure reads as a ratio on the same
// machine at the same moment. `go test -bench . ./bench/` and
// `peerstate bench` both run it.
package bench

import (
	"github.com/libp2p/go-libp2p/core/crypto"

	"context"
	"database/sql"
	"flag"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/badger"
	"github.com/univrs/peerstate/datastore/etcd"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/sqlite"
	"github.com/univrs/peerstate/datastore/storetest"
	"github.com/univrs/peerstate/internal/etcdtest"
	"github.com/univrs/peerstate/replica"
)

// Backend opens fresh stores of one kind.
type Backend struct {
	Name string
	// Open returns a new, empty store kept in dir, and what closes it.
	Open func(dir string) (datastore.Store, func(), error)
}

// Backends returns every backend, in table order.
func Backends() []Backend {
	return []Backend{
		{"memory", func(string) (datastore.Store, func(), error) {
			s := memory.New()
			return s, func() { s.Close() }, nil
		}},
		{"sqlite", func(dir string) (datastore.Store, func(), error) {
			s, err := sqlite.Open(filepath.Join(dir, "bench.db"))
			if err != nil {
				return nil, nil, err
			}
			return s, func() { s.Close() }, nil
		}},
		{"badger", func(dir string) (datastore.Store, func(), error) {
			s, err := badger.Open(dir)
			if err != nil {
				return nil, nil, err
			}
			return s, func() { s.Close() }, nil
		}},
		{"replica/sqlite", func(dir string) (datastore.Store, func(), error) {
			// The replication layer over the default backend, without a network.
			local, err := sqlite.Open(filepath.Join(dir, "bench.db"))
			if err != nil {
				return nil, nil, err
			}
			key, _, err := crypto.GenerateEd25519Key(nil)
			if err != nil {
				local.Close()
				return nil, nil, err
			}
			r, err := replica.New(context.Background(), local, replica.Config{Key: key})
			if err != nil {
				local.Close()
				return nil, nil, err
			}
			return r, func() { r.Close() }, nil
		}},
		{"etcd", func(dir string) (datastore.Store, func(), error) {
			srv, err := etcdtest.New(etcdtest.WithDir(dir))
			if err != nil {
				return nil, nil, err
			}
			s, err := etcd.Open(context.Background(), etcd.Config{Endpoints: srv.Endpoints})
			if err != nil {
				srv.Stop()
				return nil, nil, err
			}
			return s, func() { s.Close(); srv.Stop() }, nil
		}},
	}
}

// Run runs workload w on a fresh store of backend be.
func Run(b *testing.B, be Backend, w storetest.Workload) {
	s, closeStore, err := be.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer closeStore()
	w.Run(b, s)
}

// RawSQLite returns the raw modernc.org/sqlite reference for a workload:
// one table, prepared statements, WAL with synchronous=FULL as our store
// uses. Writes are one transaction per write ("txn-per-write"); for
// SetParallel64 the reference is 64 rows per transaction, what perfect group
// commit of 64 writers does.
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
		default:
			b.Fatalf("no raw reference for %s", workload)
		}
		storetest.ReportOps(b, b.N)
	}
}

type rawDB struct {
	db                               *sql.DB
	conn                             *sql.Conn
	begin, commit, upsert, get, list *sql.Stmt
	mu                               sync.Mutex
}

func openRaw(b *testing.B) *rawDB {
	b.Helper()
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "raw.db")
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

// initTesting registers the testing flags testing.Benchmark reads, once.
var initTesting sync.Once

// Result is one measured cell of the table.
type Result struct {
	Workload, Backend string
	NsPerOp           float64
	OpsPerSec         float64
}

// Table runs every workload on every backend (and the raw SQLite reference)
// with testing.Benchmark and returns the results in order. benchtime is the
// target duration of each cell.
func Table(backends []Backend, benchtime time.Duration, progress func(Result)) ([]Result, error) {
	initTesting.Do(testing.Init)
	if err := flag.Set("test.benchtime", benchtime.String()); err != nil {
		return nil, fmt.Errorf("bench: benchtime: %w", err)
	}
	var out []Result
	add := func(w, be string, fn func(b *testing.B)) error {
		var failed bool
		res := testing.Benchmark(func(b *testing.B) {
			fn(b)
			failed = b.Failed()
		})
		if failed || res.N == 0 {
			return fmt.Errorf("bench: %s on %s failed", w, be)
		}
		r := Result{Workload: w, Backend: be, NsPerOp: float64(res.NsPerOp()), OpsPerSec: res.Extra["ops/s"]}
		out = append(out, r)
		if progress != nil {
			progress(r)
		}
		return nil
	}
	for _, w := range storetest.Workloads() {
		for _, be := range backends {
			if err := add(w.Name, be.Name, func(b *testing.B) { Run(b, be, w) }); err != nil {
				return out, err
			}
		}
		if err := add(w.Name, "raw-sqlite", RawSQLite(w.Name)); err != nil {
			return out, err
		}
	}
	return out, nil
}
