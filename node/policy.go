package node

import (
	"slices"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"

	"github.com/univrs/peerstate/gossip"

	"github.com/univrs/peerstate/policy"
	"github.com/univrs/peerstate/replica"
)

// replicaConfig is the replica's configuration: identity, what replicates,
// and the rules every change must pass (the write policy first).
func (n *Node) replicaConfig(key crypto.PrivKey) (replica.Config, error) {
	pol, err := policy.New(n.cfg.Policy)
	if err != nil {
		return replica.Config{}, err
	}
	n.policy = pol
	var schemas func(replica.Change) error
	if n.cfg.Schemas != nil {
		schemas = replica.AdmitValues(n.cfg.Schemas.CheckChange)
	}
	return replica.Config{
		Key:            key,
		Prefixes:       n.cfg.Prefixes,
		Local:          append(slices.DeleteFunc(slices.Clone(n.cfg.Local), func(p string) bool { return p == ReputationPattern }), ReputationPattern),
		TombstoneGrace: n.cfg.TombstoneGrace,
		Admit:          replica.AdmitAll(pol.Admit, schemas),
	}, nil
}

// Policy returns the node's write policy.
func (n *Node) Policy() *policy.Policy { return n.policy }

// scopeProtocols gives peerstate's stream protocols their own limits in the
// resource manager, besides the per-peer session limits gossip enforces: a
// peer cannot open more than a few catch-up, repair or value streams at
// once, nor all peers together more than a bounded number, whatever the
// system-wide limits allow.
func scopeProtocols(limits *rcmgr.ScalingLimitConfig, gc gossip.Config) {
	d := gossip.DefaultConfig()
	protos := map[protocol.ID]struct{ total, perPeer int }{
		firstNonEmpty(gc.SyncProtocol, d.SyncProtocol):     {64, 4},
		firstNonEmpty(gc.RepairProtocol, d.RepairProtocol): {64, 4},
		firstNonEmpty(gc.ValueProtocol, d.ValueProtocol):   {128, 8},
		PeerExchangeProtocol:                               {64, 2},
	}
	for p, l := range protos {
		limits.AddProtocolLimit(p, rcmgr.BaseLimit{
			Streams: 2 * l.total, StreamsInbound: l.total, StreamsOutbound: l.total, Memory: 256 << 20,
		}, rcmgr.BaseLimitIncrease{})
		limits.AddProtocolPeerLimit(p, rcmgr.BaseLimit{
			Streams: 2 * l.perPeer, StreamsInbound: l.perPeer, StreamsOutbound: l.perPeer, Memory: 64 << 20,
		}, rcmgr.BaseLimitIncrease{})
	}
}

func firstNonEmpty(a, b protocol.ID) protocol.ID {
	if a != "" {
		return a
	}
	return b
}
