package ipfsds_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/ipfsds"
	"github.com/univrs/peerstate/datastore/memory"
)

// eachBackend runs f over an adapter on each backend.
func eachBackend(t *testing.T, f func(t *testing.T, d *ipfsds.Datastore, s datastore.Store)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			d, s := newDatastore(t, b.open)
			f(t, d, s)
		})
	}
}

func mustPut(t *testing.T, d ds.Write, key, value string) {
	t.Helper()
	if err := d.Put(context.Background(), ds.NewKey(key), []byte(value)); err != nil {
		t.Fatalf("Put(%s): %v", key, err)
	}
}

func wantValue(t *testing.T, d ds.Read, key, want string) {
	t.Helper()
	v, err := d.Get(context.Background(), ds.NewKey(key))
	if want == "" {
		if err != ds.ErrNotFound {
			t.Fatalf("Get(%s) = %q, %v; want ds.ErrNotFound", key, v, err)
		}
		return
	}
	if err != nil || string(v) != want {
		t.Fatalf("Get(%s) = %q, %v; want %q", key, v, err, want)
	}
}

func queryKeys(t *testing.T, d ds.Read, q dsq.Query) []string {
	t.Helper()
	res, err := d.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	es, err := res.Rest()
	if err != nil {
		t.Fatal(err)
	}
	dsq.Sort([]dsq.Order{dsq.OrderByKey{}}, es)
	return keysOf(es)
}

func newTxn(t *testing.T, d ds.TxnDatastore, readOnly bool) ds.Txn {
	t.Helper()
	tx, err := d.NewTransaction(t.Context(), readOnly)
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

func TestTxn_ReadsOwnWrites(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *ipfsds.Datastore, _ datastore.Store) {
		ctx := t.Context()
		mustPut(t, d, "/t/a", "a0")
		mustPut(t, d, "/t/b", "b0")
		mustPut(t, d, "/t/c", "c0")
		tx := newTxn(t, d, false)
		mustPut(t, tx, "/t/a", "a1")  // replaces a stored key
		mustPut(t, tx, "/t/aa", "n")  // a new key between stored ones
		mustPut(t, tx, "/t/z", "z")   // a new key after them
		mustPut(t, tx, "/u", "other") // outside the prefix
		if err := tx.Delete(ctx, ds.NewKey("/t/b")); err != nil {
			t.Fatal(err)
		}
		if err := tx.Delete(ctx, ds.NewKey("/t/never")); err != nil {
			t.Fatal(err)
		}
		wantValue(t, tx, "/t/a", "a1")
		wantValue(t, tx, "/t/b", "")
		wantValue(t, tx, "/t/c", "c0")
		if ok, err := tx.Has(ctx, ds.NewKey("/t/aa")); !ok || err != nil {
			t.Fatalf("Has(/t/aa) = %v, %v", ok, err)
		}
		if n, err := tx.GetSize(ctx, ds.NewKey("/t/b")); n != -1 || err != ds.ErrNotFound {
			t.Fatalf("GetSize(/t/b) = %d, %v", n, err)
		}
		got := queryKeys(t, tx, dsq.Query{Prefix: "/t"})
		if want := []string{"/t/a", "/t/aa", "/t/c", "/t/z"}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("txn Query = %q, want %q", got, want)
		}
		// Nothing is visible outside the transaction before Commit.
		wantValue(t, d, "/t/a", "a0")
		wantValue(t, d, "/t/b", "b0")
		wantValue(t, d, "/t/aa", "")
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		wantValue(t, d, "/t/a", "a1")
		wantValue(t, d, "/t/b", "")
		wantValue(t, d, "/t/aa", "n")
		wantValue(t, d, "/u", "other")
		got = queryKeys(t, d, dsq.Query{Prefix: "/t"})
		if want := []string{"/t/a", "/t/aa", "/t/c", "/t/z"}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("Query after Commit = %q, want %q", got, want)
		}
	})
}

