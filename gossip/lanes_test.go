package gossip

import (
	"context"
	"errors"
	"runtime"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

// An origin's lane holds one message at a time, in the order they came;
// another origin's lane is free meanwhile; a newcomer's backlog is bounded;
// an idle lane is dropped.
func TestOriginLanes(t *testing.T) {
	ctx := context.Background()
	lanes := newOriginLanes()
	a, b := peer.ID("a"), peer.ID("b")

	leaveA, err := lanes.enter(ctx, a, 0)
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan func())
	go func() {
		leave, err := lanes.enter(ctx, a, 0)
		if err != nil {
			t.Error(err)
		}
		entered <- leave
	}()
	leaveB, err := lanes.enter(ctx, b, 0) // b does not wait for a
	if err != nil {
		t.Fatal(err)
	}
	leaveB()

	waitUsers(t, lanes, a, 2)
	if _, err := lanes.enter(ctx, a, 2); !errors.Is(err, errBacklog) {
		t.Fatalf("a third message with a backlog of 2: %v, want errBacklog", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := lanes.enter(cancelled, a, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("enter with a cancelled context: %v", err)
	}
	select {
	case <-entered:
		t.Fatal("a's second message entered while the first held the lane")
	default:
	}
	leaveA()
	(<-entered)()
	if n := lanes.inFlight(); n != 0 {
		t.Fatalf("%d lanes left after every message left", n)
	}
}

func waitUsers(t *testing.T, o *originLanes, p peer.ID, n int) {
	t.Helper()
	for {
		o.mu.Lock()
		l := o.lanes[p]
		users := 0
		if l != nil {
			users = l.users
		}
		o.mu.Unlock()
		if users >= n {
			return
		}
		runtime.Gosched()
	}
}
