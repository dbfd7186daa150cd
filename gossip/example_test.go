package gossip_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/gossip"
	"github.com/univrs/peerstate/replica"
)

// Two peers replicate a key: a write on one shows up in a watch on the
// other, with the writer as its origin.
func Example() {
	if err := twoPeers(); err != nil {
		fmt.Println("error:", err)
	}
	// Output: created /peers/a/info {"name":"a"} true
}

// examplePeer is a host, a replica and the gossip between them.
type examplePeer struct {
	h host.Host
	r *replica.Replica
	g *gossip.Gossip
}

func startPeer(ctx context.Context, cfg gossip.Config) (*examplePeer, error) {
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		return nil, err
	}
	p := &examplePeer{h: h}
	ps, err := gossip.NewPubSub(ctx, h, cfg) // lives until ctx is cancelled
	if err == nil {
		p.r, err = replica.New(ctx, memory.New(), replica.Config{Key: h.Peerstore().PrivKey(h.ID())})
	}
	if err == nil {
		p.g, err = gossip.New(ctx, h, ps, p.r, cfg)
	}
	if err != nil {
		return nil, errors.Join(err, p.stop())
	}
	p.r.SetBroadcaster(p.g) // local writes now go out through the gossip
	return p, nil
}

// stop closes the gossip first: it uses the host, the pubsub and the replica.
func (p *examplePeer) stop() error {
	var errs []error
	if p.g != nil {
		errs = append(errs, p.g.Close())
	}
	errs = append(errs, p.h.Close())
	if p.r != nil {
		errs = append(errs, p.r.Close())
	}
	return errors.Join(errs...)
}

func twoPeers() (err error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := gossip.DefaultConfig()
	a, err := startPeer(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, a.stop()) }()
	b, err := startPeer(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, b.stop()) }()

	if err := b.h.Connect(ctx, peer.AddrInfo{ID: a.h.ID(), Addrs: a.h.Addrs()}); err != nil {
		return err
	}
	for !slices.Contains(a.g.Peers(), b.h.ID()) { // until a knows b subscribed
		time.Sleep(10 * time.Millisecond)
	}
	w, err := b.r.Watch(ctx, "/peers/")
	if err != nil {
		return err
	}
	defer w.Close()

	if _, err := a.r.Set(ctx, "/peers/a/info", []byte(`{"name":"a"}`)); err != nil {
		return err
	}
	ev := <-w.Events()
	fmt.Println(ev.Type, ev.Key, string(ev.NewValue), ev.Origin == a.h.ID().String())
	return nil
}
