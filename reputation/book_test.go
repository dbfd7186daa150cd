package reputation_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/univrs/peerstate/reputation"
)

func TestParams_Validate(t *testing.T) {
	if err := reputation.DefaultParams().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	cases := []struct {
		name  string
		edit  func(p *reputation.Params)
		field string
	}{
		{"good event negative", func(p *reputation.Params) { p.Weights[reputation.Valid] = -1 }, `Weights["valid"]`},
		{"bad event positive", func(p *reputation.Params) { p.Weights[reputation.Forged] = 1 }, `Weights["forged"]`},
		{"unknown event", func(p *reputation.Params) { p.Weights["gossip"] = -1 }, `Weights["gossip"]`},
		{"NaN weight", func(p *reputation.Params) { p.Weights[reputation.Abuse] = math.NaN() }, `Weights["abuse"]`},
		{"negative uptime", func(p *reputation.Params) { p.UptimeWeight = -1 }, "UptimeWeight"},
		{"negative slow sync", func(p *reputation.Params) { p.SlowSync = -time.Second }, "SlowSync"},
		{"positive slow sync weight", func(p *reputation.Params) { p.SlowSyncWeight = 1 }, "SlowSyncWeight"},
		{"zero max", func(p *reputation.Params) { p.MaxScore = 0 }, "MaxScore"},
		{"infinite max", func(p *reputation.Params) { p.MaxScore = math.Inf(1) }, "MaxScore"},
		{"min above ban", func(p *reputation.Params) { p.MinScore = -40 }, "MinScore"},
		{"ban above graylist", func(p *reputation.Params) { p.BanThreshold = -5 }, "BanThreshold"},
		{"graylist at zero", func(p *reputation.Params) { p.GraylistThreshold = 0 }, "GraylistThreshold"},
		{"zero half-life", func(p *reputation.Params) { p.HalfLife = 0 }, "HalfLife"},
		{"zero flush", func(p *reputation.Params) { p.FlushInterval = 0 }, "FlushInterval"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := reputation.DefaultParams()
			c.edit(&p)
			err := p.Validate()
			if !errors.Is(err, reputation.ErrInvalidParams) || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("got %v, want an ErrInvalidParams naming %s", err, c.field)
			}
			if _, err := reputation.New(newStore(t), p); !errors.Is(err, reputation.ErrInvalidParams) {
				t.Fatalf("New accepted bad params: %v", err)
			}
		})
	}
	t.Run("every bad field named", func(t *testing.T) {
		p := reputation.DefaultParams()
		p.MaxScore, p.HalfLife, p.FlushInterval = -1, 0, 0
		err := p.Validate()
		for _, f := range []string{"MaxScore", "HalfLife", "FlushInterval"} {
			if err == nil || !strings.Contains(err.Error(), f) {
				t.Errorf("error %v does not name %s", err, f)
			}
		}
	})
}

func TestParams_RecoveryTime(t *testing.T) {
	p := reputation.DefaultParams()
	for _, c := range []struct {
		score float64
		want  time.Duration
	}{
		{-100, time.Hour},
		{-200, 2 * time.Hour},
		{-75, time.Duration(math.Ceil(float64(time.Hour) * math.Log2(1.5)))},
		{-50, 0},
		{0, 0},
	} {
		if got := p.RecoveryTime(c.score); got != c.want {
			t.Errorf("RecoveryTime(%v) = %v, want %v", c.score, got, c.want)
		}
	}
}

