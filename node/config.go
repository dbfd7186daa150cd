package node

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/univrs/peerstate/codec"
	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/gossip"
	"github.com/univrs/peerstate/policy"
	"github.com/univrs/peerstate/reputation"
)

// Backends a node can keep its state in.
const (
	BackendSQLite = "sqlite"
	BackendBadger = "badger"
	BackendMemory = "memory"
)

// Config configures a Node. Start from DefaultConfig.
type Config struct {
	// DataDir holds the identity key and the store. Required unless the
	// backend is memory and Identity is set.
	DataDir string
	// Backend is one of sqlite (default), badger, memory.
	Backend string
	// ListenAddrs are the multiaddrs the host listens on.
	ListenAddrs []string
	// Bootstrap peers (full multiaddrs ending in /p2p/ID) to connect to at
	// start.
	Bootstrap []string
	// MDNS finds peers on the local network.
	MDNS bool
	// MDNSService is the mDNS service name; peers with another name are
	// not found.
	MDNSService string
	// DHT joins the Kademlia DHT (entered through the bootstrap peers) and
	// finds other peerstate nodes through it, under Rendezvous.
	DHT bool
	// DHTServer makes the node answer DHT queries even when it cannot tell
	// whether it is publicly reachable (as on a LAN or in tests).
	DHTServer bool
	// Rendezvous is the DHT namespace peerstate nodes advertise under.
	Rendezvous string
	// DHTInterval is the mean time between DHT peer lookups.
	DHTInterval time.Duration
	// Prefixes limits replication to these key prefixes (empty: all).
	Prefixes []string
	// TombstoneGrace is the minimum age of a collected tombstone (see
	// replica.Config.TombstoneGrace); 0 means 24 hours.
	TombstoneGrace time.Duration
	// GCInterval is the time between tombstone collections; the membership
	// whose horizon they respect is every peer seen in catch-up within
	// MembershipWindow (persisted, so a restart forgets nobody). A peer
	// silent for longer gets a full snapshot when it comes back. The window
	// must be longer than the grace period: a peer away for less than the
	// grace period keeps holding collection back, and only peers gone for
	// longer than both pay with a snapshot.
	GCInterval       time.Duration
	MembershipWindow time.Duration
	// PSK, if set (32 bytes), makes a private network: only peers with the
	// same key can connect.
	PSK []byte
	// ConnLow and ConnHigh are the connection manager's water marks: above
	// ConnHigh connections it trims back to ConnLow, sparing bootstrap
	// peers and connections younger than ConnGrace. Peer exchange dials
	// learned peers while the node has fewer than ConnLow.
	ConnLow, ConnHigh int
	ConnGrace         time.Duration
	// RedialMin and RedialMax bound the wait between attempts to reach a
	// bootstrap peer that is down: it starts at RedialMin and doubles up
	// to RedialMax. A bootstrap peer is redialled whenever it drops, for
	// the node's whole life.
	RedialMin, RedialMax time.Duration
	// PeerExchange asks connected peers whom they are connected to (on
	// connect and every PeerExchangeInterval) and dials them, so a network
	// entered through one bootstrap node survives that node's loss.
	PeerExchange         bool
	PeerExchangeInterval time.Duration
	// StartMDNS, if set, replaces starting the mDNS service (tests inject
	// failures with it).
	StartMDNS func(start func() error) error
	// Policy is the write policy (package policy): who may write under
	// which prefix, enforced on every remote path and on local writes.
	// DefaultConfig protects /peers/: /peers/{id}/... is writable by the
	// peer {id} alone. An empty policy lets every peer write every key.
	Policy []policy.Rule
	// Local lists key patterns kept on this node only (see
	// replica.Config.Local). /peers/*/reputation, this node's opinion of
	// its peers, is always among them.
	Local []string
	// Reputation scores peers from what they do (package reputation):
	// scores feed gossipsub's peer scoring, and a peer under the ban
	// threshold is disconnected and refused until its score recovers.
	Reputation reputation.Params
	// Gossip configures replication over pubsub and catch-up.
	Gossip gossip.Config
	// StoreOptions are passed to the backend.
	StoreOptions []datastore.Option
	// Schemas, if set, checks every value of a replicated key against its
	// validators (codec.Registry.Validate), both local writes (refused with
	// an error wrapping replica.ErrRefused) and changes from peers (left
	// out and counted as refused; see replica.Config.Admit). Peers should
	// run the same schemas.
	Schemas *codec.Registry
}