func TestTxn_Conflict(t *testing.T) {
	reads := []struct {
		name string
		read func(ctx context.Context, tx ds.Txn) error
	}{
		{"Get", func(ctx context.Context, tx ds.Txn) error { _, err := tx.Get(ctx, ds.NewKey("/k")); return err }},
		{"GetMissing", func(ctx context.Context, tx ds.Txn) error {
			_, err := tx.Get(ctx, ds.NewKey("/missing"))
			if err == ds.ErrNotFound {
				return nil
			}
			return err
		}},
		{"Has", func(ctx context.Context, tx ds.Txn) error { _, err := tx.Has(ctx, ds.NewKey("/missing")); return err }},
		{"GetSize", func(ctx context.Context, tx ds.Txn) error { _, err := tx.GetSize(ctx, ds.NewKey("/k")); return err }},
		{"Query", func(ctx context.Context, tx ds.Txn) error {
			res, err := tx.Query(ctx, dsq.Query{Prefix: "/", KeysOnly: true})
			if err != nil {
				return err
			}
			_, err = res.Rest()
			return err
		}},
	}
	eachBackend(t, func(t *testing.T, d *ipfsds.Datastore, _ datastore.Store) {
		ctx := t.Context()
		for i, r := range reads {
			t.Run(r.name, func(t *testing.T) {
				mustPut(t, d, "/k", "v"+strconv.Itoa(i))
				tx := newTxn(t, d, false)
				if err := r.read(ctx, tx); err != nil {
					t.Fatal(err)
				}
				mustPut(t, tx, "/out", "written by a txn that lost")
				// A concurrent writer changes what the transaction read.
				if r.name == "GetMissing" || r.name == "Has" {
					mustPut(t, d, "/missing", "now here")
					defer d.Delete(ctx, ds.NewKey("/missing"))
				} else {
					mustPut(t, d, "/k", "changed")
				}
				err := tx.Commit(ctx)
				if !errors.Is(err, datastore.ErrTxnFailed) {
					t.Fatalf("Commit after a conflicting write: %v, want ErrTxnFailed", err)
				}
				wantValue(t, d, "/out", "")
				if err := tx.Commit(ctx); !errors.Is(err, ipfsds.ErrTxnDone) {
					t.Fatalf("second Commit: %v, want ErrTxnDone", err)
				}
			})
		}
		t.Run("Unrelated", func(t *testing.T) {
			tx := newTxn(t, d, false)
			wantValue(t, tx, "/k", "changed")
			mustPut(t, d, "/unrelated", "x")
			mustPut(t, tx, "/k", "mine")
			if err := tx.Commit(ctx); err != nil {
				t.Fatalf("Commit after an unrelated write: %v", err)
			}
			wantValue(t, d, "/k", "mine")
		})
		t.Run("ReadOnly", func(t *testing.T) {
			tx := newTxn(t, d, true)
			wantValue(t, tx, "/k", "mine")
			if err := tx.Put(ctx, ds.NewKey("/k"), nil); !errors.Is(err, ipfsds.ErrReadOnly) {
				t.Fatalf("Put in a read-only txn: %v", err)
			}
			if err := tx.Delete(ctx, ds.NewKey("/k")); !errors.Is(err, ipfsds.ErrReadOnly) {
				t.Fatalf("Delete in a read-only txn: %v", err)
			}
			mustPut(t, d, "/k", "changed again")
			if err := tx.Commit(ctx); !errors.Is(err, datastore.ErrTxnFailed) {
				t.Fatalf("Commit of a read-only txn whose reads changed: %v, want ErrTxnFailed", err)
			}
		})
	})
}

func TestTxn_DeleteReadAsAbsent(t *testing.T) {
	d, _ := newDatastore(t, backends[0].open)
	ctx := t.Context()
	tx := newTxn(t, d, false)
	wantValue(t, tx, "/gone", "")
	if err := tx.Delete(ctx, ds.NewKey("/gone")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("Commit of a delete of a missing key: %v", err)
	}
	// The same, but the key appears before Commit: a conflict.
	tx = newTxn(t, d, false)
	wantValue(t, tx, "/gone", "")
	if err := tx.Delete(ctx, ds.NewKey("/gone")); err != nil {
		t.Fatal(err)
	}
	mustPut(t, d, "/gone", "back")
	if err := tx.Commit(ctx); !errors.Is(err, datastore.ErrTxnFailed) {
		t.Fatalf("Commit: %v, want ErrTxnFailed", err)
	}
	wantValue(t, d, "/gone", "back")
}

func TestTxn_Discard(t *testing.T) {
	d, _ := newDatastore(t, backends[0].open)
	ctx := t.Context()
	tx := newTxn(t, d, false)
	mustPut(t, tx, "/a", "x")
	tx.Discard(ctx)
	tx.Discard(ctx)
	if err := tx.Commit(ctx); !errors.Is(err, ipfsds.ErrTxnDone) {
		t.Fatalf("Commit after Discard: %v, want ErrTxnDone", err)
	}
	if _, err := tx.Get(ctx, ds.NewKey("/a")); !errors.Is(err, ipfsds.ErrTxnDone) {
		t.Fatalf("Get after Discard: %v, want ErrTxnDone", err)
	}
	wantValue(t, d, "/a", "")

	tx = newTxn(t, d, false)
	mustPut(t, tx, "/a", "y")
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	tx.Discard(ctx) // no effect after Commit
	wantValue(t, d, "/a", "y")
}

