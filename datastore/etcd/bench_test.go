package etcd_test

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/etcd"
	"github.com/univrs/peerstate/internal/etcdtest"
)

// The benchmarks run against their own in-process etcd with fsync on, so
// the figures compare with the other durable backends. Compare them side by
// side in one run; the machine is shared.

func benchStore(b *testing.B) *etcd.Store {
	b.Helper()
	srv := etcdtest.Start(b)
	return open(b, etcd.Config{Endpoints: srv.Endpoints})
}

var benchValue = []byte("a value of a hundred bytes......................................................................")

func BenchmarkGet(b *testing.B) {
	s := benchStore(b)
	ctx := ctxT(b)
	if _, err := s.Set(ctx, "/bench/k", benchValue); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.Get(ctx, "/bench/k"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkListPage(b *testing.B) {
	s := benchStore(b)
	ctx := ctxT(b)
	ops := make([]datastore.Op, 100)
	for i := range ops {
		ops[i] = datastore.OpSet(fmt.Sprintf("/bench/list/%03d", i), benchValue)
	}
	if _, err := s.Txn(ctx, ops...); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		p, err := s.List(ctx, "/bench/list/", datastore.ListOptions{Limit: 100})
		if err != nil || len(p.Entries) != 100 {
			b.Fatalf("List = %d entries, %v", len(p.Entries), err)
		}
	}
}

func BenchmarkSet(b *testing.B) {
	s := benchStore(b)
	ctx := ctxT(b)
	i := 0
	for b.Loop() {
		if _, err := s.Set(ctx, fmt.Sprintf("/bench/set/%d", i%1000), benchValue); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkSetParallel64 runs 64 concurrent writers, each on its own keys;
// etcd batches their commits into shared fsyncs.
func BenchmarkSetParallel64(b *testing.B) {
	s := benchStore(b)
	ctx := ctxT(b)
	var writers atomic.Int64
	// RunParallel starts parallelism × GOMAXPROCS goroutines.
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((64 + procs - 1) / procs)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := writers.Add(1)
		i := 0
		for pb.Next() {
			if _, err := s.Set(ctx, fmt.Sprintf("/bench/par/%d/%d", w, i%100), benchValue); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}
