package gossip_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"go.uber.org/goleak"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/gossip"
	"github.com/univrs/peerstate/replica"
)

// TestMain checks that no goroutine outlives the tests. None needs ignoring:
// each test peer closes its Gossip (which waits for its own goroutines and
// stream handlers), then cancels its pubsub's context and closes its host,
// and go-libp2p v0.51 with go-libp2p-pubsub v0.19 leave nothing running
// after that (checked with and without -race, with and without libp2p's
// metrics). Pubsub's loops exit shortly after the cancellation, which
// goleak's retries absorb.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testPeer is a host, a pubsub, a replica over memory and a gossip.
type testPeer struct {
	t      testing.TB
	h      host.Host
	ps     *pubsub.PubSub
	r      *replica.Replica
	g      *gossip.Gossip
	gate   *gater
	cancel context.CancelFunc
	once   sync.Once
}

// quiet returns a config for tests: no periodic catch-up (tests that want
// it inject their own timer), catch-up on connect kept.
func quiet() gossip.Config {
	cfg := gossip.DefaultConfig()
	cfg.SyncInterval = -1
	return cfg
}

type peerOpts struct {
	prefixes []string
	noGossip bool                         // a bare pubsub peer (for hostile tests)
	grace    time.Duration                // tombstone grace; 0: 1ns, so tests can collect at once
	reporter metrics.Reporter             // counts stream bytes (benchmarks)
	now      func() time.Time             // the replica's clock; nil: time.Now
	admit    func(c replica.Change) error // the replica's Admit rule
}

func newHost(t testing.TB, gate *gater, reporter metrics.Reporter) host.Host {
	t.Helper()
	opts := []libp2p.Option{
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
		libp2p.ConnectionGater(gate),
	}
	if reporter != nil {
		opts = append(opts, libp2p.BandwidthReporter(reporter))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		t.Fatalf("libp2p.New: %v", err)
	}
	return h
}

func newPeer(t testing.TB, cfg gossip.Config, o peerOpts) *testPeer {
	t.Helper()
	gate := &gater{blocked: map[peer.ID]bool{}}
	h := newHost(t, gate, o.reporter)
	ctx, cancel := context.WithCancel(context.Background())
	p := &testPeer{t: t, h: h, gate: gate, cancel: cancel}
	t.Cleanup(p.close)
	ps, err := gossip.NewPubSub(ctx, h, cfg)
	if err != nil {
		t.Fatalf("NewPubSub: %v", err)
	}
	p.ps = ps
	if o.noGossip {
		return p
	}
	grace := o.grace
	if grace == 0 {
		grace = time.Nanosecond
	}
	r, err := replica.New(ctx, memory.New(), replica.Config{Key: h.Peerstore().PrivKey(h.ID()), Prefixes: o.prefixes, TombstoneGrace: grace,
		Now: o.now, Admit: o.admit})
	if err != nil {
		t.Fatalf("replica.New: %v", err)
	}
	p.r = r
	g, err := gossip.New(ctx, h, ps, r, cfg)
	if err != nil {
		t.Fatalf("gossip.New: %v", err)
	}
	p.g = g
	r.SetBroadcaster(g)
	return p
}

// close tears the peer down in dependency order.
func (p *testPeer) close() {
	p.once.Do(func() {
		if p.g != nil {
			if err := p.g.Close(); err != nil {
				p.t.Errorf("gossip close: %v", err)
			}
		}
		p.cancel()
		if err := p.h.Close(); err != nil {
			p.t.Errorf("host close: %v", err)
		}
		if p.r != nil {
			if err := p.r.Close(); err != nil {
				p.t.Errorf("replica close: %v", err)
			}
		}
	})
}

func (p *testPeer) id() peer.ID { return p.h.ID() }

func newPeers(t testing.TB, n int, cfg gossip.Config) []*testPeer {
	t.Helper()
	return newPeersWith(t, n, cfg, peerOpts{})
}

// newPeersWith starts n peers, all connected to each other.
func newPeersWith(t testing.TB, n int, cfg gossip.Config, o peerOpts) []*testPeer {
	t.Helper()
	peers := make([]*testPeer, n)
	for i := range peers {
		peers[i] = newPeer(t, cfg, o)
	}
	for i := range peers {
		for j := i + 1; j < n; j++ {
			connect(t, peers[i], peers[j])
		}
	}
	waitMesh(t, peers...)
	return peers
}

func connect(t testing.TB, a, b *testPeer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.h.Connect(ctx, peer.AddrInfo{ID: b.h.ID(), Addrs: b.h.Addrs()}); err != nil {
		t.Fatalf("connect: %v", err)
	}
}

