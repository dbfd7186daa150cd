// Package node is an embeddable peerstate peer: a libp2p host (TCP and
// QUIC, Noise and TLS, a resource manager and a connection gater), pubsub,
// a replica over the chosen local backend, the gossip transport with its
// catch-up protocol, and discovery (bootstrap peers, mDNS on the LAN, and
// optionally the Kademlia DHT).
//
//	n, err := node.New(ctx, cfg)
//	...
//	defer n.Close()
//	n.Store().Set(ctx, "/peers/"+n.ID().String()+"/info", info)
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/conngater"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/badger"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/sqlite"
	"github.com/univrs/peerstate/gossip"
	"github.com/univrs/peerstate/policy"
	"github.com/univrs/peerstate/replica"
	"github.com/univrs/peerstate/reputation"
)

// Node is a running peer. Its methods are safe for concurrent use.
type Node struct {
	cfg     Config
	host    host.Host
	gater   *conngater.BasicConnectionGater
	ps      *pubsub.PubSub
	gossip  *gossip.Gossip
	rep     *replica.Replica
	backend datastore.Store // the store under rep
	mdns    mdns.Service
	dht     *dht.IpfsDHT
	log     *slog.Logger
	lock    *DirLock
	conns   connWatch
	pxQueue chan peer.ID
	metrics *nodeMetrics
	policy  *policy.Policy
	book    *reputation.Book

	ctx    context.Context // lives until Close
	cancel context.CancelFunc
	// psCancel stops pubsub, after gossip has closed.
	psCancel context.CancelFunc
	wg       sync.WaitGroup
	once     sync.Once
	err      error
}

// New starts a node. On error nothing is left running.
func New(ctx context.Context, cfg Config) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lock, err := LockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	key, err := loadIdentity(cfg.DataDir)
	if err != nil {
		lock.Unlock()
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Gossip.Logger, lock: lock, metrics: newNodeMetrics()}
	if n.log == nil {
		n.log = slog.Default()
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			n.Close()
		}
	}()

	// The store first: a damaged one stops the start before any port opens.
	store, err := openStore(cfg)
	if err != nil {
		return nil, err
	}
	n.backend = store
	rc, err := n.replicaConfig(key)
	if err != nil {
		store.Close()
		return nil, err
	}
	n.rep, err = replica.New(ctx, store, rc)
	if err != nil {
		store.Close()
		return nil, err
	}
	if err := n.openReputation(); err != nil {
		return nil, err
	}
	if err := checkPortsFree(cfg.ListenAddrs); err != nil {
		return nil, err
	}
	n.gater, err = conngater.NewBasicConnectionGater(nil)
	if err != nil {
		return nil, fmt.Errorf("node: connection gater: %w", err)
	}
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	scopeProtocols(&limits, cfg.Gossip)
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.AutoScale()))
	if err != nil {
		return nil, fmt.Errorf("node: resource manager: %w", err)
	}
	cm, err := connmgr.NewConnManager(cfg.ConnLow, cfg.ConnHigh, connmgr.WithGracePeriod(cfg.ConnGrace))
	if err != nil {
		return nil, fmt.Errorf("node: connection manager: %w", err)
	}
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ConnectionManager(cm),
		libp2p.ListenAddrStrings(cfg.ListenAddrs...),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionGater(gate{n.gater, n.book.Banned}),
		libp2p.DefaultTransports,
		libp2p.DefaultSecurity,
		libp2p.DefaultMuxers,
	}
	if cfg.PSK != nil {
		// Private networks run over TCP only: QUIC cannot carry a PSK.
		opts = append(opts, libp2p.PrivateNetwork(pnet.PSK(cfg.PSK)), libp2p.NoTransports,
			libp2p.Transport(tcpTransport()))
	}
	n.host, err = libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("node: host: %w", err)
	}

	// Pubsub lives until gossip has closed: its own context, cancelled
	// after gossip.Close in Close.
	var psCtx context.Context
	psCtx, n.psCancel = context.WithCancel(context.Background())
	n.watchUptime()
	gc := n.withReputation(n.gossipConfig())
	n.ps, err = gossip.NewPubSub(psCtx, n.host, gc)
	if err != nil {
		return nil, err
	}
	n.gossip, err = gossip.New(n.ctx, n.host, n.ps, n.rep, gc)
	if err != nil {
		return nil, err
	}
	n.rep.SetBroadcaster(n.gossip)

	n.goFunc(n.collectLoop)
	if err := n.startPeers(); err != nil {
		return nil, fmt.Errorf("node: peers: %w", err)
	}
	// Discovery that cannot run here (no multicast interface: an offline
	// laptop, a container without a network) is worth a warning, not the
	// node: bootstrap peers and peer exchange still work.
	if cfg.MDNS {
		md := mdns.NewMdnsService(n.host, cfg.MDNSService, notifee{n})
		if err := cfg.startMDNS(md); err != nil {
			md.Close()
			n.log.Warn("mDNS discovery off: cannot start it", "err", err)
		} else {
			n.mdns = md
		}
	}
	if cfg.DHT {
		if err := n.startDHT(); err != nil {
			return nil, fmt.Errorf("node: DHT: %w", err)
		}
	}
	return n, nil
}

