package reputation_test

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/reputation"
)

func Example() {
	store := memory.New()
	defer store.Close()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }

	book, err := reputation.New(store, reputation.DefaultParams(), reputation.WithClock(clock))
	if err != nil {
		fmt.Println(err)
		return
	}
	book.OnState(func(p peer.ID, from, to reputation.State) {
		fmt.Printf("OnState: %s -> %s\n", from, to)
	})
	p, _ := peer.Decode("12D3KooWGDYUHA2MyE1uLTABETgPSAwCUgDdkXfDCnbjByhFy6jE")

	book.Observe(p, reputation.Valid, 100) // +1
	book.Observe(p, reputation.Forged, 5)  // -100: the floor
	fmt.Printf("score %.2f, %s, recovers in %v\n", book.Score(p), book.State(p), book.RecoversIn(p).Round(time.Second))
	book.Check() // Run does this every FlushInterval

	now = now.Add(time.Hour) // one half-life, no event
	fmt.Printf("score %.2f, %s\n", book.Score(p), book.State(p))
	book.Check()

	if err := book.Flush(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	e, _ := store.Get(context.Background(), reputation.Key(p))
	r, _, _ := reputation.DecodeRecord(e.Key, e.Value)
	fmt.Printf("persisted at /peers/{id}/reputation: positive %.2f, negative %.2f, %d forged\n", r.Positive, r.Negative, r.Counts[reputation.Forged])
	// Output:
	// score -99.00, banned, recovers in 59m8s
	// OnState: ok -> banned
	// score -49.50, graylisted
	// OnState: banned -> graylisted
	// persisted at /peers/{id}/reputation: positive 0.50, negative -50.00, 5 forged
}
