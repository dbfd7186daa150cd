package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/univrs/peerstate/gossip"
)

// PeerExchangeProtocol is the stream protocol peers use to tell each other
// whom they are connected to: the asker sends nothing, the answerer writes
// a JSON array of {"id", "addrs"} and closes the stream.
const PeerExchangeProtocol = protocol.ID("/peerstate/peers/1")

const (
	pxMaxPeers   = 64       // peers in one answer
	pxMaxBytes   = 64 << 10 // size of an answer read
	pxTimeout    = 10 * time.Second
	dialTimeout  = 10 * time.Second
	pxQueueDepth = 64
)

type pxPeer struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

// connWatch lets goroutines wait for the next change of any peer's
// connectedness.
type connWatch struct {
	mu sync.Mutex
	ch chan struct{}
}

func (w *connWatch) changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

func (w *connWatch) notify() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
}

// startPeers starts the node's peer management: the connectedness event
// loop (logs, peer exchange on connect, waking the bootstrap loops), the
// peer exchange handler and loop, and one loop per bootstrap peer that
// keeps it connected.
func (n *Node) startPeers() error {
	sub, err := n.host.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		return err
	}
	n.pxQueue = make(chan peer.ID, pxQueueDepth)
	n.goFunc(func() { n.eventLoop(sub) })
	if n.cfg.PeerExchange {
		n.host.SetStreamHandler(PeerExchangeProtocol, n.handlePX)
		n.goFunc(n.pxLoop)
	}
	for _, a := range n.cfg.Bootstrap {
		info, _ := parsePeerAddr(a) // validated
		n.host.ConnManager().Protect(info.ID, "bootstrap")
		n.goFunc(func() { n.keepConnected(*info) })
	}
	return nil
}

