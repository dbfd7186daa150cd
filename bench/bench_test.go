package bench_test

import (
	"testing"

	"github.com/univrs/peerstate/bench"
	"github.com/univrs/peerstate/datastore/storetest"
)

// BenchmarkStores runs every workload on every backend, then the raw SQLite
// reference, in one run:
//
//	go test -run '^$' -bench . -benchtime 2s ./bench/
func BenchmarkStores(b *testing.B) {
	for _, w := range storetest.Workloads() {
		b.Run(w.Name, func(b *testing.B) {
			for _, be := range bench.Backends() {
				b.Run(be.Name, func(b *testing.B) { bench.Run(b, be, w) })
			}
			b.Run("raw-sqlite", bench.RawSQLite(w.Name))
		})
	}
}
