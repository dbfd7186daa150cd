package memory_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
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
