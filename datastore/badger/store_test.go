package badger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	badgerdb "github.com/dgraph-io/badger/v4"
	"go.uber.org/goleak"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// quietLogger drops Badger's warnings in tests.
var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

// testConfig is the default config with Badger's logging muted.
func testConfig(dir string, opts ...datastore.Option) Config {
	cfg := DefaultConfig(dir)
	cfg.Store = datastore.ApplyOptions(datastore.Options{}, opts...)
	cfg.Logger = quietLogger
	return cfg
}

// openTest opens a fresh store in a temporary directory, closed when the
// test ends. Benchmarks use it too.
func openTest(tb testing.TB, opts ...datastore.Option) *Store {
	tb.Helper()
	return openDir(tb, tb.TempDir(), opts...)
}

func openDir(tb testing.TB, dir string, opts ...datastore.Option) *Store {
	tb.Helper()
	s, err := OpenConfig(testConfig(dir, opts...))
	if err != nil {
		tb.Fatalf("open %s: %v", dir, err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) datastore.Store { return openTest(t) })
}

func TestDurable(t *testing.T) {
	storetest.RunDurable(t, func(t *testing.T, dir string) datastore.Store {
		s, err := OpenConfig(testConfig(dir))
		if err != nil {
			t.Fatalf("open %s: %v", dir, err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func mustSet(t testing.TB, s datastore.Store, key string, value []byte) uint64 {
	t.Helper()
	v, err := s.Set(ctxT(t), key, value)
	if err != nil {
		t.Fatalf("Set(%q): %v", key, err)
	}
	return v
}

// countKeys counts the Badger keys of a keyspace.
func countKeys(t testing.TB, s *Store, prefix byte) int {
	t.Helper()
	n := 0
	err := s.db.View(func(txn *badgerdb.Txn) error {
		it := txn.NewIterator(badgerdb.IteratorOptions{Prefix: []byte{prefix}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStore_ReopenKeepsStateRevisionAndLog(t *testing.T) {
	dir := t.TempDir()
	s := openDir(t, dir)
	ctx := ctxT(t)
	for i := range 20 {
		mustSet(t, s, fmt.Sprintf("/r/%02d", i), []byte(fmt.Sprint(i)))
	}
	if err := s.Delete(ctx, "/r/03"); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(ctx, 5); err != nil {
		t.Fatal(err)
	}
	page, err := s.List(ctx, "/r/", datastore.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	s = openDir(t, dir)
	page2, err := s.List(ctx, "/r/", datastore.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if page2.Revision != 21 || page2.Revision != page.Revision || len(page2.Entries) != 19 {
		t.Fatalf("reopened: %d entries at revision %d, want 19 at %d", len(page2.Entries), page2.Revision, page.Revision)
	}
	for i, e := range page.Entries {
		e2 := page2.Entries[i]
		if e.Key != e2.Key || string(e.Value) != string(e2.Value) || e.Version != e2.Version ||
			e.Revision != e2.Revision || !e.CreatedAt.Equal(e2.CreatedAt) || !e.UpdatedAt.Equal(e2.UpdatedAt) {
			t.Fatalf("entry changed across reopen: %+v -> %+v", e, e2)
		}
	}
	// The Compact floor survived: before it is compacted, from it the log
	// replays every later revision, the delete with its old value.
	if _, err := s.Watch(ctx, "/", datastore.FromRevision(4)); !errors.Is(err, datastore.ErrCompacted) {
		t.Fatalf("watch below the compact floor after reopen: %v", err)
	}
	w, err := s.Watch(ctx, "/", datastore.FromRevision(5))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for rev := uint64(6); rev <= 21; rev++ {
		ev := <-w.Events()
		if ev.Revision != rev {
			t.Fatalf("replayed revision %d, want %d (%v)", ev.Revision, rev, w.Err())
		}
		if rev == 21 && (ev.Type != datastore.Deleted || ev.Key != "/r/03" || string(ev.OldValue) != "3" || ev.Version != 2) {
			t.Fatalf("replayed delete: %+v", ev)
		}
	}
	if v := mustSet(t, s, "/r/03", []byte("again")); v != 3 {
		t.Fatalf("re-created key got version %d, want 3", v)
	}
	if ev := <-w.Events(); ev.Revision != 22 || ev.Type != datastore.Created {
		t.Fatalf("first event after reopen: %+v", ev)
	}
}

// setConcurrently runs writers goroutines that each Set /{dir}/{writer}/{i%3}
// to "{writer}-{i}" for i < each, and returns the key and value each
// revision committed.
func setConcurrently(t *testing.T, s datastore.Store, dir string, writers, each int) map[uint64][2]string {
	t.Helper()
	ctx := ctxT(t)
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		revs = make(map[uint64][2]string)
	)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				k, v := fmt.Sprintf("/%s/%d/%d", dir, w, i%3), fmt.Sprintf("%d-%d", w, i)
				res, err := s.Txn(ctx, datastore.OpSet(k, []byte(v)))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				revs[res.Revision] = [2]string{k, v}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return revs
}

// oldValue is the value a Set of "{writer}-{i}" by setConcurrently replaced.
func oldValue(v string) string {
	var w, i int
	fmt.Sscanf(v, "%d-%d", &w, &i)
	if i < 3 {
		return ""
	}
	return fmt.Sprintf("%d-%d", w, i-3)
}

func TestStore_WatchCatchesUpFromDurableLog(t *testing.T) {
	// More revisions than the hub keeps in memory: a watcher from the
	// start is served from the change log in Badger, in order, with values.
	s := openTest(t)
	revs := setConcurrently(t, s, "w", 16, (hubRetain+300)/16)
	w, err := s.Watch(ctxT(t), "/w/", datastore.FromRevision(0), datastore.WithWatchBuffer(1))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for rev := uint64(1); rev <= uint64(len(revs)); rev++ {
		ev := <-w.Events()
		want := revs[rev]
		if ev.Revision != rev || ev.Key != want[0] || string(ev.NewValue) != want[1] || string(ev.OldValue) != oldValue(want[1]) {
			t.Fatalf("event %+v, want revision %d setting %v over %q (%v)", ev, rev, want, oldValue(want[1]), w.Err())
		}
	}
}

func TestStore_ChangeLogRetentionTrims(t *testing.T) {
	const retention = 10
	s := openTest(t, datastore.WithChangeLogRetention(retention))
	ctx := ctxT(t)
	n := uint64(len(setConcurrently(t, s, "t", 8, (2*trimEvery+50)/8)))
	if _, err := s.Watch(ctx, "/", datastore.FromRevision(n-retention-1)); !errors.Is(err, datastore.ErrCompacted) {
		t.Fatalf("watch from below the retention window: %v", err)
	}
	w, err := s.Watch(ctx, "/", datastore.FromRevision(n-retention))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for rev := n - retention + 1; rev <= n; rev++ {
		if ev := <-w.Events(); ev.Revision != rev {
			t.Fatalf("got revision %d, want %d", ev.Revision, rev)
		}
	}
	// The trimmer deletes what the window dropped: at most the window and
	// the revisions since its last wake-up remain (two keys per update).
	eventually(t, "the change log to be trimmed", func() bool {
		return countKeys(t, s, prefixChange) <= 2*(retention+trimEvery)
	})
}

func TestStore_CompactTrimsLog(t *testing.T) {
	s := openTest(t)
	ctx := ctxT(t)
	for i := range 30 {
		mustSet(t, s, "/c", []byte(fmt.Sprint(i)))
	}
	if err := s.Compact(ctx, 1000); err != nil { // clamped to the head
		t.Fatal(err)
	}
	eventually(t, "the change log to be emptied", func() bool { return countKeys(t, s, prefixChange) == 0 })
	if _, err := s.Watch(ctx, "/", datastore.FromRevision(29)); !errors.Is(err, datastore.ErrCompacted) {
		t.Fatalf("watch below a compaction to the head: %v", err)
	}
	w, err := s.Watch(ctx, "/", datastore.FromRevision(30))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	mustSet(t, s, "/c", []byte("next"))
	if ev := <-w.Events(); ev.Revision != 31 || string(ev.OldValue) != "29" {
		t.Fatalf("event after compaction: %+v", ev)
	}
}

func TestStore_ConcurrentCASLosesNoUpdate(t *testing.T) {
	s := openTest(t)
	ctx := ctxT(t)
	const workers, each = 32, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for done := 0; done < each; {
				e, err := s.Get(ctx, "/counter")
				var n int
				switch {
				case errors.Is(err, datastore.ErrKeyNotFound):
				case err != nil:
					errs <- err
					return
				default:
					n, _ = strconv.Atoi(string(e.Value))
				}
				_, err = s.CompareAndSet(ctx, "/counter", e.Version, []byte(strconv.Itoa(n+1)))
				switch {
				case err == nil:
					done++
				case !errors.Is(err, datastore.ErrVersionConflict):
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
	e, err := s.Get(ctx, "/counter")
	if err != nil {
		t.Fatal(err)
	}
	if string(e.Value) != strconv.Itoa(workers*each) || e.Version != workers*each {
		t.Fatalf("counter %s at version %d, want %d", e.Value, e.Version, workers*each)
	}
}

func TestStore_BadgerConflictIsRetried(t *testing.T) {
	s := openTest(t)
	ctx := ctxT(t)
	mustSet(t, s, "/x", []byte("1"))
	// Before the first commit attempt, another Badger transaction rewrites
	// the record the commit read (with the same bytes), so Badger reports a
	// conflict; the store must plan again and succeed.
	var attempts []int
	s.beforeCommit = func(attempt int) {
		attempts = append(attempts, attempt)
		if attempt > 0 {
			return
		}
		err := s.db.Update(func(txn *badgerdb.Txn) error {
			item, err := txn.Get(recordKey("/x"))
			if err != nil {
				return err
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			return txn.Set(recordKey("/x"), v)
		})
		if err != nil {
			t.Error(err)
		}
	}
	v, err := s.CompareAndSet(ctx, "/x", 1, []byte("2"))
	if err != nil || v != 2 {
		t.Fatalf("CompareAndSet = %d, %v", v, err)
	}
	if len(attempts) != 2 || attempts[1] != 1 {
		t.Fatalf("commit attempts %v, want [0 1]", attempts)
	}
	if e, _ := s.Get(ctx, "/x"); string(e.Value) != "2" || e.Revision != 2 {
		t.Fatalf("after retry: %+v", e)
	}
}

func TestStore_ValueLimits(t *testing.T) {
	const limit = 2 << 20 // stored in the value log: above ValueThreshold
	s := openTest(t, datastore.WithMaxValueSize(limit))
	ctx := ctxT(t)
	big := bytes.Repeat([]byte("a"), limit)
	if _, err := s.Set(ctx, "/big", append(big, 'x')); !errors.Is(err, datastore.ErrValueTooLarge) {
		t.Fatalf("Set over the limit: %v", err)
	}
	w, err := s.Watch(ctx, "/big")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	mustSet(t, s, "/big", big)
	big2 := bytes.Repeat([]byte("b"), limit)
	mustSet(t, s, "/big", big2)
	if e, err := s.Get(ctx, "/big"); err != nil || !bytes.Equal(e.Value, big2) {
		t.Fatalf("Get big value: %d bytes, %v", len(e.Value), err)
	}
	<-w.Events()
	if ev := <-w.Events(); ev.Type != datastore.Updated || !bytes.Equal(ev.OldValue, big) || !bytes.Equal(ev.NewValue, big2) {
		t.Fatalf("update event of a big value: type %v, old %d bytes, new %d bytes", ev.Type, len(ev.OldValue), len(ev.NewValue))
	}
}

func TestStore_DefaultValueLimit(t *testing.T) {
	// Writing 64 MiB values through fsync takes tens of seconds here, so
	// TestStore_ValueLimits writes values at a smaller limit; this checks
	// that the default limit is wired to Badger's own.
	s := openTest(t)
	if s.MaxValueSize != DefaultMaxValueSize {
		t.Fatalf("MaxValueSize %d, want %d", s.MaxValueSize, DefaultMaxValueSize)
	}
	if got := s.db.Opts().ValueLogFileSize; got < DefaultMaxValueSize+1<<12 {
		t.Fatalf("Badger's ValueLogFileSize %d cannot hold a %d-byte value with its header", got, DefaultMaxValueSize)
	}
	if _, err := s.Set(ctxT(t), "/huge", make([]byte, DefaultMaxValueSize+1)); !errors.Is(err, datastore.ErrValueTooLarge) {
		t.Fatalf("Set over the default limit: %v", err)
	}
}

func TestStore_EmptyValues(t *testing.T) {
	s := openTest(t)
	ctx := ctxT(t)
	w, err := s.Watch(ctx, "/e")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	mustSet(t, s, "/e", nil)
	mustSet(t, s, "/e", []byte{})
	if err := s.Delete(ctx, "/e"); err != nil {
		t.Fatal(err)
	}
	live := make([]datastore.Event, 3)
	for i := range live {
		live[i] = <-w.Events()
	}
	// The durable log holds the same events.
	logged, err := changeLog{s}.Since(ctx, 0, 10)
	if err != nil || len(logged) != 3 {
		t.Fatalf("Since(0) = %+v, %v", logged, err)
	}
	for i, want := range []datastore.EventType{datastore.Created, datastore.Updated, datastore.Deleted} {
		for _, ev := range []datastore.Event{live[i], logged[i]} {
			if ev.Type != want || ev.Key != "/e" || len(ev.NewValue) != 0 || len(ev.OldValue) != 0 || ev.Version != uint64(i+1) || ev.Revision != uint64(i+1) {
				t.Fatalf("event %d: %+v", i, ev)
			}
		}
	}
}

func TestStore_TxnTooBig(t *testing.T) {
	s := openTest(t)
	ctx := ctxT(t)
	mustSet(t, s, "/before", []byte("x"))
	// Each new key is two Badger entries (record, event): this is over
	// Badger's entry limit for one commit.
	ops := make([]datastore.Op, s.db.MaxBatchCount()/2+1)
	for i := range ops {
		ops[i] = datastore.OpSet(fmt.Sprintf("/many/%05d", i), []byte("v"))
	}
	_, err := s.Txn(ctx, ops...)
	if !errors.Is(err, ErrTxnTooBig) || !errors.Is(err, datastore.ErrInvalidTxn) || datastore.Retryable(err) {
		t.Fatalf("Txn of %d ops: %v", len(ops), err)
	}
	if p, err := s.List(ctx, "/many/", datastore.ListOptions{Limit: 1}); err != nil || len(p.Entries) != 0 || p.Revision != 1 {
		t.Fatalf("after a too-big txn: %+v, %v", p, err)
	}
	// The largest transactions that fit still commit.
	if _, err := s.Txn(ctx, ops[:2000]...); err != nil {
		t.Fatalf("Txn of 2000 ops: %v", err)
	}
}

func TestStore_GroupCommitSplitsAtBadgerLimits(t *testing.T) {
	// With 1 MiB memtables a Badger commit holds about 150 KiB of small
	// values, so concurrent writes of 12 KiB values need several segments.
	cfg := testConfig(t.TempDir())
	cfg.MemTableSize = 1 << 20
	cfg.ValueThreshold = 16 << 10
	s, err := OpenConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := ctxT(t)
	const writers, each = 40, 3
	var wg sync.WaitGroup
	revs := make(chan uint64, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				v := bytes.Repeat([]byte{byte('a' + i)}, 12<<10)
				res, err := s.Txn(ctx, datastore.OpSet(fmt.Sprintf("/g/%d", w), v))
				if err != nil {
					t.Error(err)
					return
				}
				revs <- res.Revision
			}
		})
	}
	wg.Wait()
	close(revs)
	seen := make(map[uint64]bool)
	for r := range revs {
		if seen[r] {
			t.Fatalf("revision %d assigned twice", r)
		}
		seen[r] = true
	}
	for r := uint64(1); r <= writers*each; r++ {
		if !seen[r] {
			t.Fatalf("revision %d missing", r)
		}
	}
	if e, err := s.Get(ctx, "/g/7"); err != nil || e.Version != each || e.Value[0] != byte('a'+each-1) {
		t.Fatalf("Get /g/7: version %d, %v", e.Version, err)
	}
}

func TestStore_ValueLogGCStopsOnClose(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.GCInterval = 5 * time.Millisecond
	s, err := OpenConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		mustSet(t, s, "/gc", bytes.Repeat([]byte{byte(i)}, 64<<10)) // in the value log
	}
	eventually(t, "value-log GC passes", func() bool { return s.gcRuns.Load() >= 3 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	runs := s.gcRuns.Load()
	time.Sleep(50 * time.Millisecond)
	if s.gcRuns.Load() != runs {
		t.Fatal("value-log GC ran after Close")
	}
	// goleak in TestMain checks that no goroutine outlived Close.
}

func TestOpen_Errors(t *testing.T) {
	if _, err := Open(""); err == nil {
		t.Fatal("Open of an empty dir succeeded")
	}
	cfg := testConfig(t.TempDir(), datastore.WithMaxValueSize(MaxMaxValueSize+1))
	if _, err := OpenConfig(cfg); err == nil {
		t.Fatal("OpenConfig with a too large MaxValueSize succeeded")
	}
	// Badger locks its directory: a second store on it fails to open.
	dir := t.TempDir()
	openDir(t, dir)
	if s, err := OpenConfig(testConfig(dir)); err == nil {
		s.Close()
		t.Fatal("second Open of one directory succeeded")
	}
}

func TestStore_StorageFull(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.MinFreeSpace = 1 << 62 // more than any disk has
	s, err := OpenConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := ctxT(t)
	_, err = s.Set(ctx, "/full", []byte("v"))
	if !errors.Is(err, datastore.ErrStorageFull) || datastore.Retryable(err) {
		t.Fatalf("Set on a full disk: %v", err)
	}
	if _, err := s.Get(ctx, "/full"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatalf("Get after a refused commit: %v", err)
	}
	s.cfg.MinFreeSpace = 0 // space freed; the next commit is the first
	if res, err := s.Txn(ctx, datastore.OpSet("/full", []byte("v"))); err != nil || res.Revision != 1 {
		t.Fatalf("Txn after space was freed = %+v, %v", res, err)
	}
	// A Badger error carrying ENOSPC is storage full as well.
	if err := storageErr(fmt.Errorf("write: %w", syscall.ENOSPC)); !errors.Is(err, datastore.ErrStorageFull) {
		t.Fatalf("storageErr(ENOSPC) = %v", err)
	}
}

func TestTTL(t *testing.T) {
	storetest.RunTTL(t, func(t *testing.T, now func() time.Time) datastore.Store {
		return openTest(t, datastore.WithClock(now))
	})
}

// Expiries survive a restart: Open finds the records with an expiry and
// applies those that fell due while the store was closed.
func TestTTL_Reopen(t *testing.T) {
	ctx := ctxT(t)
	dir := t.TempDir()
	clk := &storetest.Clock{}
	s, err := OpenConfig(testConfig(dir, datastore.WithClock(clk.Now)))
	if err != nil {
		t.Fatal(err)
	}
	s.SetTTL(ctx, "/soon", []byte("x"), time.Second)
	s.SetTTL(ctx, "/later", []byte("y"), time.Hour)
	s.Set(ctx, "/plain", []byte("z"))
	s.Close()
	clk.Advance(time.Minute)
	s = openDir(t, dir, datastore.WithClock(clk.Now))
	if e, err := s.Get(ctx, "/later"); err != nil || !e.ExpiresAt.Equal(clk.Now().Add(time.Hour-time.Minute)) {
		t.Fatalf("/later after reopen: %+v %v", e, err)
	}
	if n, err := s.ExpireDue(ctx); err != nil || n > 1 {
		t.Fatalf("ExpireDue = %d, %v", n, err)
	}
	if _, err := s.Get(ctx, "/soon"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatal(err)
	}
	if s.ttl.Len() != 1 {
		t.Fatalf("%d entries scheduled, want 1", s.ttl.Len())
	}
}

func BenchmarkExpiry(b *testing.B) {
	storetest.BenchmarkExpiry(b, openTest(b), 20*time.Millisecond)
}
