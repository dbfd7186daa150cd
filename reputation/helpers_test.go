package reputation_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/reputation"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// peerID returns a deterministic, valid peer ID for i.
func peerID(t testing.TB, i int) peer.ID {
	t.Helper()
	seed := sha256.Sum256(fmt.Appendf(nil, "peer-%d", i))
	_, pub, err := crypto.GenerateEd25519Key(bytes.NewReader(seed[:]))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newStore(t testing.TB) datastore.Store {
	t.Helper()
	s := memory.New()
	t.Cleanup(func() { s.Close() })
	return s
}

func newBook(t testing.TB, s datastore.Store, p reputation.Params, c *fakeClock, opts ...reputation.Option) *reputation.Book {
	t.Helper()
	b, err := reputation.New(s, p, append([]reputation.Option{reputation.WithClock(c.Now)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9 }

func decay(p reputation.Params, d time.Duration) float64 {
	return math.Pow(2, -float64(d)/float64(p.HalfLife))
}

// transitions records OnState calls.
type transitions struct {
	mu  sync.Mutex
	got []string
	ch  chan string
}

func watchStates(b *reputation.Book) *transitions {
	tr := &transitions{ch: make(chan string, 1024)}
	b.OnState(func(p peer.ID, from, to reputation.State) {
		s := fmt.Sprintf("%s:%s->%s", p.ShortString(), from, to)
		tr.mu.Lock()
		tr.got = append(tr.got, s)
		tr.mu.Unlock()
		tr.ch <- s
	})
	return tr
}

func (tr *transitions) take() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	g := tr.got
	tr.got = nil
	for len(tr.ch) > 0 {
		<-tr.ch
	}
	return g
}

func (tr *transitions) wait(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case s := <-tr.ch:
			if s == want {
				return
			}
			t.Logf("transition %s", s)
		case <-timeout:
			t.Fatalf("no transition %s", want)
		}
	}
}

func tr(p peer.ID, from, to reputation.State) string {
	return fmt.Sprintf("%s:%s->%s", p.ShortString(), from, to)
}
