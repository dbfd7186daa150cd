package replica_test

import (
	"context"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore/storetest"
	"github.com/univrs/peerstate/replica"
)

// BenchmarkExpiry measures how late after ExpiresAt a replica's watchers
// get the Deleted event of an expired entry (late-ms, max-late-ms), over
// each local backend, on the wall clock. Get and List hide the entry from
// ExpiresAt on, whatever this latency.
func BenchmarkExpiry(b *testing.B) {
	for _, name := range []string{"memory", "sqlite", "badger"} {
		b.Run(name, func(b *testing.B) {
			r, err := replica.New(context.Background(), ttlBackends[name](b), replica.Config{Key: keyFor("bench")})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			storetest.BenchmarkExpiry(b, r, 20*time.Millisecond)
		})
	}
}
