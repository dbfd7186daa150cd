package ipfsds_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/univrs/peerstate/datastore/ipfsds"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/sqlite"
)

// benchStores are compared side by side: go-datastore's own map datastore
// as the baseline, and the adapter over the memory and SQLite stores.
var benchStores = []struct {
	name string
	open func(b *testing.B) ds.Batching
}{
	{"map", func(b *testing.B) ds.Batching { return dssync.MutexWrap(ds.NewMapDatastore()) }},
	{"ipfsds-memory", func(b *testing.B) ds.Batching {
		d := ipfsds.New(memory.New(), ipfsds.WithCloseStore())
		b.Cleanup(func() { d.Close() })
		return d
	}},
	{"ipfsds-sqlite", func(b *testing.B) ds.Batching {
		s, err := sqlite.Open(filepath.Join(b.TempDir(), "state.db"))
		if err != nil {
			b.Fatal(err)
		}
		d := ipfsds.New(s, ipfsds.WithCloseStore())
		b.Cleanup(func() { d.Close() })
		return d
	}},
}

var benchValue = make([]byte, 256)

func benchKey(i int) ds.Key { return ds.NewKey(fmt.Sprintf("/providers/CIQ%08d/peer", i)) }

func BenchmarkPut(b *testing.B) {
	for _, st := range benchStores {
		b.Run(st.name, func(b *testing.B) {
			d := st.open(b)
			ctx := context.Background()
			for i := 0; b.Loop(); i++ {
				if err := d.Put(ctx, benchKey(i), benchValue); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkGet(b *testing.B) {
	for _, st := range benchStores {
		b.Run(st.name, func(b *testing.B) {
			d := st.open(b)
			ctx := context.Background()
			fill(b, d, 1000)
			for i := 0; b.Loop(); i++ {
				if _, err := d.Get(ctx, benchKey(i%1000)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBatch100 commits batches of 100 puts; one op is one batch.
func BenchmarkBatch100(b *testing.B) {
	for _, st := range benchStores {
		b.Run(st.name, func(b *testing.B) {
			d := st.open(b)
			ctx := context.Background()
			for i := 0; b.Loop(); i++ {
				bt, err := d.Batch(ctx)
				if err != nil {
					b.Fatal(err)
				}
				for j := range 100 {
					if err := bt.Put(ctx, benchKey(i*100+j), benchValue); err != nil {
						b.Fatal(err)
					}
				}
				if err := bt.Commit(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkQueryPrefix reads the 1,000 keys under a prefix, among 2,000.
func BenchmarkQueryPrefix(b *testing.B) {
	for _, st := range benchStores {
		b.Run(st.name, func(b *testing.B) {
			d := st.open(b)
			ctx := context.Background()
			fill(b, d, 1000)
			bt, _ := d.Batch(ctx)
			for i := range 1000 {
				_ = bt.Put(ctx, ds.NewKey(fmt.Sprintf("/other/%d", i)), benchValue)
			}
			if err := bt.Commit(ctx); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				res, err := d.Query(ctx, dsq.Query{Prefix: "/providers"})
				if err != nil {
					b.Fatal(err)
				}
				es, err := res.Rest()
				if err != nil || len(es) != 1000 {
					b.Fatalf("%d entries, %v", len(es), err)
				}
			}
		})
	}
}

func fill(b *testing.B, d ds.Batching, n int) {
	b.Helper()
	ctx := context.Background()
	bt, err := d.Batch(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		if err := bt.Put(ctx, benchKey(i), benchValue); err != nil {
			b.Fatal(err)
		}
	}
	if err := bt.Commit(ctx); err != nil {
		b.Fatal(err)
	}
}
