package topiclog_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/sqlite"
	"github.com/univrs/peerstate/internal/replicatest"
	"github.com/univrs/peerstate/replica"
	"github.com/univrs/peerstate/topiclog"
)

var payload = make([]byte, 200)

// One peer: appends to a replica (the change also goes to a broadcaster
// that drops it), over memory and over SQLite, from 1 and 8 goroutines.
func BenchmarkAppend_OnePeer(b *testing.B) {
	for _, backend := range []string{"memory", "sqlite"} {
		for _, writers := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/writers=%d", backend, writers), func(b *testing.B) {
				var local datastore.Store = memory.New()
				if backend == "sqlite" {
					s, err := sqlite.Open(filepath.Join(b.TempDir(), "db"))
					if err != nil {
						b.Fatal(err)
					}
					local = s
				}
				key, _ := replicatest.KeyFor("bench")
				r, err := replica.New(context.Background(), local, replica.Config{Key: key, Broadcaster: dropAll{}})
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close()
				appendN(b, []datastore.Store{r}, writers)
			})
		}
	}
}

// Three peers: one appender on each, every message delivered to the other
// two; the time per message runs until every peer holds every message.
func BenchmarkAppend_ThreePeers(b *testing.B) {
	net, err := replicatest.New(3, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer net.Close()
	stores := make([]datastore.Store, len(net.Replicas))
	for i, r := range net.Replicas {
		stores[i] = r
	}
	appendN(b, stores, 1)
	if err := net.Settle(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	for _, r := range net.Replicas {
		p, err := r.List(context.Background(), topiclog.Prefix("bench"), datastore.ListOptions{KeysOnly: true, Limit: datastore.MaxListLimit})
		if err != nil || len(p.Entries) < b.N {
			b.Fatalf("%s holds %d of %d messages: %v", r.ID(), len(p.Entries), b.N, err)
		}
	}
}

// appendN appends b.N messages in total, split over writers goroutines on
// each store.
func appendN(b *testing.B, stores []datastore.Store, writers int) {
	b.Helper()
	ctx := context.Background()
	var logs []*topiclog.Log
	for i, s := range stores {
		for w := range writers {
			l, err := topiclog.Open(s, "bench", topiclog.Config{Writer: fmt.Sprintf("w%d-%d", i, w)})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			logs = append(logs, l)
		}
	}
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	b.ResetTimer()
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
}

type dropAll struct{}

func (dropAll) Broadcast(context.Context, []replica.Change) error { return nil }
