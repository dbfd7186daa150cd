//go:build simlarge

package sim

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// TestNetwork_Large is the large network-level run, too heavy for CI:
// SIM_PEERS peers (1,000 by default) in a synctest bubble. Run it with
// make sim-network-1k.
func TestNetwork_Large(t *testing.T) {
	peers := 1000
	if v := os.Getenv("SIM_PEERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 {
			t.Fatalf("SIM_PEERS=%q: want a number of peers", v)
		}
		peers = n
	}
	sc := netScenario(peers)
	sc.Writers = 100
	sc.Writes = 200
	sc.Window = Duration(5 * time.Second)
	sc.Settle = Duration(10 * time.Second)
	sc.SyncInterval = Duration(5 * time.Second)
	sc.Sample = Duration(time.Second)
	start := time.Now()
	rep := runNet(t, sc)
	t.Logf("%d peers: wall %v, peak heap %d MiB", peers, time.Since(start), rep.Resources.PeakHeap>>20)
}
