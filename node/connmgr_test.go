package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestNode_ConnectionManagerTrims: a node above its high water mark trims
// back to its low one, keeping its bootstrap peer besides. The extra peers
// are plain libp2p hosts: gossipsub protects the peers of its mesh, so
// only connections outside it are trimmed.
func TestNode_ConnectionManagerTrims(t *testing.T) {
	ctx := context.Background()
	boot := startNode(t, testConfig(t, t.TempDir()))
	cfg := testConfig(t, t.TempDir())
	cfg.Bootstrap = []string{boot.Addrs()[0].String()}
	cfg.PeerExchange = false // nobody dials but the test
	cfg.ConnLow, cfg.ConnHigh, cfg.ConnGrace = 2, 3, time.Millisecond
	a := startNode(t, cfg)
	for range 4 {
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		if err := h.Connect(ctx, peer.AddrInfo{ID: a.ID(), Addrs: a.Host().Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return connected(a, boot) && len(a.Host().Network().Peers()) == 5 })
	waitFor(t, func() bool {
		a.Host().ConnManager().TrimOpenConns(ctx) // as its own loop does every few seconds
		// ConnLow counts the connections it may trim; the bootstrap peer is
		// kept besides them.
		return len(a.Host().Network().Peers()) == cfg.ConnLow+1
	})
	if !connected(a, boot) {
		t.Fatal("the trim dropped the bootstrap peer")
	}
}
