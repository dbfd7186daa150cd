package memory_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/storetest"
)

// Versions, compare-and-set, a transaction and a watch resumed from a List.
func Example() {
	ctx := context.Background()
	s := memory.New()
	defer s.Close()

	v, _ := s.Set(ctx, "/peers/alice/info", []byte("addr-1"))
	fmt.Println("version", v)
	if _, err := s.CompareAndSet(ctx, "/peers/alice/info", 0, []byte("x")); errors.Is(err, datastore.ErrVersionConflict) {
		fmt.Println("only-if-absent refused: the key exists")
	}
	page, _ := s.List(ctx, "/peers/", datastore.ListOptions{})
	w, _ := s.Watch(ctx, "/peers/*/info", datastore.FromRevision(page.Revision))
	defer w.Close()
	s.Txn(ctx, datastore.OpCheckVersion("/peers/alice/info", v), datastore.OpSet("/peers/alice/info", []byte("addr-2")))
	s.Delete(ctx, "/peers/alice/info")
	for range 2 {
		ev := <-w.Events()
		fmt.Println(ev.Type, ev.Key, "version", ev.Version)
	}
	// Output:
	// version 1
	// only-if-absent refused: the key exists
	// updated /peers/alice/info version 2
	// deleted /peers/alice/info version 3
}

// An entry with a time to live, on an injected clock: it expires when the
// clock passes ExpiresAt, and watchers see a Deleted event.
func ExampleStore_SetTTL() {
	ctx := context.Background()
	clock := &storetest.Clock{}
	s := memory.New(datastore.WithClock(clock.Now))
	defer s.Close()

	w, _ := s.Watch(ctx, "/reservations/")
	defer w.Close()
	s.SetTTL(ctx, "/reservations/gpu-0", []byte("job-17"), 30*time.Second)
	e, _ := s.Get(ctx, "/reservations/gpu-0")
	fmt.Println("expires in", e.ExpiresAt.Sub(clock.Now()))

	clock.Advance(31 * time.Second)
	s.ExpireDue(ctx) // or wait: the store's own loop notices within a second
	_, err := s.Get(ctx, "/reservations/gpu-0")
	fmt.Println("gone:", errors.Is(err, datastore.ErrKeyNotFound))
	for range 2 {
		ev := <-w.Events()
		fmt.Println(ev.Type, ev.Key, "version", ev.Version)
	}
	// Output:
	// expires in 30s
	// gone: true
	// created /reservations/gpu-0 version 1
	// deleted /reservations/gpu-0 version 2
}
