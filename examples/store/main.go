// Command store is a small runnable tour of the peerstate storage contract:
// it opens a store, watches a prefix, writes, reads, lists and uses
// compare-and-set and a transaction.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "store:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	s := memory.New()
	defer s.Close()

	w, err := s.Watch(ctx, "/peers/*/info")
	if err != nil {
		return err
	}
	defer w.Close()

	v, err := s.Set(ctx, "/peers/alice/info", []byte(`{"addr":"/ip4/127.0.0.1/tcp/4001"}`))
	if err != nil {
		return err
	}
	fmt.Println("set /peers/alice/info, version", v)

	if _, err := s.CompareAndSet(ctx, "/peers/alice/info", v, []byte(`{"addr":"/ip4/127.0.0.1/tcp/4002"}`)); err != nil {
		return err
	}
	if _, err := s.CompareAndSet(ctx, "/peers/alice/info", v, []byte("stale")); errors.Is(err, datastore.ErrVersionConflict) {
		fmt.Println("stale compare-and-set refused:", err)
	}

	res, err := s.Txn(ctx,
		datastore.OpCheckVersion("/peers/bob/info", 0),
		datastore.OpSet("/peers/bob/info", []byte(`{"addr":"/ip4/127.0.0.1/tcp/4003"}`)),
		datastore.OpSet("/peers/bob/reputation", []byte(`{"score":0}`)),
	)
	if err != nil {
		return err
	}
	fmt.Println("txn committed at revision", res.Revision)

	page, err := s.List(ctx, "/peers/", datastore.ListOptions{})
	if err != nil {
		return err
	}
	for _, e := range page.Entries {
		fmt.Printf("  %s v%d %s\n", e.Key, e.Version, e.Value)
	}

	for range 3 {
		ev := <-w.Events()
		fmt.Printf("watch: %s %s v%d rev %d\n", ev.Type, ev.Key, ev.Version, ev.Revision)
	}
	return nil
}
