package replica_test

import (
	"context"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/replica"
)

// Two replicas converge through catch-up: b asks a for what its watermarks
// say it lacks, applies it (every change's signature is checked), and
// advances its watermarks; then the other way round. Their state
// fingerprints then agree.
func Example_catchUp() {
	ctx := context.Background()
	// Each peer signs its changes with its libp2p identity key.
	ka, _, _ := crypto.GenerateEd25519Key(nil)
	kb, _, _ := crypto.GenerateEd25519Key(nil)
	a, _ := replica.New(ctx, memory.New(), replica.Config{Key: ka})
	b, _ := replica.New(ctx, memory.New(), replica.Config{Key: kb})
	defer a.Close()
	defer b.Close()

	a.Set(ctx, "/topics/chat/1", []byte("hello"))
	b.Set(ctx, "/topics/chat/1", []byte("hi")) // a concurrent write of the same version

	for _, pair := range [][2]*replica.Replica{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		have, _ := to.Watermarks(ctx)
		cover, _ := from.ChangesSince(ctx, have, to.Prefixes(), 100, func(cs []replica.Change) error {
			_, err := to.Apply(ctx, from.ID(), cs)
			return err
		})
		// The watermarks move no further than the signed heads prove.
		to.Advance(ctx, cover, from.Heads(cover.Sources()), from.Prefixes())
	}
	ea, _ := a.Get(ctx, "/topics/chat/1")
	eb, _ := b.Get(ctx, "/topics/chat/1")
	fmt.Println(string(ea.Value) == string(eb.Value), ea.Version == eb.Version)
	fmt.Println(a.StateFingerprint() == b.StateFingerprint())
	// Output:
	// true true
	// true
}
