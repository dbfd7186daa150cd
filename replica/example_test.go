package replica_test

import (
	"context"
	"fmt"

	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/replica"
)

// Two replicas converge through catch-up: b asks a for what its watermarks
// say it lacks, applies it, and advances its watermarks.
func Example_catchUp() {
	ctx := context.Background()
	a, _ := replica.New(ctx, memory.New(), replica.Config{ID: "peerA"})
	b, _ := replica.New(ctx, memory.New(), replica.Config{ID: "peerB"})
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
		to.Advance(ctx, cover, from.Prefixes())
	}
	ea, _ := a.Get(ctx, "/topics/chat/1")
	eb, _ := b.Get(ctx, "/topics/chat/1")
	fmt.Println(string(ea.Value) == string(eb.Value), ea.Version == eb.Version)
	// Output: true true
}
