package etcd_test

import (
	"testing"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/etcd"
	"github.com/univrs/peerstate/datastore/storetest"
	"github.com/univrs/peerstate/internal/etcdtest"
)

// BenchmarkStore runs the standard workloads against an in-process etcd with
// fsync on; package bench runs them on every backend side by side.
func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) datastore.Store {
		srv := etcdtest.Start(b)
		return open(b, etcd.Config{Endpoints: srv.Endpoints})
	})
}
