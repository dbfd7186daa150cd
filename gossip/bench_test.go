package gossip_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/univrs/peerstate/datastore"
)

// The benchmarks run benchPeers peers in one process, connected to each
// other over loopback TCP, each with a replica over memory. Periodic
// catch-up is off, so what pubsub loses shows (as the "lost" metrics)
// before catch-up repairs it. Run them with
//
//	go test -run '^$' -bench . -benchtime 1x ./gossip/
const (
	benchPeers     = 10
	benchValueSize = 256
)

// deliveryTimeout bounds the wait for pubsub delivery before what is missing
// is counted as lost and repaired by catch-up.
const deliveryTimeout = 10 * time.Second

// BenchmarkBurst1000 writes 1,000 values of 256 bytes at one peer as fast as
// it can and measures the time until every peer has all of them.
func BenchmarkBurst1000(b *testing.B) {
	ctx := context.Background()
	peers := newPeers(b, benchPeers, quiet())
	writer, others := peers[0], peers[1:]
	val := make([]byte, benchValueSize)
	lost, msgs := 0, uint64(0)
	b.ResetTimer()
	for i := range b.N {
		before := writer.g.Stats().Published
		target := watermark(b, writer, writer.id()) + 1000
		prefix := fmt.Sprintf("/burst/%d/", i)
		for k := range 1000 {
			if _, err := writer.r.Set(ctx, fmt.Sprintf("%s%04d", prefix, k), val); err != nil {
				b.Fatal(err)
			}
		}
		wrote := b.Elapsed()
		if !waitAll(b, others, writer.id(), target, deliveryTimeout) {
			for _, p := range others {
				lost += 1000 - countKeys(b, p, prefix)
			}
			repair(b, others, writer)
		}
		msgs += writer.g.Stats().Published - before
		b.Logf("writes done after %v, delivered after %v", wrote, b.Elapsed())
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/op")
	b.ReportMetric(float64(lost)/float64(b.N), "lost")
	b.ReportMetric(float64(msgs)/float64(b.N), "msgs/op")
}

// BenchmarkPaced200 writes at 200 writes/s at one peer and measures the
// write-to-visible latency (the remote watcher's event) at every other
// peer, next to raw go-libp2p-pubsub publishing the same payloads on the
// same peers at the same moments (a second topic, no validator, no store).
func BenchmarkPaced200(b *testing.B) {
	const rate, writes = 200, 600 // 3 s per iteration
	ctx := context.Background()
	peers := newPeers(b, benchPeers, quiet())
	writer, others := peers[0], peers[1:]

	// Peerstate: watchers on every other peer.
	var sent sync.Map // key -> time.Time
	lat := &latencies{}
	var wg sync.WaitGroup
	var watchers []datastore.Watcher
	defer func() {
		for _, w := range watchers {
			_ = w.Close()
		}
		wg.Wait()
	}()
	for _, p := range others {
		w, err := p.r.Watch(ctx, "/paced/")
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ev := range w.Events() {
				if t0, ok := sent.Load(ev.Key); ok {
					lat.add(time.Since(t0.(time.Time)))
				}
			}
		}()
		watchers = append(watchers, w)
	}

	// Raw pubsub: a plain topic on the same pubsubs.
	var rawSent sync.Map
	rawLat := &latencies{}
	raw := joinRaw(b, peers, "/bench/raw/1", func(p *testPeer, msg *pubsub.Message) {
		key, _, _ := strings.Cut(string(msg.GetData()), "\x00")
		if t0, ok := rawSent.Load(key); ok {
			rawLat.add(time.Since(t0.(time.Time)))
		}
	})
	defer raw.close()

	val := make([]byte, benchValueSize)
	b.ResetTimer()
	for i := range b.N {
		// Each tick writes through peerstate and publishes the same
		// payload raw, so both see the same load.
		tick := time.NewTicker(time.Second / rate)
		for k := range writes {
			<-tick.C
			key := fmt.Sprintf("/paced/%d/%04d", i, k)
			sent.Store(key, time.Now())
			if _, err := writer.r.Set(ctx, key, val); err != nil {
				b.Fatal(err)
			}
			rawSent.Store(key, time.Now())
			if err := raw.topics[0].Publish(ctx, append([]byte(key+"\x00"), val...)); err != nil {
				b.Fatal(err)
			}
		}
		tick.Stop()
		want := (i + 1) * writes * len(others)
		waitFor(b, deliveryTimeout+time.Second, "deliveries", func() bool {
			return (lat.len() >= want && rawLat.len() >= want) || time.Since(lastOf(&sent)) > deliveryTimeout
		})
	}
	b.StopTimer()
	expected := b.N * writes * len(others)
	b.ReportMetric(lat.pct(50), "p50-ms")
	b.ReportMetric(lat.pct(99), "p99-ms")
	b.ReportMetric(float64(expected-lat.len()), "lost")
	b.ReportMetric(rawLat.pct(50), "raw-p50-ms")
	b.ReportMetric(rawLat.pct(99), "raw-p99-ms")
	b.ReportMetric(float64(expected-rawLat.len()), "raw-lost")
}

