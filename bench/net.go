package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/sqlite"
	"github.com/univrs/peerstate/gossip"
	"github.com/univrs/peerstate/replica"
)

// Stores a network's peers can keep their state in.
const (
	StoreMemory = "memory"
	StoreSQLite = "sqlite"
)

// ValidStore reports whether name is a store a network's peers can use.
func ValidStore(name string) bool { return name == StoreMemory || name == StoreSQLite }

// netPeer is one peer of a benchmark network: a libp2p host on loopback
// TCP, its pubsub, a replica over a memory or SQLite store, and a gossip.
type netPeer struct {
	h      host.Host
	ps     *pubsub.PubSub
	r      *replica.Replica
	g      *gossip.Gossip
	cancel context.CancelFunc
}

// netConfig returns the gossip configuration of benchmark peers: the
// defaults without periodic catch-up, so that what pubsub loses shows
// before catch-up on demand repairs it. Catch-up on connect stays on.
func netConfig() gossip.Config {
	cfg := gossip.DefaultConfig()
	cfg.SyncInterval = -1
	return cfg
}

// newNetPeer starts a peer keeping its store (when it is SQLite) in dir.
// reporter, if not nil, counts the bytes of its streams.
func newNetPeer(store, dir string, reporter metrics.Reporter) (*netPeer, error) {
	opts := []libp2p.Option{
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
	}
	if reporter != nil {
		opts = append(opts, libp2p.BandwidthReporter(reporter))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("bench: libp2p host: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &netPeer{h: h, cancel: cancel}
	fail := func(err error) (*netPeer, error) {
		_ = p.close()
		return nil, err
	}
	cfg := netConfig()
	if p.ps, err = gossip.NewPubSub(ctx, h, cfg); err != nil {
		return fail(fmt.Errorf("bench: pubsub: %w", err))
	}
	var local datastore.Store
	switch store {
	case StoreMemory:
		local = memory.New()
	case StoreSQLite:
		if local, err = sqlite.Open(filepath.Join(dir, h.ID().String()+".db")); err != nil {
			return fail(err)
		}
	default:
		return fail(fmt.Errorf("bench: unknown store %q", store))
	}
	if p.r, err = replica.New(ctx, local, replica.Config{Key: h.Peerstore().PrivKey(h.ID())}); err != nil {
		_ = local.Close()
		return fail(err)
	}
	if p.g, err = gossip.New(ctx, h, p.ps, p.r, cfg); err != nil {
		return fail(err)
	}
	p.r.SetBroadcaster(p.g)
	return p, nil
}

// close tears the peer down in dependency order and waits for it.
func (p *netPeer) close() error {
	var err error
	if p.g != nil {
		err = errors.Join(err, p.g.Close())
	}
	p.cancel()
	err = errors.Join(err, p.h.Close())
	if p.r != nil {
		err = errors.Join(err, p.r.Close())
	}
	return err
}

func (p *netPeer) id() peer.ID { return p.h.ID() }

// connect dials q from p.
func (p *netPeer) connect(ctx context.Context, q *netPeer) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.h.Connect(ctx, peer.AddrInfo{ID: q.id(), Addrs: q.h.Addrs()}); err != nil {
		return fmt.Errorf("bench: connect: %w", err)
	}
	return nil
}

// watermark returns p's watermark for origin, over its generations.
func (p *netPeer) watermark(ctx context.Context, origin peer.ID) (uint64, error) {
	v, err := p.r.Watermarks(ctx)
	if err != nil {
		return 0, err
	}
	var sum uint64
	for src, n := range v {
		if o, _, err := replica.ParseSource(src); err == nil && o == origin.String() {
			sum += n
		}
	}
	return sum, nil
}

// peerNet is peers in one process, each connected to every other.
type peerNet struct {
	peers   []*netPeer
	counter *byteCounter
	dir     string // removed by close when the network made it
	ownDir  bool
}

// startNetwork starts n connected peers and waits until each knows the
// others' subscriptions. SQLite stores go under dir (a temporary directory
// of its own when dir is empty).
func startNetwork(ctx context.Context, n int, store, dir string) (*peerNet, error) {
	nw := &peerNet{counter: newByteCounter(), dir: dir}
	if dir == "" && store == StoreSQLite {
		d, err := os.MkdirTemp("", "peerstate-bench-")
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		nw.dir, nw.ownDir = d, true
	}
	for range n {
		p, err := newNetPeer(store, nw.dir, nw.counter)
		if err != nil {
			return nil, errors.Join(err, nw.close())
		}
		nw.peers = append(nw.peers, p)
	}
	for i, p := range nw.peers {
		for _, q := range nw.peers[i+1:] {
			if err := p.connect(ctx, q); err != nil {
				return nil, errors.Join(err, nw.close())
			}
		}
	}
	if err := waitMesh(ctx, nw.peers); err != nil {
		return nil, errors.Join(err, nw.close())
	}
	return nw, nil
}

// add starts one more peer, connected to nobody, counted by the same
// counter.
func (nw *peerNet) add(store string) (*netPeer, error) {
	return newNetPeer(store, nw.dir, nw.counter)
}

func (nw *peerNet) close() error {
	var err error
	for _, p := range nw.peers {
		err = errors.Join(err, p.close())
	}
	if nw.ownDir {
		err = errors.Join(err, os.RemoveAll(nw.dir))
	}
	return err
}

// waitMesh waits until every peer knows the subscriptions of the peers it
// is connected to, so that a publish reaches them.
func waitMesh(ctx context.Context, peers []*netPeer) error {
	return waitUntil(ctx, 10*time.Second, "the topic's peers", func() (bool, error) {
		for _, p := range peers {
			known := p.g.Peers()
			for _, q := range peers {
				if q != p && p.h.Network().Connectedness(q.id()) == network.Connected && !slices.Contains(known, q.id()) {
					return false, nil
				}
			}
		}
		return true, nil
	})
}

// errTimeout is what waitUntil returns when the condition did not come.
var errTimeout = errors.New("bench: timed out")

// waitUntil polls cond every millisecond until it holds, fails, the
// timeout passes (errTimeout) or ctx ends.
func waitUntil(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w waiting for %s", errTimeout, what)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}

// allReached reports whether every peer's watermark of each origin has
// reached its target.
func allReached(ctx context.Context, peers []*netPeer, targets map[peer.ID]uint64) (bool, error) {
	for _, p := range peers {
		for origin, target := range targets {
			if p.id() == origin {
				continue
			}
			w, err := p.watermark(ctx, origin)
			if err != nil || w < target {
				return false, err
			}
		}
	}
	return true, nil
}

// latencies collects durations from many goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.d)
}

// pct returns the p-th percentile in milliseconds, 0 with no sample.
func (l *latencies) pct(p int) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	return float64(s[min(len(s)-1, len(s)*p/100)].Microseconds()) / 1000
}

