package node_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

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
			// Signed before the flood starts, so that the attacker's own
			// signing (in this process) does not take the honest nodes'
			// CPU: what is measured is what receiving the flood costs.
			m := hn.m
			batches := make([][]byte, 200)
			for i := range batches {
				batch := make([]gossip.WireChange, 50)
				for j := range batch {
					batch[j] = m.change(fmt.Sprintf("/spam/%d/%d", i, j), strings.Repeat("s", 200), 1)
				}
				batches[i], _ = gossip.EncodeMessage(gossip.Message{V: gossip.FormatVersion, Origin: m.id().String(), Changes: batch})
			}
			close(hn.ready)
			// 1,000 messages (50,000 changes) a second: a hundred times the
			// origin rate the honest nodes allow here, and as much as this
			// process can publish without the attacker's own pubsub taking
			// a whole core of the two the honest nodes run on.
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for i := 0; ctx.Err() == nil; i++ {
				<-tick.C
				m.publishRaw(batches[i%len(batches)])
			}
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
				lat := writeToVisible(b, hn, 300, 200)
				cancel()
				wg.Wait()
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
				b.ReportMetric(float64(peakRSSKB())/1024, "peak-rss-MB")
				if a.run != nil {
					b.Logf("%s: attacker %s on node 0 (score %.1f)", a.name, hn.nodes[0].Reputation().State(hn.m.id()),
						hn.nodes[0].Reputation().Score(hn.m.id()))
				}
			}
		})
	}
}

// writeToVisible writes n keys on the first node at rate per second and
// returns, for each write and each other node, how long until it was seen
// there (by watch).
func writeToVisible(b *testing.B, hn *honestNet, n, rate int) []time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	sent := map[string]time.Time{}
	var lat []time.Duration
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
				lat = append(lat, time.Since(sent[ev.Key]))
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
