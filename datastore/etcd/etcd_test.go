package etcd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/etcd"
	"github.com/univrs/peerstate/datastore/storetest"
	"github.com/univrs/peerstate/internal/etcdtest"
)

// shared is the server most tests use, each under its own root. Tests that
// stop or fill a server start their own.
var shared *etcdtest.Server

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(etcdtest.Main(m, &shared, etcdtest.WithoutFsync()))
}

var roots atomic.Int64

// freshRoot returns a root no other test uses.
func freshRoot() string { return fmt.Sprintf("/test/%d", roots.Add(1)) }

func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// open opens a store on the shared server under a fresh root.
func open(t testing.TB, cfg etcd.Config) *etcd.Store {
	t.Helper()
	if cfg.Endpoints == nil && cfg.Client == nil {
		cfg.Endpoints = shared.Endpoints
	}
	if cfg.Root == "" {
		cfg.Root = freshRoot()
	}
	s, err := etcd.Open(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) datastore.Store { return open(t, etcd.Config{}) })
}

// TestDurable restarts the etcd server between the two opens of a store, on
// the same data directory.
func TestDurable(t *testing.T) {
	servers := map[string]*etcdtest.Server{}
	storetest.RunDurable(t, func(t *testing.T, dir string) datastore.Store {
		if old := servers[dir]; old != nil {
			old.Stop()
		}
		srv := etcdtest.Start(t, etcdtest.WithDir(dir), etcdtest.WithoutFsync())
		servers[dir] = srv
		return open(t, etcd.Config{Endpoints: srv.Endpoints, Root: "/durable"})
	})
}

func client(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestStore_DeleteKeepsTombstone(t *testing.T) {
	s := open(t, etcd.Config{})
	ctx := ctxT(t)
	for range 3 {
		if _, err := s.Set(ctx, "/k", []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, "/k"); err != nil {
		t.Fatal(err)
	}
	// The etcd key stays, holding the tombstone, so the next version is 5
	// although etcd's own version of a re-put deleted key would restart.
	resp, err := s.Client().Get(ctx, s.Root()+"/k")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("etcd key after delete: %v, %v", resp, err)
	}
	if v, err := s.Set(ctx, "/k", []byte("again")); err != nil || v != 5 {
		t.Fatalf("re-created = %d, %v; want version 5", v, err)
	}

}

func TestStore_ValueTooLarge(t *testing.T) {
	ctx := ctxT(t)
	s := open(t, etcd.Config{})
	big := make([]byte, etcd.DefaultMaxValueSize+1)
	_, err := s.Set(ctx, "/big", big)
	if !errors.Is(err, datastore.ErrValueTooLarge) || datastore.Retryable(err) {
		t.Fatalf("Set over the limit: %v, want ErrValueTooLarge, not retryable", err)
	}
	// Values under the limit that together exceed etcd's request limit
	// are refused by etcd, with the same error.
	half := make([]byte, etcd.DefaultMaxValueSize/2+1024)
	_, err = s.Txn(ctx, datastore.OpSet("/a", half), datastore.OpSet("/b", half))
	if !errors.Is(err, datastore.ErrValueTooLarge) {
		t.Fatalf("txn over etcd's request limit: %v, want ErrValueTooLarge", err)
	}
	// With the store's own limit raised, etcd's refusal (server side, then
	// the client's 2 MiB send limit) still maps to ErrValueTooLarge.
	loose := open(t, etcd.Config{MaxValueSize: 8 << 20})
	for _, n := range []int{etcd.DefaultMaxValueSize + 1, 3 << 20} {
		_, err := loose.Set(ctx, "/big", make([]byte, n))
		if !errors.Is(err, datastore.ErrValueTooLarge) {
			t.Fatalf("Set of %d bytes refused by etcd: %v, want ErrValueTooLarge", n, err)
		}
	}
	if _, err := s.Get(ctx, "/big"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatalf("refused value was written: %v", err)
	}
}

func TestStore_ConnectionLost(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.WithoutFsync())
	const timeout = 500 * time.Millisecond
	s := open(t, etcd.Config{Endpoints: srv.Endpoints, RequestTimeout: timeout})
	ctx := ctxT(t) // much longer than the request timeout
	if _, err := s.Set(ctx, "/k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	w, err := s.Watch(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	srv.Stop()

	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, datastore.ErrConnection) || !datastore.Retryable(err) {
			t.Errorf("%s with the server down: %v, want retryable ErrConnection", what, err)
		}
		if ctx.Err() != nil {
			t.Fatalf("%s outlived the caller's context instead of the request timeout", what)
		}
	}
	_, err = s.Get(ctx, "/k")
	check("Get", err)
	_, err = s.Set(ctx, "/k", nil)
	check("Set", err)
	_, err = s.CompareAndSet(ctx, "/k", 1, nil)
	check("CompareAndSet", err)
	check("Delete", s.Delete(ctx, "/k"))
	_, err = s.Txn(ctx, datastore.OpSet("/a", nil), datastore.OpSet("/b", nil))
	check("Txn", err)
	_, err = s.List(ctx, "/", datastore.ListOptions{})
	check("List", err)
	_, err = s.Watch(ctx, "/")
	check("Watch", err)

	// Opening a store on a cluster that does not answer fails within the
	// dial timeout.
	_, err = etcd.Open(ctx, etcd.Config{Endpoints: srv.Endpoints, DialTimeout: timeout})
	check("Open", err)

	// The caller's own deadline stays the caller's.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := s.Get(short, "/k"); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, datastore.ErrConnection) {
		t.Errorf("Get past the caller's deadline: %v, want context.DeadlineExceeded", err)
	}
}