// openStore opens the backend in the data directory. Damage found at open
// is reported with the way to recover.
func openStore(cfg Config) (datastore.Store, error) {
	var (
		s   datastore.Store
		err error
	)
	switch cfg.Backend {
	case BackendMemory:
		return memory.New(cfg.StoreOptions...), nil
	case BackendBadger:
		s, err = badger.Open(filepath.Join(cfg.DataDir, "badger"), cfg.StoreOptions...)
	default:
		s, err = sqlite.Open(filepath.Join(cfg.DataDir, "state.db"), cfg.StoreOptions...)
	}
	if errors.Is(err, datastore.ErrCorrupt) {
		return nil, &DamagedError{Dir: cfg.DataDir, Err: err}
	}
	return s, err
}

// DamagedError is a store that failed its integrity checks at open. The
// node does not start on it and leaves the files as they are.
type DamagedError struct {
	Dir string
	Err error // matches datastore.ErrCorrupt
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("node: the store in %s is damaged, refusing to start: %v. "+
		"To recover, stop here and either restore a backup (peerstate restore --data %s FILE) "+
		"or move the store aside, keeping identity.key, and start again: the node then "+
		"fetches the replicated state from its peers (see README, Operations)", e.Dir, e.Err, e.Dir)
}

func (e *DamagedError) Unwrap() error { return e.Err }

// Store returns the node's replicated store.
func (n *Node) Store() datastore.Store { return timedStore{n.rep, n.metrics} }

// Replica returns the node's replica, for replication-level access.
func (n *Node) Replica() *replica.Replica { return n.rep }

// Gossip returns the node's gossip transport.
func (n *Node) Gossip() *gossip.Gossip { return n.gossip }

// Host returns the node's libp2p host.
func (n *Node) Host() host.Host { return n.host }

// ID returns the node's peer ID.
func (n *Node) ID() peer.ID { return n.host.ID() }

// Addrs returns the node's full multiaddrs, each ending in /p2p/ID.
func (n *Node) Addrs() []ma.Multiaddr {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()})
	if err != nil {
		return nil
	}
	return addrs
}

// Peers returns the connected peers.
func (n *Node) Peers() []peer.AddrInfo {
	var out []peer.AddrInfo
	for _, p := range n.host.Network().Peers() {
		out = append(out, n.host.Peerstore().PeerInfo(p))
	}
	return out
}

// Connect dials a peer given as a full multiaddr ending in /p2p/ID. Catch-up
// with it starts once it is connected.
func (n *Node) Connect(ctx context.Context, addr string) error {
	info, err := parsePeerAddr(addr)
	if err != nil {
		return err
	}
	if err := n.host.Connect(ctx, *info); err != nil {
		return fmt.Errorf("node: connect %s: %w", info.ID, briefDialError(err))
	}
	return nil
}

// BlockPeer refuses connections from p from now on and drops it.
func (n *Node) BlockPeer(p peer.ID) error {
	if err := n.gater.BlockPeer(p); err != nil {
		return fmt.Errorf("node: block %s: %w", p, err)
	}
	return n.host.Network().ClosePeer(p)
}

// collectLoop collects tombstones behind the horizon of the peers seen in
// catch-up lately, and retires the sources nothing needs any more, every
// GCInterval.
func (n *Node) collectLoop() {
	for n.sleep(n.cfg.GCInterval) {
		peers := n.rep.ObservedPeers(time.Now().Add(-n.cfg.MembershipWindow))
		dropped, err := n.rep.CollectTombstones(n.ctx, peers)
		switch {
		case err != nil && n.ctx.Err() == nil:
			n.log.Warn("tombstone collection failed", "err", err)
		case dropped > 0:
			n.log.Debug("tombstones collected", "dropped", dropped, "members", len(peers))
		}
		retired, err := n.rep.RetireSources(n.ctx, peers)
		switch {
		case err != nil && n.ctx.Err() == nil:
			n.log.Warn("retiring dead sources failed", "err", err)
		case retired > 0:
			n.log.Info("dead sources retired", "retired", retired, "tracked", n.rep.Sources(), "members", len(peers))
		}
	}
}

type notifee struct{ n *Node }

// HandlePeerFound connects to a peer found by mDNS.
func (f notifee) HandlePeerFound(info peer.AddrInfo) {
	n := f.n
	if info.ID == n.host.ID() || n.ctx.Err() != nil {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
		defer cancel()
		if err := n.host.Connect(ctx, info); err != nil {
			n.log.Debug("mDNS peer unreachable", "peer", info.ID, "err", err)
		}
	}()
}

// Close stops discovery, gossip, pubsub and the host, then closes the store.
// It waits for every goroutine and is safe to call more than once.
func (n *Node) Close() error {
	n.once.Do(func() {
		var errs []error
		if n.mdns != nil {
			errs = append(errs, n.mdns.Close())
		}
		n.cancel()
		n.wg.Wait()
		if n.dht != nil {
			errs = append(errs, n.dht.Close())
		}
		if n.gossip != nil {
			errs = append(errs, n.gossip.Close())
		}
		if n.psCancel != nil {
			n.psCancel()
		}
		if n.host != nil {
			errs = append(errs, n.host.Close())
		}
		if n.rep != nil {
			errs = append(errs, n.rep.Close())
		}
		errs = append(errs, n.lock.Unlock())
		n.err = errors.Join(errs...)
	})
	return n.err
}

func parsePeerAddr(s string) (*peer.AddrInfo, error) {
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		return nil, fmt.Errorf("node: address %q: %w", s, err)
	}
	info, err := peer.AddrInfoFromP2pAddr(a)
	if err != nil {
		return nil, fmt.Errorf("node: address %q must end in /p2p/PEER_ID: %w", s, err)
	}
	return info, nil
}