func TestBook_Observe(t *testing.T) {
	p := reputation.DefaultParams()
	for _, c := range []struct {
		e    reputation.Event
		n    int
		want float64
	}{
		{reputation.Valid, 3, 0.03},
		{reputation.SyncOK, 2, 0.2},
		{reputation.Invalid, 1, -5},
		{reputation.Forged, 1, -20},
		{reputation.Policy, 2, -10},
		{reputation.SyncFailed, 3, -3},
		{reputation.Abuse, 1, -10},
		{reputation.Valid, 5000, p.MaxScore}, // capped
		{reputation.Forged, 50, p.MinScore},  // floored
		{reputation.Invalid, 0, 0},           // ignored
		{"unknown", 3, 0},                    // ignored
	} {
		t.Run(string(c.e), func(t *testing.T) {
			c0 := newClock()
			b := newBook(t, newStore(t), p, c0)
			id := peerID(t, 1)
			b.Observe(id, c.e, c.n)
			if got := b.Score(id); !near(got, c.want) {
				t.Fatalf("score %v, want %v", got, c.want)
			}
			r, ok := b.Record(id)
			if c.n <= 0 || !c.e.Known() {
				if ok {
					t.Fatalf("ignored observation created a record %+v", r)
				}
				return
			}
			if !ok || r.Counts[c.e] != uint64(c.n) {
				t.Fatalf("record %+v, %v: want count %d", r, ok, c.n)
			}
			if c.want >= 0 && (!near(r.Positive, c.want) || r.Negative != 0) ||
				c.want < 0 && (!near(r.Negative, c.want) || r.Positive != 0) {
				t.Fatalf("parts %v/%v for %v", r.Positive, r.Negative, c.want)
			}
		})
	}
	t.Run("caps apply per part", func(t *testing.T) {
		b := newBook(t, newStore(t), p, newClock())
		id := peerID(t, 1)
		b.Observe(id, reputation.Valid, 5000)
		b.Observe(id, reputation.Forged, 50)
		if got := b.Score(id); !near(got, p.MaxScore+p.MinScore) {
			t.Fatalf("score %v, want %v", got, p.MaxScore+p.MinScore)
		}
	})
	t.Run("unknown peer", func(t *testing.T) {
		b := newBook(t, newStore(t), p, newClock())
		if b.Score(peerID(t, 9)) != 0 || b.State(peerID(t, 9)) != reputation.Ok || b.Banned(peerID(t, 9)) {
			t.Fatal("unknown peer is not 0/ok")
		}
	})
}

func TestBook_Decay(t *testing.T) {
	p := reputation.DefaultParams()
	for _, d := range []time.Duration{0, time.Minute, 30 * time.Minute, time.Hour, 3 * time.Hour, 48 * time.Hour} {
		t.Run(d.String(), func(t *testing.T) {
			c := newClock()
			b := newBook(t, newStore(t), p, c)
			id := peerID(t, 1)
			b.Observe(id, reputation.Valid, 300) // +3
			b.Observe(id, reputation.Forged, 2)  // -40
			c.Add(d)
			f := decay(p, d)
			r, _ := b.Record(id)
			if !near(r.Positive, 3*f) || !near(r.Negative, -40*f) || !near(b.Score(id), -37*f) {
				t.Fatalf("after %v: %v/%v score %v, want %v/%v", d, r.Positive, r.Negative, b.Score(id), 3*f, -40*f)
			}
			// A later event adds to the decayed parts.
			b.Observe(id, reputation.Invalid, 1)
			c.Add(d)
			if want := (-40*f-5)*f + 3*f*f; !near(b.Score(id), want) {
				t.Fatalf("score %v, want %v", b.Score(id), want)
			}
		})
	}
}

func TestBook_Uptime(t *testing.T) {
	p := reputation.DefaultParams()
	accrued := func(d time.Duration) float64 { // w·H/ln2·(1-2^(-d/H)) with H = 1h
		return p.UptimeWeight / math.Ln2 * (1 - decay(p, d))
	}
	c := newClock()
	b := newBook(t, newStore(t), p, c)
	a, z := peerID(t, 1), peerID(t, 2)
	b.Connected(a)
	b.Connected(z)
	for range 8 { // a is touched every 15 minutes, z only read at the end
		c.Add(15 * time.Minute)
		b.ObserveLatency(a, time.Millisecond)
	}
	if got, want := b.Score(a), accrued(2*time.Hour); !near(got, want) {
		t.Fatalf("uptime over 2h: %v, want %v", got, want)
	}
	if !near(b.Score(a), b.Score(z)) {
		t.Fatalf("uptime depends on how often the record is touched: %v vs %v", b.Score(a), b.Score(z))
	}
	b.Disconnected(a)
	c.Add(time.Hour)
	if got, want := b.Score(a), accrued(2*time.Hour)/2; !near(got, want) {
		t.Fatalf("after disconnect: %v, want %v (decay only)", got, want)
	}
	c.Add(100 * time.Hour) // long connected: capped by the steady state w·H/ln2 and MaxScore
	if got := b.Score(z); got > p.UptimeWeight/math.Ln2+1e-9 || got > p.MaxScore {
		t.Fatalf("uptime unbounded: %v", got)
	}
}

