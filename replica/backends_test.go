package replica_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/badger"
	"github.com/univrs/peerstate/datastore/memory"
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
				r, err := replica.New(context.Background(), local, replica.Config{Key: keyFor("peerA")})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { r.Close() })
				return r
			}
			storetest.Run(t, func(t *testing.T) datastore.Store { return opener(t, t.TempDir()) })
			storetest.RunDurable(t, opener)
			t.Run("GenerationAfterReopen", func(t *testing.T) {
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
				// A reopened replica writes under a new generation, so no
				// (generation, sequence) pair is used twice, whatever the
				// store remembered.
				c, _, err := r.Current(ctx, "/k")
				if err != nil || c.Gen != r.Generation() || c.Seq != 1 || c.Version != 4 {
					t.Fatalf("after reopen the next write is %+v, %v; want version 4, seq 1 of generation %d", c, err, r.Generation())
				}
				if v, _ := r.Watermarks(ctx); v[c.Source()] != c.Seq {
					t.Fatalf("watermarks %v, want %s at %d", v, c.Source(), c.Seq)
				}
			})
		})
	}
}

// Concurrent local writes commit concurrently over a durable backend: every
// one is acknowledged with a distinct sequence number, the watermark covers
// them all without gaps, and a peer fed their broadcasts converges.
func TestReplica_ConcurrentLocalWrites(t *testing.T) {
	ctx := context.Background()
	local, err := sqlite.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var sent []replica.Change
	a, err := replica.New(ctx, local, replica.Config{Key: keyFor("a"), Broadcaster: broadcastFunc(func(cs []replica.Change) {
		mu.Lock()
		sent = append(sent, cs...)
		mu.Unlock()
	})})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	const writers, writes = 16, 40
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range writes {
				key := fmt.Sprintf("/c/%d", (g*writes+i)%50) // keys shared between writers
				if _, err := a.Set(ctx, key, []byte(fmt.Sprint(g, i))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for _, c := range sent {
		if seen[c.Seq] {
			t.Fatalf("sequence %d used twice", c.Seq)
		}
		seen[c.Seq] = true
	}
	if len(sent) != writers*writes {
		t.Fatalf("%d changes broadcast, want %d", len(sent), writers*writes)
	}
	v, _ := a.Watermarks(ctx)
	if src := replica.SourceOf(a.ID(), a.Generation()); v[src] < writers*writes {
		t.Fatalf("watermark %d below the %d writes", v[src], writers*writes)
	}
	b, err := replica.New(ctx, memory.New(), replica.Config{Key: keyFor("b")})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Apply(ctx, "a", sent); err != nil {
		t.Fatal(err)
	}
	if ha, _ := stateHash(t, a); ha != func() string { h, _ := stateHash(t, b); return h }() {
		t.Fatal("the peer fed every broadcast differs")
	}
}
