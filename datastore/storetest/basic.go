package storetest

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
)

var invalidKeys = []string{
	"",
	"/",
	"a",
	"a/b",
	"/a/",
	"//a",
	"/a//b",
	"/a/b/",
	"/a\x00b",
	"/a\nb",
	"/a\x7fb",
	"/\xff\xfe",
	"/" + strings.Repeat("k", datastore.MaxKeyLen), // 1025 bytes
}

var validKeys = []string{
	"/a",
	"/A",
	"/a/b/c",
	"/peers/12D3KooW/reputation",
	"/with space/and-dash_and.dot",
	"/ünïcødé/键",
	"/" + strings.Repeat("k", datastore.MaxKeyLen-1), // 1024 bytes
}

func testKeys(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	rev := revision(t, s)
	for _, k := range invalidKeys {
		if _, err := s.Get(ctx, k); !isInvalid(err) {
			t.Errorf("Get(%q): %v, want ErrInvalidKey", k, err)
		}
		if _, err := s.Set(ctx, k, []byte("v")); !isInvalid(err) {
			t.Errorf("Set(%q): %v, want ErrInvalidKey", k, err)
		}
		if err := s.Delete(ctx, k); !isInvalid(err) {
			t.Errorf("Delete(%q): %v, want ErrInvalidKey", k, err)
		}
		if _, err := s.CompareAndSet(ctx, k, 0, []byte("v")); !isInvalid(err) {
			t.Errorf("CompareAndSet(%q): %v, want ErrInvalidKey", k, err)
		}
		if _, err := s.CreateIfNotExists(ctx, k, []byte("v")); !isInvalid(err) {
			t.Errorf("CreateIfNotExists(%q): %v, want ErrInvalidKey", k, err)
		}
		if _, err := s.Txn(ctx, datastore.OpSet("/ok", []byte("v")), datastore.OpSet(k, []byte("v"))); !isInvalid(err) {
			t.Errorf("Txn with %q: %v, want ErrInvalidKey", k, err)
		}
	}
	for _, p := range []string{"a", "/a//b", "//", "/a\x00", "/\xff"} {
		if _, err := s.List(ctx, p, datastore.ListOptions{}); !isInvalid(err) {
			t.Errorf("List(%q): %v, want ErrInvalidKey", p, err)
		}
		if w, err := s.Watch(ctx, p); !isInvalid(err) {
			if err == nil {
				w.Close()
			}
			t.Errorf("Watch(%q): %v, want ErrInvalidKey", p, err)
		}
	}
	if w, err := s.Watch(ctx, "/a/b*c"); !isInvalid(err) {
		if err == nil {
			w.Close()
		}
		t.Errorf(`Watch("/a/b*c"): %v, want ErrInvalidKey`, err)
	}
	if got := revision(t, s); got != rev {
		t.Fatalf("invalid keys changed the revision from %d to %d", rev, got)
	}
	if keys, _ := listAll(t, s, "/"); len(keys) != 0 {
		t.Fatalf("invalid keys left entries: %q", keys)
	}
	for _, k := range validKeys {
		mustSet(t, s, k, "v:"+k)
		if e := mustGet(t, s, k); string(e.Value) != "v:"+k || e.Key != k {
			t.Fatalf("Get(%q) = %q %q", k, e.Key, e.Value)
		}
	}
	// Keys are case-sensitive.
	if string(mustGet(t, s, "/a").Value) == string(mustGet(t, s, "/A").Value) {
		t.Fatal("/a and /A share a value")
	}
	if datastore.Retryable(datastore.ErrInvalidKey) || datastore.Retryable(datastore.ErrValueTooLarge) ||
		datastore.Retryable(datastore.ErrStorageFull) || !datastore.Retryable(datastore.ErrConnection) ||
		!datastore.Retryable(datastore.ErrVersionConflict) {
		t.Fatal("Retryable classifies the sentinels wrongly")
	}
}

func isInvalid(err error) bool { return err != nil && errors.Is(err, datastore.ErrInvalidKey) }

func testGetMissing(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	_, err := s.Get(ctx, "/missing")
	wantErr(t, "Get of a missing key", err, datastore.ErrKeyNotFound)
	wantErr(t, "Delete of a missing key", s.Delete(ctx, "/missing"), datastore.ErrKeyNotFound)
	if datastore.Retryable(nil) {
		t.Fatal("Retryable(nil) is true")
	}
}

func testSetGet(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	bin := []byte{0, 1, 2, 0xff, 0xfe, '\n', 0}
	if v, err := s.Set(ctx, "/bin", bin); err != nil || v != 1 {
		t.Fatalf("Set = %d, %v; want version 1", v, err)
	}
	if e := mustGet(t, s, "/bin"); !bytes.Equal(e.Value, bin) || e.Version != 1 {
		t.Fatalf("Get = %q v%d", e.Value, e.Version)
	}
	if _, err := s.Set(ctx, "/empty", nil); err != nil {
		t.Fatal(err)
	}
	if e := mustGet(t, s, "/empty"); e.Value == nil || len(e.Value) != 0 {
		t.Fatalf("empty value read back as %#v, want empty non-nil", e.Value)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 64*1024) // 1 MiB
	if _, err := s.Set(ctx, "/big", big); err != nil {
		t.Fatal(err)
	}
	if e := mustGet(t, s, "/big"); !bytes.Equal(e.Value, big) {
		t.Fatal("1 MiB value did not round-trip")
	}
}

