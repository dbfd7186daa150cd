package migrate_test

import (
	"context"
	"fmt"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/migrate"
)

// Run at start-up: the first call migrates, the next finds nothing to do.
func Example() {
	ctx := context.Background()
	s := memory.New()
	defer s.Close()
	ms := []migrate.Migration{
		{Version: 1, Name: "default settings", Plan: func(ctx context.Context, s datastore.Store) ([]datastore.Op, error) {
			return []datastore.Op{datastore.OpSet("/settings/replicas", []byte("3"))}, nil
		}},
		{Version: 2, Name: "drop legacy keys", Up: func(ctx context.Context, s datastore.Store) error {
			p, err := s.List(ctx, "/legacy/", datastore.ListOptions{KeysOnly: true})
			for _, e := range p.Entries {
				if err := s.Delete(ctx, e.Key); err != nil {
					return err
				}
			}
			return err
		}},
	}
	res, err := migrate.Run(ctx, s, ms)
	fmt.Println(res.From, "->", res.To, res.Ran, err)
	res, err = migrate.Run(ctx, s, ms)
	fmt.Println(res.From, "->", res.To, res.Ran, err)
	// Output:
	// 0 -> 2 [1 2] <nil>
	// 2 -> 2 [] <nil>
}
