package replica_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/replica"
)

// syncFrom runs a catch-up exchange the way the gossip protocol does: a
// delta, or a full snapshot followed by Reconcile when `to` is behind the
// sender's tombstone horizon. Both sides record each other's vectors.
func syncFrom(t *testing.T, from, to *replica.Replica) {
	t.Helper()
	ctx := context.Background()
	have, _ := to.Watermarks(ctx)
	toRetired, _ := to.RetiredHorizon()
	if err := from.ObservePeerRetired(ctx, to.ID(), have, toRetired); err != nil {
		t.Fatal(err)
	}
	snapshot := from.BehindHorizon(have, toRetired)
	if snapshot {
		have = replica.Vector{}
	}
	received := map[string]bool{}
	cover, err := from.ChangesSince(ctx, have, to.Prefixes(), 64, func(cs []replica.Change) error {
		for _, c := range cs {
			received[c.Key] = true
		}
		_, err := to.Apply(ctx, from.ID(), cs)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if snapshot {
		if _, err := to.Reconcile(ctx, cover, from.Collected(), from.Floors(), from.Prefixes(), received); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := to.Advance(ctx, cover, from.Heads(cover.Sources()), from.Prefixes()); err != nil {
		t.Fatal(err)
	}
	fromRetired, _ := from.RetiredHorizon()
	if err := to.ObservePeerRetired(ctx, from.ID(), cover, fromRetired); err != nil {
		t.Fatal(err)
	}
}

func TestReplica_TombstoneCollection(t *testing.T) {
	net := newNet(t, 3, 1, 1, 0) // no pushes: everything moves by catch-up
	ctx := context.Background()
	a, b, c := net.replicas[0], net.replicas[1], net.replicas[2]
	for i := range 10 {
		if _, err := a.Set(ctx, fmt.Sprintf("/k/%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	syncFrom(t, a, b)
	syncFrom(t, a, c)
	// c goes away holding every value; a deletes half of the keys.
	for i := range 5 {
		if err := a.Delete(ctx, fmt.Sprintf("/k/%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	syncFrom(t, a, b)
	syncFrom(t, b, a)
	time.Sleep(5 * time.Millisecond) // past the (1ns) grace period, at clock resolution
	// Membership without c: the horizon is what a and b have both passed.
	if n, err := a.CollectTombstones(ctx, []string{b.ID()}); err != nil || n != 5 {
		t.Fatalf("a collected %d tombstones, %v; want 5", n, err)
	}
	if n, err := b.CollectTombstones(ctx, []string{a.ID()}); err != nil || n != 5 {
		t.Fatalf("b collected %d tombstones, %v; want 5", n, err)
	}
	if _, found, _ := a.Current(ctx, "/k/0"); found {
		t.Fatal("tombstone still stored after collection")
	}
	// A horizon over a peer never observed collects nothing.
	if n, err := a.CollectTombstones(ctx, []string{idFor("stranger")}); err != nil || n != 0 {
		t.Fatalf("collected %d with an unknown peer in the membership, %v", n, err)
	}
	// c comes back from beyond the horizon: its stale values must not
	// resurrect the deleted keys anywhere, and it drops them itself.
	syncFrom(t, c, a)
	syncFrom(t, c, b)
	if _, err := a.Get(ctx, "/k/0"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatalf("deleted key came back on a: %v", err)
	}
	syncFrom(t, a, c)
	assertConverged(t, net.replicas)
	if _, n := stateHash(t, c); n != 5 {
		t.Fatalf("c holds %d keys after the snapshot, want 5", n)
	}
	// Writes after all that still flow both ways.
	// Versions still never repeat for the collected key (deleted at 2).
	if v, err := c.Set(ctx, "/k/0", []byte("new")); err != nil || v <= 2 {
		t.Fatalf("re-created collected key at version %d, %v; want above 2", v, err)
	}
	syncFrom(t, c, a)
	syncFrom(t, c, b)
	assertConverged(t, net.replicas)
	if e, err := b.Get(ctx, "/k/0"); err != nil || string(e.Value) != "new" {
		t.Fatalf("re-created key on b: %q, %v", e.Value, err)
	}
}

// A tombstone younger than the grace period is kept, even behind every
// member's watermark, and collected once it has aged.
func TestReplica_TombstoneGrace(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	open := func(id string) *replica.Replica {
		r, err := replica.New(ctx, memory.New(), replica.Config{Key: keyFor(id), Now: clock, TombstoneGrace: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	a, b := open("a"), open("b")
	if _, err := a.Set(ctx, "/k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete(ctx, "/k"); err != nil {
		t.Fatal(err)
	}
	syncFrom(t, a, b)
	syncFrom(t, b, a)
	if n, err := a.CollectTombstones(ctx, []string{b.ID()}); err != nil || n != 0 {
		t.Fatalf("collected %d young tombstones, %v", n, err)
	}
	if a.BehindHorizon(replica.Vector{}, 0) {
		t.Fatal("the horizon moved past a tombstone that was kept")
	}
	now = now.Add(2 * time.Hour)
	if n, err := a.CollectTombstones(ctx, []string{b.ID()}); err != nil || n != 1 {
		t.Fatalf("collected %d aged tombstones, %v; want 1", n, err)
	}
	if got := a.ObservedPeers(now.Add(-3 * time.Hour)); len(got) != 1 || got[0] != b.ID() {
		t.Fatalf("observed peers %v", got)
	}
}

// A snapshot cannot drop recent state: whatever a responder claims, only
// changes older than the grace period can have lost their tombstone.
func TestReplica_ReconcileKeepsRecentState(t *testing.T) {
	ctx := context.Background()
	r, err := replica.New(ctx, memory.New(), replica.Config{Key: keyFor("r"), TombstoneGrace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Set(ctx, "/k", []byte("fresh")); err != nil {
		t.Fatal(err)
	}
	// A hostile "snapshot": nothing received, a vector covering everything.
	n, err := r.Reconcile(ctx, replica.Vector{replica.SourceOf(r.ID(), r.Generation()): 1 << 40}, nil, nil, nil, map[string]bool{})
	if err != nil || n != 0 {
		t.Fatalf("reconcile dropped %d keys, %v", n, err)
	}
	if _, err := r.Get(ctx, "/k"); err != nil {
		t.Fatalf("recent key dropped: %v", err)
	}
}
