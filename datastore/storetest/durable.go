package storetest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/univrs/peerstate/datastore"
)

func testReopen(t *testing.T, open Opener) {
	dir := t.TempDir()
	s := open(t, dir)
	ctx := ctxT(t)
	for i := range 50 {
		mustSet(t, s, fmt.Sprintf("/d/%02d", i), fmt.Sprint(i))
	}
	mustSet(t, s, "/gone", "1")
	mustSet(t, s, "/gone", "2")
	if err := s.Delete(ctx, "/gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Txn(ctx, datastore.OpSet("/t/a", []byte("a")), datastore.OpSet("/t/b", []byte("b"))); err != nil {
		t.Fatal(err)
	}
	before := mustGet(t, s, "/d/07")
	keys, rev := listAll(t, s, "/")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, dir)
	defer s.Close()
	keys2, rev2 := listAll(t, s, "/")
	if rev2 != rev || fmt.Sprint(keys2) != fmt.Sprint(keys) {
		t.Fatalf("reopened store has %d keys at revision %d, want %d at %d", len(keys2), rev2, len(keys), rev)
	}
	after := mustGet(t, s, "/d/07")
	if string(after.Value) != "7" || after.Version != before.Version || after.Revision != before.Revision ||
		!after.CreatedAt.Equal(before.CreatedAt) || !after.UpdatedAt.Equal(before.UpdatedAt) {
		t.Fatalf("entry changed across reopen: %+v -> %+v", before, after)
	}
	if _, err := s.Get(ctx, "/gone"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatalf("deleted key after reopen: %v", err)
	}
	// The tombstone's version survived: deleted at 2 -> 3 -> re-created 4.
	if v := mustSet(t, s, "/gone", "3"); v != 4 {
		t.Fatalf("re-created key after reopen got version %d, want 4", v)
	}
	// Revisions continue.
	if e := mustGet(t, s, "/gone"); e.Revision != rev+1 {
		t.Fatalf("first commit after reopen at revision %d, want %d", e.Revision, rev+1)
	}
	// The change log survived: a watch resumes from before the reopen.
	w := watch(t, s, "/t/", datastore.FromRevision(rev-1))
	evs := collect(t, w, 2)
	if evs[0].Key != "/t/a" || evs[1].Key != "/t/b" || evs[0].Revision != rev {
		t.Fatalf("resumed watch after reopen: %+v", evs)
	}
}
