package ipfsds_test

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	dstest "github.com/ipfs/go-datastore/test"
	"go.uber.org/goleak"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/ipfsds"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// backends are the stores the go-datastore suite runs over.
var backends = []struct {
	name    string
	durable bool // every write waits for a sync to disk
	open    func(t *testing.T) datastore.Store
}{
	{"memory", false, func(t *testing.T) datastore.Store { return memory.New() }},
	{"sqlite", true, func(t *testing.T) datastore.Store {
		s, err := sqlite.Open(filepath.Join(t.TempDir(), "state.db"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}},
}

// lighten makes the suite lighter for the rest of the test, as the suite
// itself does under -race: ElemCount goes to the suite's minimum, 20, and
// SubtestCombinations is left out. On a durable store, where every write
// waits for a disk sync, the full suite makes some 300,000 writes and takes
// many minutes; the memory store runs it whole, and
// TestGoDatastoreSuite_Combinations runs the combinations under -race too.
func lighten(t *testing.T) {
	all, count := dstest.BasicSubtests, dstest.ElemCount
	combinations := reflect.ValueOf(dstest.SubtestCombinations).Pointer()
	dstest.BasicSubtests = slices.DeleteFunc(slices.Clone(all), func(f func(*testing.T, ds.Datastore)) bool {
		return reflect.ValueOf(f).Pointer() == combinations
	})
	dstest.ElemCount = min(count, 20)
	t.Cleanup(func() { dstest.BasicSubtests, dstest.ElemCount = all, count })
}

// newDatastore returns an adapter over a new store that is closed with the
// test.
func newDatastore(t *testing.T, open func(*testing.T) datastore.Store, opts ...ipfsds.Option) (*ipfsds.Datastore, datastore.Store) {
	t.Helper()
	s := open(t)
	d := ipfsds.New(s, append(opts, ipfsds.WithCloseStore())...)
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	return d, s
}

// TestGoDatastoreSuite runs go-datastore's own suite (basic and batch
// subtests) over each backend.
func TestGoDatastoreSuite(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			if b.durable {
				lighten(t)
			}
			d, _ := newDatastore(t, b.open)
			dstest.SubtestAll(t, d)
		})
	}
}

// TestGoDatastoreSuite_Prefix runs the suite with a prefix, in a store that
// also holds keys outside the prefix and keys inside it that no
// go-datastore key maps to: they must stay invisible, or the suite's counts
// and clean-up would notice them.
func TestGoDatastoreSuite_Prefix(t *testing.T) {
	d, s := newDatastore(t, backends[0].open, ipfsds.WithPrefix("/ipfs"))
	for _, k := range []string{"/ipfs", "/ipfsx/a", "/a", "/ipfs/a%zz", "/ipfs/prefix/%41", "/ipfs/prefix/a%"} {
		if _, err := s.Set(t.Context(), k, []byte("foreign")); err != nil {
			t.Fatal(err)
		}
	}
	dstest.SubtestAll(t, d)
	for _, k := range []string{"/ipfs", "/ipfsx/a", "/a", "/ipfs/a%zz", "/ipfs/prefix/%41", "/ipfs/prefix/a%"} {
		if _, err := s.Get(t.Context(), k); err != nil {
			t.Errorf("foreign key %s: %v", k, err)
		}
	}
}

// TestGoDatastoreSuite_Combinations runs the suite's query combinations,
// which SubtestAll leaves out under the race detector.
func TestGoDatastoreSuite_Combinations(t *testing.T) {
	d, _ := newDatastore(t, backends[0].open)
	dstest.SubtestCombinations(t, d)
}

// TestGoDatastoreSuite_ThroughTxn runs the suite over transactions: one
// transaction per operation, and one long transaction committed every few
// writes, so that queries merge pending writes with stored entries.
func TestGoDatastoreSuite_ThroughTxn(t *testing.T) {
	t.Run("per-op", func(t *testing.T) {
		d, _ := newDatastore(t, backends[0].open)
		dstest.SubtestAll(t, &txnPerOp{Datastore: d})
	})
	t.Run("long", func(t *testing.T) {
		d, _ := newDatastore(t, backends[0].open)
		l := &longTxn{d: d, every: 7}
		t.Cleanup(func() { l.flush(t) })
		dstest.SubtestAll(t, l)
	})
}

// txnPerOp runs each call in its own transaction.
type txnPerOp struct{ *ipfsds.Datastore }

