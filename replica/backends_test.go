package replica_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/badger"
	"github.com/univrs/peerstate/datastore/sqlite"
	"github.com/univrs/peerstate/datastore/storetest"
	"github.com/univrs/peerstate/replica"
)

// The replica works over the durable backends through the contract alone,
// and keeps its replication state across a reopen.
func TestConformance_Durable(t *testing.T) {
	backends := map[string]func(dir string) (datastore.Store, error){
		"sqlite": func(dir string) (datastore.Store, error) { return sqlite.Open(filepath.Join(dir, "state.db")) },
		"badger": func(dir string) (datastore.Store, error) { return badger.Open(dir) },
	}
	for name, open := range backends {
		t.Run(name, func(t *testing.T) {
			opener := func(t *testing.T, dir string) datastore.Store {
				local, err := open(dir)
				if err != nil {
					t.Fatal(err)
				}
				r, err := replica.New(context.Background(), local, replica.Config{ID: "peerA"})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { r.Close() })
				return r
			}
			storetest.Run(t, func(t *testing.T) datastore.Store { return opener(t, t.TempDir()) })
			storetest.RunDurable(t, opener)
			t.Run("SequenceSurvivesReopen", func(t *testing.T) {
				dir := t.TempDir()
				ctx := context.Background()
				r := opener(t, dir).(*replica.Replica)
				for range 3 {
					if _, err := r.Set(ctx, "/k", []byte("v")); err != nil {
						t.Fatal(err)
					}
				}
				r.Close()
				r = opener(t, dir).(*replica.Replica)
				if _, err := r.Set(ctx, "/k", []byte("w")); err != nil {
					t.Fatal(err)
				}
				c, _, err := r.Current(ctx, "/k")
				if err != nil || c.Seq != 4 || c.Version != 4 {
					t.Fatalf("after reopen the next write is %+v, %v; want sequence and version 4", c, err)
				}
				if v, _ := r.Watermarks(ctx); v["peerA"] != 4 {
					t.Fatalf("watermarks %v", v)
				}
			})
		})
	}
}