// BenchmarkJoinAfter10k has one peer write 10,000 keys one by one, then
// times a fresh peer joining (connected to one member) until catch-up gave
// it every key, and compares the bytes it received with the data's size.
func BenchmarkJoinAfter10k(b *testing.B) { benchJoin(b, 10_000, 1) }

// BenchmarkJoin4After10k is BenchmarkJoinAfter10k with the fresh peer
// connecting to 4 members at once: each missing entry should still arrive
// about once.
func BenchmarkJoin4After10k(b *testing.B) { benchJoin(b, 10_000, 4) }

func benchJoin(b *testing.B, keys, neighbours int) {
	ctx := context.Background()
	cfg := quiet()
	peers := newPeers(b, benchPeers, cfg)
	writer := peers[0]
	dataBytes := 0
	for k := range keys {
		key := fmt.Sprintf("/join/key-%05d", k)
		if _, err := writer.r.Set(ctx, key, value(k, benchValueSize)); err != nil {
			b.Fatal(err)
		}
		dataBytes += len(key) + benchValueSize
	}
	if !waitAll(b, peers[1:], writer.id(), uint64(keys), 3*deliveryTimeout) {
		repair(b, peers[1:], writer)
	}
	var received, sent int64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		fresh := newPeer(b, cfg, peerOpts{})
		b.StartTimer()
		for _, p := range peers[1 : 1+neighbours] {
			connect(b, fresh, p)
		}
		waitFor(b, 60*time.Second, "the fresh peer to catch up", func() bool {
			return watermark(b, fresh, writer.id()) == uint64(keys)
		})
		b.StopTimer()
		// Let catch-ups still running finish: their bytes count too.
		waitFor(b, 60*time.Second, "catch-ups to end", func() bool {
			st := fresh.g.Stats()
			return st.Syncs+st.SyncErrors >= uint64(neighbours)
		})
		st := fresh.g.Stats()
		received += int64(st.SyncBytesReceived + st.RepairBytes)
		sent += int64(st.SyncBytesSent)
		fresh.close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/join")
	b.ReportMetric(float64(received)/float64(b.N), "sync-B-recv/join")
	b.ReportMetric(float64(sent)/float64(b.N), "sync-B-sent/join")
	b.ReportMetric(float64(dataBytes), "data-B")
	b.ReportMetric(float64(received)/float64(b.N)/float64(dataBytes), "recv/data")
}

// BenchmarkWireBytesPerWrite counts the stream bytes all peers send per
// replicated write (pubsub payloads, envelopes, signatures, forwarding,
// control traffic, catch-up), for writes one at a time and in a burst. It
// counts bytes on libp2p streams: the muxer's and the secure channel's
// framing come on top.
func BenchmarkWireBytesPerWrite(b *testing.B) {
	for _, mode := range []struct {
		name  string
		burst int
	}{{"single", 1}, {"burst1000", 1000}} {
		b.Run(mode.name, func(b *testing.B) {
			ctx := context.Background()
			counter := newByteCounter()
			peers := newPeersWith(b, benchPeers, quiet(), peerOpts{reporter: counter})
			writer, others := peers[0], peers[1:]
			val := make([]byte, benchValueSize)
			writes := 0
			time.Sleep(2 * time.Second) // let the meshes settle
			counter.reset()
			b.ResetTimer()
			for i := range b.N {
				rounds := max(1, 200/mode.burst)
				for r := range rounds {
					target := watermark(b, writer, writer.id()) + uint64(mode.burst)
					for k := range mode.burst {
						if _, err := writer.r.Set(ctx, fmt.Sprintf("/wire/%d/%d/%04d", i, r, k), val); err != nil {
							b.Fatal(err)
						}
					}
					writes += mode.burst
					if !waitAll(b, others, writer.id(), target, deliveryTimeout) {
						repair(b, others, writer)
					}
				}
			}
			b.StopTimer()
			total, byProto := counter.sent()
			pubsubBytes := int64(0)
			for proto, n := range byProto {
				if strings.HasPrefix(string(proto), "/meshsub/") {
					pubsubBytes += n
				}
			}
			b.ReportMetric(float64(total)/float64(writes), "wire-B/write")
			b.ReportMetric(float64(total)/float64(writes)/float64(len(others)), "wire-B/write/receiver")
			b.ReportMetric(float64(pubsubBytes)/float64(writes), "pubsub-B/write")
			b.ReportMetric(float64(writer.g.Stats().PubsubBytesSent)/float64(writes), "payload-B/write")
			b.ReportMetric(benchValueSize, "value-B")
		})
	}
}

