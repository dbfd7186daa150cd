package node

import (
	"context"
	"math/rand/v2"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/network"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
)

// startDHT joins the Kademlia DHT, with the bootstrap peers as entry points,
// advertises the node under the rendezvous namespace and connects to the
// peers it finds there. Its goroutines belong to the node.
func (n *Node) startDHT() error {
	mode := dht.ModeAuto
	if n.cfg.DHTServer {
		mode = dht.ModeServer
	}
	kad, err := dht.New(n.host, dht.Mode(mode), dht.ProtocolPrefix("/peerstate"))
	if err != nil {
		return err
	}
	n.dht = kad
	if err := kad.Bootstrap(n.ctx); err != nil {
		return err
	}
	disc := drouting.NewRoutingDiscovery(kad)
	ns := n.cfg.Rendezvous
	n.wg.Add(2)
	go func() { // advertise, renewing before the record expires
		defer n.wg.Done()
		for {
			wait := time.Minute
			if ttl, err := disc.Advertise(n.ctx, ns); err == nil && ttl > 0 {
				wait = ttl * 4 / 5
			} else if err != nil {
				n.log.Debug("dht advertise", "err", err)
				wait = n.cfg.DHTInterval
			}
			if !n.sleep(wait) {
				return
			}
		}
	}()
	go func() { // look for peers, jittered
		defer n.wg.Done()
		for {
			n.findPeers(disc, ns)
			if !n.sleep(time.Duration(float64(n.cfg.DHTInterval) * (0.8 + 0.4*rand.Float64()))) {
				return
			}
		}
	}()
	return nil
}

func (n *Node) findPeers(disc *drouting.RoutingDiscovery, ns string) {
	ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer cancel()
	peers, err := disc.FindPeers(ctx, ns)
	if err != nil {
		n.log.Debug("dht find peers", "err", err)
		return
	}
	for info := range peers {
		if info.ID == n.host.ID() || len(info.Addrs) == 0 ||
			n.host.Network().Connectedness(info.ID) == network.Connected {
			continue
		}
		if err := n.host.Connect(ctx, info); err != nil {
			n.log.Debug("dht peer unreachable", "peer", info.ID, "err", err)
		}
	}
}

// sleep waits d or until the node closes; it reports whether to go on.
func (n *Node) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-n.ctx.Done():
		return false
	}
}
