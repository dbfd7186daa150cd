// Package bench holds peerstate's benchmark suites, the same code whether
// `go test -bench` or `peerstate bench` runs them, and every figure is
// measured side by side in one run, so that it reads as a ratio on the
// same machine at the same moment:
//
//   - local (Table): the standard store workloads of package storetest on
//     every backend — memory, SQLite, Badger, the replication layer over
//     SQLite and over Badger, and etcd running in-process — next to raw
//     modernc.org/sqlite and raw Badger with the same durability settings.
//   - replication (Replication): 3 and 10 peers, real libp2p hosts on
//     loopback TCP in one process, one and all writing: write-to-visible
//     latency, writes per second visible everywhere and bytes per write per
//     receiver, next to a plain pubsub topic on the same peers.
//   - catchup (Catchup): a fresh peer joining 1 and 4 peers after 10k and
//     100k writes it missed: time and bytes next to the data's size.
//   - scale (Scale): Get, Set and a List page at 10k, 100k and 1M keys,
//     and memory and disk per key.
package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/badger"
	"github.com/univrs/peerstate/datastore/etcd"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/sqlite"
	"github.com/univrs/peerstate/datastore/storetest"
	"github.com/univrs/peerstate/internal/etcdtest"
	_ "github.com/univrs/peerstate/internal/protoconflict" // etcd and pubsub both register rpc.proto
	"github.com/univrs/peerstate/replica"
)

// Backend opens fresh stores of one kind.
type Backend struct {
	Name string
	// Open returns a new, empty store kept in dir, and what closes it.
	Open func(dir string) (datastore.Store, func(), error)
}

// overReplica opens the replication layer, without a network, over the
// store open returns.
func overReplica(open func(dir string) (datastore.Store, func(), error)) func(string) (datastore.Store, func(), error) {
	return func(dir string) (datastore.Store, func(), error) {
		local, closeLocal, err := open(dir)
		if err != nil {
			return nil, nil, err
		}
		key, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			closeLocal()
			return nil, nil, err
		}
		r, err := replica.New(context.Background(), local, replica.Config{Key: key})
		if err != nil {
			closeLocal()
			return nil, nil, err
		}
		return r, func() { r.Close() }, nil // closes local
	}
}

func openSQLite(dir string) (datastore.Store, func(), error) {
	s, err := sqlite.Open(filepath.Join(dir, "bench.db"))
	if err != nil {
		return nil, nil, err
	}
	return s, func() { s.Close() }, nil
}

func openBadger(dir string) (datastore.Store, func(), error) {
	s, err := badger.Open(dir)
	if err != nil {
		return nil, nil, err
	}
	return s, func() { s.Close() }, nil
}

// Backends returns every backend, in table order.
func Backends() []Backend {
	return []Backend{
		{"memory", func(string) (datastore.Store, func(), error) {
			s := memory.New()
			return s, func() { s.Close() }, nil
		}},
		{"sqlite", openSQLite},
		{"badger", openBadger},
		{"replica/sqlite", overReplica(openSQLite)},
		{"replica/badger", overReplica(openBadger)},
		{"etcd", func(dir string) (datastore.Store, func(), error) {
			srv, err := etcdtest.New(etcdtest.WithDir(dir))
			if err != nil {
				return nil, nil, err
			}
			s, err := etcd.Open(context.Background(), etcd.Config{Endpoints: srv.Endpoints})
			if err != nil {
				srv.Stop()
				return nil, nil, err
			}
			return s, func() { s.Close(); srv.Stop() }, nil
		}},
	}
}

// Run runs workload w on a fresh store of backend be.
func Run(b *testing.B, be Backend, w storetest.Workload) {
	s, closeStore, err := be.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer closeStore()
	w.Run(b, s)
}

// Contender is one column of the local table: a backend, or a raw
// reference that stores the same data without peerstate.
type Contender struct {
	Name string
	// Bench returns the benchmark of the named workload.
	Bench func(workload string) func(b *testing.B)
}

