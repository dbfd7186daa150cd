package gossip_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/topiclog"
)

// BenchmarkTopicLog_ThreeHosts appends to one topic log from one goroutine
// on each of three peers over real loopback hosts (libp2p, pubsub), b.N
// messages of 200 bytes in all; the time per message runs until every peer
// holds every message (msgs/s is the whole network's rate).
func BenchmarkTopicLog_ThreeHosts(b *testing.B) {
	peers := newPeers(b, 3, quiet())
	ctx := context.Background()
	payload := make([]byte, 200)
	var logs []*topiclog.Log
	for _, p := range peers {
		l, err := topiclog.Open(p.r, "bench", topiclog.Config{})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		logs = append(logs, l)
	}
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i, l := range logs {
		n := b.N / len(logs)
		if i < b.N%len(logs) {
			n++
		}
		wg.Go(func() {
			for range n {
				if _, err := l.Append(ctx, payload); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	held := func(p *testPeer) int {
		n, opts := 0, datastore.ListOptions{KeysOnly: true, Limit: datastore.MaxListLimit}
		for {
			page, err := p.r.List(ctx, topiclog.Prefix("bench"), opts)
			if err != nil {
				b.Fatal(err)
			}
			n += len(page.Entries)
			if !page.More {
				return n
			}
			opts.After = page.Next
		}
	}
	waitFor(b, 5*time.Minute, "every message on every peer", func() bool {
		for _, p := range peers {
			if held(p) < b.N {
				return false
			}
		}
		return true
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
