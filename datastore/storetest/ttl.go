package storetest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
)

// Clock is a settable clock for the TTL suite; its zero value starts at a
// fixed instant.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t.IsZero() {
		c.t = time.Unix(1_800_000_000, 0)
	}
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.Now()
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TTLFactory returns a new, empty store that implements datastore.Expirer
// and reads time from now.
type TTLFactory func(t *testing.T, now func() time.Time) datastore.Store

// RunTTL checks entries written with a time to live: their expiry, deletion
// as a tombstone with a Deleted event, renewal, and that writes made since
// win over a pending expiry. Time is the injected clock: ExpireDue applies
// expiries, and one test checks that the store's own loop does too.
func RunTTL(t *testing.T, newStore TTLFactory) {
	tests := []struct {
		name string
		fn   func(*testing.T, datastore.Store, datastore.Expirer, *Clock)
	}{
		{"ExpiresAndTombstones", testTTLExpires},
		{"RenewAndClear", testTTLRenewAndClear},
		{"TxnCreateWithTTL", testTTLTxn},
		{"BadTTL", testTTLBad},
		{"BackgroundExpiry", testTTLBackground},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := &Clock{}
			s := newStore(t, clk.Now)
			x, ok := s.(datastore.Expirer)
			if !ok {
				t.Fatalf("%T does not implement datastore.Expirer", s)
			}
			tc.fn(t, s, x, clk)
		})
	}
}

func expireDue(t *testing.T, x datastore.Expirer, want int) {
	t.Helper()
	n, err := x.ExpireDue(context.Background())
	if err != nil || n != want {
		t.Fatalf("ExpireDue = %d, %v; want %d", n, err, want)
	}
}

func testTTLExpires(t *testing.T, s datastore.Store, x datastore.Expirer, clk *Clock) {
	ctx := context.Background()
	w, err := s.Watch(ctx, "/lease/")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	v, err := x.SetTTL(ctx, "/lease/a", []byte("held"), 10*time.Second)
	if err != nil || v != 1 {
		t.Fatalf("SetTTL = %d, %v", v, err)
	}
	s.Set(ctx, "/lease/plain", []byte("p"))
	e, err := s.Get(ctx, "/lease/a")
	if err != nil || !e.ExpiresAt.Equal(clk.Now().Add(10*time.Second)) {
		t.Fatalf("ExpiresAt = %v (%v), want now+10s", e.ExpiresAt, err)
	}
	if p, _ := s.Get(ctx, "/lease/plain"); !p.ExpiresAt.IsZero() {
		t.Fatalf("a plain set expires at %v", p.ExpiresAt)
	}
	clk.Advance(9 * time.Second)
	expireDue(t, x, 0)
	if _, err := s.Get(ctx, "/lease/a"); err != nil {
		t.Fatal("expired early:", err)
	}
	clk.Advance(time.Second)
	expireDue(t, x, 1)
	if _, err := s.Get(ctx, "/lease/a"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatal("not expired:", err)
	}
	if _, err := s.Get(ctx, "/lease/plain"); err != nil {
		t.Fatal("a plain entry expired:", err)
	}
	var got []datastore.Event
	for len(got) < 3 {
		select {
		case ev := <-w.Events():
			got = append(got, ev)
		case <-time.After(10 * time.Second):
			t.Fatalf("events: %+v", got)
		}
	}
	ev := got[2]
	if ev.Type != datastore.Deleted || ev.Key != "/lease/a" || ev.Version != 2 || string(ev.OldValue) != "held" || ev.Origin != "" {
		t.Fatalf("expiry event %+v", ev)
	}
	// The tombstone keeps the version: a re-created key continues from it.
	if v, err := s.CreateIfNotExists(ctx, "/lease/a", []byte("again")); err != nil || v != 3 {
		t.Fatalf("re-create = %d, %v", v, err)
	}
	expireDue(t, x, 0)
}

