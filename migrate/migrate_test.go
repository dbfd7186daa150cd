package migrate_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/internal/replicatest"
	"github.com/univrs/peerstate/migrate"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The migrations of a small application: 1 seeds a counter, 2 renames
// /old/* to /new/*, 3 adds one to the counter (not idempotent on its own:
// only Run's once-only guarantee keeps it right).
func appMigrations(calls *atomic.Int32) []migrate.Migration {
	return []migrate.Migration{
		{Version: 1, Name: "seed counter", Plan: func(ctx context.Context, s datastore.Store) ([]datastore.Op, error) {
			calls.Add(1)
			return []datastore.Op{datastore.OpSet("/app/counter", []byte("10"))}, nil
		}},
		{Version: 2, Name: "rename old to new", Up: func(ctx context.Context, s datastore.Store) error {
			calls.Add(1)
			p, err := s.List(ctx, "/old/", datastore.ListOptions{})
			if err != nil {
				return err
			}
			for _, e := range p.Entries {
				// Idempotent: create the new key if absent, then drop the old.
				nk := "/new/" + strings.TrimPrefix(e.Key, "/old/")
				if _, err := s.CreateIfNotExists(ctx, nk, e.Value); err != nil && !errors.Is(err, datastore.ErrAlreadyExists) {
					return err
				}
				if err := s.Delete(ctx, e.Key); err != nil && !errors.Is(err, datastore.ErrKeyNotFound) {
					return err
				}
			}
			return nil
		}},
		{Version: 3, Name: "bump counter", Plan: func(ctx context.Context, s datastore.Store) ([]datastore.Op, error) {
			calls.Add(1)
			e, err := s.Get(ctx, "/app/counter")
			if err != nil {
				return nil, err
			}
			n, _ := strconv.Atoi(string(e.Value))
			return []datastore.Op{
				datastore.OpCheckVersion("/app/counter", e.Version),
				datastore.OpSet("/app/counter", []byte(strconv.Itoa(n+1))),
			}, nil
		}},
	}
}

