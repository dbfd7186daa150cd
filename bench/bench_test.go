package bench_test

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/univrs/peerstate/bench"
	"github.com/univrs/peerstate/datastore/storetest"
)

// TestMain checks that no goroutine outlives the tests and benchmarks.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// checkOnly reports whether the benchmarks run once each only to show they
// work (-benchtime=1x, as CI runs them): the suites then run at small
// sizes. Their full sizes are peerstate bench's defaults.
func checkOnly() bool {
	f := flag.Lookup("test.benchtime")
	return f != nil && f.Value.String() == "1x"
}

// BenchmarkStores runs every workload on every backend, then the raw
// references, in one run (the local suite):
//
//	go test -run '^$' -bench Stores -benchtime 2s ./bench/
func BenchmarkStores(b *testing.B) {
	for _, w := range storetest.Workloads() {
		b.Run(w.Name, func(b *testing.B) {
			for _, c := range bench.Contenders() {
				b.Run(c.Name, c.Bench(w.Name))
			}
		})
	}
}

// BenchmarkReplication runs the replication suite, one network size and
// writer count per sub-benchmark, each iteration on a new network (run it
// with -benchtime 1x):
//
//	go test -run '^$' -bench Replication -benchtime 1x ./bench/
func BenchmarkReplication(b *testing.B) {
	cfg := bench.DefaultReplicationConfig()
	if checkOnly() {
		cfg.Peers, cfg.Paced, cfg.Sustained = []int{3}, 300*time.Millisecond, 300*time.Millisecond
	}
	for _, n := range cfg.Peers {
		for _, w := range cfg.Writers {
			b.Run(fmt.Sprintf("peers=%d/writers=%s", n, w), func(b *testing.B) {
				c := cfg
				c.Peers, c.Writers, c.Dir = []int{n}, []string{w}, b.TempDir()
				var rows []bench.ReplicationResult
				for range b.N {
					var err error
					if rows, err = bench.Replication(context.Background(), c, nil); err != nil {
						b.Fatal(err)
					}
				}
				for _, r := range rows {
					prefix := r.Mode + "-"
					if r.System == bench.SystemRawPubsub {
						prefix = "raw-" + prefix
					}
					b.ReportMetric(r.P50Ms, prefix+"p50-ms")
					b.ReportMetric(r.P99Ms, prefix+"p99-ms")
					b.ReportMetric(float64(r.Lost), prefix+"lost")
					if r.Mode == bench.ModeSustained {
						b.ReportMetric(r.WritesPerSec, prefix+"writes/s")
						b.ReportMetric(r.BytesPerWritePerReceiver, prefix+"B/write/receiver")
					}
				}
			})
		}
	}
}

// BenchmarkCatchup runs the catch-up suite, one number of missed writes
// per sub-benchmark (run it with -benchtime 1x):
//
//	go test -run '^$' -bench Catchup -benchtime 1x ./bench/
func BenchmarkCatchup(b *testing.B) {
	cfg := bench.DefaultCatchupConfig()
	if checkOnly() {
		cfg.Missed = []int{1000}
	}
	for _, missed := range cfg.Missed {
		b.Run(fmt.Sprintf("missed=%d", missed), func(b *testing.B) {
			c := cfg
			c.Missed, c.Dir = []int{missed}, b.TempDir()
			var rows []bench.CatchupResult
			for range b.N {
				var err error
				if rows, err = bench.Catchup(context.Background(), c, nil); err != nil {
					b.Fatal(err)
				}
			}
			for _, r := range rows {
				b.ReportMetric(r.Millis, fmt.Sprintf("join%d-ms", r.Join))
				b.ReportMetric(r.Ratio, fmt.Sprintf("join%d-recv/data", r.Join))
			}
		})
	}
}

// BenchmarkScale measures Get, Set and a List page on stores loaded with
// 10k, 100k and 1M keys (1k and 10k under -benchtime 1x):
//
//	go test -run '^$' -bench Scale -benchtime 1s ./bench/
func BenchmarkScale(b *testing.B) {
	sizes := bench.DefaultScaleSizes
	if checkOnly() {
		sizes = []int{1000, 10_000}
	}
	for _, n := range sizes {
		for _, be := range bench.ScaleBackends() {
			b.Run(fmt.Sprintf("keys=%d/%s", n, be.Name), func(b *testing.B) {
				l, err := bench.Load(context.Background(), be, b.TempDir(), n)
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
				b.ReportMetric(l.HeapPerKey, "heap-B/key")
				b.ReportMetric(l.DiskPerKey, "disk-B/key")
				b.Run("Get", func(b *testing.B) { bench.ScaleGet(b, l) })
				b.Run("Set", func(b *testing.B) { bench.ScaleSet(b, l) })
				b.Run("List", func(b *testing.B) { bench.ScaleList(b, l) })
			})
		}
	}
}

func TestConfigs_Validate(t *testing.T) {
	rc := bench.DefaultReplicationConfig()
	if err := rc.Validate(); err != nil {
		t.Fatalf("default replication config: %v", err)
	}
	for name, mod := range map[string]func(*bench.ReplicationConfig){
		"one peer":    func(c *bench.ReplicationConfig) { c.Peers = []int{1} },
		"no sizes":    func(c *bench.ReplicationConfig) { c.Peers = nil },
		"writers":     func(c *bench.ReplicationConfig) { c.Writers = []string{"some"} },
		"store":       func(c *bench.ReplicationConfig) { c.Store = "etcd" },
		"rate":        func(c *bench.ReplicationConfig) { c.Rate = 0 },
		"duration":    func(c *bench.ReplicationConfig) { c.Sustained = 0 },
		"value size":  func(c *bench.ReplicationConfig) { c.ValueSize = 0 },
		"huge values": func(c *bench.ReplicationConfig) { c.ValueSize = 1 << 20 },
	} {
		c := rc
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("replication config with bad %s: no error", name)
		}
	}
	cc := bench.DefaultCatchupConfig()
	if err := cc.Validate(); err != nil {
		t.Fatalf("default catchup config: %v", err)
	}
	for name, mod := range map[string]func(*bench.CatchupConfig){
		"missed": func(c *bench.CatchupConfig) { c.Missed = []int{0} },
		"join":   func(c *bench.CatchupConfig) { c.Join = []int{0} },
		"store":  func(c *bench.CatchupConfig) { c.Store = "" },
	} {
		c := cc
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("catchup config with bad %s: no error", name)
		}
	}
	sc := bench.ScaleConfig{Sizes: bench.DefaultScaleSizes, Backends: bench.ScaleBackends(), Benchtime: "1s"}
	if err := sc.Validate(); err != nil {
		t.Fatalf("scale config: %v", err)
	}
	for _, bt := range []string{"", "0s", "-1s", "0x", "x", "fast"} {
		c := sc
		c.Benchtime = bt
		if err := c.Validate(); err == nil {
			t.Errorf("benchtime %q: no error", bt)
		}
	}
	c := sc
	c.Sizes = []int{10}
	if err := c.Validate(); err == nil {
		t.Error("scale of 10 keys: no error")
	}
}
