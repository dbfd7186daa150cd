package gossip_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/univrs/peerstate/gossip"
	"github.com/univrs/peerstate/internal/rawpubsub"
)

// pushRaw writes pubsub messages carrying datas on a gossipsub stream of
// h's own to p, each signed by h as its pubsub would sign it: a peer that
// pushes messages without running pubsub (gossipsub does not score it).
func pushRaw(t *testing.T, h host.Host, p peer.ID, datas ...[]byte) {
	t.Helper()
	pushFrames(t, h, p, signFrames(t, h, datas...)...)
}

// signFrames is the gossipsub frames publishing datas, signed by h as its
// pubsub would sign them, each under a sequence number of its own.
func signFrames(t *testing.T, h host.Host, datas ...[]byte) [][]byte {
	t.Helper()
	key := h.Peerstore().PrivKey(h.ID())
	first := uint64(time.Now().UnixNano())
	frames := make([][]byte, len(datas))
	for i, data := range datas {
		var err error
		if frames[i], err = rawpubsub.Frame(key, gossip.DefaultTopic, data, first+uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	return frames
}

// pushFrames writes frames on a gossipsub stream of h's own to p.
func pushFrames(t *testing.T, h host.Host, p peer.ID, frames ...[]byte) {
	t.Helper()
	s, err := h.NewStream(context.Background(), p, pubsub.GossipSubID_v12)
	if err != nil {
		t.Fatalf("open gossipsub stream: %v", err)
	}
	defer s.Close()
	for _, f := range frames {
		if _, err := s.Write(f); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
}

// A peer under the graylist score is not heard from the moment it is
// there, though it never runs pubsub (gossipsub, which graylists only the
// peers it scores, would not drop it): its messages are dropped on
// arrival, before their signatures are checked or our validator sees
// them, while still counting against its origin rate, so that a
// graylisted peer that keeps flooding is rejected for the rate (and goes
// on to be banned). The same messages from a peer in good standing are
// heard and rejected.
func TestScoring_GraylistedPeerDroppedOnArrival(t *testing.T) {
	scores := &appScores{s: map[peer.ID]float64{}}
	var rej rejections
	cfg := quiet()
	cfg.AppScore, cfg.GraylistScore, cfg.OnReject = scores.score, -9, rej.hook
	cfg.OriginRate, cfg.OriginBurst = 1, 5
	b := newPeers(t, 1, cfg)[0]
	bare := func() host.Host {
		m := newHost(t, &gater{blocked: map[peer.ID]bool{}}, nil)
		t.Cleanup(func() { _ = m.Close() })
		if err := m.Connect(context.Background(), peer.AddrInfo{ID: b.id(), Addrs: b.h.Addrs()}); err != nil {
			t.Fatal(err)
		}
		return m
	}
	junk := func(tag string) (out [][]byte) {
		for i := range 20 {
			out = append(out, fmt.Appendf(nil, "not a message %s %d", tag, i))
		}
		return out
	}

	m := bare()
	scores.set(m.ID(), -50)
	pushRaw(t, m, b.id(), junk("graylisted")...)
	// Twenty messages against a burst of five (and a change a second).
	waitFor(t, 5*time.Second, "the graylisted peer's flood rejected for the rate", func() bool { return rej.of(m.ID(), gossip.ReasonRate) >= 14 })
	time.Sleep(200 * time.Millisecond)
	if n := rej.of(m.ID(), gossip.ReasonRate); n > 15 {
		t.Fatalf("%d of the graylisted peer's 20 messages over a burst of 5 counted against its rate", n)
	}
	if n := b.g.Stats().Rejected[gossip.ReasonRate]; n != uint64(rej.of(m.ID(), gossip.ReasonRate)) {
		t.Fatalf("the gossip's stats count %d rate rejections, its hook %d", n, rej.of(m.ID(), gossip.ReasonRate))
	}
	if n := rej.of(m.ID(), gossip.ReasonMalformed); n != 0 {
		t.Fatalf("%d messages of a graylisted peer reached the validator", n)
	}

	good := bare()
	pushRaw(t, good, b.id(), junk("in good standing")[:3]...)
	waitFor(t, 5*time.Second, "the junk of a peer in good standing rejected", func() bool {
		return rej.of(good.ID(), gossip.ReasonMalformed) == 3
	})
}

// An origin that has spent its rate is rejected for it before its next
// message is decoded: what that message holds, even junk, costs nothing
// more and counts as nothing else.
func TestLimits_SpentOriginNotDecoded(t *testing.T) {
	var rej rejections
	cfg := quiet()
	cfg.OriginRate, cfg.OriginBurst = 1, 5
	cfg.OnReject = rej.hook
	b := newPeer(t, cfg, peerOpts{})
	// A bare host, without a pubsub whose own stream to b would replace
	// the one pushRaw opens.
	m := &testPeer{t: t, h: newHost(t, &gater{blocked: map[peer.ID]bool{}}, nil)}
	t.Cleanup(func() { _ = m.h.Close() })
	connect(t, m, b)
	var valid [][]byte
	for i := range 5 { // the whole burst, a change a message
		data, err := gossip.EncodeMessage(group(m, signedBy(t, m, m, fmt.Sprintf("/k/%d", i), "v", 1, uint64(i+1)))[0])
		if err != nil {
			t.Fatal(err)
		}
		valid = append(valid, data)
	}
	pushRaw(t, m.h, b.id(), valid...)
	waitFor(t, 5*time.Second, "the burst applied", func() bool { return watermark(t, b, m.id()) == 5 })
	pushRaw(t, m.h, b.id(), []byte("not a message 1"), []byte("not a message 2"), []byte("not a message 3"))
	waitFor(t, 5*time.Second, "the junk rejected for the rate", func() bool { return rej.of(m.id(), gossip.ReasonRate) == 3 })
	if n := rej.of(m.id(), gossip.ReasonMalformed); n != 0 {
		t.Fatalf("%d messages of an origin over its rate were decoded", n)
	}
}

// A peer that has spent its origin rate has what it then publishes under
// its own name dropped on arrival, before pubsub checks the signatures,
// and counted against its rate: frames whose signatures would not even
// verify are counted for the rate, not left to pubsub to drop unseen.
// Relayed messages under its name from another peer are not dropped so.
func TestLimits_SpentSenderDroppedOnArrival(t *testing.T) {
	scores := &appScores{s: map[peer.ID]float64{}}
	var rej rejections
	cfg := quiet()
	cfg.AppScore, cfg.GraylistScore, cfg.OnReject = scores.score, -9, rej.hook
	cfg.OriginRate, cfg.OriginBurst = 0.01, 5 // nothing refills during the test
	b := newPeers(t, 1, cfg)[0]
	// A bare host, without a pubsub whose own stream to b would replace
	// the one opened here.
	m := &testPeer{t: t, h: newHost(t, &gater{blocked: map[peer.ID]bool{}}, nil)}
	t.Cleanup(func() { _ = m.h.Close() })
	connect(t, m, b)
	// Signed frames, each carrying a change of m's; corrupt, with a broken
	// envelope signature (the frame's last field).
	frames := func(seqs []uint64, corrupt bool) [][]byte {
		datas := make([][]byte, len(seqs))
		for i, seq := range seqs {
			var err error
			if datas[i], err = gossip.EncodeMessage(group(m, signedBy(t, m, m, fmt.Sprintf("/k/%d", seq), "v", 1, seq))[0]); err != nil {
				t.Fatal(err)
			}
		}
		fs := signFrames(t, m.h, datas...)
		for _, f := range fs {
			if corrupt {
				f[len(f)-1] ^= 0xff
			}
		}
		return fs
	}
	push := func(fs [][]byte) { pushFrames(t, m.h, b.id(), fs...) }

	// Bad signatures within the rate are pubsub's to drop, unseen by us.
	push(frames([]uint64{101, 102, 103}, true))
	push(frames([]uint64{1, 2, 3, 4, 5}, false)) // the whole burst
	waitFor(t, 5*time.Second, "the burst applied", func() bool { return watermark(t, b, m.id()) == 5 })
	if n := rej.of(m.id(), gossip.ReasonRate); n != 0 {
		t.Fatalf("%d rate rejections within the burst", n)
	}
	// Past it, its own frames are counted on arrival, signatures unchecked.
	push(frames([]uint64{104, 105, 106, 107}, true))
	waitFor(t, 5*time.Second, "the frames past the rate counted", func() bool { return rej.of(m.id(), gossip.ReasonRate) == 4 })
	if n := b.g.Stats().Rejected[gossip.ReasonRate]; n != 4 {
		t.Fatalf("the gossip's stats count %d rate rejections, want 4", n)
	}
}
