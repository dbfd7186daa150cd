package presence_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/presence"
)

// A reservation is held by one holder until it expires or is released.
func Example_reservation() {
	ctx := context.Background()
	s := memory.New()
	defer s.Close()
	r, _ := presence.Reserve(ctx, s, "/reservations/gpu/0", []byte("job-17"), time.Minute)
	_, err := presence.Reserve(ctx, s, "/reservations/gpu/0", []byte("job-18"), time.Minute)
	fmt.Println(errors.Is(err, presence.ErrTaken))
	fmt.Println(presence.Release(ctx, s, r))
	_, err = presence.Reserve(ctx, s, "/reservations/gpu/0", []byte("job-18"), time.Minute)
	fmt.Println(err)
	// Output:
	// true
	// <nil>
	// <nil>
}

// A presence record lives while its holder renews it.
func Example_announce() {
	ctx := context.Background()
	s := memory.New()
	defer s.Close()
	rec, _ := presence.Announce(ctx, s, "/peers/12D3KooW.../info", []byte(`{"addr":"/ip4/10.0.0.5/tcp/4001"}`), 30*time.Second)
	e, _ := s.Get(ctx, "/peers/12D3KooW.../info")
	fmt.Println(string(e.Value), !e.ExpiresAt.IsZero())
	rec.Close() // deleted at once, not left to expire
	_, err := s.Get(ctx, "/peers/12D3KooW.../info")
	fmt.Println(err != nil)
	// Output:
	// {"addr":"/ip4/10.0.0.5/tcp/4001"} true
	// true
}
