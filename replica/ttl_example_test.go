package replica_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/univrs/peerstate/codec"
	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/storetest"
	"github.com/univrs/peerstate/replica"
)

// An entry written with a time to live expires on every replica: the expiry
// travels with the signed change, and each peer applies it by its own
// clock, without replicating a delete.
func Example_ttl() {
	ctx := context.Background()
	clk := &storetest.Clock{} // an injected clock; time.Now by default
	ka, _, _ := crypto.GenerateEd25519Key(nil)
	kb, _, _ := crypto.GenerateEd25519Key(nil)
	a, _ := replica.New(ctx, memory.New(), replica.Config{Key: ka, Now: clk.Now})
	b, _ := replica.New(ctx, memory.New(), replica.Config{Key: kb, Now: clk.Now})
	defer a.Close()
	defer b.Close()

	a.SetTTL(ctx, "/reservations/gpu/0", []byte("job-17"), time.Minute)
	// b receives the change (gossip does this; here by hand).
	have, _ := b.Watermarks(ctx)
	a.ChangesSince(ctx, have, nil, 100, func(cs []replica.Change) error {
		_, err := b.Apply(ctx, a.ID(), cs)
		return err
	})
	e, _ := b.Get(ctx, "/reservations/gpu/0")
	fmt.Println(string(e.Value), e.ExpiresAt.Sub(e.UpdatedAt))

	clk.Advance(time.Minute)
	_, err := b.Get(ctx, "/reservations/gpu/0")
	fmt.Println(errors.Is(err, datastore.ErrKeyNotFound))
	fmt.Println(a.StateFingerprint() == b.StateFingerprint())
	// Output:
	// job-17 1m0s
	// true
	// true
}

// Schemas guard remote changes as well as local writes: the codec
// registry's check becomes the replica's Admit rule, composed with any
// other rule (a write policy, say) by AdmitAll.
func Example_schemas() {
	ctx := context.Background()
	reg := codec.NewRegistry()
	schema, _ := codec.JSONSchema([]byte(`{"type":"object","required":["cpu"]}`))
	reg.Validate("/workloads/*", schema)
	noDeletes := func(c replica.Change) error {
		if c.Deleted {
			return errors.New("workloads are never deleted")
		}
		return nil
	}
	k, _, _ := crypto.GenerateEd25519Key(nil)
	r, _ := replica.New(ctx, memory.New(), replica.Config{Key: k,
		Admit: replica.AdmitAll(replica.AdmitValues(reg.CheckChange), noDeletes)})
	defer r.Close()

	_, err := r.Set(ctx, "/workloads/web", []byte(`{"cpu":2}`))
	fmt.Println(err)
	_, err = r.Set(ctx, "/workloads/db", []byte(`{}`))
	fmt.Println(errors.Is(err, replica.ErrRefused), errors.Is(err, codec.ErrInvalidValue))
	err = r.Delete(ctx, "/workloads/web")
	fmt.Println(errors.Is(err, replica.ErrRefused))
	// Output:
	// <nil>
	// true true
	// true
}