func TestBook_ObserveLatency(t *testing.T) {
	p := reputation.DefaultParams()
	b := newBook(t, newStore(t), p, newClock())
	id := peerID(t, 1)
	b.ObserveLatency(id, 100*time.Millisecond)
	b.ObserveLatency(id, 200*time.Millisecond)
	r, _ := b.Record(id)
	if want := time.Duration(0.2*float64(200*time.Millisecond) + 0.8*float64(100*time.Millisecond)); r.Latency != want {
		t.Fatalf("latency %v, want %v", r.Latency, want)
	}
	if b.Score(id) != 0 {
		t.Fatalf("fast sessions cost score: %v", b.Score(id))
	}
	b.ObserveLatency(id, p.SlowSync+time.Second)
	b.ObserveLatency(id, p.SlowSync) // not slower than SlowSync
	if !near(b.Score(id), p.SlowSyncWeight) {
		t.Fatalf("score %v, want one slow session %v", b.Score(id), p.SlowSyncWeight)
	}
}

func TestBook_States(t *testing.T) {
	p := reputation.DefaultParams()
	id := peerID(t, 1)
	steps := []struct {
		name  string
		do    func(b *reputation.Book, c *fakeClock)
		state reputation.State
		calls []string
	}{
		{"one invalid: ok", func(b *reputation.Book, c *fakeClock) { b.Observe(id, reputation.Invalid, 1) }, reputation.Ok, nil},
		{"two invalid: graylisted", func(b *reputation.Book, c *fakeClock) { b.Observe(id, reputation.Invalid, 1) },
			reputation.Graylisted, []string{tr(id, reputation.Ok, reputation.Graylisted)}},
		{"three forged: -70, banned", func(b *reputation.Book, c *fakeClock) { b.Observe(id, reputation.Forged, 3) },
			reputation.Banned, []string{tr(id, reputation.Graylisted, reputation.Banned)}},
		{"half-life later: -35, graylisted", func(b *reputation.Book, c *fakeClock) { c.Add(time.Hour) },
			reputation.Graylisted, []string{tr(id, reputation.Banned, reputation.Graylisted)}},
		{"two half-lives later: -8.75, ok", func(b *reputation.Book, c *fakeClock) { c.Add(2 * time.Hour) },
			reputation.Ok, []string{tr(id, reputation.Graylisted, reputation.Ok)}},
		{"ban and recover before delivery: no call", func(b *reputation.Book, c *fakeClock) {
			b.Observe(id, reputation.Forged, 3)
			c.Add(10 * time.Hour)
		}, reputation.Ok, nil},
	}
	c := newClock()
	b := newBook(t, newStore(t), p, c)
	w := watchStates(b)
	for _, s := range steps {
		s.do(b, c)
		if got := b.State(id); got != s.state {
			t.Fatalf("%s: state %s, want %s", s.name, got, s.state)
		}
		if len(w.take()) != 0 {
			t.Fatalf("%s: OnState called before Check or Run", s.name)
		}
		b.Check()
		if got := w.take(); !slices.Equal(got, s.calls) {
			t.Fatalf("%s: OnState calls %v, want %v", s.name, got, s.calls)
		}
		if r, _ := b.Record(id); r.State != s.state {
			t.Fatalf("%s: record state %s", s.name, r.State)
		}
	}
}

func TestBook_BanRecoversByDecay(t *testing.T) {
	p := reputation.DefaultParams()
	p.FlushInterval = 5 * time.Millisecond
	c := newClock()
	b := newBook(t, newStore(t), p, c)
	w := watchStates(b)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}()

	id := peerID(t, 1)
	b.Observe(id, reputation.Forged, 5) // -100 = MinScore
	w.wait(t, tr(id, reputation.Ok, reputation.Banned))
	if !b.Banned(id) || b.RecoversIn(id) != time.Hour {
		t.Fatalf("banned %v, recovers in %v, want 1h", b.Banned(id), b.RecoversIn(id))
	}
	c.Add(time.Hour - time.Second)
	if !b.Banned(id) {
		t.Fatalf("recovered early: %v", b.Score(id))
	}
	c.Add(time.Second) // exactly -50: no longer below the threshold
	w.wait(t, tr(id, reputation.Banned, reputation.Graylisted))
	if b.Banned(id) || !near(b.Score(id), p.BanThreshold) {
		t.Fatalf("after 1h: banned %v, score %v", b.Banned(id), b.Score(id))
	}
}