func testValuesAreCopied(t *testing.T, newStore Factory) {
	s := newStore(t)
	v := []byte("original")
	if _, err := s.Set(ctxT(t), "/k", v); err != nil {
		t.Fatal(err)
	}
	copy(v, "XXXXXXXX")
	e := mustGet(t, s, "/k")
	if string(e.Value) != "original" {
		t.Fatalf("store kept the caller's slice: %q", e.Value)
	}
	copy(e.Value, "YYYYYYYY")
	if got := mustGet(t, s, "/k"); string(got.Value) != "original" {
		t.Fatalf("Get returned the store's own slice: %q", got.Value)
	}
}

func testVersionsAndTombstones(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	for want := uint64(1); want <= 5; want++ {
		if got := mustSet(t, s, "/k", "v"); got != want {
			t.Fatalf("Set #%d returned version %d", want, got)
		}
	}
	if err := s.Delete(ctx, "/k"); err != nil {
		t.Fatal(err)
	}
	_, err := s.Get(ctx, "/k")
	wantErr(t, "Get after Delete", err, datastore.ErrKeyNotFound)
	wantErr(t, "second Delete", s.Delete(ctx, "/k"), datastore.ErrKeyNotFound)
	// Deleted at 5 -> tombstone 6 -> re-created 7.
	if got := mustSet(t, s, "/k", "again"); got != 7 {
		t.Fatalf("re-created key got version %d, want 7", got)
	}
	if e := mustGet(t, s, "/k"); e.Version != 7 || string(e.Value) != "again" {
		t.Fatalf("Get = v%d %q", e.Version, e.Value)
	}
	// A stale CAS from before the delete must fail, even at a version that
	// existed once.
	for _, stale := range []uint64{5, 6} {
		_, err := s.CompareAndSet(ctx, "/k", stale, []byte("stale"))
		wantErr(t, "stale CAS after re-create", err, datastore.ErrVersionConflict)
	}
	// "Only if absent" fails on a live key, succeeds on a deleted one.
	_, err = s.CompareAndSet(ctx, "/k", 0, []byte("x"))
	wantErr(t, "CAS 0 on a live key", err, datastore.ErrVersionConflict)
	if err := s.Delete(ctx, "/k"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.CompareAndSet(ctx, "/k", 0, []byte("x")); err != nil || v != 9 {
		t.Fatalf("CAS 0 on a deleted key = %d, %v; want 9", v, err)
	}
	// A delete inside a txn leaves a tombstone too.
	if res, err := s.Txn(ctx, datastore.OpDelete("/k")); err != nil || res.Versions[0] != 10 {
		t.Fatalf("Txn delete = %+v, %v; want tombstone version 10", res, err)
	}
	if got := mustSet(t, s, "/k", "y"); got != 11 {
		t.Fatalf("re-created after txn delete: version %d, want 11", got)
	}
}

func testTimestamps(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	mustSet(t, s, "/k", "1")
	first := mustGet(t, s, "/k")
	if first.CreatedAt.IsZero() || !first.CreatedAt.Equal(first.UpdatedAt) {
		t.Fatalf("new entry: created %v updated %v", first.CreatedAt, first.UpdatedAt)
	}
	time.Sleep(2 * time.Millisecond)
	mustSet(t, s, "/k", "2")
	second := mustGet(t, s, "/k")
	if !second.CreatedAt.Equal(first.CreatedAt) {
		t.Fatalf("update changed CreatedAt: %v -> %v", first.CreatedAt, second.CreatedAt)
	}
	if !second.UpdatedAt.After(first.UpdatedAt) {
		t.Fatalf("update did not advance UpdatedAt: %v -> %v", first.UpdatedAt, second.UpdatedAt)
	}
	if err := s.Delete(ctx, "/k"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	mustSet(t, s, "/k", "3")
	third := mustGet(t, s, "/k")
	if !third.CreatedAt.After(second.UpdatedAt) {
		t.Fatalf("re-created entry kept an old CreatedAt %v", third.CreatedAt)
	}
}

func testRevisions(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	r0 := revision(t, s)
	mustSet(t, s, "/a", "1")
	if e := mustGet(t, s, "/a"); e.Revision != r0+1 {
		t.Fatalf("first commit at revision %d, want %d", e.Revision, r0+1)
	}
	mustSet(t, s, "/b", "1")
	mustSet(t, s, "/a", "2")
	if e := mustGet(t, s, "/a"); e.Revision != r0+3 {
		t.Fatalf("third commit at revision %d, want %d", e.Revision, r0+3)
	}
	if e := mustGet(t, s, "/b"); e.Revision != r0+2 {
		t.Fatalf("/b keeps revision %d, want %d", e.Revision, r0+2)
	}
	// Failures commit nothing.
	s.CompareAndSet(ctx, "/a", 1, []byte("x"))
	s.CreateIfNotExists(ctx, "/a", []byte("x"))
	s.Delete(ctx, "/missing")
	s.Txn(ctx, datastore.OpCheckVersion("/a", 1), datastore.OpSet("/c", nil))
	if got := revision(t, s); got != r0+3 {
		t.Fatalf("failed writes moved the revision to %d, want %d", got, r0+3)
	}
	res, err := s.Txn(ctx, datastore.OpSet("/x", nil), datastore.OpSet("/y", nil), datastore.OpDelete("/a"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Revision != r0+4 {
		t.Fatalf("txn revision %d, want %d", res.Revision, r0+4)
	}
	for _, k := range []string{"/x", "/y"} {
		if e := mustGet(t, s, k); e.Revision != r0+4 {
			t.Fatalf("%s at revision %d, want the txn's %d", k, e.Revision, r0+4)
		}
	}
}

func testCancelledContext(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Set(ctx, "/k", []byte("v")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Set with a cancelled context: %v", err)
	}
	if _, err := s.Txn(ctx, datastore.OpSet("/k", nil)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Txn with a cancelled context: %v", err)
	}
	if _, err := s.Get(ctxT(t), "/k"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatalf("a write with a cancelled context was applied: %v", err)
	}
}
