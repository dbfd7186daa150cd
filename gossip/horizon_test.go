package gossip_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
)

// Tombstones collected behind the horizon of a and b: c, which was away with
// the old values, gets a full snapshot on its next catch-up, drops the keys
// deleted meanwhile, and never brings them back to a or b.
func TestGossip_TombstoneHorizonSnapshot(t *testing.T) {
	ctx := context.Background()
	cfg := quiet()
	cfg.DisableSyncOnConnect = true // this test runs each catch-up itself
	peers := newPeers(t, 3, cfg)
	a, b, c := peers[0], peers[1], peers[2]
	key := func(i int) string { return fmt.Sprintf("/gc/k%02d", i) }
	for i := range 10 {
		if _, err := a.r.Set(ctx, key(i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	waitConverged(t, 10*time.Second, peers...)

	partition(t, c, a)
	partition(t, c, b)
	for i := range 5 {
		if err := a.r.Delete(ctx, key(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitConverged(t, 10*time.Second, a, b)
	// Catch-up both ways records each side's vector.
	for _, pair := range [][2]*testPeer{{a, b}, {b, a}} {
		if _, err := pair[0].g.SyncWith(ctx, pair[1].id()); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(5 * time.Millisecond) // past the (1ns) grace period, at clock resolution
	for _, pair := range [][2]*testPeer{{a, b}, {b, a}} {
		n, err := pair[0].r.CollectTombstones(ctx, []string{pair[1].id().String()})
		if err != nil || n != 5 {
			t.Fatalf("collected %d tombstones, %v; want 5", n, err)
		}
	}

	heal(t, c, a)
	heal(t, c, b)
	// c's stale values do not come back to a...
	if _, err := a.g.SyncWith(ctx, c.id()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.r.Get(ctx, key(0)); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatalf("deleted key came back on a: %v", err)
	}
	// ...and c, behind a's horizon, gets a snapshot and drops them.
	st, err := c.g.SyncWith(ctx, a.id())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Snapshot || st.Dropped != 5 {
		t.Fatalf("sync stats %+v: want a snapshot dropping 5 keys", st)
	}
	if _, err := c.r.Get(ctx, key(0)); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatalf("deleted key still on c: %v", err)
	}
	if !converged(t, peers...) {
		t.Fatal("not converged after the snapshot")
	}
	// Caught up, c's next catch-up is a delta again.
	if st, err := c.g.SyncWith(ctx, a.id()); err != nil || st.Snapshot {
		t.Fatalf("second sync: %+v, %v; want a delta", st, err)
	}
}

// A source retired on a but not yet on b (c wrote, was superseded and went
// away): a's vector no longer lists it, and its catch-up request says so
// with its retirement horizon, so b, which collected c's tombstone, sends a
// delta rather than a snapshot; b learns a's horizon from that session and
// retires c too.
func TestGossip_RetiredSourceKeepsDeltas(t *testing.T) {
	ctx := context.Background()
	cfg := quiet()
	cfg.DisableSyncOnConnect = true // this test runs each catch-up itself
	peers := newPeers(t, 3, cfg)
	a, b, c := peers[0], peers[1], peers[2]
	for _, k := range []string{"/rt/1", "/rt/2"} {
		if _, err := c.r.Set(ctx, k, []byte("c")); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.r.Delete(ctx, "/rt/2"); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, 10*time.Second, peers...)
	if _, err := a.r.Set(ctx, "/rt/1", []byte("a")); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, 10*time.Second, peers...)
	partition(t, c, a)
	partition(t, c, b)
	for _, pair := range [][2]*testPeer{{a, b}, {b, a}} {
		if _, err := pair[0].g.SyncWith(ctx, pair[1].id()); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(5 * time.Millisecond) // past the (1ns) grace period, at clock resolution
	for _, pair := range [][2]*testPeer{{a, b}, {b, a}} {
		if _, err := pair[0].r.CollectTombstones(ctx, []string{pair[1].id().String()}); err != nil {
			t.Fatal(err)
		}
	}
	tracked := a.r.Sources()
	if n, err := a.r.RetireSources(ctx, []string{b.id().String()}); err != nil || n != 1 {
		t.Fatalf("a retired %d sources, %v; want 1 (c's)", n, err)
	}
	if a.r.Sources() != tracked-1 {
		t.Fatalf("a tracks %d sources after retiring one of %d", a.r.Sources(), tracked)
	}
	st, err := a.g.SyncWith(ctx, b.id())
	if err != nil || st.Snapshot {
		t.Fatalf("a's catch-up from b after retiring c: %+v, %v; want a delta", st, err)
	}
	if n, err := b.r.RetireSources(ctx, []string{a.id().String()}); err != nil || n != 1 {
		t.Fatalf("b retired %d sources, %v; want 1", n, err)
	}
	if !converged(t, a, b) {
		t.Fatal("a and b differ after retiring c")
	}
}
