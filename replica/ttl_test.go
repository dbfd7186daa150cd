package replica_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/badger"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/sqlite"
	"github.com/univrs/peerstate/datastore/storetest"
	"github.com/univrs/peerstate/replica"
)

// ttlBackends are the local stores the replica's expiry is tested over.
var ttlBackends = map[string]func(t testing.TB) datastore.Store{
	"memory": func(testing.TB) datastore.Store { return memory.New() },
	"sqlite": func(t testing.TB) datastore.Store {
		s, err := sqlite.Open(filepath.Join(t.TempDir(), "state.db"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	},
	"badger": func(t testing.TB) datastore.Store {
		s, err := badger.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	},
}

// The replica is a datastore.Expirer on every backend, whatever the
// backend's own TTL support: the TTL suite with an injected clock.
func TestTTL_Conformance(t *testing.T) {
	for name, local := range ttlBackends {
		t.Run(name, func(t *testing.T) {
			storetest.RunTTL(t, func(t *testing.T, now func() time.Time) datastore.Store {
				return open(t, "peerA", local(t), func(c *replica.Config) { c.Now = now })
			})
		})
	}
}

// pullAll brings every replica up to date with every other.
func pullAll(t *testing.T, rs ...*replica.Replica) {
	t.Helper()
	for range 2 {
		for _, from := range rs {
			for _, to := range rs {
				if from != to {
					pull(t, from, to)
				}
			}
		}
	}
}

func nextEvent(t *testing.T, w datastore.Watcher) datastore.Event {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if !ok {
			t.Fatalf("watch ended: %v", w.Err())
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
	return datastore.Event{}
}

func noEvent(t *testing.T, w datastore.Watcher) {
	t.Helper()
	select {
	case ev := <-w.Events():
		t.Fatalf("unexpected event %+v", ev)
	case <-time.After(50 * time.Millisecond):
	}
}

func expireAll(t *testing.T, r *replica.Replica, want int) {
	t.Helper()
	if n, err := r.ExpireDue(context.Background()); err != nil || n != want {
		t.Fatalf("ExpireDue on %s = %d, %v; want %d", r.ID(), n, err, want)
	}
}

// Three replicas agree on an expiry that travels with the change: each
// applies it by its own clock, locally (no replicated delete), watchers get
// Deleted, fingerprints agree whether or not a peer has applied it yet, and
// a later write continues above the expired version everywhere.
func TestTTL_ReplicasAgree(t *testing.T) {
	for name, local := range ttlBackends {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			clk := &storetest.Clock{}
			var rs []*replica.Replica
			var sent []*captured
			for _, n := range []string{"a", "b", "c"} {
				bc := &captured{}
				rs = append(rs, open(t, n, local(t), func(c *replica.Config) { c.Now, c.Broadcaster = clk.Now, bc }))
				sent = append(sent, bc)
			}
			a, b, c := rs[0], rs[1], rs[2]
			wb, err := b.Watch(ctx, "/presence/")
			if err != nil {
				t.Fatal(err)
			}
			defer wb.Close()

			if _, err := a.SetTTL(ctx, "/presence/a", []byte("online"), 10*time.Second); err != nil {
				t.Fatal(err)
			}
			pullAll(t, rs...)
			if ev := nextEvent(t, wb); ev.Type != datastore.Created || ev.Version != 1 {
				t.Fatalf("event %+v", ev)
			}
			for _, r := range rs {
				e, err := r.Get(ctx, "/presence/a")
				if err != nil || !e.ExpiresAt.Equal(clk.Now().Add(10*time.Second)) {
					t.Fatalf("%s: %+v %v", r.ID(), e, err)
				}
			}
			fp := a.StateFingerprint()

			clk.Advance(10 * time.Second)
			for _, r := range rs { // hidden at once, before any expiry runs
				if _, err := r.Get(ctx, "/presence/a"); !errors.Is(err, datastore.ErrKeyNotFound) {
					t.Fatalf("%s still shows an expired entry: %v", r.ID(), err)
				}
				if p, err := r.List(ctx, "/presence/", datastore.ListOptions{}); err != nil || len(p.Entries) != 0 {
					t.Fatalf("%s lists %+v %v", r.ID(), p.Entries, err)
				}
			}
			expireAll(t, b, 1) // b applies its expiry, a and c not yet
			if ev := nextEvent(t, wb); ev.Type != datastore.Deleted || ev.Key != "/presence/a" ||
				ev.Version != 2 || ev.Origin != "" || string(ev.OldValue) != "online" {
				t.Fatalf("expiry event %+v", ev)
			}
			for _, r := range rs {
				if r.StateFingerprint() != fp {
					t.Fatalf("%s: fingerprint moved with a local expiry", r.ID())
				}
			}
			for _, bc := range sent[1:] {
				if len(bc.changes) != 0 {
					t.Fatalf("an expiry was replicated: %+v", bc.changes)
				}
			}
			expireAll(t, b, 0)
			expireAll(t, a, 1)
			expireAll(t, c, 1)
			noEvent(t, wb)

			// A later write continues above the expired version, on every peer.
			v, err := c.CreateIfNotExists(ctx, "/presence/a", []byte("back"))
			if err != nil || v != 3 {
				t.Fatalf("re-create = %d, %v; want version 3", v, err)
			}
			pullAll(t, rs...)
			if ev := nextEvent(t, wb); ev.Type != datastore.Created || ev.Version != 3 || string(ev.NewValue) != "back" {
				t.Fatalf("event %+v", ev)
			}
			for _, r := range rs {
				if e, err := r.Get(ctx, "/presence/a"); err != nil || e.Version != 3 || !e.ExpiresAt.IsZero() {
					t.Fatalf("%s: %+v %v", r.ID(), e, err)
				}
			}
			if a.StateFingerprint() != b.StateFingerprint() || b.StateFingerprint() != c.StateFingerprint() {
				t.Fatal("fingerprints differ")
			}
		})
	}
}

// A renewal (a write with a new TTL) and a write without one win over the
// pending expiry through the change order, on the peers that receive them.
func TestTTL_RenewalReplicates(t *testing.T) {
	ctx := context.Background()
	clk := &storetest.Clock{}
	a := open(t, "a", memory.New(), func(c *replica.Config) { c.Now = clk.Now })
	b := open(t, "b", memory.New(), func(c *replica.Config) { c.Now = clk.Now })
	a.SetTTL(ctx, "/lease/renewed", []byte("1"), 5*time.Second)
	a.SetTTL(ctx, "/lease/kept", []byte("1"), 5*time.Second)
	pullAll(t, a, b)
	clk.Advance(4 * time.Second)
	if _, err := b.SetTTL(ctx, "/lease/renewed", []byte("2"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Set(ctx, "/lease/kept", []byte("2")); err != nil {
		t.Fatal(err)
	}
	pullAll(t, a, b)
	clk.Advance(2 * time.Second) // past the first deadline
	for _, r := range []*replica.Replica{a, b} {
		expireAll(t, r, 0)
		if value(t, r, "/lease/renewed") != "2" || value(t, r, "/lease/kept") != "2" {
			t.Fatalf("%s lost a renewal", r.ID())
		}
	}
	clk.Advance(4 * time.Second) // past the renewed deadline
	for _, r := range []*replica.Replica{a, b} {
		expireAll(t, r, 1)
		if value(t, r, "/lease/renewed") != "<absent>" || value(t, r, "/lease/kept") != "2" {
			t.Fatalf("%s: renewed %q kept %q", r.ID(), value(t, r, "/lease/renewed"), value(t, r, "/lease/kept"))
		}
	}
}

// A peer that catches up on an entry already expired by its clock applies
// it as expired: it never shows it, its watchers see nothing, and its
// fingerprint agrees with the sender's. The entry survives a reopen so.
func TestTTL_CatchUpOfExpired(t *testing.T) {
	ctx := context.Background()
	clk := &storetest.Clock{}
	a := open(t, "a", memory.New(), func(c *replica.Config) { c.Now = clk.Now })
	dir := t.TempDir()
	openB := func() *replica.Replica {
		local, err := sqlite.Open(filepath.Join(dir, "b.db"))
		if err != nil {
			t.Fatal(err)
		}
		return open(t, "b", local, func(c *replica.Config) { c.Now = clk.Now })
	}
	b := openB()
	w, err := b.Watch(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	a.SetTTL(ctx, "/r/x", []byte("x"), time.Second)
	clk.Advance(time.Minute)
	if n := catchUp(t, a, b); n != 1 {
		t.Fatalf("streamed %d changes, want the expired one", n)
	}
	if value(t, b, "/r/x") != "<absent>" {
		t.Fatal("an expired entry shows after catch-up")
	}
	noEvent(t, w)
	expireAll(t, b, 0) // stored expired already
	if a.StateFingerprint() != b.StateFingerprint() || b.StateFingerprint().Count != 1 {
		t.Fatalf("fingerprints %v / %v", a.StateFingerprint(), b.StateFingerprint())
	}
	w.Close()
	b.Close()
	b = openB()
	if value(t, b, "/r/x") != "<absent>" || b.StateFingerprint() != a.StateFingerprint() {
		t.Fatal("after a reopen the expired entry is back or the fingerprint moved")
	}
	if v, err := b.Set(ctx, "/r/x", []byte("y")); err != nil || v != 3 {
		t.Fatalf("set after expiry = %d, %v", v, err)
	}
}

// An expired entry is collected like a tombstone: once its expiry is older
// than the grace period and every member has the change. The key then
// leaves the fingerprint and a later write still continues above it.
func TestTTL_Collected(t *testing.T) {
	ctx := context.Background()
	clk := &storetest.Clock{}
	grace := func(c *replica.Config) { c.Now, c.TombstoneGrace = clk.Now, time.Hour }
	a := open(t, "a", memory.New(), grace)
	b := open(t, "b", memory.New(), grace)
	a.SetTTL(ctx, "/r/x", []byte("x"), time.Minute)
	syncFrom(t, a, b)
	syncFrom(t, b, a)
	clk.Advance(2 * time.Minute)
	expireAll(t, a, 1)
	if n, err := a.CollectTombstones(ctx, []string{b.ID()}); err != nil || n != 0 {
		t.Fatalf("collected %d, %v inside the grace period", n, err)
	}
	clk.Advance(2 * time.Hour)
	if n, err := a.CollectTombstones(ctx, []string{b.ID()}); err != nil || n != 1 {
		t.Fatalf("collected %d, %v; want the expired entry", n, err)
	}
	if fp := a.StateFingerprint(); fp.Count != 0 {
		t.Fatalf("a collected key counts in the fingerprint: %+v", fp)
	}
	syncFrom(t, b, a) // b still holds it: nothing comes back
	if value(t, a, "/r/x") != "<absent>" {
		t.Fatal("collected entry came back")
	}
	if v, err := a.Set(ctx, "/r/x", []byte("y")); err != nil || v != 3 {
		t.Fatalf("set after collection = %d, %v; want 3", v, err)
	}
}

// A change's expiry is signed: changing it breaks the signature, and the
// replication rules bound it.
func TestTTL_ExpirySignedAndValidated(t *testing.T) {
	ctx := context.Background()
	clk := &storetest.Clock{}
	bc := &captured{}
	a := open(t, "a", memory.New(), func(c *replica.Config) { c.Now, c.Broadcaster = clk.Now, bc })
	b := open(t, "b", memory.New(), func(c *replica.Config) { c.Now = clk.Now })
	a.SetTTL(ctx, "/r/x", []byte("x"), time.Minute)
	a.Set(ctx, "/r/plain", []byte("p"))
	c, plain := bc.changes[0], bc.changes[1]
	if c.ExpiresAt != clk.Now().Add(time.Minute).UnixNano() || plain.ExpiresAt != 0 {
		t.Fatalf("expiries %d, %d", c.ExpiresAt, plain.ExpiresAt)
	}
	if a.VerifyChange(c) != nil || a.VerifyChange(plain) != nil {
		t.Fatal("a valid change does not verify")
	}
	longer := c
	longer.ExpiresAt += int64(time.Hour)
	if err := a.VerifyChange(longer); !errors.Is(err, replica.ErrBadSignature) {
		t.Fatalf("an extended expiry verifies: %v", err)
	}
	dropped := c
	dropped.ExpiresAt = 0
	if err := a.VerifyChange(dropped); !errors.Is(err, replica.ErrBadSignature) {
		t.Fatalf("a dropped expiry verifies: %v", err)
	}
	if c.Digest() == dropped.Digest() {
		t.Fatal("the digest does not cover the expiry")
	}
	if _, err := b.Apply(ctx, a.ID(), []replica.Change{longer, dropped}); !errors.Is(err, replica.ErrBadSignature) {
		t.Fatalf("apply of tampered expiries: %v", err)
	}
	for _, bad := range []replica.Change{
		func() replica.Change { d := c; d.ExpiresAt = d.UpdatedAt; return d }(),
		func() replica.Change { d := c; d.Deleted, d.Value = true, nil; return d }(),
	} {
		if err := bad.Validate(0); !errors.Is(err, replica.ErrInvalidChange) {
			t.Errorf("Validate(%+v) = %v", bad, err)
		}
	}
	if value(t, b, "/r/x") != "<absent>" {
		t.Fatal("a tampered change landed")
	}
}
