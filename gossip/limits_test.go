package gossip_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-varint"

	"github.com/univrs/peerstate/gossip"
)

// Attackers of the serving side, each a bare host speaking the catch-up
// protocol by hand: every one is refused or cut off, counted against it
// with its reason, and an honest peer is still served meanwhile.

// rejections counts OnReject calls by peer and reason.
type rejections struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *rejections) hook(p peer.ID, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[p.String()+" "+reason]++
}

func (r *rejections) of(p peer.ID, reason string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[p.String()+" "+reason]
}

// request opens a catch-up stream from m to p and sends a request with an
// empty vector: "send me everything".
func request(t *testing.T, m *testPeer, p peer.ID) network.Stream {
	t.Helper()
	s, err := m.h.NewStream(context.Background(), p, gossip.DefaultSyncProtocol)
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	body, _ := cbor.Marshal(map[int]any{1: gossip.FormatVersion, 2: map[string]uint64{}})
	if _, err := s.Write(append(varint.ToUvarint(uint64(len(body))), body...)); err != nil {
		t.Fatalf("write request: %v", err)
	}
	return s
}

// drain reads a stream to its end and reports whether it ended cleanly
// (the responder closed it) rather than by a reset.
func drain(s network.Stream) (int64, bool) {
	n, err := io.Copy(io.Discard, s)
	return n, err == nil
}

func fill(t *testing.T, p *testPeer, n int) {
	t.Helper()
	for i := range n {
		if _, err := p.r.Set(context.Background(), fmt.Sprintf("/k/%05d", i), value(i, 256)); err != nil {
			t.Fatal(err)
		}
	}
}

// A peer holding catch-up streams open gets at most MaxSessionsPerPeer of
// them; beyond that it is refused, and an honest peer is served meanwhile.
func TestLimits_HeldStreams(t *testing.T) {
	var rej rejections
	cfg := quiet()
	cfg.DisableSyncOnConnect = true
	cfg.OnReject = rej.hook
	b := newPeer(t, cfg, peerOpts{})
	fill(t, b, 10)
	m := newPeer(t, cfg, peerOpts{noGossip: true})
	c := newPeer(t, cfg, peerOpts{})
	connect(t, m, b)
	connect(t, c, b)

	// Streams opened and left silent: the responder waits for a request
	// that never comes, each holding a session.
	var held []network.Stream
	for range 6 {
		s, err := m.h.NewStream(context.Background(), b.id(), gossip.DefaultSyncProtocol)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write([]byte{5}); err != nil { // a frame length, then nothing
			t.Fatal(err)
		}
		held = append(held, s)
	}
	defer func() {
		for _, s := range held {
			_ = s.Reset()
		}
	}()
	waitFor(t, 10*time.Second, "sessions beyond the per-peer limit refused", func() bool {
		return rej.of(m.id(), gossip.ReasonSessionLimit) >= 4
	})
	if got := rej.of(m.id(), gossip.ReasonSessionLimit); got != 4 {
		t.Fatalf("%d refusals, want 4 (6 streams, 2 allowed)", got)
	}
	st, err := c.g.SyncWith(context.Background(), b.id())
	if err != nil || st.Applied != 10 {
		t.Fatalf("honest peer not served while the attacker holds its streams: %+v %v", st, err)
	}
}

// A peer asking for the whole state in a loop is served until its byte
// budget runs out, then cut off; the budget refills at its rate.
func TestLimits_WholeStateLoop(t *testing.T) {
	var rej rejections
	cfg := quiet()
	cfg.DisableSyncOnConnect = true
	cfg.OnReject = rej.hook
	cfg.MaxValueSize = 64 << 10 // frames of at most MaxMessageSize (1 MiB)
	cfg.InlineValueLimit = 16 << 10
	cfg.ServeBytesBurst = 2 << 20
	cfg.ServeBytesRate = 1 // as good as no refill within the test
	cfg.SessionRate, cfg.SessionBurst = 1000, 1000
	b := newPeer(t, cfg, peerOpts{})
	fill(t, b, 2000) // ~0.6 MB a full answer
	m := newPeer(t, cfg, peerOpts{noGossip: true})
	connect(t, m, b)

	var total int64
	served := 0
	for i := 0; i < 20 && rej.of(m.id(), gossip.ReasonBandwidth) == 0; i++ {
		n, clean := drain(request(t, m, b.id()))
		total += n
		if clean {
			served++
		}
	}
	// The hook runs on the serving side, possibly after m has seen its
	// stream end, so m may have asked once more before the count shows.
	if rej.of(m.id(), gossip.ReasonBandwidth) == 0 {
		t.Fatalf("never cut off after %d full answers (%d bytes)", served, total)
	}
	if served < 2 || total > int64(cfg.ServeBytesBurst) {
		t.Fatalf("%d full answers, %d bytes sent: want the budget (%d bytes) honoured, and used", served, total, cfg.ServeBytesBurst)
	}
	// What is left of the budget is less than a frame: no more answers.
	if n, clean := drain(request(t, m, b.id())); clean || total+n > int64(cfg.ServeBytesBurst) {
		t.Fatalf("served again (%d bytes, clean %v) past the budget", n, clean)
	}
}

// A peer may not start sessions faster than its rate.
func TestLimits_SessionRate(t *testing.T) {
	var rej rejections
	cfg := quiet()
	cfg.DisableSyncOnConnect = true
	cfg.OnReject = rej.hook
	cfg.SessionRate, cfg.SessionBurst = 0.001, 3
	b := newPeer(t, cfg, peerOpts{})
	m := newPeer(t, cfg, peerOpts{noGossip: true})
	connect(t, m, b)
	clean := 0
	for range 5 {
		if _, ok := drain(request(t, m, b.id())); ok {
			clean++
		}
	}
	if clean != 3 || rej.of(m.id(), gossip.ReasonSessionLimit) != 2 {
		t.Fatalf("%d sessions served, %d refused; want 3 and 2", clean, rej.of(m.id(), gossip.ReasonSessionLimit))
	}
}

