package badger

import (
	"testing"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/storetest"
)

// BenchmarkStore runs the standard workloads on this backend; package bench
// runs them on every backend side by side.
func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) datastore.Store { return openTest(b) })
}
