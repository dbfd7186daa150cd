package badger

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/univrs/peerstate/datastore"
)

// The benchmarks open a fresh store with openTest (in b.TempDir()), so a
// cross-backend benchmark can run the same bodies over every backend.

const benchKeys = 1000

var benchValue = []byte(`{"addrs":["/ip4/127.0.0.1/tcp/4001"],"agent":"peerstate/0.1","score":0.75,"seen":"2026-01-01T00:00:00Z"}`)

// fill writes n keys /bench/00000.. in transactions of 100 ops.
func fill(b *testing.B, s datastore.Store, n int) {
	b.Helper()
	ctx := context.Background()
	for i := 0; i < n; i += 100 {
		var ops []datastore.Op
		for j := i; j < min(i+100, n); j++ {
			ops = append(ops, datastore.OpSet(benchKey(j), benchValue))
		}
		if _, err := s.Txn(ctx, ops...); err != nil {
			b.Fatal(err)
		}
	}
}

func benchKey(i int) string { return fmt.Sprintf("/bench/%05d", i) }

func BenchmarkGet(b *testing.B) {
	s := openTest(b)
	fill(b, s, benchKeys)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		if _, err := s.Get(ctx, benchKey(i%benchKeys)); err != nil {
			b.Fatal(err)
		}
		i += 7
	}
}

func BenchmarkListPage(b *testing.B) {
	s := openTest(b)
	fill(b, s, benchKeys)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		p, err := s.List(ctx, "/bench/", datastore.ListOptions{Limit: 100, After: benchKey(i % 900)})
		if err != nil || len(p.Entries) != 100 {
			b.Fatalf("List = %d entries, %v", len(p.Entries), err)
		}
		i += 37
	}
}

func BenchmarkSet(b *testing.B) {
	s := openTest(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		if _, err := s.Set(ctx, benchKey(i%benchKeys), benchValue); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkSetParallel64 runs 64 concurrent writers; ns/op is per Set, so
// group commit shows as a lower figure than BenchmarkSet's.
func BenchmarkSetParallel64(b *testing.B) {
	s := openTest(b)
	benchWriters(b, s, 64)
}

// benchWriters shares b.N Sets among the given number of goroutines.
func benchWriters(b *testing.B, s datastore.Store, writers int) {
	b.Helper()
	ctx := context.Background()
	var n atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := range writers {
		wg.Go(func() {
			for {
				i := n.Add(1)
				if i > int64(b.N) {
					return
				}
				if _, err := s.Set(ctx, benchKey((w*131+int(i))%benchKeys), benchValue); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
}
