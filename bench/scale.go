package bench

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/storetest"
)

// ScaleConfig sets the scale suite's sizes.
type ScaleConfig struct {
	Sizes     []int     // keys in the store
	Backends  []Backend // the stores measured
	Benchtime string    // target of each measurement: a duration or "Nx"
	Dir       string    // where the stores go; a temporary directory when empty
}

// DefaultScaleSizes are the issue's: 10k, 100k and 1M keys.
var DefaultScaleSizes = []int{10_000, 100_000, 1_000_000}

// Validate reports the first invalid setting.
func (c ScaleConfig) Validate() error {
	if len(c.Sizes) == 0 || len(c.Backends) == 0 {
		return errors.New("bench: scale: no size or no backend")
	}
	for _, n := range c.Sizes {
		if n < 200 || n > 100_000_000 {
			return fmt.Errorf("bench: scale: %d keys: want 200 to 100,000,000", n)
		}
	}
	return ValidBenchtime(c.Benchtime)
}

// ScaleResult is one row of the scale table: one backend holding Keys keys.
type ScaleResult struct {
	Backend string  `json:"backend"`
	Keys    int     `json:"keys"`
	GetNs   float64 `json:"get_ns"`
	SetNs   float64 `json:"set_ns"`
	ListNs  float64 `json:"list_page_ns"` // a page of 100 entries
	// HeapBytesPerKey is the Go heap the store holds after loading, per
	// key (after a GC, less the heap before it opened); DiskBytesPerKey
	// its files' size per key.
	HeapBytesPerKey float64 `json:"heap_bytes_per_key"`
	DiskBytesPerKey float64 `json:"disk_bytes_per_key"`
	LoadSeconds     float64 `json:"load_s"` // time to write the keys, 100 a transaction
}

// ScaleKey returns the i-th key of a store of n keys.
func ScaleKey(i, n int) string { return fmt.Sprintf("/scale/%09d", i%n) }

// Loaded is a store filled with n keys for the scale measurements.
type Loaded struct {
	Store       datastore.Store
	Keys        int
	HeapPerKey  float64
	DiskPerKey  float64
	LoadSeconds float64
	close       func()
}

// Close closes the store.
func (l *Loaded) Close() { l.close() }

// heapInUse returns the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// dirSize returns the size of the files under dir.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	return n, err
}

// Load opens a fresh store of be in dir and writes n keys into it, 100 a
// transaction.
func Load(ctx context.Context, be Backend, dir string, n int) (*Loaded, error) {
	heap0 := heapInUse()
	s, closeStore, err := be.Open(dir)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	ops := make([]datastore.Op, 0, 100)
	for i := 0; i < n; i += 100 {
		ops = ops[:0]
		for j := i; j < min(i+100, n); j++ {
			ops = append(ops, datastore.OpSet(ScaleKey(j, n), storetest.BenchValue()))
		}
		if _, err := s.Txn(ctx, ops...); err != nil {
			closeStore()
			return nil, fmt.Errorf("bench: load %s: %w", be.Name, err)
		}
	}
	l := &Loaded{Store: s, Keys: n, LoadSeconds: time.Since(start).Seconds(), close: closeStore}
	if heap := heapInUse(); heap > heap0 {
		l.HeapPerKey = float64(heap-heap0) / float64(n)
	}
	disk, err := dirSize(dir)
	if err != nil {
		closeStore()
		return nil, fmt.Errorf("bench: %w", err)
	}
	l.DiskPerKey = float64(disk) / float64(n)
	return l, nil
}

// ScaleGet measures Get of existing keys, spread over the key space.
func ScaleGet(b *testing.B, l *Loaded) {
	ctx := context.Background()
	i := 0
	for range b.N {
		if _, err := l.Store.Get(ctx, ScaleKey(i, l.Keys)); err != nil {
			b.Fatal(err)
		}
		i += 7919
	}
	storetest.ReportOps(b, b.N)
}

// ScaleSet measures one writer's Set overwriting existing keys.
func ScaleSet(b *testing.B, l *Loaded) {
	ctx := context.Background()
	i := 0
	for range b.N {
		if _, err := l.Store.Set(ctx, ScaleKey(i, l.Keys), storetest.BenchValue()); err != nil {
			b.Fatal(err)
		}
		i += 7919
	}
	storetest.ReportOps(b, b.N)
}

// ScaleList measures reading a 100-entry List page at a spread of places.
func ScaleList(b *testing.B, l *Loaded) {
	ctx := context.Background()
	i := 0
	for range b.N {
		p, err := l.Store.List(ctx, "/scale/", datastore.ListOptions{Limit: 100, After: ScaleKey(i%(l.Keys-100), l.Keys)})
		if err != nil || len(p.Entries) != 100 {
			b.Fatalf("List = %d entries, %v", len(p.Entries), err)
		}
		i += 7919
	}
	storetest.ReportOps(b, b.N)
}

// ScaleRows returns how many results Scale produces.
func ScaleRows(c ScaleConfig) int { return len(c.Sizes) * len(c.Backends) }

// Scale runs the scale suite: for each size and backend, a store loaded
// with that many keys, then Get, Set and a List page on it.
func Scale(ctx context.Context, c ScaleConfig, progress func(ScaleResult)) ([]ScaleResult, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var out []ScaleResult
	for _, n := range c.Sizes {
		for _, be := range c.Backends {
			if err := ctx.Err(); err != nil {
				return out, err
			}
			r, err := scaleOne(ctx, c, be, n)
			if err != nil {
				return out, err
			}
			out = append(out, r)
			if progress != nil {
				progress(r)
			}
		}
	}
	return out, nil
}

func scaleOne(ctx context.Context, c ScaleConfig, be Backend, n int) (res ScaleResult, err error) {
	dir, err := os.MkdirTemp(c.Dir, "peerstate-scale-")
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	l, err := Load(ctx, be, dir, n)
	if err != nil {
		return res, err
	}
	defer l.Close()
	res = ScaleResult{Backend: be.Name, Keys: n, HeapBytesPerKey: l.HeapPerKey, DiskBytesPerKey: l.DiskPerKey, LoadSeconds: l.LoadSeconds}
	for _, m := range []struct {
		name string
		dst  *float64
		fn   func(*testing.B, *Loaded)
	}{{"Get", &res.GetNs, ScaleGet}, {"Set", &res.SetNs, ScaleSet}, {"List", &res.ListNs, ScaleList}} {
		r, err := measure(c.Benchtime, fmt.Sprintf("scale %s on %s at %d keys", m.name, be.Name, n), func(b *testing.B) { m.fn(b, l) })
		if err != nil {
			return res, err
		}
		*m.dst = nsPerOp(r)
	}
	return res, nil
}

// ScaleBackends returns the backends the scale suite measures by default:
// every one but etcd (a cluster's store, whose 1M keys take long to load).
func ScaleBackends() []Backend {
	var out []Backend
	for _, be := range Backends() {
		if be.Name != "etcd" {
			out = append(out, be)
		}
	}
	return out
}
