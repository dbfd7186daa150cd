package node_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/univrs/peerstate/gossip"
	"github.com/univrs/peerstate/node"
	"github.com/univrs/peerstate/reputation"
)

// floodHeapBoundMB bounds how much the live heap of this test process
// (three honest nodes, the flooder) may grow while the flood of
// TestAttack_FloodMemoryBounded goes on: 2,000 messages of ~12.5 KB to
// each of two nodes, 50 MB on the wire. What the nodes keep of it is
// gossipsub's time caches — each message's ID, seen and delivery records,
// ~300 B a message per node for two minutes — never the messages: were
// they kept, the heap would grow by the flood's size. The live heap (what
// the last collection kept) is what the nodes hold; the resident set also
// carries garbage not yet collected and, under the race detector, shadow
// memory, so it is logged here and bounded by BenchmarkUnderAttack.
const floodHeapBoundMB = 16

// A flooder that is never punished — the reputation cost of its rate
// rejections all but zero, so it stays connected and sends for the whole
// run — costs the honest nodes bounded memory: the origin rate, the
// per-origin verification backlog and pubsub's queues drop what they
// cannot take. Honest writes replicate all along.
func TestAttack_FloodMemoryBounded(t *testing.T) {
	hn := newHonestNet(t, func(c *node.Config) {
		c.Gossip.OriginRate, c.Gossip.OriginBurst = 200, 400
		c.Reputation.Weights[reputation.Abuse] = -1e-9
	})
	flooder := newBareAttacker(t, hn.nodes[0], hn.nodes[1])
	batches := make([][]byte, 20)
	for i := range batches {
		batch := make([]gossip.WireChange, 50)
		for j := range batch {
			batch[j] = flooder.change(fmt.Sprintf("/spam/%d/%d", i, j), strings.Repeat("s", 200), 1)
		}
		var err error
		if batches[i], err = gossip.EncodeMessage(gossip.Message{V: gossip.FormatVersion, Origin: flooder.id().String(), Changes: batch}); err != nil {
			t.Fatal(err)
		}
	}
	// 4 s of 500 distinct messages (25,000 changes) a second: over a
	// hundred times the origin rate.
	frames := flooder.presign(batches, 2000)
	hn.writeHonest(t, "before", 5)

	runtime.GC()
	baseHeap, baseRSS := liveHeap(), residentKB()
	if err := resetPeakRSS(); err != nil {
		t.Fatalf("cannot reset the peak RSS: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	done := make(chan struct{})
	peakHeap := make(chan uint64, 1)
	wg.Add(1)
	go func() { // the live heap, after each collection, until the flood ends
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		var peak uint64
		defer func() { peakHeap <- peak }()
		for {
			peak = max(peak, liveHeap())
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		flooder.floodRaw(ctx, []peer.ID{hn.nodes[0].ID(), hn.nodes[1].ID()}, frames, 2*time.Millisecond)
	}()
	// A few honest writes a second, so that what the nodes hold for them
	// stays small beside what the flood could leave.
	for i := 0; ; i++ {
		hn.writeHonest(t, fmt.Sprintf("during/%d", i), 5)
		select {
		case <-done:
		case <-time.After(200 * time.Millisecond):
			continue
		}
		break
	}
	peakRSS, peak := peakRSSKB(), <-peakHeap
	for i, nd := range hn.nodes[:2] {
		st := nd.Gossip().Stats()
		if st.Rejected[gossip.ReasonRate] == 0 {
			t.Errorf("node %d counted no rate rejection: %v", i, st.Rejected)
		}
		if s := nd.Reputation().State(flooder.id()); s != reputation.Ok {
			t.Fatalf("node %d holds the flooder %s: the flood was cut short, not survived", i, s)
		}
		if nd.Host().Network().Connectedness(flooder.id()) != network.Connected {
			t.Fatalf("node %d is no longer connected to the flooder", i)
		}
		t.Logf("node %d: rejected %v, ignored %v", i, st.Rejected, st.Ignored)
	}
	growth := (int64(peak) - int64(baseHeap)) >> 20
	t.Logf("live heap before the flood %d MB, at most %d MB during it: grew %d MB (bound %d MB); resident %d MB before, peak %d MB",
		baseHeap>>20, peak>>20, growth, floodHeapBoundMB, baseRSS/1024, peakRSS/1024)
	if growth > floodHeapBoundMB {
		t.Errorf("the live heap grew %d MB under the flood, over the %d MB bound", growth, floodHeapBoundMB)
	}
	hn.writeHonest(t, "after", 5)
}

// liveHeap is the heap the last garbage collection kept, in bytes.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// residentKB is this process's resident set now, from /proc.
func residentKB() int { return procStatusKB("VmRSS:") }

// resetPeakRSS sets the process's peak resident set (VmHWM) to its
// resident set now (Linux: clear_refs 5).
func resetPeakRSS() error {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}