func testTTLRenewAndClear(t *testing.T, s datastore.Store, x datastore.Expirer, clk *Clock) {
	ctx := context.Background()
	x.SetTTL(ctx, "/r/renewed", []byte("1"), 5*time.Second)
	x.SetTTL(ctx, "/r/cleared", []byte("1"), 5*time.Second)
	clk.Advance(4 * time.Second)
	if _, err := x.SetTTL(ctx, "/r/renewed", []byte("2"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Set(ctx, "/r/cleared", []byte("2")); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Second) // past the first deadline
	expireDue(t, x, 0)
	if e, err := s.Get(ctx, "/r/cleared"); err != nil || !e.ExpiresAt.IsZero() {
		t.Fatalf("cleared: %+v %v", e, err)
	}
	clk.Advance(3 * time.Second) // past the renewed deadline
	expireDue(t, x, 1)
	if _, err := s.Get(ctx, "/r/renewed"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatal(err)
	}
	// A delete unschedules the expiry.
	x.SetTTL(ctx, "/r/deleted", []byte("1"), time.Second)
	s.Delete(ctx, "/r/deleted")
	clk.Advance(2 * time.Second)
	expireDue(t, x, 0)
}

func testTTLTxn(t *testing.T, s datastore.Store, x datastore.Expirer, clk *Clock) {
	ctx := context.Background()
	lease := func(expected uint64, holder string) (datastore.TxnResult, error) {
		return s.Txn(ctx, datastore.OpCheckVersion("/cluster/leader", expected), datastore.OpSetTTL("/cluster/leader", []byte(holder), 3*time.Second))
	}
	res, err := lease(0, "a")
	if err != nil || res.Versions[1] != 1 {
		t.Fatal(res, err)
	}
	if _, err := lease(0, "b"); !errors.Is(err, datastore.ErrTxnFailed) {
		t.Fatal("second create:", err)
	}
	clk.Advance(2 * time.Second)
	if _, err := lease(1, "a"); err != nil { // renewal by version
		t.Fatal(err)
	}
	clk.Advance(2 * time.Second)
	expireDue(t, x, 0)
	clk.Advance(2 * time.Second)
	expireDue(t, x, 1)
	if res, err := lease(0, "b"); err != nil || res.Versions[1] != 4 {
		t.Fatal("take over after expiry:", res, err)
	}
}

func testTTLBad(t *testing.T, s datastore.Store, x datastore.Expirer, _ *Clock) {
	ctx := context.Background()
	if _, err := x.SetTTL(ctx, "/a", []byte("x"), 0); !errors.Is(err, datastore.ErrInvalidTxn) {
		t.Error("zero TTL:", err)
	}
	if _, err := s.Txn(ctx, datastore.OpSetTTL("/a", nil, -time.Second)); !errors.Is(err, datastore.ErrInvalidTxn) {
		t.Error("negative TTL:", err)
	}
	if _, err := s.Txn(ctx, datastore.Op{Kind: datastore.OpKindDelete, Key: "/a", TTL: time.Second}); !errors.Is(err, datastore.ErrInvalidTxn) {
		t.Error("TTL on a delete:", err)
	}
	if _, err := x.SetTTL(ctx, "bad", nil, time.Second); !errors.Is(err, datastore.ErrInvalidKey) {
		t.Error("bad key:", err)
	}
	if _, err := s.Get(ctx, "/a"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Error("a refused write landed:", err)
	}
}

// The store's own loop applies an expiry once the clock has passed it,
// without ExpireDue.
func testTTLBackground(t *testing.T, s datastore.Store, x datastore.Expirer, clk *Clock) {
	ctx := context.Background()
	w, err := s.Watch(ctx, "/bg")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := x.SetTTL(ctx, "/bg", []byte("x"), time.Minute); err != nil {
		t.Fatal(err)
	}
	<-w.Events()
	clk.Advance(2 * time.Minute)
	select {
	case ev := <-w.Events():
		if ev.Type != datastore.Deleted {
			t.Fatalf("event %+v", ev)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the store's expiry loop did not delete the entry")
	}
}

// testTTLUnsupported checks that a store without TTL refuses a write with
// one and changes nothing.
func testTTLUnsupported(t *testing.T, newStore Factory) {
	s := newStore(t)
	if datastore.HasTTL(s) {
		return // RunTTL covers it
	}
	ctx := context.Background()
	if _, err := s.Txn(ctx, datastore.OpSet("/other", []byte("x")), datastore.OpSetTTL("/t", []byte("x"), time.Second)); !errors.Is(err, datastore.ErrTTLUnsupported) {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "/other"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatal("part of a refused txn landed:", err)
	}
}

// BenchmarkExpiry measures expiry precision on s (which must use the wall
// clock): each iteration writes a key with a TTL of ttl and waits for its
// Deleted event. It reports late-ms, the mean delay from the entry's
// ExpiresAt to the event's arrival, and max-late-ms, the worst.
func BenchmarkExpiry(b *testing.B, s datastore.Store, ttl time.Duration) {
	x, ok := s.(datastore.Expirer)
	if !ok {
		b.Fatalf("%T does not implement datastore.Expirer", s)
	}
	ctx := context.Background()
	w, err := s.Watch(ctx, "/bench-expiry/")
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	var total, worst time.Duration
	b.ResetTimer()
	for i := range b.N {
		key := "/bench-expiry/" + time.Now().Format("150405.000000000") + string(rune('a'+i%26))
		if _, err := x.SetTTL(ctx, key, []byte("x"), ttl); err != nil {
			b.Fatal(err)
		}
		e, err := s.Get(ctx, key)
		if err != nil {
			b.Fatal(err)
		}
		for {
			ev, ok := <-w.Events()
			if !ok {
				b.Fatal(w.Err())
			}
			if ev.Key == key && ev.Type == datastore.Deleted {
				late := time.Since(e.ExpiresAt)
				total += late
				worst = max(worst, late)
				break
			}
		}
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "late-ms")
	b.ReportMetric(float64(worst.Microseconds())/1000, "max-late-ms")
}