func TestBook_ManualBan(t *testing.T) {
	p := reputation.DefaultParams()
	c := newClock()
	b := newBook(t, newStore(t), p, c)
	w := watchStates(b)
	id := peerID(t, 1)

	if err := b.Ban("", c.Now().Add(time.Hour), "x"); !errors.Is(err, reputation.ErrInvalidPeer) {
		t.Fatalf("empty peer: %v", err)
	}
	if err := b.Ban(id, c.Now(), "x"); !errors.Is(err, reputation.ErrInvalidBan) {
		t.Fatalf("ban until now: %v", err)
	}
	if _, ok := b.Record(id); ok {
		t.Fatal("a rejected ban created a record")
	}
	if err := b.Ban(id, c.Now().Add(10*time.Minute), "spam"); err != nil {
		t.Fatal(err)
	}
	if !b.Banned(id) || b.Score(id) != 0 || b.RecoversIn(id) != 10*time.Minute {
		t.Fatalf("banned %v score %v recovers %v", b.Banned(id), b.Score(id), b.RecoversIn(id))
	}
	r, _ := b.Record(id)
	if r.State != reputation.Banned || r.BanReason != "spam" || !r.BannedUntil.Equal(c.Now().Add(10*time.Minute)) {
		t.Fatalf("record %+v", r)
	}
	b.Check()
	if got := w.take(); !slices.Equal(got, []string{tr(id, reputation.Ok, reputation.Banned)}) {
		t.Fatalf("calls %v", got)
	}

	// Expiry.
	c.Add(10 * time.Minute)
	b.Check()
	if got := w.take(); !slices.Equal(got, []string{tr(id, reputation.Banned, reputation.Ok)}) {
		t.Fatalf("expiry calls %v", got)
	}
	if r, _ := b.Record(id); !r.BannedUntil.IsZero() || r.BanReason != "" {
		t.Fatalf("expired ban kept: %+v", r)
	}

	// Unban of a manual ban.
	b.Ban(id, c.Now().Add(time.Hour), "again")
	b.Unban(id)
	if b.Banned(id) {
		t.Fatal("still banned after Unban")
	}

	// Unban of a score ban: probation at exactly the threshold.
	b.Observe(id, reputation.Valid, 100)
	b.Observe(id, reputation.Forged, 5)
	if !b.Banned(id) {
		t.Fatalf("score %v not banned", b.Score(id))
	}
	if err := b.Unban(id); err != nil {
		t.Fatal(err)
	}
	if b.State(id) != reputation.Graylisted || b.Score(id) < p.BanThreshold || !near(b.Score(id), p.BanThreshold) {
		t.Fatalf("after Unban: %s %v", b.State(id), b.Score(id))
	}
	b.Observe(id, reputation.SyncFailed, 1)
	if !b.Banned(id) {
		t.Fatal("a bad event on probation did not ban")
	}
	// Unban of a peer that is not banned changes nothing.
	other := peerID(t, 2)
	b.Observe(other, reputation.Invalid, 1)
	b.Unban(other)
	if b.Score(other) != -5 {
		t.Fatalf("Unban changed a peer that was not banned: %v", b.Score(other))
	}
}