// TestTxn_ConcurrentIncrements runs read-modify-write transactions on one
// counter from many goroutines, retrying on conflict: no increment may be
// lost.
func TestTxn_ConcurrentIncrements(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *ipfsds.Datastore, _ datastore.Store) {
		const workers, each = 4, 10
		key := ds.NewKey("/counter")
		var conflicts atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for range workers {
			wg.Go(func() {
				ctx := context.Background()
				for done := 0; done < each; {
					tx, err := d.NewTransaction(ctx, false)
					if err != nil {
						errs <- err
						return
					}
					n := 0
					v, err := tx.Get(ctx, key)
					switch {
					case err == nil:
						n, _ = strconv.Atoi(string(v))
					case err != ds.ErrNotFound:
						errs <- err
						return
					}
					if err := tx.Put(ctx, key, []byte(strconv.Itoa(n+1))); err != nil {
						errs <- err
						return
					}
					switch err := tx.Commit(ctx); {
					case err == nil:
						done++
					case errors.Is(err, datastore.ErrTxnFailed):
						conflicts.Add(1)
					default:
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
		wantValue(t, d, "/counter", strconv.Itoa(workers*each))
		t.Logf("%d conflicts retried", conflicts.Load())
	})
}

func TestBatch(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *ipfsds.Datastore, s datastore.Store) {
		ctx := t.Context()
		mustPut(t, d, "/b/old", "x")
		mustPut(t, d, "/b/kept", "x")
		rev := revision(t, s)
		b, err := d.Batch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mustPut(t, b, "/b/1", "first")
		mustPut(t, b, "/b/1", "second") // replaces the first put
		mustPut(t, b, "/b/2", "put")
		if err := b.Delete(ctx, ds.NewKey("/b/2")); err != nil { // replaces the put
			t.Fatal(err)
		}
		if err := b.Delete(ctx, ds.NewKey("/b/old")); err != nil {
			t.Fatal(err)
		}
		if err := b.Delete(ctx, ds.NewKey("/b/missing")); err != nil {
			t.Fatal(err)
		}
		wantValue(t, d, "/b/1", "")
		if err := b.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		wantValue(t, d, "/b/1", "second")
		wantValue(t, d, "/b/2", "")
		wantValue(t, d, "/b/old", "")
		wantValue(t, d, "/b/kept", "x")
		// The delete of /b/missing made the first attempt fail, which
		// committed nothing: the batch is one commit.
		if got := revision(t, s); got != rev+1 {
			t.Fatalf("batch took revisions %d..%d, want one commit", rev, got)
		}
	})
}

func TestBatch_Atomic(t *testing.T) {
	s := memory.New(datastore.WithMaxValueSize(8))
	d := ipfsds.New(s, ipfsds.WithCloseStore())
	defer d.Close()
	ctx := t.Context()
	mustPut(t, d, "/keep", "x")
	b, _ := d.Batch(ctx)
	mustPut(t, b, "/small", "ok")
	mustPut(t, b, "/large", "far too large")
	if err := b.Delete(ctx, ds.NewKey("/keep")); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx); !errors.Is(err, datastore.ErrValueTooLarge) {
		t.Fatalf("Commit: %v, want ErrValueTooLarge", err)
	}
	wantValue(t, d, "/small", "")
	wantValue(t, d, "/keep", "x")
}

// hookStore calls before ahead of each Txn of the store it wraps.
type hookStore struct {
	datastore.Store
	calls  int
	before func(ctx context.Context, call int)
}

func (h *hookStore) Txn(ctx context.Context, ops ...datastore.Op) (datastore.TxnResult, error) {
	h.calls++
	h.before(ctx, h.calls)
	return h.Store.Txn(ctx, ops...)
}

// TestBatch_DeleteRaces drives the commit path that resolves deletes of keys
// that concurrent writers delete or create meanwhile.
func TestBatch_DeleteRaces(t *testing.T) {
	ctx := t.Context()
	mem := memory.New()
	h := &hookStore{Store: mem}
	d := ipfsds.New(h, ipfsds.WithCloseStore())
	defer d.Close()
	mustPut(t, d, "/x", "x")
	mustPut(t, d, "/y", "y")
	b, _ := d.Batch(ctx)
	for _, k := range []string{"/x", "/y", "/z"} {
		if err := b.Delete(ctx, ds.NewKey(k)); err != nil {
			t.Fatal(err)
		}
	}
	mustPut(t, b, "/w", "w")
	h.before = func(ctx context.Context, call int) {
		switch call {
		case 1: // someone deletes /x before the first attempt
			if err := mem.Delete(ctx, "/x"); err != nil {
				t.Error(err)
			}
		case 2: // and creates /z, found absent, before the second
			if _, err := mem.Set(ctx, "/z", []byte("z")); err != nil {
				t.Error(err)
			}
		}
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if h.calls != 3 {
		t.Errorf("commit took %d attempts, want 3", h.calls)
	}
	for _, k := range []string{"/x", "/y", "/z"} {
		wantValue(t, d, k, "")
	}
	wantValue(t, d, "/w", "w")
}

func revision(t *testing.T, s datastore.Store) uint64 {
	t.Helper()
	p, err := s.List(t.Context(), "/", datastore.ListOptions{Limit: 1, KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	return p.Revision
}