func (d *txnPerOp) do(ctx context.Context, readOnly bool, f func(ds.Txn) error) error {
	tx, err := d.NewTransaction(ctx, readOnly)
	if err != nil {
		return err
	}
	defer tx.Discard(ctx)
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func (d *txnPerOp) Get(ctx context.Context, k ds.Key) (v []byte, err error) {
	err = d.do(ctx, true, func(tx ds.Txn) error { v, err = tx.Get(ctx, k); return err })
	return v, err
}

func (d *txnPerOp) Has(ctx context.Context, k ds.Key) (ok bool, err error) {
	err = d.do(ctx, true, func(tx ds.Txn) error { ok, err = tx.Has(ctx, k); return err })
	return ok, err
}

func (d *txnPerOp) GetSize(ctx context.Context, k ds.Key) (n int, err error) {
	n = -1
	err = d.do(ctx, true, func(tx ds.Txn) error { n, err = tx.GetSize(ctx, k); return err })
	return n, err
}

func (d *txnPerOp) Put(ctx context.Context, k ds.Key, v []byte) error {
	return d.do(ctx, false, func(tx ds.Txn) error { return tx.Put(ctx, k, v) })
}

func (d *txnPerOp) Delete(ctx context.Context, k ds.Key) error {
	return d.do(ctx, false, func(tx ds.Txn) error { return tx.Delete(ctx, k) })
}

func (d *txnPerOp) Query(ctx context.Context, q dsq.Query) (dsq.Results, error) {
	tx, err := d.NewTransaction(ctx, true)
	if err != nil {
		return nil, err
	}
	return tx.Query(ctx, q) // a read-only transaction needs no commit
}

// longTxn sends every call through one transaction, committed and replaced
// after every few writes. It is not Batching: the suite's batch tests write
// to the store behind the transaction's back.
type longTxn struct {
	d      *ipfsds.Datastore
	every  int
	writes int
	tx     ds.Txn
}

var _ ds.Datastore = (*longTxn)(nil)

func (l *longTxn) txn(ctx context.Context) (ds.Txn, error) {
	if l.tx == nil {
		tx, err := l.d.NewTransaction(ctx, false)
		if err != nil {
			return nil, err
		}
		l.tx = tx
	}
	return l.tx, nil
}

func (l *longTxn) wrote(ctx context.Context) error {
	l.writes++
	if l.writes%l.every != 0 {
		return nil
	}
	tx := l.tx
	l.tx = nil
	return tx.Commit(ctx)
}

func (l *longTxn) flush(t *testing.T) {
	if l.tx != nil {
		if err := l.tx.Commit(context.Background()); err != nil {
			t.Error(err)
		}
	}
}

func (l *longTxn) Get(ctx context.Context, k ds.Key) ([]byte, error) {
	tx, err := l.txn(ctx)
	if err != nil {
		return nil, err
	}
	return tx.Get(ctx, k)
}

func (l *longTxn) Has(ctx context.Context, k ds.Key) (bool, error) {
	tx, err := l.txn(ctx)
	if err != nil {
		return false, err
	}
	return tx.Has(ctx, k)
}

func (l *longTxn) GetSize(ctx context.Context, k ds.Key) (int, error) {
	tx, err := l.txn(ctx)
	if err != nil {
		return -1, err
	}
	return tx.GetSize(ctx, k)
}

func (l *longTxn) Query(ctx context.Context, q dsq.Query) (dsq.Results, error) {
	tx, err := l.txn(ctx)
	if err != nil {
		return nil, err
	}
	return tx.Query(ctx, q)
}

func (l *longTxn) Put(ctx context.Context, k ds.Key, v []byte) error {
	tx, err := l.txn(ctx)
	if err != nil {
		return err
	}
	if err := tx.Put(ctx, k, v); err != nil {
		return err
	}
	return l.wrote(ctx)
}

func (l *longTxn) Delete(ctx context.Context, k ds.Key) error {
	tx, err := l.txn(ctx)
	if err != nil {
		return err
	}
	if err := tx.Delete(ctx, k); err != nil {
		return err
	}
	return l.wrote(ctx)
}

func (l *longTxn) Sync(context.Context, ds.Key) error { return nil }
func (l *longTxn) Close() error                       { return nil }

func TestDatastore_NotFound(t *testing.T) {
	d, _ := newDatastore(t, backends[0].open)
	ctx := t.Context()
	k := ds.NewKey("/missing")
	if v, err := d.Get(ctx, k); err != ds.ErrNotFound || v != nil {
		t.Fatalf("Get = %v, %v; want nil, ds.ErrNotFound", v, err)
	}
	if n, err := d.GetSize(ctx, k); err != ds.ErrNotFound || n != -1 {
		t.Fatalf("GetSize = %d, %v; want -1, ds.ErrNotFound", n, err)
	}
	if ok, err := d.Has(ctx, k); err != nil || ok {
		t.Fatalf("Has = %v, %v; want false, nil", ok, err)
	}
	if err := d.Delete(ctx, k); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	// Has of a key that only has children.
	if err := d.Put(ctx, ds.NewKey("/missing/child"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if ok, err := d.Has(ctx, k); err != nil || ok {
		t.Fatalf("Has of a parent = %v, %v; want false, nil", ok, err)
	}
}

func TestDatastore_EmptyValue(t *testing.T) {
	d, _ := newDatastore(t, backends[0].open)
	ctx := t.Context()
	k := ds.NewKey("/empty")
	if err := d.Put(ctx, k, nil); err != nil {
		t.Fatal(err)
	}
	v, err := d.Get(ctx, k)
	if err != nil || v == nil || len(v) != 0 {
		t.Fatalf("Get = %#v, %v; want an empty non-nil value", v, err)
	}
	if n, err := d.GetSize(ctx, k); err != nil || n != 0 {
		t.Fatalf("GetSize = %d, %v; want 0", n, err)
	}
}

func TestDatastore_Close(t *testing.T) {
	ctx := t.Context()
	s := memory.New()
	defer s.Close()
	d := ipfsds.New(s)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := d.Get(ctx, ds.NewKey("/a")); !errors.Is(err, datastore.ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}
	if err := d.Put(ctx, ds.NewKey("/a"), nil); !errors.Is(err, datastore.ErrClosed) {
		t.Fatalf("Put after Close: %v, want ErrClosed", err)
	}
	// The store is the caller's and still open.
	if _, err := s.Set(ctx, "/a", nil); err != nil {
		t.Fatalf("store after adapter Close: %v", err)
	}

	owned := memory.New()
	d = ipfsds.New(owned, ipfsds.WithCloseStore())
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := owned.Set(ctx, "/a", nil); !errors.Is(err, datastore.ErrClosed) {
		t.Fatalf("store after Close WithCloseStore: %v, want ErrClosed", err)
	}
}