func TestBook_Run(t *testing.T) {
	s := newStore(t)
	p := reputation.DefaultParams()
	p.FlushInterval = time.Hour // only the final flush happens
	c := newClock()
	b := newBook(t, s, p, c)
	w := watchStates(b)
	id := peerID(t, 1)
	b.Observe(id, reputation.Invalid, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	b.Observe(id, reputation.Invalid, 1) // graylisted: delivered by Run, so Run is running
	w.wait(t, tr(id, reputation.Ok, reputation.Graylisted))
	if err := b.Run(ctx); !errors.Is(err, reputation.ErrRunning) {
		t.Fatalf("second Run: %v", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	e, err := s.Get(context.Background(), reputation.Key(id))
	if err != nil {
		t.Fatalf("no final flush: %v", err)
	}
	var r reputation.Record
	if err := json.Unmarshal(e.Value, &r); err != nil || r.Negative != -10 || r.Counts[reputation.Invalid] != 2 {
		t.Fatalf("persisted %s: %v", e.Value, err)
	}
}

func TestRecord_JSON(t *testing.T) {
	r := reputation.Record{
		Peer: "12D3KooW", Score: -1.5, State: reputation.Graylisted, Positive: 0.5, Negative: -2,
		UpdatedAt: t0, Counts: map[reputation.Event]uint64{reputation.Invalid: 2},
		Latency: 1500 * time.Microsecond, Version: reputation.RecordVersion,
	}
	v, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"latency_ms":1.5`, `"counts":{"invalid":2}`, `"version":1`, `"state":"graylisted"`} {
		if !strings.Contains(string(v), want) {
			t.Errorf("%s lacks %s", v, want)
		}
	}
	if strings.Contains(string(v), "banned_until") {
		t.Errorf("zero ban written: %s", v)
	}
	var back reputation.Record
	if err := json.Unmarshal(v, &back); err != nil {
		t.Fatal(err)
	}
	if back.Latency != r.Latency || back.Score != r.Score || !back.UpdatedAt.Equal(r.UpdatedAt) || back.Counts[reputation.Invalid] != 2 {
		t.Fatalf("round trip %+v", back)
	}
	if err := json.Unmarshal([]byte(`{"latency_ms":-1}`), &back); err == nil {
		t.Fatal("negative latency accepted")
	}
}

func TestDecodeRecord(t *testing.T) {
	id := peerID(t, 1)
	good := func(edit func(m map[string]any)) []byte {
		m := map[string]any{"peer": id.String(), "score": -1, "state": "ok", "positive": 1, "negative": -2,
			"updated_at": t0, "version": 1, "counts": map[string]uint64{"invalid": 1, "future-event": 3}}
		if edit != nil {
			edit(m)
		}
		v, _ := json.Marshal(m)
		return v
	}
	r, p, err := reputation.DecodeRecord(reputation.Key(id), good(nil))
	if err != nil || p != id || r.Negative != -2 || len(r.Counts) != 1 {
		t.Fatalf("good record: %+v %v %v", r, p, err)
	}
	for _, c := range []struct {
		name  string
		key   string
		value []byte
	}{
		{"not json", reputation.Key(id), []byte("{")},
		{"other peer", reputation.Key(peerID(t, 2)), good(nil)},
		{"bad key", "/peers/" + id.String() + "/info", good(nil)},
		{"bad peer id", "/peers/nope/reputation", good(func(m map[string]any) { m["peer"] = "nope" })},
		{"future version", reputation.Key(id), good(func(m map[string]any) { m["version"] = 2 })},
		{"no version", reputation.Key(id), good(func(m map[string]any) { delete(m, "version") })},
		{"negative positive", reputation.Key(id), good(func(m map[string]any) { m["positive"] = -1 })},
		{"positive negative", reputation.Key(id), good(func(m map[string]any) { m["negative"] = 1 })},
		{"no time", reputation.Key(id), good(func(m map[string]any) { delete(m, "updated_at") })},
	} {
		if _, _, err := reputation.DecodeRecord(c.key, c.value); !errors.Is(err, reputation.ErrBadRecord) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	id := peerID(f, 1)
	f.Add(reputation.Key(id), []byte(`{"peer":"`+id.String()+`","positive":1,"negative":-1,"updated_at":"2026-01-02T03:00:00Z","version":1,"latency_ms":3}`))
	f.Add("/peers/x/reputation", []byte(`{}`))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		r, p, err := reputation.DecodeRecord(key, value)
		if err != nil {
			return
		}
		if r.Peer != p.String() || r.Positive < 0 || r.Negative > 0 || math.IsNaN(r.Positive+r.Negative) {
			t.Fatalf("accepted a bad record: %+v", r)
		}
		if _, err := json.Marshal(r); err != nil {
			t.Fatalf("accepted record does not encode: %v", err)
		}
	})
}

func BenchmarkBook_Observe(b *testing.B) {
	book, err := reputation.New(newStore(b), reputation.DefaultParams())
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]peer.ID, 64)
	for i := range ids {
		ids[i] = peerID(b, i)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			book.Observe(ids[i%len(ids)], reputation.Valid, 1)
			i++
		}
	})
}
