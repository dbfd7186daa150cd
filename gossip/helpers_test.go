package gossip_test

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// The replication benchmarks (bursts, paced latency next to raw pubsub,
// joins, bytes per write) live in package bench, where `peerstate bench`
// runs the same code; these helpers serve the tests here.

// waitAll waits until every peer's watermark of origin reaches target;
// false if the timeout passed first.
func waitAll(t testing.TB, peers []*testPeer, origin peer.ID, target uint64, timeout time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, p := range peers {
		for watermark(t, p, origin) < target {
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(time.Millisecond)
		}
	}
	return true
}

// repair runs the catch-up the periodic loop would have run.
func repair(t testing.TB, peers []*testPeer, from *testPeer) {
	t.Helper()
	for _, p := range peers {
		if _, err := p.g.SyncWith(context.Background(), from.id()); err != nil {
			t.Fatal(err)
		}
	}
}
