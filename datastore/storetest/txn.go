package storetest

import (
	"errors"
	"testing"

	"github.com/univrs/peerstate/datastore"
)

func testCompareAndSet(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	v, err := s.CompareAndSet(ctx, "/k", 0, []byte("a"))
	if err != nil || v != 1 {
		t.Fatalf("CAS on absent key with 0 = %d, %v", v, err)
	}
	_, err = s.CompareAndSet(ctx, "/k", 0, []byte("b"))
	wantErr(t, "CAS 0 on a present key", err, datastore.ErrVersionConflict)
	_, err = s.CompareAndSet(ctx, "/k", 2, []byte("b"))
	wantErr(t, "CAS with a future version", err, datastore.ErrVersionConflict)
	if v, err = s.CompareAndSet(ctx, "/k", 1, []byte("b")); err != nil || v != 2 {
		t.Fatalf("CAS 1 = %d, %v", v, err)
	}
	_, err = s.CompareAndSet(ctx, "/absent", 3, []byte("b"))
	wantErr(t, "CAS on an absent key with a version", err, datastore.ErrVersionConflict)
	if e := mustGet(t, s, "/k"); string(e.Value) != "b" || e.Version != 2 {
		t.Fatalf("after CAS: %q v%d", e.Value, e.Version)
	}
	if !datastore.Retryable(err) {
		t.Fatal("a version conflict is retryable")
	}
}

func testCreateIfNotExists(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	if v, err := s.CreateIfNotExists(ctx, "/k", []byte("a")); err != nil || v != 1 {
		t.Fatalf("create = %d, %v", v, err)
	}
	_, err := s.CreateIfNotExists(ctx, "/k", []byte("b"))
	wantErr(t, "create of a present key", err, datastore.ErrAlreadyExists)
	if e := mustGet(t, s, "/k"); string(e.Value) != "a" {
		t.Fatalf("failed create changed the value to %q", e.Value)
	}
	if err := s.Delete(ctx, "/k"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.CreateIfNotExists(ctx, "/k", []byte("c")); err != nil || v != 3 {
		t.Fatalf("create after delete = %d, %v; want version 3", v, err)
	}
}

func testTxn(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	mustSet(t, s, "/a", "a1")
	mustSet(t, s, "/b", "b1")
	res, err := s.Txn(ctx,
		datastore.OpCheckVersion("/a", 1),
		datastore.OpCheckVersion("/new", 0),
		datastore.OpSet("/a", []byte("a2")),
		datastore.OpDelete("/b"),
		datastore.OpSet("/new", []byte("n1")),
	)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint64{1, 0, 2, 2, 1}; !equalU64(res.Versions, want) {
		t.Fatalf("txn versions %v, want %v", res.Versions, want)
	}
	if e := mustGet(t, s, "/a"); string(e.Value) != "a2" || e.Revision != res.Revision {
		t.Fatalf("/a = %q at %d", e.Value, e.Revision)
	}
	if _, err := s.Get(ctx, "/b"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatalf("/b after txn delete: %v", err)
	}
	// A check may name a key that is also written.
	if _, err := s.Txn(ctx, datastore.OpCheckVersion("/new", 1), datastore.OpSet("/new", []byte("n2"))); err != nil {
		t.Fatal(err)
	}
	// A txn of checks only commits nothing and reports the current revision.
	rev := revision(t, s)
	res, err = s.Txn(ctx, datastore.OpCheckVersion("/a", 2))
	if err != nil || res.Revision != rev || revision(t, s) != rev {
		t.Fatalf("check-only txn = %+v, %v; store revision %d", res, err, rev)
	}
	// An empty txn is fine and commits nothing.
	if res, err := s.Txn(ctx); err != nil || res.Revision != rev {
		t.Fatalf("empty txn = %+v, %v", res, err)
	}
	// Two writes to one key are the caller's mistake.
	_, err = s.Txn(ctx, datastore.OpSet("/a", nil), datastore.OpDelete("/a"))
	wantErr(t, "two writes to one key", err, datastore.ErrInvalidTxn)
	if datastore.Retryable(err) {
		t.Fatal("an invalid txn is not retryable")
	}
}

func testTxnFailureChangesNothing(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	mustSet(t, s, "/a", "a1")
	mustSet(t, s, "/b", "b1")
	rev := revision(t, s)
	w := watch(t, s, "/")
	_, err := s.Txn(ctx,
		datastore.OpSet("/a", []byte("a2")),
		datastore.OpCheckVersion("/a", 1),
		datastore.OpCheckVersion("/b", 7),
		datastore.OpCheckVersion("/c", 9),
		datastore.OpSet("/c", []byte("c1")),
	)
	wantErr(t, "failed check", err, datastore.ErrTxnFailed)
	var te *datastore.TxnError
	if !errors.As(err, &te) {
		t.Fatalf("error %v is not a *TxnError", err)
	}
	if te.Index != 2 || te.Key != "/b" || te.Expected != 7 || te.Actual != 1 {
		t.Fatalf("TxnError = %+v, want op 2 on /b expected 7 actual 1", te)
	}
	// A delete of a missing key fails the whole txn as well.
	_, err = s.Txn(ctx, datastore.OpSet("/a", []byte("a3")), datastore.OpDelete("/missing"))
	wantErr(t, "txn deleting a missing key", err, datastore.ErrKeyNotFound)
	// And a bad key anywhere.
	_, err = s.Txn(ctx, datastore.OpSet("/a", []byte("a4")), datastore.OpSet("bad", nil))
	wantErr(t, "txn with a bad key", err, datastore.ErrInvalidKey)
	if e := mustGet(t, s, "/a"); string(e.Value) != "a1" || e.Version != 1 {
		t.Fatalf("failed txns changed /a to %q v%d", e.Value, e.Version)
	}
	if _, err := s.Get(ctx, "/c"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatalf("failed txn created /c: %v", err)
	}
	if got := revision(t, s); got != rev {
		t.Fatalf("failed txns moved the revision %d -> %d", rev, got)
	}
	quiet(t, w)
}

func equalU64(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
