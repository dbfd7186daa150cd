package ipfsds_test

import (
	"context"
	"fmt"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"

	"github.com/univrs/peerstate/datastore/ipfsds"
	"github.com/univrs/peerstate/datastore/memory"
)

// A go-datastore over a peerstate store: what IPFS components write through
// it lands in the store under the prefix, versioned and watchable.
func Example() {
	ctx := context.Background()
	store := memory.New()
	defer store.Close()
	d := ipfsds.New(store, ipfsds.WithPrefix("/ipfs"))
	defer d.Close()

	_ = d.Put(ctx, ds.NewKey("/peers/QmA/addrs"), []byte("/ip4/10.0.0.1/tcp/4001"))
	_ = d.Put(ctx, ds.NewKey("/peers/QmB/addrs"), []byte("/ip4/10.0.0.2/tcp/4001"))

	if _, err := d.Get(ctx, ds.NewKey("/peers/QmC/addrs")); err == ds.ErrNotFound {
		fmt.Println("QmC: not found")
	}

	// The store sees the same data, with versions, under the prefix.
	e, _ := store.Get(ctx, "/ipfs/peers/QmA/addrs")
	fmt.Printf("%s = %s (version %d)\n", e.Key, e.Value, e.Version)

	res, _ := d.Query(ctx, dsq.Query{Prefix: "/peers", Orders: []dsq.Order{dsq.OrderByKey{}}})
	entries, _ := res.Rest()
	for _, e := range entries {
		fmt.Printf("%s %s\n", e.Key, e.Value)
	}

	// Keys that are not valid store keys are escaped reversibly.
	k, _ := d.StoreKey(ds.NewKey("/bin/\x00\x01"))
	fmt.Println(k)
	// Output:
	// QmC: not found
	// /ipfs/peers/QmA/addrs = /ip4/10.0.0.1/tcp/4001 (version 1)
	// /peers/QmA/addrs /ip4/10.0.0.1/tcp/4001
	// /peers/QmB/addrs /ip4/10.0.0.2/tcp/4001
	// /ipfs/bin/%00%01
}

// A transaction reads its own writes and commits only if nothing it read has
// changed meanwhile.
func ExampleDatastore_NewTransaction() {
	ctx := context.Background()
	store := memory.New()
	defer store.Close()
	d := ipfsds.New(store)
	defer d.Close()
	_ = d.Put(ctx, ds.NewKey("/balance"), []byte("10"))

	tx, _ := d.NewTransaction(ctx, false)
	v, _ := tx.Get(ctx, ds.NewKey("/balance"))
	_ = tx.Put(ctx, ds.NewKey("/balance"), append(v, '0'))

	_ = d.Put(ctx, ds.NewKey("/balance"), []byte("7")) // a concurrent write

	err := tx.Commit(ctx)
	fmt.Println(err != nil)
	v, _ = d.Get(ctx, ds.NewKey("/balance"))
	fmt.Println(string(v))
	// Output:
	// true
	// 7
}
