package presence_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/storetest"
	"github.com/univrs/peerstate/internal/replicatest"
	"github.com/univrs/peerstate/presence"
	"github.com/univrs/peerstate/replica"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// stores returns, with one injected clock, a memory store and a replica.
func stores(t *testing.T) map[string]func(now func() time.Time) datastore.Store {
	return map[string]func(now func() time.Time) datastore.Store{
		"memory": func(now func() time.Time) datastore.Store {
			s := memory.New(datastore.WithClock(now))
			t.Cleanup(func() { s.Close() })
			return s
		},
		"replica": func(now func() time.Time) datastore.Store {
			key, _ := replicatest.KeyFor("a")
			r, err := replica.New(context.Background(), memory.New(), replica.Config{Key: key, Now: now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			return r
		},
	}
}

func TestReservation(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			clk := &storetest.Clock{}
			s := open(clk.Now)
			r, err := presence.Reserve(ctx, s, "/reservations/port/8080", []byte("a"), 10*time.Second)
			if err != nil || r.Version != 1 || !r.Expires.Equal(clk.Now().Add(10*time.Second)) {
				t.Fatalf("reserve = %+v, %v", r, err)
			}
			if _, err := presence.Reserve(ctx, s, r.Key, []byte("b"), time.Second); !errors.Is(err, presence.ErrTaken) {
				t.Fatalf("second reserve: %v", err)
			}
			clk.Advance(8 * time.Second)
			if r, err = presence.Extend(ctx, s, r, []byte("a"), 10*time.Second); err != nil {
				t.Fatal(err)
			}
			clk.Advance(8 * time.Second) // past the first deadline, not the extended one
			if held, err := presence.Held(ctx, s, r); err != nil || !held {
				t.Fatalf("extended reservation lost: %v %v", held, err)
			}
			clk.Advance(3 * time.Second)
			s.(datastore.Expirer).ExpireDue(ctx)
			if held, _ := presence.Held(ctx, s, r); held {
				t.Fatal("expired reservation still held")
			}
			if err := presence.Release(ctx, s, r); !errors.Is(err, presence.ErrNotHeld) {
				t.Fatalf("release of an expired reservation: %v", err)
			}
			b, err := presence.Reserve(ctx, s, r.Key, []byte("b"), time.Second)
			if err != nil || b.Version <= r.Version {
				t.Fatalf("reserve after expiry = %+v, %v", b, err)
			}
			if err := presence.Release(ctx, s, b); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Get(ctx, r.Key); !errors.Is(err, datastore.ErrKeyNotFound) {
				t.Fatal("released key still there")
			}
		})
	}
}

// A presence record stays while it is renewed, and goes when its holder
// stops renewing (it expires) or closes it (it is deleted).
func TestAnnounce(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := open(time.Now)
			w, err := s.Watch(ctx, "/peers/")
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			rec, err := presence.Announce(ctx, s, "/peers/a", []byte("up"), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			for range 3 { // the create, then renewals
				if ev := <-w.Events(); ev.Type == datastore.Deleted {
					t.Fatalf("a renewed record expired: %+v", ev)
				}
			}
			if err := rec.Close(); err != nil || rec.Close() != nil {
				t.Fatal(err)
			}
			for ev := range w.Events() {
				if ev.Type == datastore.Deleted {
					break
				}
			}
			if _, err := s.Get(ctx, "/peers/a"); !errors.Is(err, datastore.ErrKeyNotFound) {
				t.Fatal("closed record still there")
			}
			if _, err := presence.Announce(ctx, s, "/peers/b", nil, time.Millisecond); err == nil {
				t.Fatal("a TTL below 3ms was accepted")
			}
		})
	}
}

func TestRefusesStoreWithoutTTL(t *testing.T) {
	m := memory.New()
	defer m.Close()
	s := struct{ datastore.Store }{m} // hides the Expirer
	if _, err := presence.Reserve(context.Background(), s, "/r", nil, time.Second); !errors.Is(err, datastore.ErrTTLUnsupported) {
		t.Fatal(err)
	}
}
