package api_test

import (
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/storetest"
)

// TestClient_Conformance runs the storage conformance suite against a
// Client talking to a Server over a memory store: the API keeps every
// guarantee of the contract across the wire.
func TestClient_Conformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) datastore.Store {
		return newEnv(t, envOptions{}).client
	})
	// Entries with a TTL across the wire (the server's store expires them).
	storetest.RunTTL(t, func(t *testing.T, now func() time.Time) datastore.Store {
		return newEnv(t, envOptions{now: now}).client
	})
}
