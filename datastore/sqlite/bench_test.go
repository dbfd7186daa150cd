package sqlite

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/storetest"
)

// BenchmarkStore runs the standard workloads on this backend and reports,
// for writes, how many shared each SQLite commit. The side-by-side table with
// every backend and raw SQLite is package bench:
//
//	go test -run '^$' -bench . ./bench/
func BenchmarkStore(b *testing.B) {
	for _, w := range storetest.Workloads() {
		b.Run(w.Name, func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "bench.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if strings.HasPrefix(w.Name, "Set") {
				defer reportBatching(b, s)()
			}
			w.Run(b, s)
		})
	}
}

// reportBatching, deferred around a benchmark, reports how many writes
// shared each commit.
func reportBatching(b *testing.B, s datastore.Store) func() {
	st := s.(*Store)
	before := st.w.commits.Load()
	return func() {
		if n := st.w.commits.Load() - before; n > 0 && b.N > 0 {
			b.ReportMetric(float64(b.N)/float64(n), "writes/commit")
		}
	}
}
