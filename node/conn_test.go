package node_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
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

// TestNode_ConnectErrorIsBrief: a failed connect names the peer once and
// each address tried with its cause, and still unwraps to libp2p's error.
func TestNode_ConnectErrorIsBrief(t *testing.T) {
	a := startNode(t, testConfig(t, t.TempDir()))
	b := startNode(t, testConfig(t, t.TempDir()))
	id, addr := b.ID().String(), b.Addrs()[0].String()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// Nobody listens at addr now.
	err := a.Connect(context.Background(), addr)
	if err == nil {
		t.Fatal("connected to a closed node")
	}
	msg := err.Error()
	if strings.Count(msg, id) != 1 || !strings.Contains(msg, strings.TrimSuffix(addr, "/p2p/"+id)) || !strings.Contains(msg, "connection refused") {
		t.Errorf("connect error %q: want the peer once, the address and its cause", msg)
	}
	var de *swarm.DialError
	if !errors.As(err, &de) {
		t.Errorf("connect error %q does not unwrap to a swarm.DialError", msg)
	}
}
