package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/storetest"
	"github.com/univrs/peerstate/internal/engine"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openT(t *testing.T, path string, opts ...datastore.Option) *Store {
	t.Helper()
	s, err := Open(path, opts...)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func tempDB(t *testing.T) string { return filepath.Join(t.TempDir(), "peerstate.db") }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) datastore.Store { return openT(t, tempDB(t)) })
}

func TestDurable(t *testing.T) {
	storetest.RunDurable(t, func(t *testing.T, dir string) datastore.Store {
		return openT(t, filepath.Join(dir, "peerstate.db"))
	})
}

func TestOpen_PragmasReadBack(t *testing.T) {
	ctx := context.Background()
	s := openT(t, tempDB(t))
	var mode string
	var sync int
	if err := s.w.conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if err := s.w.conn.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" || sync != 2 {
		t.Fatalf("journal_mode=%s synchronous=%d, want wal and 2", mode, sync)
	}

	// A connection without the pragmas is refused.
	db, err := sql.Open("sqlite", tempDB(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := checkPragmas(ctx, conn); err == nil {
		t.Fatal("checkPragmas accepted a rollback-journal connection")
	}
	if _, err := conn.ExecContext(ctx, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"); err != nil {
		t.Fatal(err)
	}
	if err := checkPragmas(ctx, conn); err == nil {
		t.Fatal("checkPragmas accepted synchronous=NORMAL")
	}
}

func TestOpen_MigrationsIdempotent(t *testing.T) {
	path := tempDB(t)
	ms, err := migrations()
	if err != nil || len(ms) == 0 {
		t.Fatalf("migrations: %v, %d", err, len(ms))
	}
	for i := range 3 {
		s, err := Open(path)
		if err != nil {
			t.Fatalf("open #%d: %v", i+1, err)
		}
		v, err := userVersion(context.Background(), s.w.conn)
		if err != nil || v != len(ms) {
			t.Fatalf("open #%d: schema version %d, %v; want %d", i+1, v, err, len(ms))
		}
		if got, err := s.Set(context.Background(), "/k", []byte(fmt.Sprint(i))); err != nil || got != uint64(i+1) {
			t.Fatalf("open #%d: Set = %d, %v", i+1, got, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpen_SchemaTooNew(t *testing.T) {
	path := tempDB(t)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("PRAGMA user_version = 999"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if s, err := Open(path); !errors.Is(err, ErrSchemaTooNew) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open of a newer schema = %v, want ErrSchemaTooNew", err)
	}
}

func TestOpenConfig_Validate(t *testing.T) {
	for _, cfg := range []Config{{}, {Path: "x", ReadConns: -1}, {Path: "x", MaxBatch: -1}} {
		if _, err := OpenConfig(cfg); err == nil {
			t.Fatalf("OpenConfig(%+v) succeeded", cfg)
		}
	}
}

// TestGroupCommit checks that concurrent writers share commits.
func TestGroupCommit(t *testing.T) {
	s := openT(t, tempDB(t))
	ctx := context.Background()
	const writers, each = 64, 10
	before := s.w.commits.Load()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := s.Set(ctx, fmt.Sprintf("/g/%d/%d", g, i), []byte("v")); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	commits := s.w.commits.Load() - before
	t.Logf("%d writes in %d commits", writers*each, commits)
	if commits*2 > writers*each {
		t.Fatalf("%d writes took %d commits: not grouped", writers*each, commits)
	}
	p, err := s.List(ctx, "/g/", datastore.ListOptions{Limit: writers * each, KeysOnly: true})
	if err != nil || len(p.Entries) != writers*each || p.Revision != writers*each {
		t.Fatalf("List: %d entries at revision %d, %v", len(p.Entries), p.Revision, err)
	}
}

// commitBatch runs requests as one batch on the writer, as the writer
// goroutine would; the test must not write concurrently.
func commitBatch(s *Store, reqs ...engine.Request) []result {
	batch := make([]*request, len(reqs))
	for i, r := range reqs {
		batch[i] = &request{req: r, done: make(chan result, 1)}
	}
	s.w.commit(batch)
	out := make([]result, len(batch))
	for i, r := range batch {
		out[i] = <-r.done
	}
	return out
}

func TestBatch_FailedCheckFailsAlone(t *testing.T) {
	s := openT(t, tempDB(t))
	ctx := context.Background()
	if _, err := s.Set(ctx, "/k", []byte("0")); err != nil { // revision 1, version 1
		t.Fatal(err)
	}
	w, err := s.Watch(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	before := s.w.commits.Load()
	res := commitBatch(s,
		engine.Request{Kind: engine.KindSet, Ops: []datastore.Op{datastore.OpSet("/a", []byte("a"))}},
		engine.Request{Kind: engine.KindCAS, Ops: []datastore.Op{datastore.OpCheckVersion("/k", 7), datastore.OpSet("/k", []byte("lost"))}},
		engine.Request{Kind: engine.KindCAS, Ops: []datastore.Op{datastore.OpCheckVersion("/k", 1), datastore.OpSet("/k", []byte("won"))}},
		engine.Request{Kind: engine.KindTxn, Ops: []datastore.Op{datastore.OpSet("/b", []byte("b")), datastore.OpCheckVersion("/k", 1)}},
		engine.Request{Kind: engine.KindDelete, Ops: []datastore.Op{datastore.OpDelete("/missing")}},
		engine.Request{Kind: engine.KindTxn, Ops: []datastore.Op{datastore.OpCheckVersion("/k", 2)}},
		engine.Request{Kind: engine.KindCreate, Ops: []datastore.Op{datastore.OpSet("/a", []byte("again"))}},
		engine.Request{Kind: engine.KindTxn, Ops: []datastore.Op{datastore.OpSet("/c", []byte("c")), datastore.OpDelete("/a")}},
	)
	if n := s.w.commits.Load() - before; n != 1 {
		t.Fatalf("batch took %d commits", n)
	}
	want := []struct {
		err error
		rev uint64
	}{
		{nil, 2},                          // /a created
		{datastore.ErrVersionConflict, 0}, // stale CAS
		{nil, 3},                          // CAS sees /a's request before it, /k now version 2
		{datastore.ErrTxnFailed, 0},       // /k is no longer version 1: /b not written
		{datastore.ErrKeyNotFound, 0},
		{nil, 3}, // a check alone commits nothing: the revision so far
		{datastore.ErrAlreadyExists, 0},
		{nil, 4},
	}
	for i, r := range res {
		if !errors.Is(r.err, want[i].err) || (r.err == nil && r.res.Revision != want[i].rev) {
			t.Fatalf("request %d: revision %d, error %v; want %d, %v", i, r.res.Revision, r.err, want[i].rev, want[i].err)
		}
	}
	if e, err := s.Get(ctx, "/k"); err != nil || string(e.Value) != "won" || e.Version != 2 || e.Revision != 3 {
		t.Fatalf("/k = %+v, %v", e, err)
	}
	if _, err := s.Get(ctx, "/b"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatalf("/b of the failed txn: %v", err)
	}
	var got []string
	for range 4 {
		ev := <-w.Events()
		got = append(got, fmt.Sprintf("%d:%s:%s", ev.Revision, ev.Type, ev.Key))
	}
	if fmt.Sprint(got) != "[2:created:/a 3:updated:/k 4:created:/c 4:deleted:/a]" {
		t.Fatalf("events %v", got)
	}
}

func TestBatch_FailedCommitFailsAll(t *testing.T) {
	s := openT(t, tempDB(t))
	ctx := context.Background()
	if _, err := s.Set(ctx, "/k", []byte("0")); err != nil {
		t.Fatal(err)
	}
	w, err := s.Watch(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	boom := errors.New("injected commit failure")
	s.w.failCommit = func() error { return boom }
	res := commitBatch(s,
		engine.Request{Kind: engine.KindSet, Ops: []datastore.Op{datastore.OpSet("/a", []byte("a"))}},
		engine.Request{Kind: engine.KindSet, Ops: []datastore.Op{datastore.OpSet("/k", []byte("1"))}},
	)
	s.w.failCommit = nil
	for i, r := range res {
		if !errors.Is(r.err, boom) {
			t.Fatalf("request %d: %v, want the commit error", i, r.err)
		}
	}
	if s.w.rev != 1 {
		t.Fatalf("revision after a failed commit: %d, want 1", s.w.rev)
	}
	if _, err := s.Get(ctx, "/a"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatalf("/a after a failed commit: %v", err)
	}
	if v, err := s.Set(ctx, "/k", []byte("2")); err != nil || v != 2 {
		t.Fatalf("Set after a failed commit = %d, %v", v, err)
	}
	if ev := <-w.Events(); ev.Revision != 2 || ev.Key != "/k" || string(ev.NewValue) != "2" {
		t.Fatalf("first event after the failed commit: %+v", ev)
	}
}

func TestStorageFull(t *testing.T) {
	s := openT(t, tempDB(t))
	ctx := context.Background()
	if _, err := s.Set(ctx, "/small", []byte("x")); err != nil {
		t.Fatal(err)
	}
	var pages int
	if err := s.w.conn.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.conn.ExecContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", pages+8)); err != nil {
		t.Fatal(err)
	}
	_, err := s.Set(ctx, "/big", make([]byte, 1<<20))
	if !errors.Is(err, datastore.ErrStorageFull) || datastore.Retryable(err) {
		t.Fatalf("Set beyond max_page_count = %v, want non-retryable ErrStorageFull", err)
	}
	if _, err := s.Get(ctx, "/big"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatalf("Get of the failed write: %v", err)
	}
	if _, err := s.w.conn.ExecContext(ctx, "PRAGMA max_page_count = 1073741823"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Set(ctx, "/big", make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if e, err := s.Get(ctx, "/big"); err != nil || e.Revision != 2 {
		t.Fatalf("Get /big = rev %d, %v; want revision 2", e.Revision, err)
	}
}

func TestValueTooLarge(t *testing.T) {
	s, err := OpenConfig(Config{Path: tempDB(t), Options: datastore.Options{MaxValueSize: 10}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Set(context.Background(), "/k", make([]byte, 11)); !errors.Is(err, datastore.ErrValueTooLarge) {
		t.Fatalf("Set of 11 bytes with a limit of 10: %v", err)
	}
}

func TestChangeLogRetention(t *testing.T) {
	path := tempDB(t)
	ctx := context.Background()
	s := openT(t, path, datastore.WithChangeLogRetention(5))
	for i := range 30 {
		if _, err := s.Set(ctx, "/k", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	var rows int
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM changelog").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows > 6 {
		t.Fatalf("change log keeps %d rows with a retention of 5", rows)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openT(t, path, datastore.WithChangeLogRetention(5))
	if _, err := s.Watch(ctx, "/", datastore.FromRevision(24)); !errors.Is(err, datastore.ErrCompacted) {
		t.Fatalf("watch beyond the window: %v", err)
	}
	w, err := s.Watch(ctx, "/", datastore.FromRevision(25))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for rev := uint64(26); rev <= 30; rev++ {
		if ev := <-w.Events(); ev.Revision != rev || string(ev.NewValue) != fmt.Sprint(rev-1) || string(ev.OldValue) != fmt.Sprint(rev-2) {
			t.Fatalf("event %+v, want revision %d", ev, rev)
		}
	}
}

// TestClose_InFlightWrites closes the store under concurrent writers: each
// write either succeeds and survives the reopen, or fails with ErrClosed.
func TestClose_InFlightWrites(t *testing.T) {
	path := tempDB(t)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		acked []string
	)
	for g := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				key := fmt.Sprintf("/c/%d/%d", g, i)
				_, err := s.Set(ctx, key, []byte("v"))
				if errors.Is(err, datastore.ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked = append(acked, key)
				mu.Unlock()
			}
		})
	}
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 50 {
			break
		}
		if _, err := s.Get(ctx, "/none"); !errors.Is(err, datastore.ErrKeyNotFound) {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	s = openT(t, path)
	for _, k := range acked {
		if _, err := s.Get(ctx, k); err != nil {
			t.Fatalf("acknowledged %s lost: %v", k, err)
		}
	}
}

func TestOpen_PathNeedsEscaping(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a dir?#%", "x&y=z.db")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	s := openT(t, path)
	if _, err := s.Set(context.Background(), "/k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at the given path: %v", err)
	}
}

func TestTTL(t *testing.T) {
	storetest.RunTTL(t, func(t *testing.T, now func() time.Time) datastore.Store {
		s, err := Open(tempDB(t), datastore.WithClock(now))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// Expiries survive a restart: an entry scheduled before Close expires
// after Open, and one that fell due while closed goes at once.
func TestTTL_Reopen(t *testing.T) {
	ctx := context.Background()
	path := tempDB(t)
	clk := &storetest.Clock{}
	s, err := Open(path, datastore.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	s.SetTTL(ctx, "/soon", []byte("x"), time.Second)
	s.SetTTL(ctx, "/later", []byte("y"), time.Hour)
	s.Close()
	clk.Advance(time.Minute)
	s, err = Open(path, datastore.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if e, err := s.Get(ctx, "/later"); err != nil || !e.ExpiresAt.Equal(clk.Now().Add(time.Hour-time.Minute)) {
		t.Fatalf("/later after reopen: %+v %v", e, err)
	}
	// The loop may have got there first; after ExpireDue it is gone either way.
	if n, err := s.ExpireDue(ctx); err != nil || n > 1 {
		t.Fatalf("ExpireDue = %d, %v", n, err)
	}
	if _, err := s.Get(ctx, "/soon"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatal(err)
	}
}

func BenchmarkExpiry(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	storetest.BenchmarkExpiry(b, s, 20*time.Millisecond)
}
