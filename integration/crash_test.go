package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the driver of the integrity check

	"github.com/univrs/peerstate/api"
	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/badger"
)

// envInt reads a count from the environment (the soak targets raise them),
// or def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("$%s=%q: want a positive count", name, v)
	}
	return n
}

// acks is what the daemon acknowledged: unique keys with their values, and
// per writer the highest counter value acknowledged.
type acks struct {
	mu       sync.Mutex
	keys     map[string]string
	counters map[string]int
}

func (a *acks) key(k, v string) {
	a.mu.Lock()
	a.keys[k] = v
	a.mu.Unlock()
}

func (a *acks) counter(k string, n int) {
	a.mu.Lock()
	a.counters[k] = max(a.counters[k], n)
	a.mu.Unlock()
}

func (a *acks) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.keys) + len(a.counters)
}

// lost returns every acknowledged write the store does not hold: a missing
// key, another value, or a counter below what was acknowledged.
func (a *acks) lost(ctx context.Context, get func(context.Context, string) (datastore.Entry, error)) ([]string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var lost []string
	for k, v := range a.keys {
		e, err := get(ctx, k)
		if errors.Is(err, datastore.ErrKeyNotFound) {
			lost = append(lost, k+" missing")
			continue
		}
		if err != nil {
			return nil, err
		}
		if string(e.Value) != v {
			lost = append(lost, fmt.Sprintf("%s = %q, acknowledged %q", k, e.Value, v))
		}
	}
	for k, n := range a.counters {
		e, err := get(ctx, k)
		if err != nil && !errors.Is(err, datastore.ErrKeyNotFound) {
			return nil, err
		}
		if got, _ := strconv.Atoi(string(e.Value)); err != nil || got < n {
			lost = append(lost, fmt.Sprintf("%s = %q, acknowledged %d", k, e.Value, n))
		}
	}
	return lost, nil
}

// load writes through c until ctx ends: each writer a fresh key per write
// and its own counter key, recording what was acknowledged.
func load(ctx context.Context, c *api.Client, a *acks, round, writers int) *sync.WaitGroup {
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctr := fmt.Sprintf("/load/ctr/r%d/w%d", round, g)
			for n := 0; ctx.Err() == nil; n++ {
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				key, val := fmt.Sprintf("/load/%d/w%d/%d", round, g, n), fmt.Sprintf("v%d-%d-%d", round, g, n)
				if _, err := c.Set(rctx, key, []byte(val)); err == nil {
					a.key(key, val)
				} else {
					time.Sleep(10 * time.Millisecond) // the daemon is gone or busy
				}
				seq := round*1_000_000 + n
				if _, err := c.Set(rctx, ctr, []byte(strconv.Itoa(seq))); err == nil {
					a.counter(ctr, seq)
				}
				cancel()
			}
		}()
	}
	return &wg
}

// TestCrash_SIGKILLUnderLoad kills the daemon with SIGKILL while four
// clients write through the API, many times over, on SQLite and Badger.
// After every restart each acknowledged write is there; at the end SQLite's
// integrity_check is ok and Badger opens clean. Figures: kills,
// acknowledged writes, lost (must be 0).
func TestCrash_SIGKILLUnderLoad(t *testing.T) {
	kills := envInt(t, "PEERSTATE_CRASH_KILLS", 8)
	for _, backend := range []string{"sqlite", "badger"} {
		t.Run(backend, func(t *testing.T) {
			data := t.TempDir()
			a := &acks{keys: map[string]string{}, counters: map[string]int{}}
			rng := rand.New(rand.NewPCG(uint64(kills), 7))
			for round := range kills {
				d := launch(t, "--data", data, "--backend", backend, "--listen", "/ip4/127.0.0.1/tcp/0")
				c := d.client()
				if lost, err := a.lost(ctxT(t, time.Minute), c.Get); err != nil || len(lost) > 0 {
					t.Fatalf("after kill %d: %d acknowledged writes lost (%v): %v", round, len(lost), err, firstN(lost, 5))
				}
				ctx, cancel := context.WithCancel(context.Background())
				wg := load(ctx, c, a, round, 4)
				before := a.count()
				deadline := time.Now().Add(30 * time.Second)
				for a.count() < before+40 && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond) // kill at a random point
				d.kill()
				cancel()
				wg.Wait()
			}
			d := launch(t, "--data", data, "--backend", backend, "--listen", "/ip4/127.0.0.1/tcp/0")
			lost, err := a.lost(ctxT(t, time.Minute), d.client().Get)
			if err != nil {
				t.Fatal(err)
			}
			d.kill()
			t.Logf("crash: backend=%s kills=%d acknowledged=%d lost=%d", backend, kills, a.count(), len(lost))
			if len(lost) > 0 {
				t.Fatalf("lost: %v", firstN(lost, 10))
			}
			switch backend {
			case "sqlite":
				checkSQLite(t, filepath.Join(data, "state.db"))
			case "badger":
				checkBadger(t, filepath.Join(data, "badger"))
			}
		})
	}
}

// checkSQLite runs PRAGMA integrity_check on a database a SIGKILL left.
func checkSQLite(t *testing.T, path string) {
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil {
		t.Fatal(err)
	}
	if res != "ok" {
		t.Fatalf("integrity_check: %s", res)
	}
}

// checkBadger opens the Badger directory a SIGKILL left, directly, and
// lists what the load wrote.
func checkBadger(t *testing.T, dir string) {
	s, err := badger.Open(dir)
	if err != nil {
		t.Fatalf("badger does not open clean: %v", err)
	}
	defer s.Close()
	p, err := s.List(ctxT(t, time.Minute), "/load/", datastore.ListOptions{Limit: 10})
	if err != nil || len(p.Entries) == 0 {
		t.Fatalf("list after reopen: %d entries, %v", len(p.Entries), err)
	}
}

// firstN returns at most n of ss, for a failure message.
func firstN(ss []string, n int) []string { return ss[:min(n, len(ss))] }
