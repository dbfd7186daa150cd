package gossip_test

import (
	"github.com/prometheus/client_golang/prometheus"

	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/gossip"
	"github.com/univrs/peerstate/replica"
)

// A write on one peer is readable on the others, reaches their watchers with
// the writer as Origin, and a CAS with the version read elsewhere succeeds.
func TestGossip_WriteVisibleEverywhere(t *testing.T) {
	ctx := context.Background()
	peers := newPeers(t, 3, quiet())
	a, b, c := peers[0], peers[1], peers[2]

	var watchers []datastore.Watcher
	for _, p := range []*testPeer{b, c} {
		w, err := p.r.Watch(ctx, "/app/")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		watchers = append(watchers, w)
	}

	ver, err := a.r.Set(ctx, "/app/greeting", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range watchers {
		select {
		case ev := <-w.Events():
			if ev.Key != "/app/greeting" || string(ev.NewValue) != "hello" || ev.Type != datastore.Created {
				t.Fatalf("event %+v", ev)
			}
			if ev.Origin != a.id().String() {
				t.Fatalf("event origin %q, want the writer %s", ev.Origin, a.id())
			}
			if ev.Version != ver {
				t.Fatalf("event version %d, want %d", ev.Version, ver)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no event on a remote watcher")
		}
	}
	for _, p := range []*testPeer{b, c} {
		e, err := p.r.Get(ctx, "/app/greeting")
		if err != nil || string(e.Value) != "hello" || e.Version != ver {
			t.Fatalf("get on %s: %+v, %v", p.id(), e, err)
		}
	}

	// CAS on B with the version B read: B's replica has A's version.
	e, err := b.r.Get(ctx, "/app/greeting")
	if err != nil {
		t.Fatal(err)
	}
	ver2, err := b.r.CompareAndSet(ctx, "/app/greeting", e.Version, []byte("hi from b"))
	if err != nil {
		t.Fatalf("CAS with the replicated version: %v", err)
	}
	waitFor(t, 10*time.Second, "CAS to replicate", func() bool {
		for _, p := range peers {
			e, err := p.r.Get(ctx, "/app/greeting")
			if err != nil || string(e.Value) != "hi from b" || e.Version != ver2 {
				return false
			}
		}
		return true
	})
	waitConverged(t, 10*time.Second, peers...)
	if st := a.g.Stats(); st.Published == 0 || st.PubsubBytesSent == 0 {
		t.Fatalf("writer stats %+v", st)
	}
	if st := c.g.Stats(); st.Received == 0 || st.Applied == 0 || st.PubsubBytesReceived == 0 {
		t.Fatalf("receiver stats %+v", st)
	}
}

// Concurrent conflicting writes to the same keys on different peers end
// with identical entries everywhere.
func TestGossip_ConcurrentWritesConverge(t *testing.T) {
	ctx := context.Background()
	peers := newPeers(t, 3, quiet())
	const keys, rounds = 20, 10
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				for k := range keys {
					key := fmt.Sprintf("/conflict/k%02d", k)
					if _, err := p.r.Set(ctx, key, fmt.Appendf(nil, "peer%d-round%d", i, r)); err != nil {
						t.Errorf("set: %v", err)
						return
					}
				}
				// Deletes race too.
				if err := p.r.Delete(ctx, fmt.Sprintf("/conflict/k%02d", r)); err != nil && !errors.Is(err, datastore.ErrKeyNotFound) {
					t.Errorf("delete: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	waitConverged(t, 20*time.Second, peers...)
	for _, p := range peers {
		if st := p.g.Stats(); len(st.Rejected) != 0 {
			t.Fatalf("honest peers rejected messages: %+v", st.Rejected)
		}
	}
}

// A delete racing a re-create converges, and the deleted value never comes
// back, even from a peer that was cut off while the key was deleted.
func TestGossip_DeleteRecreateNeverResurrects(t *testing.T) {
	ctx := context.Background()
	peers := newPeers(t, 3, quiet())
	a, b, c := peers[0], peers[1], peers[2]
	const n = 20
	key := func(i int) string { return fmt.Sprintf("/dr/k%02d", i) }
	for i := range n {
		if _, err := a.r.Set(ctx, key(i), []byte("doomed")); err != nil {
			t.Fatal(err)
		}
	}
	waitConverged(t, 10*time.Second, peers...)

	// C keeps the old values through the deletes.
	partition(t, c, a)
	partition(t, c, b)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range n {
			if err := a.r.Delete(ctx, key(i)); err != nil {
				t.Errorf("delete: %v", err)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := range n {
			if i%2 == 0 {
				if _, err := b.r.Set(ctx, key(i), []byte("reborn")); err != nil {
					t.Errorf("set: %v", err)
				}
			}
		}
	}()
	wg.Wait()
	waitConverged(t, 10*time.Second, a, b)

	heal(t, c, a)
	heal(t, c, b)
	for _, pair := range [][2]*testPeer{{c, a}, {c, b}, {a, c}, {b, c}} {
		if _, err := pair[0].g.SyncWith(ctx, pair[1].id()); err != nil {
			t.Fatal(err)
		}
	}
	if !converged(t, peers...) {
		t.Fatal("not converged after one catch-up round")
	}
	for _, p := range peers {
		for i := range n {
			cur, found, err := p.r.Current(ctx, key(i))
			if err != nil || !found {
				t.Fatalf("current %s: %v %v", key(i), found, err)
			}
			if string(cur.Value) == "doomed" {
				t.Fatalf("%s resurrected the deleted value of %s: %+v", p.id(), key(i), cur)
			}
		}
	}
	// Re-creating a deleted key continues its version and replicates.
	for i := range n {
		cur, _, _ := a.r.Current(ctx, key(i))
		v, err := a.r.Set(ctx, key(i), []byte("again"))
		if err != nil || v <= cur.Version {
			t.Fatalf("re-create %s: version %d after %d, %v", key(i), v, cur.Version, err)
		}
	}
	waitConverged(t, 10*time.Second, peers...)
	for _, p := range peers {
		e, err := p.r.Get(ctx, key(0))
		if err != nil || string(e.Value) != "again" {
			t.Fatalf("get on %s: %+v %v", p.id(), e, err)
		}
	}
}

// Both sides of a partition write; after healing, one catch-up round leaves
// every peer with identical state.
func TestGossip_PartitionHeal(t *testing.T) {
	ctx := context.Background()
	peers := newPeers(t, 3, quiet())
	a, b, c := peers[0], peers[1], peers[2]
	partition(t, c, a)
	partition(t, c, b)

	for i := range 50 {
		if _, err := a.r.Set(ctx, fmt.Sprintf("/p/shared/%02d", i), []byte("left")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.r.Set(ctx, fmt.Sprintf("/p/shared/%02d", i), []byte("right")); err != nil {
			t.Fatal(err)
		}
		if _, err := b.r.Set(ctx, fmt.Sprintf("/p/left/%02d", i), []byte("b")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.r.Set(ctx, fmt.Sprintf("/p/right/%02d", i), []byte("c")); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.r.Delete(ctx, "/p/shared/07"); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, 10*time.Second, a, b)
	if converged(t, a, c) {
		t.Fatal("partition did not partition")
	}

	heal(t, c, a)
	heal(t, c, b)
	// One round: C pulls from A (which has A's and B's side), then A and B
	// pull from C.
	for _, pair := range [][2]*testPeer{{c, a}, {a, c}, {b, c}} {
		st, err := pair[0].g.SyncWith(ctx, pair[1].id())
		if err != nil {
			t.Fatal(err)
		}
		if !st.Advanced {
			t.Fatalf("sync %s <- %s did not complete: %+v", pair[0].id(), pair[1].id(), st)
		}
	}
	if !converged(t, peers...) {
		t.Fatal("not converged after one catch-up round")
	}
	e, err := a.r.Get(ctx, "/p/right/10")
	if err != nil || string(e.Value) != "c" {
		t.Fatalf("C's write on A: %+v %v", e, err)
	}
}

// A peer that was offline while others wrote receives, by catch-up, bytes
// in proportion to what it missed, not to the whole state.
func TestGossip_CatchUpTransfersWhatWasMissed(t *testing.T) {
	ctx := context.Background()
	cfg := quiet()
	cfg.DisableSyncOnConnect = true
	a, c := newPeer(t, cfg, peerOpts{}), newPeer(t, cfg, peerOpts{})
	connect(t, a, c)
	waitMesh(t, a, c)

	// A state of 10,000 keys, then 10,000 more written while c is away:
	// catch-up must carry what c missed, not the whole state (twice that).
	const total, missed, valueSize = 10_000, 10_000, 128
	write := func(from, to int) (dataBytes int) {
		for start := from; start < to; start += 100 {
			var ops []datastore.Op
			for i := start; i < min(start+100, to); i++ {
				k := fmt.Sprintf("/bulk/key-%06d", i)
				v := value(i, valueSize)
				ops = append(ops, datastore.OpSet(k, v))
				dataBytes += len(k) + len(v)
			}
			if _, err := a.r.Txn(ctx, ops...); err != nil {
				t.Fatal(err)
			}
		}
		return dataBytes
	}
	stateBytes := write(0, total)
	waitFor(t, 30*time.Second, "pubsub to deliver the first writes", func() bool {
		return watermark(t, c, a.id()) == total
	})
	partition(t, a, c)
	missedBytes := write(total, total+missed)
	stateBytes += missedBytes
	heal(t, a, c)

	st, err := c.g.SyncWith(ctx, a.id())
	if err != nil {
		t.Fatal(err)
	}
	if st.Changes != missed || st.Applied != missed || !st.Advanced {
		t.Fatalf("sync stats %+v, want %d changes applied", st, missed)
	}
	t.Logf("missed %d bytes of data (state %d); catch-up received %d bytes, sent %d", missedBytes, stateBytes, st.BytesReceived, st.BytesSent)
	// Each change also carries its origin's signature (64 bytes) and
	// generation, whatever its size.
	if limit := int64(missedBytes)*14/10 + missed*96 + 4096; st.BytesReceived > limit {
		t.Fatalf("catch-up received %d bytes for %d missed, more than %d", st.BytesReceived, missedBytes, limit)
	}
	if watermark(t, c, a.id()) != total+missed {
		t.Fatalf("watermark %d after catch-up", watermark(t, c, a.id()))
	}
	if !converged(t, a, c) {
		t.Fatal("not converged")
	}
	// A second round transfers next to nothing.
	st, err = c.g.SyncWith(ctx, a.id())
	if err != nil || st.Changes != 0 || st.BytesReceived > 1024 {
		t.Fatalf("second catch-up %+v %v", st, err)
	}
	if got := c.g.Stats().SyncBytesReceived; got < uint64(st.BytesReceived) {
		t.Fatalf("stats count %d sync bytes", got)
	}
}

// Values over the inline limit are announced by hash and fetched.
func TestGossip_LargeValuesFetched(t *testing.T) {
	ctx := context.Background()
	cfg := quiet()
	cfg.InlineValueLimit = 1 << 10
	peers := newPeers(t, 3, cfg)
	big := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
	if _, err := peers[0].r.Set(ctx, "/big/one", big); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "large value", func() bool {
		for _, p := range peers[1:] {
			e, err := p.r.Get(ctx, "/big/one")
			if err != nil || !bytes.Equal(e.Value, big) {
				return false
			}
		}
		return true
	})
	waitConverged(t, 10*time.Second, peers...)
	for _, p := range peers[1:] {
		st := p.g.Stats()
		if st.Fetches == 0 || st.ValueBytesReceived < uint64(len(big)) {
			t.Fatalf("fetch stats %+v", st)
		}
		if st.PubsubBytesReceived > 4<<10 {
			t.Fatalf("the value was inlined: %d pubsub bytes", st.PubsubBytesReceived)
		}
	}
}

// A peer replicating only some prefixes gets only those, and the others
// stay local.
func TestGossip_PartialReplication(t *testing.T) {
	ctx := context.Background()
	a := newPeer(t, quiet(), peerOpts{})
	b := newPeer(t, quiet(), peerOpts{prefixes: []string{"/peers/"}})
	connect(t, a, b)
	waitMesh(t, a, b)
	for _, k := range []string{"/peers/x/info", "/other/y"} {
		if _, err := a.r.Set(ctx, k, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.r.Set(ctx, "/local/only", []byte("secret")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "replicated prefix", func() bool {
		_, err := b.r.Get(ctx, "/peers/x/info")
		return err == nil
	})
	if st, err := b.g.SyncWith(ctx, a.id()); err != nil || st.Skipped != 0 {
		t.Fatalf("sync %+v %v", st, err)
	}
	if _, err := a.g.SyncWith(ctx, b.id()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.r.Get(ctx, "/other/y"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatalf("unreplicated key reached b: %v", err)
	}
	if _, err := a.r.Get(ctx, "/local/only"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatalf("b's local key reached a: %v", err)
	}
}

// The periodic catch-up runs on the injected timer, with jitter inside the
// configured bounds.
func TestGossip_PeriodicSync(t *testing.T) {
	ctx := context.Background()
	ticks := make(chan time.Time)
	var mu sync.Mutex
	var waits []time.Duration
	cfg := quiet()
	cfg.DisableSyncOnConnect = true
	cfg.SyncInterval = time.Hour
	a := newPeer(t, cfg, peerOpts{})
	cfg.After = func(d time.Duration) <-chan time.Time {
		mu.Lock()
		waits = append(waits, d)
		mu.Unlock()
		return ticks
	}
	b := newPeer(t, cfg, peerOpts{})
	if _, err := a.r.Set(ctx, "/tick/k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	connect(t, a, b)
	waitMesh(t, a, b)
	if _, err := b.r.Get(ctx, "/tick/k"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatalf("b has the key before any catch-up: %v", err)
	}
	waitFor(t, 10*time.Second, "protocols identified", func() bool {
		ok, _ := b.h.Peerstore().SupportsProtocols(a.id(), gossip.DefaultSyncProtocol)
		return len(ok) > 0
	})
	ticks <- time.Now()
	waitFor(t, 10*time.Second, "periodic catch-up", func() bool {
		_, err := b.r.Get(ctx, "/tick/k")
		return err == nil
	})
	mu.Lock()
	defer mu.Unlock()
	for _, d := range waits {
		if d < 48*time.Minute || d > 72*time.Minute {
			t.Fatalf("interval %v outside 1h ± 20%%", d)
		}
	}
}

// Broadcast drops what does not fit the queue, counts it and says so;
// after Close it refuses. Close is idempotent.
func TestGossip_QueueAndClose(t *testing.T) {
	cfg := quiet()
	cfg.QueueSize = 4
	p := newPeer(t, cfg, peerOpts{})
	changes := make([]replica.Change, 10)
	for i := range changes {
		changes[i] = replica.Change{Key: fmt.Sprintf("/q/%d", i), Value: []byte("v"), Version: 1, Origin: p.id().String(), Seq: uint64(i + 1)}
	}
	err := p.g.Broadcast(context.Background(), changes)
	if !errors.Is(err, gossip.ErrQueueFull) {
		t.Fatalf("broadcast over the queue: %v", err)
	}
	if st := p.g.Stats(); st.Dropped != 6 || st.Broadcast != 4 {
		t.Fatalf("stats %+v", st)
	}
	if err := p.g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.g.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if err := p.g.Broadcast(context.Background(), changes[:1]); !errors.Is(err, gossip.ErrClosed) {
		t.Fatalf("broadcast after close: %v", err)
	}
	if _, err := p.g.SyncWith(context.Background(), p.id()); !errors.Is(err, gossip.ErrClosed) {
		t.Fatalf("sync after close: %v", err)
	}
}

func TestConfig_Validate(t *testing.T) {
	if err := gossip.DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for name, mod := range map[string]func(*gossip.Config){
		"tiny messages":     func(c *gossip.Config) { c.MaxMessageSize = 100 },
		"inline too large":  func(c *gossip.Config) { c.InlineValueLimit = c.MaxMessageSize },
		"negative inline":   func(c *gossip.Config) { c.InlineValueLimit = -1 },
		"no topic":          func(c *gossip.Config) { c.Topic = "" },
		"jitter 1":          func(c *gossip.Config) { c.SyncJitter = 1 },
		"zero fanout":       func(c *gossip.Config) { c.SyncFanout = 0 },
		"negative seen TTL": func(c *gossip.Config) { c.SeenMessagesTTL = -time.Second },
	} {
		cfg := gossip.DefaultConfig()
		mod(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// Close works (and waits) when the pubsub stopped first, as when a node
// cancels everything at once.
func TestGossip_CloseAfterPubSubStopped(t *testing.T) {
	peers := newPeers(t, 2, quiet())
	if _, err := peers[0].r.Set(context.Background(), "/c/k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	peers[0].cancel()
	if err := peers[0].g.Close(); err != nil {
		t.Fatalf("close after the pubsub stopped: %v", err)
	}
}

func TestGossip_Collector(t *testing.T) {
	peers := newPeers(t, 2, quiet())
	if _, err := peers[0].r.Set(context.Background(), "/m", []byte("v")); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, 10*time.Second, peers...)
	reg := prometheus.NewRegistry()
	reg.MustRegister(peers[1].g.Collector())
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += "," + l.GetValue()
			}
			got[name] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	if got["peerstate_gossip_changes_total,applied"] < 1 || got["peerstate_gossip_topic_peers"] != 1 {
		t.Fatalf("metrics %v", got)
	}
}
