package node_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/univrs/peerstate/node"
)

// BenchmarkUnderAttack measures the honest nodes' write-to-visible latency
// (p50, p99) while attackers work on them, next to the same run with no
// attacker: 600 writes at 200/s on one node, seen by the other two — 3 s,
// about as long as the slowest attacker (the trickling responder) takes to
// be punished, so that the writes span the whole attack. Each
// sub-benchmark is one attacker of TestAttack_AllTogether alone, or all of
// them at once; in every run, "none" included, all the attackers are
// connected and only the named ones attack, so that the runs differ in the
// attack alone. Each also reports when the last attacker was punished
// (graylisted or banned, as in the tests), the rejections counted against
// the attackers, and the process's peak RSS during the attack (bounded). Run with
// -benchtime=1x; each sub-benchmark is one run.
func BenchmarkUnderAttack(b *testing.B) {
	for _, name := range []string{"none", "forged-origin", "replay", "malformed-oversized", "write-policy", "flood",
		"held-streams", "whole-state-loop", "trickling-responder", "all-together"} {
		b.Run(name, func(b *testing.B) {
			for range b.N {
				underAttack(b, name)
			}
		})
	}
}

// attackRSSBoundMB bounds the peak resident set of the process during
// one run of BenchmarkUnderAttack (without the race detector): three
// honest nodes, every attacker, and the flood's 5,000 signed frames
// (~60 MB) held ready to send. One honest node's is a part of it.
const attackRSSBoundMB = 320

// underAttack is one run of BenchmarkUnderAttack: the attack name (one
// attacker's, "none" or "all-together").
func underAttack(b *testing.B, name string) {
	var rec rejectionLog
	hn := newHonestNet(b, func(c *node.Config) {
		togetherConfig(c)
		c.Gossip.OriginRate, c.Gossip.OriginBurst = 500, 1000
		rec.hook(c)
	})
	ctx := context.Background()
	for i := range 100 { // the state the whole-state loop asks for, as in the test
		if _, err := hn.nodes[0].Store().Set(ctx, fmt.Sprintf("/bulk/%03d", i), bytes.Repeat([]byte("b"), 4<<10)); err != nil {
			b.Fatal(err)
		}
	}
	hn.writeHonest(b, "before", 5)
	// The flood as it was measured before: 1,000 distinct messages of 50
	// changes a second for 5 s, twice the origin rate allowed here. Runs
	// without it sign a token flood they never send.
	sz := togetherSizes{floodBatches: 1, floodFrames: 1, floodEvery: time.Millisecond, trickler: true}
	if name == "flood" || name == "all-together" {
		sz.floodBatches, sz.floodFrames = 200, 5000
	}
	attacks := newTogether(b, hn, sz)
	var running []*togetherAttack
	for _, a := range attacks {
		if name == "all-together" || a.name == name {
			running = append(running, a)
		}
	}
	if name != "none" && len(running) == 0 {
		b.Fatalf("no attack %q", name)
	}

	// The peak resident set is this run's from here: the attack's.
	if err := resetPeakRSS(); err != nil {
		b.Fatalf("cannot reset the peak RSS: %v", err)
	}
	actx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	start := time.Now()
	hn.start = start
	pun := watchPunished(actx, &wg, hn, running, start)
	for _, a := range running {
		wg.Add(1)
		go func() { defer wg.Done(); a.run(actx) }()
	}
	samples := writeToVisible(b, hn, 600, 200)
	// The run ends when every attacker is punished, however long after the
	// measured writes that is.
	deadline := time.Now().Add(30 * time.Second)
	for len(running) > 0 && !pun.all() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	took := pun.last()
	cancel()
	wg.Wait()
	if len(running) > 0 && took == 0 {
		for _, a := range running {
			for i := range a.targets {
				if pun.after(a, i) == 0 {
					b.Errorf("%s: not punished on node %d after 30 s: %s", a.name, i, hn.nodes[i].Reputation().State(a.m.id()))
				}
			}
		}
	}
	hn.waitIdentical(b)

	all := latencies(samples, time.Time{})
	b.ReportMetric(ms(all[len(all)/2]), "p50-ms")
	b.ReportMetric(ms(all[len(all)*99/100]), "p99-ms")
	// Without the first 100 ms, when every attacker of a run starts at
	// once: the attack's cost once it is under way.
	if later := latencies(samples, start.Add(100*time.Millisecond)); len(later) > 0 {
		b.ReportMetric(ms(later[len(later)*99/100]), "p99-from-100ms-ms")
	}
	b.ReportMetric(ms(all[len(all)-1]), "max-ms")
	peak := peakRSSKB() / 1024
	b.ReportMetric(float64(peak), "peak-rss-MB")
	if peak > attackRSSBoundMB {
		b.Errorf("peak RSS %d MB under the %s attack, over the %d MB bound", peak, name, attackRSSBoundMB)
	}
	if len(running) == 0 {
		return
	}
	rejections := 0
	for _, a := range running {
		for i := range a.targets {
			counts := rec.of(i, a.m.id())
			rejections += counts[a.reason]
			r, _ := hn.nodes[i].Reputation().Record(a.m.id())
			b.Logf("%-19s node %d: %-10s score %6.1f after %-8v rejections %v", a.name, i, r.State, r.Score,
				pun.after(a, i).Round(time.Millisecond), counts)
		}
	}
	b.ReportMetric(float64(rejections), "rejections")
	if took > 0 {
		b.ReportMetric(ms(took), "punished-ms")
		// The honest writes made once every attacker was punished: what
		// the network is like after the attack.
		if after := latencies(samples, start.Add(took)); len(after) > 0 {
			b.ReportMetric(ms(after[len(after)*99/100]), "p99-after-ms")
		}
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
