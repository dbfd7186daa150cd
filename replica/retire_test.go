package replica_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/sqlite"
	"github.com/univrs/peerstate/datastore/storetest"
	"github.com/univrs/peerstate/replica"
)

// An origin that wrote, was superseded everywhere and fell silent is
// retired by every peer once every member has all of it and its last change
// is older than the grace period — never before, never while a key still
// holds one of its changes, never our own. Its old changes replayed later
// do not bring deleted keys back, catch-up between a peer that retired it
// and one that has not yet stays a delta, and when it writes again it is
// tracked again.
func TestReplica_RetireSources(t *testing.T) {
	ctx := context.Background()
	clk := &storetest.Clock{}
	dir := t.TempDir()
	open := func(id string) *replica.Replica {
		var s datastore.Store = memory.New()
		if id == "a" { // restarted below
			var err error
			if s, err = sqlite.Open(filepath.Join(dir, "a.db")); err != nil {
				t.Fatal(err)
			}
		}
		r, err := replica.New(ctx, s, replica.Config{Key: keyFor(id), Now: clk.Now, TombstoneGrace: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	a, b, c := open("a"), open("b"), open("c")
	must := func(_ uint64, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// c writes three keys and deletes one; a and b get everything.
	must(c.Set(ctx, "/x/1", []byte("c1")))
	must(c.Set(ctx, "/x/2", []byte("c2")))
	must(c.Set(ctx, "/x/3", []byte("c3")))
	if err := c.Delete(ctx, "/x/3"); err != nil {
		t.Fatal(err)
	}
	oldX2, _, err := c.Current(ctx, "/x/2")
	if err != nil {
		t.Fatal(err)
	}
	src := oldX2.Source()
	syncFrom(t, c, a)
	syncFrom(t, c, b)
	// c is gone. a overwrites one of its keys and deletes the other.
	must(a.Set(ctx, "/x/1", []byte("a1")))
	if err := a.Delete(ctx, "/x/2"); err != nil {
		t.Fatal(err)
	}
	syncFrom(t, a, b)
	syncFrom(t, b, a)
	members := func(r *replica.Replica) []string {
		if r == a {
			return []string{b.ID()}
		}
		return []string{a.ID()}
	}
	retire := func(r *replica.Replica) int {
		t.Helper()
		n, err := r.RetireSources(ctx, members(r))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Its tombstone of /x/3 still holds one of its changes, and it wrote
	// within the grace period: nothing to retire.
	if n := retire(a); n != 0 {
		t.Fatalf("retired %d sources within the grace period", n)
	}
	clk.Advance(2 * time.Hour)
	if n := retire(a); n != 0 {
		t.Fatalf("retired %d sources while c's tombstone is stored", n)
	}
	for _, r := range []*replica.Replica{a, b} {
		if _, err := r.CollectTombstones(ctx, members(r)); err != nil {
			t.Fatal(err)
		}
	}
	if _, found, _ := a.Current(ctx, "/x/2"); found {
		t.Fatal("a's tombstone of /x/2 was not collected")
	}
	// A member never observed: its vector is unknown, nothing is retired.
	if n, err := a.RetireSources(ctx, []string{b.ID(), idFor("stranger")}); err != nil || n != 0 {
		t.Fatalf("retired %d sources with an unobserved member, %v", n, err)
	}
	before := a.Sources()
	if n := retire(a); n != 1 {
		t.Fatalf("a retired %d sources, want 1 (c's)", n)
	}
	if v, _ := a.Watermarks(ctx); len(v) != before-1 || v[src] != 0 {
		t.Fatalf("a's vector after retiring %s: %v", src, v)
	}
	if h, n := a.RetiredHorizon(); h == 0 || n != 1 {
		t.Fatalf("retirement horizon %d, %d retired", h, n)
	}
	// b has not retired c yet: a's vector lacks it, but with a's horizon
	// that is not a peer behind b's tombstone horizon.
	have, _ := a.Watermarks(ctx)
	aRetired, _ := a.RetiredHorizon()
	if !b.BehindHorizon(have, 0) {
		t.Fatal("b collected c's tombstone, yet a vector without c is not behind it")
	}
	if b.BehindHorizon(have, aRetired) {
		t.Fatal("a retired c, yet b would send it a snapshot")
	}
	syncFrom(t, a, b) // b learns a's horizon
	if n := retire(b); n != 1 {
		t.Fatalf("b retired %d sources, want 1", n)
	}
	assertConverged(t, []*replica.Replica{a, b})

	// c's old write of /x/2, replayed: the key stays deleted.
	res, err := a.Apply(ctx, b.ID(), []replica.Change{oldX2})
	if err != nil || res.Applied != 0 || res.Stale != 1 {
		t.Fatalf("replayed change of a retired source: %+v, %v", res, err)
	}
	if _, err := a.Get(ctx, "/x/2"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatalf("a deleted key came back from a retired source: %v", err)
	}

	// Our own sources are never retired, superseded or not.
	must(b.Set(ctx, "/y", []byte("b")))
	must(a.Set(ctx, "/y", []byte("a")))
	syncFrom(t, a, b)
	syncFrom(t, b, a)
	clk.Advance(2 * time.Hour)
	if n := retire(b); n != 0 {
		t.Fatalf("b retired %d sources: its own", n)
	}

	// The retirement survives a restart.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a = open("a")
	if h, n := a.RetiredHorizon(); h != aRetired || n != 1 {
		t.Fatalf("after a restart: horizon %d (want %d), %d retired", h, aRetired, n)
	}

	// c writes again: tracked again, and after catch-up with c its
	// watermark is back where c's signed head says.
	must(c.Set(ctx, "/x/4", []byte("c4")))
	// First the old write again, on the restarted a: still stale, and it
	// does not make a track the source again.
	if res, err := a.Apply(ctx, b.ID(), []replica.Change{oldX2}); err != nil || res.Stale != 1 {
		t.Fatalf("replayed change after a restart: %+v, %v", res, err)
	}
	if _, listed := func() (uint64, bool) { v, _ := a.Watermarks(ctx); n, ok := v[src]; return n, ok }(); listed {
		t.Fatal("a lists the retired source in its vector after a replay")
	}
	syncFrom(t, c, a)
	syncFrom(t, c, b)
	syncFrom(t, a, c)
	cv, _ := c.Watermarks(ctx)
	for _, r := range []*replica.Replica{a, b} {
		if v, _ := r.Watermarks(ctx); v[src] != cv[src] {
			t.Fatalf("%s's watermark of c: %d, c's own %d", r.ID(), v[src], cv[src])
		}
		if e, err := r.Get(ctx, "/x/4"); err != nil || string(e.Value) != "c4" {
			t.Fatalf("c's new write: %q, %v", e.Value, err)
		}
	}
	// (c itself keeps its own write of /x/2, which a snapshot never drops:
	// a peer away for longer than the grace period is beyond what
	// collection promises, retirement or not.)
	for _, r := range []*replica.Replica{a, b} {
		if _, err := r.Get(ctx, "/x/2"); !errors.Is(err, datastore.ErrKeyNotFound) {
			t.Fatalf("catch-up with c brought /x/2 back: %v", err)
		}
	}
	assertConverged(t, []*replica.Replica{a, b})
}
