package replica_test

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/storetest"
	"github.com/univrs/peerstate/replica"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A replica is a datastore.Store like any other: it passes the conformance
// suite over the reference backend.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) datastore.Store {
		r, err := replica.New(context.Background(), memory.New(), replica.Config{ID: "peerA"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	})
}
