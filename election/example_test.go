package election_test

import (
	"context"
	"fmt"
	"time"

	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/election"
)

// Two candidates on one store: the first wins, resigns, and the second takes
// over with a higher term number.
func Example() {
	ctx := context.Background()
	s := memory.New()
	defer s.Close()
	a, _ := election.New(s, election.Config{ID: "node-a", TTL: 2 * time.Second})
	b, _ := election.New(s, election.Config{ID: "node-b", TTL: 2 * time.Second})
	defer a.Close()
	defer b.Close()

	termA, _ := a.Campaign(ctx)
	l, _ := b.Leader(ctx)
	fmt.Println("leader:", l.Holder)

	won := make(chan *election.Term)
	go func() {
		t, _ := b.Campaign(ctx)
		won <- t
	}()
	termA.Resign(ctx)
	termB := <-won
	l, _ = a.Leader(ctx)
	fmt.Println("leader:", l.Holder, "newer term:", termB.Number > termA.Number)
	// Output:
	// leader: node-a
	// leader: node-b newer term: true
}
