package etcd_test

import (
	"context"
	"fmt"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/etcd"
	"github.com/univrs/peerstate/internal/etcdtest"
)

func Example() {
	srv, err := etcdtest.New() // an in-process etcd; use your cluster's endpoints
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Stop()

	ctx := context.Background()
	s, err := etcd.Open(ctx, etcd.Config{Endpoints: srv.Endpoints, Root: "/example"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()

	v1, _ := s.Set(ctx, "/peers/a/info", []byte("hello"))
	_ = s.Delete(ctx, "/peers/a/info")
	// Versions continue across the delete, so a stale compare-and-set fails.
	v3, _ := s.CompareAndSet(ctx, "/peers/a/info", 0, []byte("again"))
	_, err = s.CompareAndSet(ctx, "/peers/a/info", v1, []byte("stale"))
	fmt.Println(v1, v3, err != nil && datastore.Retryable(err))
	// Output: 1 3 true
}