// partition cuts a from b until heal.
func partition(t testing.TB, a, b *testPeer) {
	t.Helper()
	a.gate.block(b.id())
	b.gate.block(a.id())
	_ = a.h.Network().ClosePeer(b.id())
	_ = b.h.Network().ClosePeer(a.id())
	waitFor(t, 10*time.Second, "disconnect", func() bool {
		return a.h.Network().Connectedness(b.id()) != network.Connected &&
			b.h.Network().Connectedness(a.id()) != network.Connected
	})
}

func heal(t testing.TB, a, b *testPeer) {
	t.Helper()
	a.gate.unblock(b.id())
	b.gate.unblock(a.id())
	connect(t, a, b)
}

// waitMesh waits until every gossip peer knows the others' subscriptions, so
// a publish reaches them.
func waitMesh(t testing.TB, peers ...*testPeer) {
	t.Helper()
	waitFor(t, 10*time.Second, "topic peers", func() bool {
		for _, p := range peers {
			if p.g == nil {
				continue
			}
			known := p.g.Peers()
			for _, q := range peers {
				if q != p && p.h.Network().Connectedness(q.id()) == network.Connected && !slices.Contains(known, q.id()) {
					return false
				}
			}
		}
		return true
	})
}

// waitFor polls cond until it holds or the timeout passes. The timeout is a
// liveness bound, never a speed assertion.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stateHash hashes a peer's full state as its users see it: every entry
// with its value, version and timestamps.
func stateHash(t testing.TB, s datastore.Store) [32]byte {
	t.Helper()
	h := sha256.New()
	opts := datastore.ListOptions{Limit: 1000}
	for {
		page, err := s.List(context.Background(), "", opts)
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		for _, e := range page.Entries {
			fmt.Fprintf(h, "%q %q %d %d %d\n", e.Key, e.Value, e.Version, e.CreatedAt.UnixNano(), e.UpdatedAt.UnixNano())
		}
		if !page.More {
			break
		}
		opts.After = page.Next
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// replicaHash hashes a replica's full replicated state, tombstones and
// replication metadata included.
func replicaHash(t testing.TB, r *replica.Replica) [32]byte {
	t.Helper()
	var all []replica.Change
	_, err := r.ChangesSince(context.Background(), replica.Vector{}, nil, 1000, func(cs []replica.Change) error {
		all = append(all, cs...)
		return nil
	})
	if err != nil {
		t.Fatalf("changes since: %v", err)
	}
	slices.SortFunc(all, func(a, b replica.Change) int {
		switch {
		case a.Key < b.Key:
			return -1
		case a.Key > b.Key:
			return 1
		}
		return 0
	})
	h := sha256.New()
	for _, c := range all {
		fmt.Fprintf(h, "%q %q %t %d %d %s %d %d %d\n", c.Key, c.Value, c.Deleted, c.Version, c.HLC, c.Origin, c.Seq, c.CreatedAt, c.UpdatedAt)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// converged reports whether all peers hold identical state.
func converged(t testing.TB, peers ...*testPeer) bool {
	t.Helper()
	first, firstR := stateHash(t, peers[0].r), replicaHash(t, peers[0].r)
	for _, p := range peers[1:] {
		if stateHash(t, p.r) != first || replicaHash(t, p.r) != firstR {
			return false
		}
	}
	return true
}

func waitConverged(t testing.TB, timeout time.Duration, peers ...*testPeer) {
	t.Helper()
	waitFor(t, timeout, "convergence", func() bool { return converged(t, peers...) })
}

// seq returns our watermark for origin at p.
func watermark(t testing.TB, p *testPeer, origin peer.ID) uint64 {
	t.Helper()
	v, err := p.r.Watermarks(context.Background())
	if err != nil {
		t.Fatalf("watermarks: %v", err)
	}
	var sum uint64 // over the origin's generations
	for src, n := range v {
		if o, _, err := replica.ParseSource(src); err == nil && o == origin.String() {
			sum += n
		}
	}
	return sum
}

func value(n, size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint64(b, uint64(n))
	for i := 8; i < size; i++ {
		b[i] = byte('a' + (n+i)%26)
	}
	return b
}

// gater refuses connections with blocked peers: a network partition.
type gater struct {
	mu      sync.Mutex
	blocked map[peer.ID]bool
}

func (g *gater) block(p peer.ID)   { g.mu.Lock(); g.blocked[p] = true; g.mu.Unlock() }
func (g *gater) unblock(p peer.ID) { g.mu.Lock(); delete(g.blocked, p); g.mu.Unlock() }
func (g *gater) allowed(p peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.blocked[p]
}

func (g *gater) InterceptPeerDial(p peer.ID) bool                        { return g.allowed(p) }
func (g *gater) InterceptAddrDial(p peer.ID, _ multiaddr.Multiaddr) bool { return g.allowed(p) }
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool             { return true }
func (g *gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allowed(p)
}
func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
