package node_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/univrs/peerstate/gossip"
	"github.com/univrs/peerstate/node"
)

// BenchmarkUnderAttack measures the honest nodes' write-to-visible latency
// (p50, p99) while attackers work on them, next to the same run with no
// attacker: 300 writes at 200/s on one node, seen by the other two. Run
// with -benchtime=1x; each sub-benchmark is one run.
func BenchmarkUnderAttack(b *testing.B) {
	attacks := []struct {
		name string
		run  func(ctx context.Context, hn *honestNet)
	}{
		{"none", nil},
		{"flood", func(ctx context.Context, hn *honestNet) {
			// Every message is signed before the flood starts — the
			// changes and the pubsub envelopes — and written straight onto
			// gossipsub streams, so that the attacker's own signing and
			// publishing (in this process) do not take the honest nodes'
			// CPU: what is measured is what receiving the flood costs. The
			// flooder is an identity of its own, without a pubsub that
			// would replace its streams.
			m := newBareAttacker(hn.t, hn.nodes[0], hn.nodes[1])
			hn.flooder = m
			batches := make([][]byte, 200)
			for i := range batches {
				batch := make([]gossip.WireChange, 50)
				for j := range batch {
					batch[j] = m.change(fmt.Sprintf("/spam/%d/%d", i, j), strings.Repeat("s", 200), 1)
				}
				batches[i], _ = gossip.EncodeMessage(gossip.Message{V: gossip.FormatVersion, Origin: m.id().String(), Changes: batch})
			}
			// 1,000 messages (50,000 changes) a second for 5 s, each a
			// distinct pubsub message: a hundred times the origin rate the
			// honest nodes allow here.
			frames := m.presign(batches, 5000)
			close(hn.ready)
			m.floodRaw(ctx, []peer.ID{hn.nodes[0].ID(), hn.nodes[1].ID()}, frames, time.Millisecond)
		}},
		{"whole-state-loop", func(ctx context.Context, hn *honestNet) {
			for ctx.Err() == nil {
				s, err := hn.m.requestAll(hn.nodes[0].ID())
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				_, _ = s.Read(make([]byte, 1<<16))
				_ = s.Reset()
			}
		}},
		{"forged-and-policy", func(ctx context.Context, hn *honestNet) {
			victim := hn.nodes[2].ID().String()
			for i := 0; ctx.Err() == nil; i++ {
				hn.m.publish(victim, hn.m.change(fmt.Sprintf("/forged/%d", i), "x", 1))
				hn.m.publish(hn.m.id().String(), hn.m.change(fmt.Sprintf("/peers/%s/x/%d", victim, i), "x", 1))
				time.Sleep(time.Millisecond)
			}
		}},
	}
	for _, a := range attacks {
		b.Run(a.name, func(b *testing.B) {
			for range b.N {
				hn := newHonestNet(b, func(c *node.Config) { c.Gossip.OriginRate, c.Gossip.OriginBurst = 500, 1000 })
				ctx, cancel := context.WithCancel(context.Background())
				var wg sync.WaitGroup
				hn.ready = make(chan struct{})
				if a.run != nil {
					wg.Add(1)
					go func() { defer wg.Done(); a.run(ctx, hn) }()
				}
				if a.name != "flood" {
					close(hn.ready)
				}
				<-hn.ready
				start := time.Now()
				banned := make(chan time.Duration, 1) // when the attacker was banned on the nodes it is connected to
				if a.run != nil {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if at := hn.waitBanned(ctx); !at.IsZero() {
							banned <- at.Sub(start)
							return
						}
						banned <- 0
					}()
				}
				samples := writeToVisible(b, hn, 300, 200)
				cancel()
				wg.Wait()
				all := latencies(samples, time.Time{})
				b.ReportMetric(ms(all[len(all)/2]), "p50-ms")
				b.ReportMetric(ms(all[len(all)*99/100]), "p99-ms")
				b.ReportMetric(ms(all[len(all)-1]), "max-ms")
				b.ReportMetric(float64(peakRSSKB())/1024, "peak-rss-MB")
				if a.run != nil {
					m := hn.attacking()
					st := hn.nodes[0].Gossip().Stats()
					took := <-banned
					// The honest writes made once the attacker was banned
					// everywhere: what the network is like after the attack.
					if after := latencies(samples, start.Add(took)); took > 0 && len(after) > 0 {
						b.ReportMetric(ms(took), "banned-ms")
						b.ReportMetric(ms(after[len(after)*99/100]), "p99-after-ban-ms")
					}
					b.Logf("%s: attacker %s on node 0 (score %.1f) after %v; node 0 rejected %v, ignored %v", a.name, hn.nodes[0].Reputation().State(m.id()),
						hn.nodes[0].Reputation().Score(m.id()), took, st.Rejected, st.Ignored)
				}
			}
		})
	}
}

// sample is one honest write seen on one other node.
type sample struct {
	sent time.Time
	lat  time.Duration
}

// latencies returns the latencies of the samples of writes sent at or
// after since, sorted.
func latencies(samples []sample, since time.Time) []time.Duration {
	var out []time.Duration
	for _, s := range samples {
		if !s.sent.Before(since) {
			out = append(out, s.lat)
		}
	}
	slices.Sort(out)
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// attacking is the attacker of the run: the flooder, if there is one.
func (hn *honestNet) attacking() *attacker {
	if hn.flooder != nil {
		return hn.flooder
	}
	return hn.m
}

// waitBanned returns when the attacker is banned on the first node (and on
// the second too when it floods both), or ctx ends (the zero time).
func (hn *honestNet) waitBanned(ctx context.Context) time.Time {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		m := hn.attacking()
		if hn.nodes[0].Reputation().Banned(m.id()) && (hn.flooder == nil || hn.nodes[1].Reputation().Banned(m.id())) {
			return time.Now()
		}
		select {
		case <-ctx.Done():
			return time.Time{}
		case <-tick.C:
		}
	}
}

// writeToVisible writes n keys on the first node at rate per second and
// returns, for each write and each other node, when it was made and how
// long until it was seen there (by watch).
func writeToVisible(b *testing.B, hn *honestNet, n, rate int) []sample {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	sent := map[string]time.Time{}
	var lat []sample
	var wg sync.WaitGroup
	for _, nd := range hn.nodes[1:] {
		w, err := nd.Store().Watch(ctx, "/lat/**")
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer w.Close()
			seen := 0
			for ev := range w.Events() {
				mu.Lock()
				lat = append(lat, sample{sent: sent[ev.Key], lat: time.Since(sent[ev.Key])})
				mu.Unlock()
				if seen++; seen == n {
					return
				}
			}
		}()
	}
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for i := range n {
		<-tick.C
		key := fmt.Sprintf("/lat/%04d", i)
		mu.Lock()
		sent[key] = time.Now()
		mu.Unlock()
		if _, err := hn.nodes[0].Store().Set(ctx, key, []byte("v")); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	if len(lat) < n*2 {
		b.Fatalf("%d of %d deliveries seen", len(lat), 2*n)
	}
	return lat
}
