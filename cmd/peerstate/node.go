package main

import (
	"context"
	"fmt"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/prometheus/client_golang/prometheus"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/univrs/peerstate/api"
	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/etcd"
	"github.com/univrs/peerstate/node"
	"github.com/univrs/peerstate/reputation"
)

// openNode opens what the daemon serves: the store, the p2p node around it
// (nil when there is none) and the closer that releases both.
//
// With the sqlite, badger and memory backends that is a peerstate node: a
// libp2p host replicating the store over pubsub and catch-up. With etcd the
// cluster replicates by consensus instead, and the daemon serves the etcd
// store without a p2p node.
func openNode(ctx context.Context, cfg runConfig, log *slog.Logger) (datastore.Store, api.Node, io.Closer, error) {
	if cfg.Backend == "etcd" {
		ecfg := etcd.DefaultConfig()
		ecfg.Endpoints = cfg.EtcdEndpoints
		store, err := etcd.Open(ctx, ecfg)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("open etcd store: %w", err)
		}
		log.Info("store open", "backend", "etcd", "at", cfg.EtcdEndpoints)
		return store, nil, store, nil
	}
	ncfg := node.DefaultConfig()
	ncfg.DataDir = cfg.Data
	ncfg.Backend = cfg.Backend
	if len(cfg.Listen) > 0 {
		ncfg.ListenAddrs = cfg.Listen
	}
	ncfg.Bootstrap = cfg.Bootstrap
	ncfg.MDNS = cfg.MDNS
	ncfg.DHT = cfg.DHT
	ncfg.Gossip.Logger = log
	rules, err := cfg.writePolicy()
	if err != nil {
		return nil, nil, nil, err
	}
	ncfg.Policy = rules
	if cfg.PSKFile != "" {
		psk, err := readPSK(cfg.PSKFile)
		if err != nil {
			return nil, nil, nil, err
		}
		ncfg.PSK = psk
		if len(cfg.Listen) == 0 {
			ncfg.ListenAddrs = []string{"/ip4/0.0.0.0/tcp/0"} // a private network runs over TCP only
		}
	}
	n, err := node.New(ctx, ncfg)
	if err != nil {
		return nil, nil, nil, err
	}
	log.Info("node started", "id", n.ID(), "backend", cfg.Backend, "data", cfg.Data)
	return n.Store(), apiNode{n}, n, nil
}

// apiNode shows a *node.Node to the API.
type apiNode struct{ n *node.Node }

func (a apiNode) ID() string { return a.n.ID().String() }

func (a apiNode) Addrs() []string {
	var out []string
	for _, addr := range a.n.Addrs() {
		out = append(out, addr.String())
	}
	return out
}

// Fingerprint is the node's state fingerprint and the keys it covers.
func (a apiNode) Fingerprint() (string, int) {
	s := a.n.Replica().StateFingerprint()
	return s.FP.String(), s.Count
}

func (a apiNode) Peers() []api.PeerInfo {
	var out []api.PeerInfo
	matches := a.n.Gossip().Matches()
	for _, p := range a.n.Peers() {
		info := api.PeerInfo{ID: p.ID.String()}
		if m, ok := matches[p.ID]; ok {
			matched, at := m.Matched, m.At.UTC()
			info.Matched, info.MatchedAt = &matched, &at
		}
		for _, addr := range p.Addrs {
			info.Addrs = append(info.Addrs, addr.String())
		}
		if book := a.n.Reputation(); book != nil {
			score := book.Score(p.ID)
			info.Score, info.State = &score, string(book.State(p.ID))
		}
		out = append(out, info)
	}
	return out
}

func (a apiNode) Connect(ctx context.Context, addr string) error { return a.n.Connect(ctx, addr) }

// Reputation is the node's opinion of every peer it knows (api.Reputer).
func (a apiNode) Reputation() []reputation.Record { return a.n.Reputation().Records() }

func (a apiNode) Ban(id string, until time.Time, reason string) error {
	p, err := peer.Decode(id)
	if err != nil {
		return err
	}
	return a.n.Ban(p, until, reason)
}

func (a apiNode) Unban(id string) error {
	p, err := peer.Decode(id)
	if err != nil {
		return err
	}
	return a.n.Unban(p)
}

// Collector exposes the node's replication metrics at /metrics.
func (a apiNode) Collector() prometheus.Collector { return a.n.Collector() }

// readPSK reads a private network key in the libp2p swarm.key format.
func readPSK(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("private network key: %w", err)
	}
	defer f.Close()
	psk, err := pnet.DecodeV1PSK(f)
	if err != nil {
		return nil, fmt.Errorf("private network key %s: %w", path, err)
	}
	return psk, nil
}

// Backup writes a snapshot of the node's store (see api.Backuper).
func (a apiNode) Backup(ctx context.Context, w io.Writer) (int64, error) {
	return a.n.Backup(ctx, w)
}

// Ready says whether the node has peers and has caught up with one of
// them (see api.Readier and node.Node.Ready).
func (a apiNode) Ready() (bool, string) { return a.n.Ready() }
