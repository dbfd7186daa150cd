package api_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"

	"github.com/univrs/peerstate/api"
	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
)

// A daemon serves its store with NewServer; a Client reaches it and works
// like any datastore.Store, errors included.
func Example() {
	store := memory.New()
	defer store.Close()
	srv := api.NewServer(store, nil, api.ServerConfig{Backend: "memory", Logger: slog.New(slog.DiscardHandler)})
	defer srv.Close()
	hs := httptest.NewServer(srv.Handler()) // a daemon uses srv.Listen and srv.Serve
	defer hs.Close()

	c, err := api.New(hs.URL, "")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ctx := context.Background()

	v, _ := c.Set(ctx, "/peers/alice/info", []byte(`{"addr":"/ip4/10.0.0.1/tcp/4001"}`))
	fmt.Println("version", v)
	_, err = c.CompareAndSet(ctx, "/peers/alice/info", 7, []byte("stale"))
	fmt.Println(errors.Is(err, datastore.ErrVersionConflict), err)
	_, err = c.Get(ctx, "/peers/bob/info")
	fmt.Println(errors.Is(err, datastore.ErrKeyNotFound))
	st, _ := c.Status(ctx)
	fmt.Println("revision", st.Revision, "backend", st.Backend)
	// Output:
	// version 1
	// true version conflict: "/peers/alice/info" is at version 1, expected 7
	// true
	// revision 1 backend memory
}