// DefaultConfig returns a node on SQLite under ./peerstate-data, listening
// on all interfaces over TCP and QUIC with ports chosen by the system, with
// mDNS on.
func DefaultConfig() Config {
	return Config{
		DataDir: "peerstate-data",
		Backend: BackendSQLite,
		ListenAddrs: []string{
			"/ip4/0.0.0.0/tcp/0",
			"/ip4/0.0.0.0/udp/0/quic-v1",
		},
		MDNS:                 true,
		MDNSService:          "peerstate",
		Rendezvous:           "peerstate",
		GCInterval:           10 * time.Minute,
		MembershipWindow:     72 * time.Hour,
		DHTInterval:          time.Minute,
		ConnLow:              32,
		ConnHigh:             128,
		ConnGrace:            30 * time.Second,
		RedialMin:            time.Second,
		RedialMax:            time.Minute,
		PeerExchange:         true,
		PeerExchangeInterval: time.Minute,
		Gossip:               gossip.DefaultConfig(),
		Policy:               DefaultPolicy(),
		Reputation:           reputation.DefaultParams(),
	}
}

// DefaultPolicy is the write policy of DefaultConfig: /peers/{id}/... is
// writable by {id} alone, everything else by any peer.
func DefaultPolicy() []policy.Rule {
	return []policy.Rule{{Prefix: "/peers/", Mode: policy.Owner}}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if !slices.Contains([]string{BackendSQLite, BackendBadger, BackendMemory}, c.Backend) {
		errs = append(errs, fmt.Errorf("backend %q: want sqlite, badger or memory", c.Backend))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data directory not set"))
	}
	if len(c.ListenAddrs) == 0 {
		errs = append(errs, errors.New("no listen address"))
	}
	for _, a := range c.ListenAddrs {
		if _, err := ma.NewMultiaddr(a); err != nil {
			errs = append(errs, fmt.Errorf("listen address %q: %w", a, err))
		}
	}
	for _, a := range c.Bootstrap {
		if _, err := parsePeerAddr(a); err != nil {
			errs = append(errs, fmt.Errorf("bootstrap address %q: %w", a, err))
		}
	}
	for _, p := range c.Prefixes {
		if err := datastore.ValidatePrefix(p); err != nil {
			errs = append(errs, fmt.Errorf("prefix: %w", err))
		}
	}
	if _, err := policy.New(c.Policy); err != nil {
		errs = append(errs, err)
	}
	if err := c.Reputation.Validate(); err != nil {
		errs = append(errs, err)
	}
	for _, p := range c.Local {
		if _, err := datastore.ParsePattern(p); err != nil {
			errs = append(errs, fmt.Errorf("local pattern: %w", err))
		}
	}
	if c.PSK != nil && len(c.PSK) != 32 {
		errs = append(errs, fmt.Errorf("private network key: %d bytes, want 32", len(c.PSK)))
	}
	if c.PSK != nil {
		for _, a := range c.ListenAddrs {
			if strings.Contains(a, "/quic") || strings.Contains(a, "/webtransport") {
				errs = append(errs, fmt.Errorf("listen address %q: a private network runs over TCP only (QUIC cannot carry its key)", a))
			}
		}
	}
	if c.DHT && (c.Rendezvous == "" || c.DHTInterval <= 0) {
		errs = append(errs, errors.New("DHT on without a rendezvous namespace or lookup interval"))
	}
	if c.GCInterval <= 0 || c.MembershipWindow <= 0 || c.TombstoneGrace < 0 {
		errs = append(errs, errors.New("tombstone collection: GC interval and membership window must be positive"))
	}
	grace := c.TombstoneGrace
	if grace == 0 {
		grace = 24 * time.Hour
	}
	if c.MembershipWindow > 0 && c.MembershipWindow <= grace {
		errs = append(errs, fmt.Errorf("tombstone collection: membership window %v must be longer than the tombstone grace %v", c.MembershipWindow, grace))
	}
	if c.ConnLow <= 0 || c.ConnHigh < c.ConnLow || c.ConnGrace < 0 {
		errs = append(errs, fmt.Errorf("connection manager: want 0 < ConnLow (%d) <= ConnHigh (%d)", c.ConnLow, c.ConnHigh))
	}
	if c.RedialMin <= 0 || c.RedialMax < c.RedialMin {
		errs = append(errs, errors.New("bootstrap redial: want 0 < RedialMin <= RedialMax"))
	}
	if c.PeerExchange && c.PeerExchangeInterval <= 0 {
		errs = append(errs, errors.New("peer exchange on without a positive interval"))
	}
	if c.MDNS && c.MDNSService == "" {
		errs = append(errs, errors.New("mDNS on without a service name"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node: config: %w", err)
	}
	return nil
}

func (c Config) startMDNS(md interface{ Start() error }) error {
	if c.StartMDNS != nil {
		return c.StartMDNS(md.Start)
	}
	return md.Start()
}