// rawTopic is a plain pubsub topic (no validator, no store) joined by every
// peer of a network: the reference the replication figures compare with.
type rawTopic struct {
	topics []*pubsub.Topic
	subs   []*pubsub.Subscription
	wg     sync.WaitGroup
}

// joinRaw joins topic name on every peer; onMsg sees every message a peer
// receives from another.
func joinRaw(ctx context.Context, peers []*netPeer, name string, onMsg func(p *netPeer, msg *pubsub.Message)) (*rawTopic, error) {
	rt := &rawTopic{}
	for _, p := range peers {
		topic, err := p.ps.Join(name)
		if err != nil {
			rt.close()
			return nil, fmt.Errorf("bench: join %s: %w", name, err)
		}
		rt.topics = append(rt.topics, topic)
		sub, err := topic.Subscribe(pubsub.WithBufferSize(4096))
		if err != nil {
			rt.close()
			return nil, fmt.Errorf("bench: subscribe %s: %w", name, err)
		}
		rt.subs = append(rt.subs, sub)
		rt.wg.Go(func() {
			for {
				msg, err := sub.Next(context.Background())
				if err != nil {
					return // cancelled
				}
				if msg.ReceivedFrom != p.id() {
					onMsg(p, msg)
				}
			}
		})
	}
	err := waitUntil(ctx, 10*time.Second, "the raw topic's peers", func() (bool, error) {
		for _, topic := range rt.topics {
			if len(topic.ListPeers()) < len(peers)-1 {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		rt.close()
		return nil, err
	}
	return rt, nil
}

// close cancels the subscriptions, waits for their readers and leaves the
// topic.
func (rt *rawTopic) close() {
	for _, s := range rt.subs {
		s.Cancel()
	}
	rt.wg.Wait()
	for _, topic := range rt.topics {
		_ = topic.Close()
	}
}

// byteCounter is a metrics.Reporter counting the bytes sent on streams,
// per protocol, exactly and at once (libp2p's BandwidthCounter updates its
// totals once a second from a global goroutine). Every byte sent on a
// loopback network is received by some peer of it.
type byteCounter struct {
	mu    sync.Mutex
	out   map[protocol.ID]*atomic.Int64
	total atomic.Int64
}

var _ metrics.Reporter = (*byteCounter)(nil)

func newByteCounter() *byteCounter { return &byteCounter{out: map[protocol.ID]*atomic.Int64{}} }

func (c *byteCounter) LogSentMessage(int64) {}
func (c *byteCounter) LogRecvMessage(int64) {}
func (c *byteCounter) LogSentMessageStream(n int64, proto protocol.ID, _ peer.ID) {
	c.mu.Lock()
	ctr := c.out[proto]
	if ctr == nil {
		ctr = new(atomic.Int64)
		c.out[proto] = ctr
	}
	c.mu.Unlock()
	ctr.Add(n)
	c.total.Add(n)
}
func (c *byteCounter) LogRecvMessageStream(int64, protocol.ID, peer.ID)  {}
func (c *byteCounter) GetBandwidthForPeer(peer.ID) metrics.Stats         { return metrics.Stats{} }
func (c *byteCounter) GetBandwidthForProtocol(protocol.ID) metrics.Stats { return metrics.Stats{} }
func (c *byteCounter) GetBandwidthTotals() metrics.Stats {
	return metrics.Stats{TotalOut: c.total.Load()}
}
func (c *byteCounter) GetBandwidthByPeer() map[peer.ID]metrics.Stats         { return nil }
func (c *byteCounter) GetBandwidthByProtocol() map[protocol.ID]metrics.Stats { return nil }
func (c *byteCounter) Reset()                                                { c.reset() }
func (c *byteCounter) TrimIdle(time.Time)                                    {}

func (c *byteCounter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out = map[protocol.ID]*atomic.Int64{}
	c.total.Store(0)
}

// sent returns the bytes sent since the last reset.
func (c *byteCounter) sent() int64 { return c.total.Load() }
