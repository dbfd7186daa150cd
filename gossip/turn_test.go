package gossip

import (
	"slices"
	"testing"
)

// Background catch-ups get the turn in the order startSync queued them,
// whatever order their goroutines then run in. One that gives up waiting
// leaves the queue, or passes the turn on if it was handed it meanwhile.
func TestTurn_QueueOrder(t *testing.T) {
	var g Gossip
	g.mu.Lock()
	turns := make([]chan struct{}, 5)
	for i := range turns {
		turns[i] = g.queueTurn()
	}
	g.mu.Unlock()
	want := func(step string, held ...int) {
		t.Helper()
		for i, c := range turns {
			has := false
			select {
			case <-c:
				has = true
			default:
			}
			if has != slices.Contains(held, i) {
				t.Fatalf("%s: catch-up %d handed the turn: %v, want those of %v", step, i, has, held)
			}
		}
	}
	want("queued", 0)
	g.leaveTurn(turns[2]) // gives up while waiting
	want("2 left the queue", 0)
	g.passTurn()
	want("0 ended", 0, 1)
	g.passTurn()
	want("1 ended", 0, 1, 3)
	g.leaveTurn(turns[3]) // handed the turn, then gave up
	want("3 gave up its turn", 0, 1, 3, 4)
	g.passTurn()
	if g.turnHeld || len(g.turnQueue) != 0 {
		t.Fatalf("after the last catch-up: held %v, %d queued", g.turnHeld, len(g.turnQueue))
	}
	g.mu.Lock()
	next := g.queueTurn()
	g.mu.Unlock()
	select {
	case <-next:
	default:
		t.Fatal("a catch-up queued while nobody has the turn waits")
	}
}
