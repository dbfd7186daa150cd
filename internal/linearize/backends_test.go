package linearize_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/univrs/peerstate/api"
	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/badger"
	"github.com/univrs/peerstate/datastore/etcd"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/sqlite"
	"github.com/univrs/peerstate/internal/etcdtest"
	"github.com/univrs/peerstate/internal/linearize"
	"github.com/univrs/peerstate/replica"
)

// testKey returns a fresh Ed25519 identity: a replica signs every change.
func testKey(t *testing.T) crypto.PrivKey {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// histories per target in CI; each is checked on its own.
const histories = 4

// checkTarget runs histories workloads against store and fails on any
// history that is not linearizable. It logs the figures: histories,
// operations, unknown outcomes, violations.
func checkTarget(t *testing.T, s linearize.Store, w linearize.Workload) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var results []linearize.Result
	errs := map[string]int{}
	for i := range histories {
		w.Seed = uint64(i) + 1
		w.Prefix = fmt.Sprintf("/lin/%d", i)
		h := linearize.Run(ctx, s, w)
		if ctx.Err() != nil {
			t.Fatalf("history %d: the workload did not finish: %v", i, ctx.Err())
		}
		res := linearize.Check(h, time.Minute)
		results = append(results, res)
		if !res.Ok() {
			path := filepath.Join(t.TempDir(), "history.html")
			if err := res.Visualize(path); err != nil {
				t.Logf("visualize: %v", err)
			}
			t.Errorf("history %d: %v (errors %v); see %s", i, res, h.Errors, path)
		}
		for k, v := range h.Errors {
			errs[k] += v
		}
	}
	t.Logf("linearizability %s: %s; errors that left an outcome unknown: %v", strings.TrimPrefix(t.Name(), "TestLinearizable_"), linearize.Summary(results), errs)
}

var workload = linearize.Workload{Clients: 4, Ops: 120, Groups: 3, KeysPerGroup: 3, TimeoutEvery: 25}

func TestLinearizable_Memory(t *testing.T) {
	s := memory.New()
	defer s.Close()
	checkTarget(t, s, workload)
}

func TestLinearizable_SQLite(t *testing.T) {
	s, err := sqlite.Open(filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkTarget(t, s, workload)
}

func TestLinearizable_Badger(t *testing.T) {
	s, err := badger.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkTarget(t, s, workload)
}

func TestLinearizable_Etcd(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.WithoutFsync())
	s, err := etcd.Open(context.Background(), etcd.Config{Endpoints: srv.Endpoints, Root: "/lin-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkTarget(t, s, workload)
}

// The replica over a local store is linearizable for its local clients.
func TestLinearizable_Replica(t *testing.T) {
	local, err := sqlite.Open(filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	r, err := replica.New(context.Background(), local, replica.Config{Key: testKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkTarget(t, r, workload)
}

// The HTTP API's Go client, through a server on a replica over SQLite, as
// the daemon serves it.
func TestLinearizable_API(t *testing.T) {
	local, err := sqlite.Open(filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	r, err := replica.New(context.Background(), local, replica.Config{Key: testKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	srv := api.NewServer(r, nil, api.ServerConfig{Backend: "sqlite", Logger: slog.New(slog.DiscardHandler)})
	defer srv.Close()
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	c, err := api.New(hs.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkTarget(t, c, workload)
}

// Every target implements the whole Store the workload needs.
var (
	_ linearize.Store = datastore.Store(nil)
	_ linearize.Store = (*api.Client)(nil)
)
