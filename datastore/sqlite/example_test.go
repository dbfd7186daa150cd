package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/sqlite"
)

func ExampleOpen() {
	dir, err := os.MkdirTemp("", "peerstate-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	s, err := sqlite.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()

	ctx := context.Background()
	v, _ := s.Set(ctx, "/peers/a/info", []byte("hello"))
	_, err = s.CompareAndSet(ctx, "/peers/a/info", v+1, []byte("stale"))
	fmt.Println(v, err != nil)
	e, _ := s.Get(ctx, "/peers/a/info")
	p, _ := s.List(ctx, "/peers/", datastore.ListOptions{})
	fmt.Printf("%s v%d, %d entries at revision %d\n", e.Value, e.Version, len(p.Entries), p.Revision)
	// Output:
	// 1 true
	// hello v1, 1 entries at revision 1
}
