package node_test

import (
	"context"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/univrs/peerstate/gossip"
	"github.com/univrs/peerstate/internal/rawpubsub"
	"github.com/univrs/peerstate/node"
)

// newBareAttacker is an attacker without a pubsub of its own: it speaks
// gossipsub by hand (floodRaw), and no pubsub of its replaces its streams.
func newBareAttacker(t testing.TB, targets ...*node.Node) *attacker {
	t.Helper()
	infos := make([]peer.AddrInfo, len(targets))
	for i, n := range targets {
		infos[i] = nodeInfo(n)
	}
	return newBareAttackerTo(t, infos...)
}

// newBareAttackerTo is newBareAttacker connected to nodes known by their
// identities and addresses.
func newBareAttackerTo(t testing.TB, targets ...peer.AddrInfo) *attacker {
	t.Helper()
	key, h := newAttackerHost(t)
	t.Cleanup(func() { _ = h.Close() })
	for _, n := range targets {
		if err := h.Connect(context.Background(), n); err != nil {
			t.Fatalf("attacker connect: %v", err)
		}
	}
	return &attacker{t: t, h: h, key: key, cancel: func() {}}
}

// presign builds n pubsub RPC frames, each publishing one of datas (in
// turn) on peerstate's topic under its own sequence number, signed by the
// attacker as its pubsub would sign them: a flood whose whole cost to the
// attacker is paid before it starts, so that the attacker's own signing
// does not take the honest nodes' CPU in this one process (a real attacker
// runs elsewhere).
func (m *attacker) presign(datas [][]byte, n int) [][]byte {
	m.t.Helper()
	first := uint64(time.Now().UnixNano())
	frames := make([][]byte, n)
	for i := range frames {
		var err error
		if frames[i], err = rawpubsub.Frame(m.key, gossip.DefaultTopic, datas[i%len(datas)], first+uint64(i)); err != nil {
			m.t.Fatal(err)
		}
	}
	return frames
}

// floodRaw writes frames, one every interval, on a gossipsub stream of its
// own to each target, until ctx ends, every frame is sent or every target
// has dropped it (a banned attacker is disconnected and refused).
func (m *attacker) floodRaw(ctx context.Context, targets []peer.ID, frames [][]byte, interval time.Duration) {
	var streams []network.Stream
	for _, p := range targets {
		s, err := m.h.NewStream(ctx, p, pubsub.GossipSubID_v12)
		if err != nil {
			m.t.Logf("attacker stream to %s: %v", p, err)
			continue
		}
		defer s.Reset()
		streams = append(streams, s)
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for _, f := range frames {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		live := streams[:0]
		for _, s := range streams {
			_ = s.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := s.Write(f); err == nil {
				live = append(live, s)
			}
		}
		if streams = live; len(streams) == 0 {
			return
		}
	}
}