// A slow reader is cut off when its session outlives SessionTimeout, and a
// trickling responder is given up on after the same deadline; each is
// counted against the peer.
func TestLimits_SessionDeadline(t *testing.T) {
	var rej rejections
	cfg := quiet()
	cfg.DisableSyncOnConnect = true
	cfg.OnReject = rej.hook
	cfg.SessionTimeout = 500 * time.Millisecond
	b := newPeer(t, cfg, peerOpts{})
	fill(t, b, 3000) // more than the stream buffers hold
	m := newPeer(t, cfg, peerOpts{noGossip: true})
	connect(t, m, b)

	// Slow reader: asks, then reads nothing.
	s := request(t, m, b.id())
	waitFor(t, 10*time.Second, "slow reader cut off", func() bool {
		return rej.of(m.id(), gossip.ReasonSessionTimeout) == 1
	})
	_ = s.Reset()

	// Trickling responder: one byte of a frame every 50 ms, each within
	// the per-read timeout, never a whole answer.
	m.h.SetStreamHandler(gossip.DefaultSyncProtocol, func(s network.Stream) {
		defer s.Reset()
		br := bufio.NewReader(s)
		n, err := varint.ReadUvarint(br)
		if err != nil {
			return
		}
		if _, err := br.Discard(int(n)); err != nil {
			return
		}
		for range 600 {
			if _, err := s.Write([]byte{0x7f}); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	start := time.Now()
	if _, err := b.g.SyncWith(context.Background(), m.id()); err == nil {
		t.Fatal("sync with a trickling responder succeeded")
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Fatalf("gave up after %v, want about the session timeout", took)
	}
	if rej.of(m.id(), gossip.ReasonSessionTimeout) != 2 {
		t.Fatalf("trickling responder not counted: %d", rej.of(m.id(), gossip.ReasonSessionTimeout))
	}
}

// A burst of writes larger than the origin burst: the writer paces its own
// publishing to the rate its peers allow, so none of them takes it for a
// flood (no rate rejections, nothing counted against it), and everything
// arrives.
func TestLimits_OwnPublishingPaced(t *testing.T) {
	cfg := quiet()
	cfg.OriginRate, cfg.OriginBurst = 400, 100
	peers := newPeers(t, 2, cfg)
	a, b := peers[0], peers[1]
	ctx := context.Background()
	for i := range 300 {
		if _, err := a.r.Set(ctx, fmt.Sprintf("/paced/%03d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	waitConverged(t, 30*time.Second, a, b)
	if n := b.g.Stats().Rejected[gossip.ReasonRate]; n != 0 {
		t.Fatalf("b rejected %d of a's messages as over the origin rate", n)
	}
	if st := a.g.Stats(); st.PublishedChanges+st.Dropped < 300 {
		t.Fatalf("a published %d changes and dropped %d of 300", st.PublishedChanges, st.Dropped)
	}
}

// An origin without standing (a newcomer) that bursts: its changes are
// verified at NewcomerRate, at most NewcomerBacklog of its messages wait for
// that and the rest are ignored for catch-up to bring; an origin with
// standing is not held up behind it, and nothing is counted against the
// newcomer, whose every change arrives by catch-up.
func TestLimits_NewcomerPaced(t *testing.T) {
	var standing sync.Map
	var rej rejections
	cfg := quiet()
	cfg.MaxMessageSize, cfg.InlineValueLimit = 8<<10, 2<<10 // three changes a message
	cfg.NewcomerRate, cfg.NewcomerBurst, cfg.NewcomerBacklog = 5, 1, 2
	cfg.StandingScore, cfg.GraylistScore = 1, -9
	cfg.AppScore = func(p peer.ID) float64 {
		if _, ok := standing.Load(p); ok {
			return 5
		}
		return 0
	}
	cfg.OnReject = rej.hook
	peers := newPeers(t, 3, cfg)
	r, known, fresh := peers[0], peers[1], peers[2]
	standing.Store(known.id(), true)
	ctx := context.Background()

	const n = 30
	for i := range n {
		if _, err := fresh.r.Set(ctx, fmt.Sprintf("/fresh/%02d", i), value(i, 2<<10)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "the newcomer's burst published", func() bool { return fresh.g.Stats().PublishedChanges == n })
	if _, err := known.r.Set(ctx, "/known", []byte("v")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the known origin's change at r", func() bool {
		_, found, err := r.r.Current(ctx, "/known")
		return err == nil && found
	})
	// At 5 changes a second the newcomer's 30 take six seconds to verify:
	// the known origin's change did not wait for them.
	if got := watermark(t, r, fresh.id()); got >= n {
		t.Fatalf("r had all %d of the newcomer's changes before the known origin's one", got)
	}
	waitFor(t, 10*time.Second, "the newcomer's backlog ignored", func() bool { return r.g.Stats().Ignored[gossip.ReasonBacklog] > 0 })

	if _, err := r.g.SyncWith(ctx, fresh.id()); err != nil {
		t.Fatal(err)
	}
	if got := watermark(t, r, fresh.id()); got != n {
		t.Fatalf("after catch-up r has %d of the newcomer's %d changes", got, n)
	}
	for _, reason := range []string{gossip.ReasonRate, gossip.ReasonBacklog, gossip.ReasonMalformed} {
		if k := rej.of(fresh.id(), reason); k != 0 {
			t.Fatalf("%d %q rejections counted against the newcomer", k, reason)
		}
	}
}