func get(t *testing.T, s datastore.Store, key string) string {
	t.Helper()
	e, err := s.Get(context.Background(), key)
	if errors.Is(err, datastore.ErrKeyNotFound) {
		return "<absent>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(e.Value)
}

func TestRun_OnceAndIdempotent(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	defer s.Close()
	s.Set(ctx, "/old/a", []byte("A"))
	var calls atomic.Int32
	res, err := migrate.Run(ctx, s, appMigrations(&calls))
	if err != nil {
		t.Fatal(err)
	}
	if res.From != 0 || res.To != 3 || fmt.Sprint(res.Ran) != "[1 2 3]" || calls.Load() != 3 {
		t.Fatalf("first run: %+v, %d calls", res, calls.Load())
	}
	if get(t, s, "/app/counter") != "11" || get(t, s, "/new/a") != "A" || get(t, s, "/old/a") != "<absent>" || get(t, s, migrate.VersionKey) != "3" {
		t.Fatal("data not migrated")
	}
	res, err = migrate.Run(ctx, s, appMigrations(&calls))
	if err != nil || len(res.Ran) != 0 || res.From != 3 || calls.Load() != 3 {
		t.Fatalf("second run: %+v, %v, %d calls", res, err, calls.Load())
	}
	if get(t, s, "/app/counter") != "11" {
		t.Fatal("second run changed data")
	}
	// The idempotent Up migration may run again (as after a crash between
	// its writes and the version bump) without harm.
	if err := appMigrations(&calls)[1].Up(ctx, s); err != nil || get(t, s, "/new/a") != "A" {
		t.Fatal("rerun of Up", err)
	}
}

func TestRun_FailureStopsWithoutDamage(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	defer s.Close()
	var calls atomic.Int32
	ms := appMigrations(&calls)
	if _, err := migrate.Run(ctx, s, ms[:1]); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk says no")
	var thirdRan bool
	broken := []migrate.Migration{ms[0],
		{Version: 2, Name: "half-done", Plan: func(ctx context.Context, s datastore.Store) ([]datastore.Op, error) {
			// Writes two keys; the check fails, so neither may land.
			return []datastore.Op{
				datastore.OpSet("/app/counter", []byte("999")),
				datastore.OpSet("/app/extra", []byte("x")),
				datastore.OpCheckVersion("/app/missing", 5),
			}, nil
		}},
		{Version: 3, Name: "never", Plan: func(ctx context.Context, s datastore.Store) ([]datastore.Op, error) {
			thirdRan = true
			return nil, nil
		}},
	}
	res, err := migrate.Run(ctx, s, broken)
	var me *migrate.Error
	if !errors.Is(err, migrate.ErrFailed) || !errors.As(err, &me) || me.Version != 2 || !strings.Contains(err.Error(), "migration 2 (half-done)") {
		t.Fatalf("err = %v", err)
	}
	t.Log(err)
	if thirdRan || res.To != 1 || get(t, s, migrate.VersionKey) != "1" || get(t, s, "/app/counter") != "10" || get(t, s, "/app/extra") != "<absent>" {
		t.Fatalf("damage: %+v counter=%s extra=%s", res, get(t, s, "/app/counter"), get(t, s, "/app/extra"))
	}
	// An Up that fails leaves the version where it was, too.
	broken[1] = migrate.Migration{Version: 2, Name: "up fails", Up: func(context.Context, datastore.Store) error { return boom }}
	if _, err := migrate.Run(ctx, s, broken); !errors.Is(err, boom) || get(t, s, migrate.VersionKey) != "1" {
		t.Fatal(err)
	}
	// Fixed, it completes from there.
	if res, err := migrate.Run(ctx, s, ms); err != nil || fmt.Sprint(res.Ran) != "[2 3]" || get(t, s, "/app/counter") != "11" {
		t.Fatal(res, err)
	}
}

func TestRun_RefusesBadInput(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	defer s.Close()
	plan := func(context.Context, datastore.Store) ([]datastore.Op, error) { return nil, nil }
	for name, ms := range map[string][]migrate.Migration{
		"gap":     {{Version: 1, Plan: plan}, {Version: 3, Plan: plan}},
		"neither": {{Version: 1}},
		"both":    {{Version: 1, Plan: plan, Up: func(context.Context, datastore.Store) error { return nil }}},
	} {
		if _, err := migrate.Run(ctx, s, ms); !errors.Is(err, migrate.ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	s.Set(ctx, migrate.VersionKey, []byte("7"))
	if _, err := migrate.Run(ctx, s, []migrate.Migration{{Version: 1, Plan: plan}}); !errors.Is(err, migrate.ErrTooNew) {
		t.Error(err)
	}
	s.Set(ctx, migrate.VersionKey, []byte("seven"))
	if _, err := migrate.Run(ctx, s, []migrate.Migration{{Version: 1, Plan: plan}}); !errors.Is(err, migrate.ErrBadVersion) {
		t.Error(err)
	}
	s.Set(ctx, migrate.VersionKey, []byte("0"))
	selfish := []migrate.Migration{{Version: 1, Plan: func(context.Context, datastore.Store) ([]datastore.Op, error) {
		return []datastore.Op{datastore.OpSet(migrate.VersionKey, []byte("9"))}, nil
	}}}
	if _, err := migrate.Run(ctx, s, selfish); !errors.Is(err, migrate.ErrInvalid) || get(t, s, migrate.VersionKey) != "0" {
		t.Error(err)
	}
}

// Many runners on one store: each migration commits exactly once.
func TestRun_ConcurrentRunnersOneStore(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	defer s.Close()
	var calls atomic.Int32
	var committed atomic.Int32
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			res, err := migrate.Run(ctx, s, appMigrations(&calls))
			if err != nil || res.To != 3 {
				t.Error(res, err)
			}
			committed.Add(int32(len(res.Ran)))
		})
	}
	wg.Wait()
	if committed.Load() != 3 || get(t, s, "/app/counter") != "11" {
		t.Fatalf("%d commits, counter %s", committed.Load(), get(t, s, "/app/counter"))
	}
}

// Two replicated peers migrating at once converge to one state.
func TestRun_TwoPeersConverge(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	net, err := replicatest.New(2, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	net.Replicas[0].Set(ctx, "/old/a", []byte("A"))
	net.Replicas[0].Set(ctx, "/old/b", []byte("B"))
	if err := net.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, r := range net.Replicas {
		wg.Go(func() {
			var calls atomic.Int32
			if _, err := migrate.Run(ctx, r, appMigrations(&calls)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := net.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	h0, n0, _ := replicatest.StateHash(ctx, net.Replicas[0], "/")
	h1, n1, _ := replicatest.StateHash(ctx, net.Replicas[1], "/")
	if h0 != h1 {
		t.Fatalf("peers differ: %d vs %d entries", n0, n1)
	}
	for _, r := range net.Replicas {
		if get(t, r, migrate.VersionKey) != "3" || get(t, r, "/new/b") != "B" || get(t, r, "/old/a") != "<absent>" || get(t, r, "/app/counter") != "11" {
			t.Fatalf("%s: version %s counter %s", r.ID(), get(t, r, migrate.VersionKey), get(t, r, "/app/counter"))
		}
	}
}