func TestStore_StorageFull(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.WithoutFsync(), etcdtest.WithQuota(2<<20))
	s := open(t, etcd.Config{Endpoints: srv.Endpoints})
	ctx := ctxT(t)
	val := bytes.Repeat([]byte("x"), 256<<10)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = s.Set(ctx, fmt.Sprintf("/fill/%d", i), val)
	}
	if !errors.Is(err, datastore.ErrStorageFull) || datastore.Retryable(err) {
		t.Fatalf("writing past the quota: %v, want ErrStorageFull, not retryable", err)
	}
	// Reads still work.
	if _, err := s.Get(ctx, "/fill/0"); err != nil {
		t.Fatal(err)
	}
}

func TestStore_WatchCompacted(t *testing.T) {
	s := open(t, etcd.Config{})
	ctx := ctxT(t)
	var last uint64
	for i := range 5 {
		if _, err := s.Set(ctx, "/c", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		e, err := s.Get(ctx, "/c")
		if err != nil {
			t.Fatal(err)
		}
		last = e.Revision
	}
	if err := s.Compact(ctx, last); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(ctx, last-1); err != nil {
		t.Fatalf("compacting behind the compaction point again: %v", err)
	}
	_, err := s.Watch(ctx, "/", datastore.FromRevision(last-1))
	if !errors.Is(err, datastore.ErrCompacted) || !datastore.Retryable(err) {
		t.Fatalf("watch before the compaction point: %v, want ErrCompacted", err)
	}
	// From the compaction point on the history serves.
	w, err := s.Watch(ctx, "/", datastore.FromRevision(last))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := s.Set(ctx, "/c", []byte("next")); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w.Events():
		if ev.Type != datastore.Updated || string(ev.OldValue) != "4" || string(ev.NewValue) != "next" {
			t.Fatalf("event after compaction: %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
}

// TestStore_SharedClient checks New over a caller's client: stores under
// different roots do not see each other, and Close leaves the client open.
func TestStore_SharedClient(t *testing.T) {
	ctx := ctxT(t)
	c := client(t, shared.Endpoints)
	a, err := etcd.New(c, freshRoot(), datastore.WithDeleteMissingOK())
	if err != nil {
		t.Fatal(err)
	}
	b, err := etcd.New(c, freshRoot())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Set(ctx, "/k", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "/k"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatalf("store b sees store a's key: %v", err)
	}
	if err := a.Delete(ctx, "/missing"); err != nil {
		t.Fatalf("Delete of a missing key with WithDeleteMissingOK: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Get(ctx, "/k"); !errors.Is(err, datastore.ErrClosed) {
		t.Fatalf("Get on a closed store: %v", err)
	}
	if _, err := b.Set(ctx, "/k", []byte("b")); err != nil {
		t.Fatalf("the shared client was closed with store a: %v", err)
	}
	b.Close()
	// A store whose client is closed under it reports ErrClosed.
	c2 := client(t, shared.Endpoints)
	s, err := etcd.New(c2, freshRoot())
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
	if _, err := s.Set(ctx, "/k", nil); !errors.Is(err, datastore.ErrClosed) {
		t.Fatalf("Set over a closed client: %v", err)
	}
}

func TestStore_ForeignValue(t *testing.T) {
	s := open(t, etcd.Config{})
	ctx := ctxT(t)
	if _, err := s.Client().Put(ctx, s.Root()+"/raw", "not a record"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "/raw"); err == nil {
		t.Fatal("Get of a value not written by the store succeeded")
	}
	if _, err := s.Set(ctx, "/raw", []byte("v")); err == nil {
		t.Fatal("Set over a value not written by the store succeeded")
	}
}

func TestConfig_Validate(t *testing.T) {
	for _, tc := range []struct {
		cfg etcd.Config
		ok  bool
	}{
		{etcd.Config{Endpoints: []string{"http://127.0.0.1:2379"}}, true},
		{etcd.Config{Endpoints: []string{"x"}, Root: "/a/b"}, true},
		{etcd.Config{}, false},
		{etcd.Config{Endpoints: []string{"x"}, Root: "no-slash"}, false},
		{etcd.Config{Endpoints: []string{"x"}, Root: "/trailing/"}, false},
		{etcd.Config{Endpoints: []string{"x"}, RequestTimeout: -1}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v, want ok %v", tc.cfg, err, tc.ok)
		}
	}
}

func TestTTL(t *testing.T) {
	storetest.RunTTL(t, func(t *testing.T, now func() time.Time) datastore.Store {
		return open(t, etcd.Config{Now: now})
	})
}

// For real: etcd's lease runs out and the entry goes, once, although two
// clients of the root watch the alarm; a client opened later finds nothing
// left to do, and the record format without TTL still reads back.
func TestTTL_LeaseExpiry(t *testing.T) {
	ctx := ctxT(t)
	root := freshRoot()
	a := open(t, etcd.Config{Root: root})
	b := open(t, etcd.Config{Root: root})
	if _, err := b.SetTTL(ctx, "/warm", []byte("x"), time.Hour); err != nil { // b watches alarms too
		t.Fatal(err)
	}
	w, err := a.Watch(ctx, "/lease")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	start := time.Now()
	if _, err := a.SetTTL(ctx, "/lease", []byte("held"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	e, err := b.Get(ctx, "/lease")
	if err != nil || e.ExpiresAt.IsZero() {
		t.Fatalf("entry %+v %v", e, err)
	}
	<-w.Events()
	select {
	case ev := <-w.Events():
		if ev.Type != datastore.Deleted || ev.Version != 2 || string(ev.OldValue) != "held" {
			t.Fatalf("event %+v", ev)
		}
		t.Logf("expired %v after the write (TTL 2s, deadline %v)", time.Since(start), time.Until(e.ExpiresAt))
	case <-time.After(30 * time.Second):
		t.Fatal("the lease never expired the entry")
	}
	select {
	case ev := <-w.Events():
		t.Fatalf("a second event %+v", ev)
	case <-time.After(1500 * time.Millisecond):
	}
	if _, err := a.Get(ctx, "/lease"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatal(err)
	}
	if v, err := a.CreateIfNotExists(ctx, "/lease", []byte("again")); err != nil || v != 3 {
		t.Fatalf("re-create = %d, %v", v, err)
	}
	c := open(t, etcd.Config{Root: root})
	if n, err := c.ExpireDue(ctx); err != nil || n != 0 {
		t.Fatalf("ExpireDue on a fresh client = %d, %v", n, err)
	}
	// Markers stay out of List.
	p, err := c.List(ctx, "", datastore.ListOptions{})
	if err != nil || len(p.Entries) != 2 {
		t.Fatalf("list: %+v %v", p.Entries, err)
	}
}

func BenchmarkExpiry(b *testing.B) {
	storetest.BenchmarkExpiry(b, open(b, etcd.Config{}), time.Second)
}