// waitAll waits until every peer's watermark of origin reaches target;
// false if the timeout passed first.
func waitAll(t testing.TB, peers []*testPeer, origin peer.ID, target uint64, timeout time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, p := range peers {
		for watermark(t, p, origin) < target {
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(time.Millisecond)
		}
	}
	return true
}

// repair runs the catch-up the periodic loop would have run.
func repair(t testing.TB, peers []*testPeer, from *testPeer) {
	t.Helper()
	for _, p := range peers {
		if _, err := p.g.SyncWith(context.Background(), from.id()); err != nil {
			t.Fatal(err)
		}
	}
}

func countKeys(t testing.TB, p *testPeer, prefix string) int {
	t.Helper()
	n := 0
	opts := datastore.ListOptions{KeysOnly: true, Limit: 1000}
	for {
		page, err := p.r.List(context.Background(), prefix, opts)
		if err != nil {
			t.Fatal(err)
		}
		n += len(page.Entries)
		if !page.More {
			return n
		}
		opts.After = page.Next
	}
}

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

// pct returns the p-th percentile in milliseconds.
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

// lastOf returns the latest send time in m.
func lastOf(m *sync.Map) time.Time {
	var last time.Time
	m.Range(func(_, v any) bool {
		if t := v.(time.Time); t.After(last) {
			last = t
		}
		return true
	})
	return last
}

// rawTopic is a plain pubsub topic joined by every peer.
type rawTopic struct {
	topics []*pubsub.Topic
	subs   []*pubsub.Subscription
	wg     sync.WaitGroup
}

func joinRaw(t testing.TB, peers []*testPeer, name string, onMsg func(*testPeer, *pubsub.Message)) *rawTopic {
	t.Helper()
	rt := &rawTopic{}
	for _, p := range peers {
		topic, err := p.ps.Join(name)
		if err != nil {
			t.Fatal(err)
		}
		sub, err := topic.Subscribe(pubsub.WithBufferSize(4096))
		if err != nil {
			t.Fatal(err)
		}
		rt.topics, rt.subs = append(rt.topics, topic), append(rt.subs, sub)
		rt.wg.Add(1)
		go func() {
			defer rt.wg.Done()
			for {
				msg, err := sub.Next(context.Background())
				if err != nil {
					return
				}
				if msg.ReceivedFrom != p.id() {
					onMsg(p, msg)
				}
			}
		}()
	}
	waitFor(t, 10*time.Second, "raw topic peers", func() bool {
		for _, topic := range rt.topics {
			if len(topic.ListPeers()) < len(peers)-1 {
				return false
			}
		}
		return true
	})
	return rt
}

func (rt *rawTopic) close() {
	for _, s := range rt.subs {
		s.Cancel()
	}
	rt.wg.Wait()
	for _, topic := range rt.topics {
		_ = topic.Close()
	}
}

// byteCounter is a metrics.Reporter counting stream bytes per protocol,
// exactly and at once (libp2p's BandwidthCounter updates its totals once a
// second from a global goroutine).
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
func (c *byteCounter) GetBandwidthByPeer() map[peer.ID]metrics.Stats { return nil }
func (c *byteCounter) GetBandwidthByProtocol() map[protocol.ID]metrics.Stats {
	return nil
}
func (c *byteCounter) Reset()             { c.reset() }
func (c *byteCounter) TrimIdle(time.Time) {}

func (c *byteCounter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out = map[protocol.ID]*atomic.Int64{}
	c.total.Store(0)
}

// sent returns the bytes sent in total and per protocol.
func (c *byteCounter) sent() (int64, map[protocol.ID]int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[protocol.ID]int64, len(c.out))
	for p, n := range c.out {
		out[p] = n.Load()
	}
	return c.total.Load(), out
}
