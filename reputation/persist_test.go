package reputation_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/sqlite"
	"github.com/univrs/peerstate/reputation"
)

func TestBook_PersistRoundTrip(t *testing.T) {
	stores := map[string]func(t *testing.T) datastore.Store{
		"memory": func(t *testing.T) datastore.Store { return newStore(t) },
		"sqlite": func(t *testing.T) datastore.Store {
			s, err := sqlite.Open(filepath.Join(t.TempDir(), "state.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := open(t)
			p := reputation.DefaultParams()
			c := newClock()
			a, z, banned := peerID(t, 1), peerID(t, 2), peerID(t, 3)

			b1 := newBook(t, s, p, c)
			b1.Observe(a, reputation.Valid, 200)
			b1.Observe(a, reputation.Invalid, 1)
			b1.ObserveLatency(a, 40*time.Millisecond)
			b1.Observe(z, reputation.Forged, 5)
			if err := b1.Ban(banned, c.Now().Add(2*time.Hour), "manual"); err != nil {
				t.Fatal(err)
			}
			c.Add(10 * time.Minute)
			if err := b1.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			want := b1.Records()
			if err := b1.Flush(ctx); err != nil { // nothing dirty: no write
				t.Fatal(err)
			}

			b2 := newBook(t, s, p, c)
			if err := b2.Load(ctx); err != nil {
				t.Fatal(err)
			}
			got := b2.Records()
			if len(got) != len(want) {
				t.Fatalf("loaded %d records, want %d", len(got), len(want))
			}
			for i := range want {
				w, g := want[i], got[i]
				if g.Peer != w.Peer || !near(g.Score, w.Score) || !near(g.Positive, w.Positive) || !near(g.Negative, w.Negative) ||
					g.State != w.State || g.Latency != w.Latency || !g.BannedUntil.Equal(w.BannedUntil) || g.BanReason != w.BanReason ||
					fmt.Sprint(g.Counts) != fmt.Sprint(w.Counts) {
					t.Errorf("record %d:\n got %+v\nwant %+v", i, g, w)
				}
			}
			if !b2.Banned(z) || !b2.Banned(banned) || b2.Banned(a) {
				t.Fatal("bans not restored")
			}
			// Decay continues from the persisted time.
			c.Add(time.Hour)
			if !near(b2.Score(z), -100*decay(p, 70*time.Minute)) {
				t.Fatalf("reloaded score decays to %v, want %v", b2.Score(z), -100*decay(p, 70*time.Minute))
			}
			if b2.Banned(z) {
				t.Fatal("not recovered after 70 minutes")
			}
			// Load again changes nothing.
			before := b2.Score(a)
			if err := b2.Load(ctx); err != nil || b2.Score(a) != before {
				t.Fatalf("second Load: %v, %v → %v", err, before, b2.Score(a))
			}
		})
	}
}

func TestBook_LoadMergesObserved(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	p := reputation.DefaultParams()
	c := newClock()
	id := peerID(t, 1)
	b1 := newBook(t, s, p, c)
	b1.Observe(id, reputation.Forged, 2) // -40
	if err := b1.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	b2 := newBook(t, s, p, c)
	w := watchStates(b2)
	b2.Observe(id, reputation.Invalid, 3) // observed before Load: -15, graylisted
	b2.Check()
	w.take()
	if err := b2.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if b2.Score(id) != -55 || !b2.Banned(id) {
		t.Fatalf("merged score %v", b2.Score(id))
	}
	if got := w.take(); len(got) != 1 || got[0] != tr(id, reputation.Graylisted, reputation.Banned) {
		t.Fatalf("Load calls %v", got)
	}
	r, _ := b2.Record(id)
	if r.Counts[reputation.Forged] != 2 || r.Counts[reputation.Invalid] != 3 {
		t.Fatalf("counts %v", r.Counts)
	}
}

func TestBook_LoadSkipsUndecodable(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	p := reputation.DefaultParams()
	c := newClock()
	good, bad1, bad2 := peerID(t, 1), peerID(t, 2), peerID(t, 3)
	b1 := newBook(t, s, p, c)
	b1.Observe(good, reputation.Invalid, 1)
	if err := b1.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for key, v := range map[string]string{
		reputation.Key(bad1):                "not json",
		reputation.Key(bad2):                `{"peer":"` + good.String() + `","version":1,"updated_at":"2026-01-02T03:00:00Z"}`,
		"/peers/" + good.String() + "/info": `{"whatever":1}`,
		"/peers/x/y/reputation":             `{}`,
	} {
		if _, err := s.Set(ctx, key, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	var logs bytes.Buffer
	b2 := newBook(t, s, p, c, reputation.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err := b2.Load(ctx); err != nil {
		t.Fatal(err)
	}
	recs := b2.Records()
	if len(recs) != 1 || recs[0].Peer != good.String() || recs[0].Score != -5 {
		t.Fatalf("records %+v", recs)
	}
	if n := strings.Count(logs.String(), "skipping undecodable record"); n != 2 {
		t.Fatalf("%d skips logged, want 2:\n%s", n, logs.String())
	}
}

func TestBook_ConcurrentObserveAndFlush(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	p := reputation.DefaultParams()
	c := newClock()
	b := newBook(t, s, p, c, reputation.WithMaxPeers(8))
	const workers, each, peers = 8, 500, 12
	ids := make([]peer.ID, peers)
	for i := range ids {
		ids[i] = peerID(t, i)
	}
	stop := make(chan struct{})
	var flushErr error
	var fwg sync.WaitGroup
	fwg.Add(1)
	go func() {
		defer fwg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := b.Flush(ctx); err != nil {
				flushErr = err
				return
			}
			b.Check()
			_ = b.Records()
		}
	}()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := peerIDs(ids, w+i)
				b.Observe(id, reputation.Valid, 1)
				b.ObserveLatency(id, time.Millisecond)
				_ = b.Score(id)
				if i%50 == 0 {
					c.Add(time.Second)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	fwg.Wait()
	if flushErr != nil {
		t.Fatal(flushErr)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	b2 := newBook(t, s, p, c, reputation.WithMaxPeers(peers))
	if err := b2.Load(ctx); err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, r := range b2.Records() {
		total += r.Counts[reputation.Valid]
	}
	if total != workers*each {
		t.Fatalf("persisted %d valid observations, want %d", total, workers*each)
	}
}

func TestBook_MaxPeers(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	p := reputation.DefaultParams()
	c := newClock()
	if _, err := reputation.New(s, p, reputation.WithMaxPeers(0)); err == nil {
		t.Fatal("WithMaxPeers(0) accepted")
	}
	b := newBook(t, s, p, c, reputation.WithMaxPeers(4))
	bad := peerID(t, 0)
	b.Observe(bad, reputation.Forged, 5) // banned: kept in memory over quieter peers
	for i := 1; i <= 20; i++ {
		c.Add(time.Second)
		b.Observe(peerID(t, i), reputation.Invalid, 1)
		if i%2 == 0 { // as Run does when evicted records pile up
			if err := b.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := len(b.Records()); n != 4 {
		t.Fatalf("%d records in memory after Flush, want 4", n)
	}
	if !b.Banned(bad) {
		t.Fatal("the banned peer was evicted")
	}
	page, err := s.List(ctx, "/peers/", datastore.ListOptions{})
	if err != nil || len(page.Entries) != 21 {
		t.Fatalf("%d records persisted, want 21 (%v)", len(page.Entries), err)
	}
	// An evicted peer seen again gets its persisted record back at Flush.
	old := peerID(t, 1)
	if _, ok := b.Record(old); ok {
		t.Fatal("peer 1 still in memory")
	}
	b.Observe(old, reputation.Invalid, 1)
	if r, _ := b.Record(old); r.Counts[reputation.Invalid] != 1 {
		t.Fatalf("before merge: %v", r.Counts)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r, ok := b.Record(old)
	if !ok || r.Counts[reputation.Invalid] != 2 || !near(r.Score, -5-5*decay(p, 19*time.Second)) {
		t.Fatalf("after merge: %+v", r)
	}
}

func peerIDs(ids []peer.ID, i int) peer.ID { return ids[i%len(ids)] }

func TestBook_MaxPeersFlood(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	c := newClock()
	var logs bytes.Buffer
	b := newBook(t, s, reputation.DefaultParams(), c, reputation.WithMaxPeers(4),
		reputation.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	for i := range 200 {
		b.Observe(peerID(t, i), reputation.Invalid, 1)
	}
	// Live records plus dirty evicted ones waiting for a Flush: at most 2×4.
	if n := len(b.Records()); n > 8 {
		t.Fatalf("%d records in memory, want ≤ 8", n)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(b.Records()); n != 4 {
		t.Fatalf("%d records after Flush, want 4", n)
	}
	if !strings.Contains(logs.String(), "dropped before they were flushed") {
		t.Fatalf("drops not logged: %s", logs.String())
	}
}

func TestBook_UnbanBeforeMerge(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	p := reputation.DefaultParams()
	c := newClock()
	id := peerID(t, 1)
	b1 := newBook(t, s, p, c)
	b1.Observe(id, reputation.Forged, 5)
	if err := b1.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	b2 := newBook(t, s, p, c) // not loaded: id is unknown in memory
	if err := b2.Unban(id); err != nil {
		t.Fatal(err)
	}
	if err := b2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if b2.State(id) != reputation.Graylisted || !near(b2.Score(id), p.BanThreshold) {
		t.Fatalf("after merge and unban: %s %v", b2.State(id), b2.Score(id))
	}
	b3 := newBook(t, s, p, c)
	if err := b3.Load(ctx); err != nil || b3.Banned(id) {
		t.Fatalf("the unban was not persisted: %v banned=%v", err, b3.Banned(id))
	}
}

func TestBook_SilenceCostsNothing(t *testing.T) {
	p := reputation.DefaultParams()
	c := newClock()
	b := newBook(t, newStore(t), p, c)
	idle, quiet := peerID(t, 1), peerID(t, 2)
	b.Connected(idle) // connected, sends nothing
	b.Observe(quiet, reputation.Valid, 10)
	b.Disconnected(quiet) // sent a little, then nothing
	for range 7 * 24 {
		c.Add(time.Hour)
		b.Check()
		for _, id := range []peer.ID{idle, quiet} {
			if b.Score(id) < 0 || b.State(id) != reputation.Ok {
				t.Fatalf("%s: score %v, state %s after silence", id.ShortString(), b.Score(id), b.State(id))
			}
		}
	}
	if b.Score(idle) <= 0 {
		t.Fatalf("a connected idle peer earned nothing: %v", b.Score(idle))
	}
}
