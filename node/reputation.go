package node

import (
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/conngater"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/univrs/peerstate/gossip"
	"github.com/univrs/peerstate/reputation"
)

// ReputationPattern is where a node keeps its opinion of each peer: always
// local, never replicated (sharing opinions is a later step). Two nodes
// holding the same replicated state still differ under it.
const ReputationPattern = "/peers/*/reputation"

// reasonEvents maps gossip's rejection reasons to what they say of the
// peer they are counted against. Reasons missing here (another release's
// wire format) cost nothing.
var reasonEvents = map[string]reputation.Event{
	gossip.ReasonForgedOrigin:   reputation.Forged,
	gossip.ReasonBadSignature:   reputation.Forged,
	gossip.ReasonTooLarge:       reputation.Invalid,
	gossip.ReasonMalformed:      reputation.Invalid,
	gossip.ReasonInvalidKey:     reputation.Invalid,
	gossip.ReasonValueTooLarge:  reputation.Invalid,
	gossip.ReasonInvalidChange:  reputation.Invalid,
	gossip.ReasonBadValue:       reputation.Invalid,
	gossip.ReasonRate:           reputation.Abuse,
	gossip.ReasonSessionLimit:   reputation.Abuse,
	gossip.ReasonBandwidth:      reputation.Abuse,
	gossip.ReasonSessionTimeout: reputation.Abuse,
}

// openReputation loads the node's reputation book from its store.
func (n *Node) openReputation() error {
	b, err := reputation.New(n.rep, n.cfg.Reputation, reputation.WithLogger(n.log))
	if err != nil {
		return fmt.Errorf("node: reputation: %w", err)
	}
	if err := b.Load(n.ctx); err != nil {
		return fmt.Errorf("node: reputation: %w", err)
	}
	b.OnState(n.reputationChanged)
	n.book = b
	n.goFunc(func() {
		if err := b.Run(n.ctx); err != nil && !errors.Is(err, n.ctx.Err()) {
			n.log.Warn("reputation stopped", "err", err)
		}
	})
	return nil
}

// reputationChanged acts on a peer's new standing: a banned peer is
// disconnected (the gater refuses it until it recovers).
func (n *Node) reputationChanged(p peer.ID, from, to reputation.State) {
	switch {
	case to == reputation.Banned:
		n.log.Warn("peer banned: disconnecting it", "peer", p, "score", n.book.Score(p))
		if n.host != nil {
			_ = n.host.Network().ClosePeer(p)
		}
	case from == reputation.Banned:
		n.log.Info("peer let back: its score recovered", "peer", p, "state", to, "score", n.book.Score(p))
	case to == reputation.Graylisted:
		n.log.Info("peer graylisted: its gossip is ignored", "peer", p, "score", n.book.Score(p))
	}
}

// withReputation feeds what gossip observes into the reputation book and
// the book's scores into gossipsub's peer scoring.
func (n *Node) withReputation(gc gossip.Config) gossip.Config {
	b := n.book
	onReject, onApply, onSync := gc.OnReject, gc.OnApply, gc.OnSync
	gc.OnReject = func(p peer.ID, reason string) {
		if e, ok := reasonEvents[reason]; ok {
			b.Observe(p, e, 1)
		}
		if onReject != nil {
			onReject(p, reason)
		}
	}
	gc.OnApply = func(p peer.ID, a gossip.Applied) {
		res := a.Result
		if good := res.Applied + res.Stale; good > 0 {
			b.Observe(p, reputation.Valid, good)
		}
		// A refused change is its signer's doing, whoever relayed it.
		for origin, k := range res.RefusedBy {
			if id, err := peer.Decode(origin); err == nil {
				b.Observe(id, reputation.Policy, k)
			}
		}
		if onApply != nil {
			onApply(p, a)
		}
	}
	gc.OnSync = func(p peer.ID, st gossip.SyncStats, err error) {
		switch {
		case err == nil:
			b.Observe(p, reputation.SyncOK, 1)
			b.ObserveLatency(p, st.Duration)
		case n.ctx.Err() == nil:
			b.Observe(p, reputation.SyncFailed, 1)
		}
		if onSync != nil {
			onSync(p, st, err)
		}
	}
	gc.AppScore = b.Score
	gc.GraylistScore = n.cfg.Reputation.GraylistThreshold
	gc.StandingScore = n.cfg.Reputation.StandingThreshold
	return gc
}

// watchUptime tells the book when peers connect and leave.
func (n *Node) watchUptime() {
	n.host.Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) { n.book.Connected(c.RemotePeer()) },
		DisconnectedF: func(net network.Network, c network.Conn) {
			if p := c.RemotePeer(); net.Connectedness(p) != network.Connected {
				n.book.Disconnected(p)
			}
		},
	})
}

// Reputation returns the node's reputation book.
func (n *Node) Reputation() *reputation.Book { return n.book }

// Ban bans p until the given time (by hand; reason is recorded) and drops
// its connections.
func (n *Node) Ban(p peer.ID, until time.Time, reason string) error {
	if p == n.host.ID() {
		return errors.New("node: cannot ban ourselves")
	}
	if err := n.book.Ban(p, until, reason); err != nil {
		return fmt.Errorf("node: ban %s: %w", p, err)
	}
	_ = n.host.Network().ClosePeer(p)
	return nil
}

// Unban lifts p's ban, by hand or by score.
func (n *Node) Unban(p peer.ID) error {
	if err := n.book.Unban(p); err != nil {
		return fmt.Errorf("node: unban %s: %w", p, err)
	}
	return nil
}

// gate is the node's connection gater: the peers blocked by hand
// (BlockPeer) and the peers the reputation book has banned are refused,
// whichever side dials.
type gate struct {
	*conngater.BasicConnectionGater
	banned func(peer.ID) bool
}

func (g gate) InterceptPeerDial(p peer.ID) bool {
	return !g.banned(p) && g.BasicConnectionGater.InterceptPeerDial(p)
}

func (g gate) InterceptAddrDial(p peer.ID, a ma.Multiaddr) bool {
	return !g.banned(p) && g.BasicConnectionGater.InterceptAddrDial(p, a)
}

func (g gate) InterceptSecured(d network.Direction, p peer.ID, a network.ConnMultiaddrs) bool {
	return !g.banned(p) && g.BasicConnectionGater.InterceptSecured(d, p, a)
}

func (g gate) InterceptUpgraded(c network.Conn) (bool, control.DisconnectReason) {
	if g.banned(c.RemotePeer()) {
		return false, 0
	}
	return g.BasicConnectionGater.InterceptUpgraded(c)
}