// Contenders returns every backend, then the raw references, in table
// order.
func Contenders() []Contender {
	var out []Contender
	for _, be := range Backends() {
		out = append(out, Contender{be.Name, func(workload string) func(b *testing.B) {
			return func(b *testing.B) { Run(b, be, workloadNamed(b, workload)) }
		}})
	}
	return append(out, Contender{"raw-sqlite", RawSQLite}, Contender{"raw-badger", RawBadger})
}

func workloadNamed(b *testing.B, name string) storetest.Workload {
	for _, w := range storetest.Workloads() {
		if w.Name == name {
			return w
		}
	}
	b.Fatalf("no workload %s", name)
	return storetest.Workload{}
}

// ValidBenchtime checks a target for each measurement the way go test's
// -benchtime takes it: a positive duration ("1s") or a count ("100x").
func ValidBenchtime(s string) error {
	if n, ok := strings.CutSuffix(s, "x"); ok {
		if v, err := strconv.Atoi(n); err != nil || v < 1 {
			return fmt.Errorf("bench: benchtime %q: want a positive count before the x", s)
		}
		return nil
	}
	if d, err := time.ParseDuration(s); err != nil || d <= 0 {
		return fmt.Errorf("bench: benchtime %q: want a positive duration or a count like 100x", s)
	}
	return nil
}

// measureMu serializes measurements: testing.Benchmark reads its target
// from the process's -test.benchtime flag.
var measureMu sync.Mutex

// measure runs fn with testing.Benchmark for benchtime. what names the
// measurement in the error if it fails.
func measure(benchtime, what string, fn func(b *testing.B)) (testing.BenchmarkResult, error) {
	if err := ValidBenchtime(benchtime); err != nil {
		return testing.BenchmarkResult{}, err
	}
	measureMu.Lock()
	defer measureMu.Unlock()
	testing.Init() // registers -test.benchtime; nothing once done
	if err := flag.Set("test.benchtime", benchtime); err != nil {
		return testing.BenchmarkResult{}, fmt.Errorf("bench: benchtime: %w", err)
	}
	var failed bool
	res := testing.Benchmark(func(b *testing.B) {
		defer func() { failed = b.Failed() }()
		fn(b)
	})
	if failed || res.N == 0 {
		return res, fmt.Errorf("bench: %s failed", what)
	}
	return res, nil
}

// nsPerOp returns the exact mean time per op of r.
func nsPerOp(r testing.BenchmarkResult) float64 { return float64(r.T.Nanoseconds()) / float64(r.N) }

// Result is one measured cell of the local table.
type Result struct {
	Workload  string  `json:"workload"`
	Backend   string  `json:"backend"`
	NsPerOp   float64 `json:"ns_per_op"`
	OpsPerSec float64 `json:"ops_per_sec"`
	// ConflictsPerOp is, for CASContended, the lost races per successful
	// CAS.
	ConflictsPerOp float64 `json:"conflicts_per_op,omitempty"`
}

// TableRows returns how many results Table produces.
func TableRows(contenders []Contender) int { return len(storetest.Workloads()) * len(contenders) }

// Table runs every workload on every contender with testing.Benchmark for
// benchtime (a duration, or a count like "100x") and returns the results in
// order; progress, if not nil, sees each as it comes.
func Table(ctx context.Context, contenders []Contender, benchtime string, progress func(Result)) ([]Result, error) {
	if len(contenders) == 0 {
		return nil, errors.New("bench: nothing to measure")
	}
	var out []Result
	for _, w := range storetest.Workloads() {
		for _, c := range contenders {
			if err := ctx.Err(); err != nil {
				return out, err
			}
			res, err := measure(benchtime, w.Name+" on "+c.Name, c.Bench(w.Name))
			if err != nil {
				return out, err
			}
			r := Result{Workload: w.Name, Backend: c.Name, NsPerOp: nsPerOp(res), OpsPerSec: res.Extra["ops/s"], ConflictsPerOp: res.Extra["conflicts/op"]}
			out = append(out, r)
			if progress != nil {
				progress(r)
			}
		}
	}
	return out, nil
}