func (n *Node) goFunc(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

func (n *Node) eventLoop(sub event.Subscription) {
	defer sub.Close()
	for {
		select {
		case <-n.ctx.Done():
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			ev := e.(event.EvtPeerConnectednessChanged)
			switch ev.Connectedness {
			case network.Connected:
				n.log.Info("peer connected", "peer", ev.Peer, "addr", n.remoteAddr(ev.Peer), "peers", len(n.host.Network().Peers()))
				if n.cfg.PeerExchange {
					select {
					case n.pxQueue <- ev.Peer:
					default: // the periodic round will ask someone later
					}
				}
			case network.NotConnected:
				n.log.Info("peer disconnected", "peer", ev.Peer, "peers", len(n.host.Network().Peers()))
				n.metrics.forget(ev.Peer) // back, it counts as caught up only after a new catch-up
			}
			n.conns.notify()
		}
	}
}

func (n *Node) remoteAddr(p peer.ID) string {
	for _, c := range n.host.Network().ConnsToPeer(p) {
		return c.RemoteMultiaddr().String()
	}
	return ""
}

// keepConnected keeps a bootstrap peer connected for the node's life: it
// dials it, and dials again whenever the connection drops, waiting between
// failed attempts from Config.RedialMin, doubling up to Config.RedialMax,
// with jitter.
func (n *Node) keepConnected(info peer.AddrInfo) {
	delay := n.cfg.RedialMin
	n.host.Peerstore().AddAddrs(info.ID, info.Addrs, peerstore.PermanentAddrTTL)
	for n.ctx.Err() == nil {
		changed := n.conns.changed()
		if n.host.Network().Connectedness(info.ID) == network.Connected {
			delay = n.cfg.RedialMin
			select {
			case <-changed:
			case <-n.ctx.Done():
			}
			continue
		}
		// Our own backoff paces the attempts; the swarm's would add minutes.
		if sw, ok := n.host.Network().(*swarm.Swarm); ok {
			sw.Backoff().Clear(info.ID)
		}
		ctx, cancel := context.WithTimeout(n.ctx, dialTimeout)
		err := n.host.Connect(ctx, info)
		cancel()
		if err == nil || n.ctx.Err() != nil {
			continue
		}
		wait := time.Duration(float64(delay) * (0.75 + 0.5*rand.Float64()))
		n.log.Warn("bootstrap peer unreachable", "peer", info.ID, "err", err, "retry_in", wait.Round(time.Millisecond))
		if !n.sleep(wait) {
			return
		}
		delay = min(2*delay, n.cfg.RedialMax)
	}
}

// handlePX answers a peer exchange request with the peers we are connected
// to that speak the protocol too, except the asker.
func (n *Node) handlePX(s network.Stream) {
	defer s.Close()
	s.SetDeadline(time.Now().Add(pxTimeout))
	asker := s.Conn().RemotePeer()
	var out []pxPeer
	for _, p := range n.host.Network().Peers() {
		if p == asker || len(out) == pxMaxPeers {
			continue
		}
		if ok, _ := n.host.Peerstore().SupportsProtocols(p, PeerExchangeProtocol); len(ok) == 0 {
			continue
		}
		pp := pxPeer{ID: p.String()}
		for _, a := range n.host.Peerstore().Addrs(p) {
			pp.Addrs = append(pp.Addrs, a.String())
		}
		if len(pp.Addrs) > 0 {
			out = append(out, pp)
		}
	}
	if err := json.NewEncoder(s).Encode(out); err != nil {
		s.Reset()
	}
}

// pxLoop asks newly connected peers, and every PeerExchangeInterval one
// random connected peer, whom they know, and dials those we are not
// connected to while we have fewer than ConnLow peers.
func (n *Node) pxLoop() {
	tick := time.NewTimer(n.pxInterval())
	defer tick.Stop()
	for {
		var p peer.ID
		select {
		case <-n.ctx.Done():
			return
		case p = <-n.pxQueue:
		case <-tick.C:
			tick.Reset(n.pxInterval())
			peers := n.host.Network().Peers()
			if len(peers) == 0 {
				continue
			}
			p = peers[rand.IntN(len(peers))]
		}
		n.exchangePeers(p)
	}
}

func (n *Node) pxInterval() time.Duration {
	return time.Duration(float64(n.cfg.PeerExchangeInterval) * (0.8 + 0.4*rand.Float64()))
}

func (n *Node) exchangePeers(p peer.ID) {
	ctx, cancel := context.WithTimeout(n.ctx, pxTimeout)
	defer cancel()
	s, err := n.host.NewStream(ctx, p, PeerExchangeProtocol)
	if err != nil {
		n.log.Debug("peer exchange: peer does not answer", "peer", p, "err", err)
		return
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(pxTimeout))
	s.CloseWrite()
	var got []pxPeer
	if err := json.NewDecoder(io.LimitReader(s, pxMaxBytes)).Decode(&got); err != nil {
		n.log.Debug("peer exchange: bad answer", "peer", p, "err", err)
		s.Reset()
		return
	}
	learned := 0
	for _, pp := range got {
		if len(n.host.Network().Peers()) >= n.cfg.ConnLow {
			break
		}
		info, ok := pxInfo(pp)
		if !ok || info.ID == n.host.ID() || n.host.Network().Connectedness(info.ID) == network.Connected {
			continue
		}
		dctx, dcancel := context.WithTimeout(n.ctx, dialTimeout)
		err := n.host.Connect(dctx, info)
		dcancel()
		if err != nil {
			n.log.Debug("peer exchange: learned peer unreachable", "peer", info.ID, "from", p, "err", err)
			continue
		}
		learned++
	}
	if learned > 0 {
		n.log.Info("peer exchange: connected to learned peers", "from", p, "learned", learned)
	}
}

func pxInfo(pp pxPeer) (peer.AddrInfo, bool) {
	id, err := peer.Decode(pp.ID)
	if err != nil {
		return peer.AddrInfo{}, false
	}
	info := peer.AddrInfo{ID: id}
	for _, s := range pp.Addrs {
		if a, err := ma.NewMultiaddr(s); err == nil {
			info.Addrs = append(info.Addrs, a)
		}
	}
	return info, len(info.Addrs) > 0
}

// gossipConfig is cfg.Gossip with the node's own hooks added to the
// caller's: rejected changes, applied batches and catch-ups are logged and
// measured.
func (n *Node) gossipConfig() gossip.Config {
	gc := n.cfg.Gossip
	gc.Logger = n.log
	onReject, onSync, onApply := gc.OnReject, gc.OnSync, gc.OnApply
	gc.OnReject = func(p peer.ID, reason string) {
		n.log.Debug("change rejected", "from", p, "reason", reason)
		if onReject != nil {
			onReject(p, reason)
		}
	}
	self := n.host.ID().String()
	gc.OnApply = func(p peer.ID, a gossip.Applied) {
		n.metrics.sawApply(self, a)
		if onApply != nil {
			onApply(p, a)
		}
	}
	gc.OnSync = func(p peer.ID, st gossip.SyncStats, err error) {
		n.metrics.sawSync(p, st, err)
		switch {
		case err != nil && n.ctx.Err() == nil:
			n.log.Debug("catch-up failed", "peer", p, "err", err)
		case err != nil:
		case st.Applied > 0 || st.Snapshot || st.Repaired:
			n.log.Info("caught up", "peer", p, "applied", st.Applied, "stale", st.Stale,
				"snapshot", st.Snapshot, "dropped", st.Dropped, "repaired", st.Repaired,
				"bytes_in", st.BytesReceived)
		default:
			n.log.Debug("caught up: nothing missing", "peer", p, "bytes_in", st.BytesReceived)
		}
		if onSync != nil {
			onSync(p, st, err)
		}
	}
	return gc
}

// briefDialError tells a failed dial as each address tried and why it
// failed, without libp2p's layers that name the peer again and again; it
// unwraps to err.
func briefDialError(err error) error {
	var de *swarm.DialError
	switch {
	case !errors.As(err, &de):
		return err
	case len(de.DialErrors) == 0 && de.Cause != nil:
		return briefError{msg: de.Cause.Error(), err: err}
	case len(de.DialErrors) == 0:
		return err
	}
	parts := make([]string, len(de.DialErrors))
	for i, te := range de.DialErrors {
		parts[i] = fmt.Sprintf("%s: %v", te.Address, te.Cause)
	}
	return briefError{msg: strings.Join(parts, "; "), err: err}
}

type briefError struct {
	msg string
	err error
}

func (e briefError) Error() string { return e.msg }
func (e briefError) Unwrap() error { return e.err }
