package gossip_test

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestJoin_FourNeighboursFetchEachEntryOnce has a fresh peer join four
// peers that all hold the same state, at once, over loopback TCP: its
// catch-ups take turns, so it receives the state about once (within the
// 1.5× of the data that holds for one neighbour, signatures and metadata
// included), not once per neighbour.
func TestJoin_FourNeighboursFetchEachEntryOnce(t *testing.T) {
	const keys, size, neighbours = 1000, 256, 4
	ctx := context.Background()
	cfg := quiet()
	peers := newPeers(t, neighbours, cfg)
	writer := peers[0]
	data := 0
	for k := range keys {
		key := fmt.Sprintf("/join/key-%05d", k)
		if _, err := writer.r.Set(ctx, key, value(k, size)); err != nil {
			t.Fatal(err)
		}
		data += len(key) + size
	}
	if !waitAll(t, peers[1:], writer.id(), keys, 30*time.Second) {
		repair(t, peers[1:], writer)
	}
	waitConverged(t, 30*time.Second, peers...)

	fresh := newPeer(t, cfg, peerOpts{})
	for _, p := range peers {
		connect(t, fresh, p)
	}
	waitFor(t, 60*time.Second, "the fresh peer's catch-ups", func() bool {
		st := fresh.g.Stats()
		return st.Syncs+st.SyncErrors >= neighbours
	})
	waitConverged(t, 30*time.Second, append(peers, fresh)...)
	st := fresh.g.Stats()
	if st.SyncErrors > 0 {
		t.Fatalf("%d catch-ups failed", st.SyncErrors)
	}
	got := st.SyncBytesReceived + st.RepairBytes
	if limit := uint64(data) * 3 / 2; got > limit {
		t.Fatalf("joining %d peers received %d catch-up bytes for %d bytes of data (%.2f×), want ≤ 1.5×",
			neighbours, got, data, float64(got)/float64(data))
	}
	if st.SyncChangesReceived > keys*5/4 {
		t.Fatalf("received %d changes for %d keys", st.SyncChangesReceived, keys)
	}
	t.Logf("joining %d peers: %d bytes received for %d bytes of data (%.2f×), %d changes",
		neighbours, got, data, float64(got)/float64(data), st.SyncChangesReceived)
}
