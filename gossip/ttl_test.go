package gossip_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/univrs/peerstate/codec"
	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/replica"
)

// offsetClock is the wall clock moved forward by an offset the test sets.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *offsetClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// An entry written with a TTL expires on every peer over real hosts: the
// expiry travels in the signed change, each peer applies it by its own
// clock (watchers get Deleted, nothing is broadcast), fingerprints stay
// equal, a peer joining later receives the expired entry in catch-up and
// never shows it, and a later write continues above the expired version.
func TestGossip_TTLExpiresEverywhere(t *testing.T) {
	ctx := context.Background()
	clk := &offsetClock{}
	o := peerOpts{now: clk.Now, grace: time.Hour}
	peers := newPeersWith(t, 3, quiet(), o)
	a, b, c := peers[0], peers[1], peers[2]
	var watchers []datastore.Watcher
	for _, p := range []*testPeer{b, c} {
		w, err := p.r.Watch(ctx, "/presence/")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		watchers = append(watchers, w)
	}
	if _, err := a.r.SetTTL(ctx, "/presence/a", []byte("online"), time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, w := range watchers {
		if ev := <-w.Events(); ev.Type != datastore.Created || ev.Origin != a.id().String() {
			t.Fatalf("event %+v", ev)
		}
	}
	waitConverged(t, 10*time.Second, peers...)
	// a counts its message once Publish has returned, which may be after
	// the peers have it.
	waitFor(t, 10*time.Second, "a to count its publish", func() bool { return a.g.Stats().Published == 1 })
	published := a.g.Stats().Published + b.g.Stats().Published + c.g.Stats().Published

	clk.Advance(2 * time.Hour)
	for _, w := range watchers {
		select {
		case ev := <-w.Events():
			if ev.Type != datastore.Deleted || ev.Key != "/presence/a" || ev.Version != 2 || ev.Origin != "" {
				t.Fatalf("expiry event %+v", ev)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no Deleted event for an expired entry")
		}
	}
	for _, p := range peers {
		if _, err := p.r.Get(ctx, "/presence/a"); !errors.Is(err, datastore.ErrKeyNotFound) {
			t.Fatalf("%s shows an expired entry: %v", p.id(), err)
		}
	}
	fp := a.r.StateFingerprint()
	for _, p := range peers {
		if p.r.StateFingerprint() != fp || fp.Count != 1 {
			t.Fatalf("fingerprints differ after expiry: %v vs %v", p.r.StateFingerprint(), fp)
		}
	}
	if got := a.g.Stats().Published + b.g.Stats().Published + c.g.Stats().Published; got != published {
		t.Fatalf("expiry published %d messages", got-published)
	}

	// A peer that joins now gets the expired entry and agrees.
	d := newPeer(t, quiet(), o)
	connect(t, d, a)
	waitFor(t, 10*time.Second, "catch-up of the expired entry", func() bool {
		return d.r.StateFingerprint() == fp
	})
	if _, err := d.r.Get(ctx, "/presence/a"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatalf("the new peer shows an expired entry: %v", err)
	}

	// A later write, on any peer, continues above the expired version.
	if v, err := c.r.CreateIfNotExists(ctx, "/presence/a", []byte("back")); err != nil || v != 3 {
		t.Fatalf("re-create = %d, %v", v, err)
	}
	waitFor(t, 10*time.Second, "the re-created key everywhere", func() bool {
		for _, p := range []*testPeer{a, b, c} {
			if e, err := p.r.Get(ctx, "/presence/a"); err != nil || e.Version != 3 {
				return false
			}
		}
		return true
	})
}

// A peer that enforces a schema refuses a remote change breaking it, over
// real hosts: the change is counted as refused and never stored, the
// sender keeps it (it has no schema), and valid changes flow on.
func TestGossip_RemoteSchemaRejection(t *testing.T) {
	ctx := context.Background()
	reg := codec.NewRegistry()
	schema, err := codec.JSONSchema([]byte(`{"type":"object","required":["cpu"],"properties":{"cpu":{"type":"integer","minimum":1}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Validate("/workloads/*", schema); err != nil {
		t.Fatal(err)
	}
	a := newPeer(t, quiet(), peerOpts{})
	b := newPeer(t, quiet(), peerOpts{admit: replica.AdmitValues(reg.CheckChange)})
	connect(t, a, b)
	waitMesh(t, a, b)

	if _, err := a.r.Set(ctx, "/workloads/bad", []byte(`{"cpu":0}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.r.Set(ctx, "/workloads/good", []byte(`{"cpu":2}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the valid change", func() bool { return valueOf(b, "/workloads/good") == `{"cpu":2}` })
	waitFor(t, 10*time.Second, "the refusal", func() bool { return b.g.Stats().Refused >= 1 })
	if got := valueOf(b, "/workloads/bad"); got != "" {
		t.Fatalf("a value breaking the schema was stored: %q", got)
	}
	if got := valueOf(a, "/workloads/bad"); got != `{"cpu":0}` {
		t.Fatalf("the writer lost its own value: %q", got)
	}
	// A local write on the enforcing peer fails the same way.
	if _, err := b.r.Set(ctx, "/workloads/local", []byte(`{}`)); !errors.Is(err, replica.ErrRefused) || !errors.Is(err, codec.ErrInvalidValue) {
		t.Fatalf("local write against the schema: %v", err)
	}
}

func valueOf(p *testPeer, key string) string {
	e, err := p.r.Get(context.Background(), key)
	if err != nil {
		return ""
	}
	return string(e.Value)
}
