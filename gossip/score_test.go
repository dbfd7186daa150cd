package gossip_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/univrs/peerstate/gossip"
)

// appScores is a settable application score per peer.
type appScores struct {
	mu sync.Mutex
	s  map[peer.ID]float64
}

func (a *appScores) set(p peer.ID, v float64) { a.mu.Lock(); a.s[p] = v; a.mu.Unlock() }
func (a *appScores) score(p peer.ID) float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.s[p]
}

// With scoring on, the calibrated parameters are accepted by gossipsub,
// honest peers replicate as before, and a peer whose application score
// falls under the graylist threshold is no longer heard over pubsub.
func TestScoring_GraylistsByAppScore(t *testing.T) {
	scores := &appScores{s: map[peer.ID]float64{}}
	cfg := quiet()
	cfg.DisableSyncOnConnect = true // only pubsub may carry the writes
	cfg.AppScore = scores.score
	cfg.GraylistScore = -20
	peers := newPeers(t, 2, cfg)
	a, b := peers[0], peers[1]
	ctx := context.Background()
	if _, err := a.r.Set(ctx, "/before", []byte("1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "write delivered while a is in good standing", func() bool {
		_, err := b.r.Get(ctx, "/before")
		return err == nil
	})

	scores.set(a.id(), -100)
	time.Sleep(1500 * time.Millisecond) // scores are refreshed every decay interval (1 s)
	if _, err := a.r.Set(ctx, "/after", []byte("2")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if _, err := b.r.Get(ctx, "/after"); err == nil {
		t.Fatal("a graylisted peer's write was delivered over pubsub")
	}
}

func TestScoring_ConfigChecked(t *testing.T) {
	cfg := quiet()
	cfg.AppScore = func(peer.ID) float64 { return 0 }
	cfg.GraylistScore = 5
	h := newHost(t, &gater{blocked: map[peer.ID]bool{}}, nil)
	defer h.Close()
	if _, err := gossip.NewPubSub(context.Background(), h, cfg); err == nil {
		t.Fatal("a positive graylist score was accepted")
	}
}
