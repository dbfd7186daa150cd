package storetest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/univrs/peerstate/datastore"
)

// The standard workloads, the same for every backend so their figures
// compare: Get and a 100-entry List page over BenchKeys keys, Set of
// BenchValueSize-byte values by one writer and by 64 concurrent writers,
// CompareAndSet by BenchCASWriters writers contending for BenchHotKeys keys,
// and a transaction of BenchTxnOps sets. Each reports ops/s besides ns/op.
const (
	BenchKeys      = 10_000
	BenchValueSize = 100

	BenchCASWriters = 16
	BenchHotKeys    = 4
	BenchTxnOps     = 5
)

// BenchKey returns the i-th benchmark key.
func BenchKey(i int) string { return fmt.Sprintf("/bench/%06d", i%BenchKeys) }

// BenchValue returns a benchmark value.
func BenchValue() []byte { return make([]byte, BenchValueSize) }

// Bench runs every workload as a sub-benchmark, each on a fresh store.
func Bench(b *testing.B, newStore func(b *testing.B) datastore.Store) {
	for _, w := range Workloads() {
		b.Run(w.Name, func(b *testing.B) { w.Run(b, newStore(b)) })
	}
}

// Workload is one standard benchmark.
type Workload struct {
	Name string
	Run  func(b *testing.B, s datastore.Store)
}

// Workloads returns the standard workloads in order.
func Workloads() []Workload {
	return []Workload{
		{"Get", BenchGet},
		{"ListPage", BenchListPage},
		{"Set", BenchSet},
		{"SetParallel64", func(b *testing.B, s datastore.Store) { BenchSetParallel(b, s, 64) }},
		{"CASContended", BenchCASContended},
		{"Txn5", BenchTxn},
	}
}

// BenchPopulate writes every benchmark key, 100 per transaction.
func BenchPopulate(b *testing.B, s datastore.Store) {
	b.Helper()
	for i := 0; i < BenchKeys; i += 100 {
		ops := make([]datastore.Op, 0, 100)
		for j := i; j < min(i+100, BenchKeys); j++ {
			ops = append(ops, datastore.OpSet(BenchKey(j), BenchValue()))
		}
		if _, err := s.Txn(context.Background(), ops...); err != nil {
			b.Fatal(err)
		}
	}
}

// ReportOps reports n operations' throughput as ops/s.
func ReportOps(b *testing.B, n int) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(n)/s, "ops/s")
	}
}

// BenchGet measures Get of existing keys, spread over the key space.
func BenchGet(b *testing.B, s datastore.Store) {
	ctx := context.Background()
	BenchPopulate(b, s)
	b.ResetTimer()
	i := 0
	for range b.N {
		if _, err := s.Get(ctx, BenchKey(i)); err != nil {
			b.Fatal(err)
		}
		i += 7919 // a prime: hop around the key space
	}
	ReportOps(b, b.N)
}

// BenchListPage measures reading a 100-entry List page.
func BenchListPage(b *testing.B, s datastore.Store) {
	ctx := context.Background()
	BenchPopulate(b, s)
	b.ResetTimer()
	i := 0
	for range b.N {
		p, err := s.List(ctx, "/bench/", datastore.ListOptions{Limit: 100, After: BenchKey(i % (BenchKeys - 100))})
		if err != nil || len(p.Entries) != 100 {
			b.Fatalf("List = %d entries, %v", len(p.Entries), err)
		}
		i += 7919
	}
	ReportOps(b, b.N)
}

// BenchSet measures one writer's durable Set.
func BenchSet(b *testing.B, s datastore.Store) {
	ctx := context.Background()
	for i := range b.N {
		if _, err := s.Set(ctx, BenchKey(i), BenchValue()); err != nil {
			b.Fatal(err)
		}
	}
	ReportOps(b, b.N)
}

// BenchSetParallel measures Set by `writers` concurrent writers.
func BenchSetParallel(b *testing.B, s datastore.Store, writers int) {
	ctx := context.Background()
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((writers + procs - 1) / procs)
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Set(ctx, BenchKey(int(next.Add(1))), BenchValue()); err != nil {
				b.Error(err)
				return
			}
		}
	})
	ReportOps(b, b.N)
}

// BenchHotKey returns the i-th of the BenchHotKeys keys CAS writers contend
// for.
func BenchHotKey(i int) string { return fmt.Sprintf("/hot/%d", i%BenchHotKeys) }

// BenchCASContended measures CompareAndSet by BenchCASWriters concurrent
// writers on BenchHotKeys keys: each op reads a hot key and compare-and-sets
// it, reading and retrying after a version conflict until it wins. An op is
// one successful CAS; the lost races are reported as conflicts/op.
func BenchCASContended(b *testing.B, s datastore.Store) {
	ctx := context.Background()
	for k := range BenchHotKeys {
		if _, err := s.Set(ctx, BenchHotKey(k), BenchValue()); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.ResetTimer()
	conflicts := RunContended(b, func() (bool, error) {
		key := BenchHotKey(int(next.Add(1)))
		e, err := s.Get(ctx, key)
		if err != nil {
			return false, err
		}
		_, err = s.CompareAndSet(ctx, key, e.Version, BenchValue())
		if errors.Is(err, datastore.ErrVersionConflict) {
			return false, nil
		}
		return err == nil, err
	})
	ReportOps(b, b.N)
	b.ReportMetric(float64(conflicts)/float64(b.N), "conflicts/op")
}

// RunContended runs b.N successful attempts of try over BenchCASWriters
// goroutines, retrying each lost one (try returned false) until it wins,
// and returns how many were lost.
func RunContended(b *testing.B, try func() (won bool, err error)) int64 {
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((BenchCASWriters + procs - 1) / procs)
	var conflicts atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			for {
				won, err := try()
				if err != nil {
					b.Error(err)
					return
				}
				if won {
					break
				}
				conflicts.Add(1)
			}
		}
	})
	return conflicts.Load()
}

// BenchTxn measures one writer's transactions of BenchTxnOps sets.
func BenchTxn(b *testing.B, s datastore.Store) {
	ctx := context.Background()
	ops := make([]datastore.Op, BenchTxnOps)
	for i := range b.N {
		for j := range ops {
			ops[j] = datastore.OpSet(BenchKey(i*BenchTxnOps+j), BenchValue())
		}
		if _, err := s.Txn(ctx, ops...); err != nil {
			b.Fatal(err)
		}
	}
	ReportOps(b, b.N)
}
