package node

import (
	"github.com/libp2p/go-libp2p/core/crypto"

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
	return replica.Config{
		Key:            key,
		Prefixes:       n.cfg.Prefixes,
		Local:          n.cfg.Local,
		TombstoneGrace: n.cfg.TombstoneGrace,
		Admit:          pol.Admit,
	}, nil
}

// Policy returns the node's write policy.
func (n *Node) Policy() *policy.Policy { return n.policy }
