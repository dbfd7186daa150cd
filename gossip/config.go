package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/univrs/peerstate/datastore"
)

// Default names of the topic and stream protocols.
const (
	DefaultTopic          = "/peerstate/changes/1"
	DefaultSyncProtocol   = protocol.ID("/peerstate/sync/2")
	DefaultValueProtocol  = protocol.ID("/peerstate/value/2")
	DefaultRepairProtocol = protocol.ID("/peerstate/repair/2")
)

// Config configures a Gossip. Start from DefaultConfig; New fills every zero
// field with its default, then calls Validate.
type Config struct {
	// Topic is the pubsub topic carrying change events.
	Topic string
	// SyncProtocol is the catch-up stream protocol.
	SyncProtocol protocol.ID
	// ValueProtocol is the stream protocol large values are fetched over.
	ValueProtocol protocol.ID
	// RepairProtocol is the fingerprint repair stream protocol.
	RepairProtocol protocol.ID

	// MaxMessageSize caps a pubsub message's payload and a catch-up frame
	// holding ordinary changes, in bytes. Larger messages are rejected.
	MaxMessageSize int
	// InlineValueLimit is the largest value carried inside a pubsub
	// message; a larger one is announced by size and SHA-256 hash and
	// fetched by receivers over ValueProtocol.
	InlineValueLimit int
	// MaxValueSize is the largest value accepted from a peer (fetched or
	// streamed by catch-up). It should match the replica's limit.
	MaxValueSize int

	// QueueSize bounds the changes waiting to be published, and QueueBytes
	// their values' bytes. Broadcast drops (and counts) what does not fit:
	// catch-up repairs it.
	QueueSize  int
	QueueBytes int
	// SubscriptionBuffer is the pubsub subscription's buffer, in messages.
	SubscriptionBuffer int
	// FetchWorkers fetch large values concurrently; FetchQueue bounds the
	// fetches waiting for them (overflow is dropped, catch-up repairs it).
	FetchWorkers int
	FetchQueue   int

	// Options NewPubSub applies. PeerOutboundQueueSize and ValidateQueueSize
	// replace pubsub's default of 32, which loses bursts. SeenMessagesTTL of
	// 0 keeps pubsub's default (2 minutes).
	PeerOutboundQueueSize int
	ValidateQueueSize     int
	SeenMessagesTTL       time.Duration

	// SyncInterval is the mean time between catch-up rounds, each with
	// SyncFanout random connected peers, jittered by ±SyncJitter (a
	// fraction). A negative interval disables periodic rounds.
	SyncInterval time.Duration
	SyncJitter   float64
	SyncFanout   int
	// DisableSyncOnConnect turns off the catch-up started with every newly
	// identified peer that speaks SyncProtocol.
	DisableSyncOnConnect bool
	// DisableRepair turns off the fingerprint repair a catch-up runs when,
	// after it, the two peers' states still differ.
	DisableRepair bool
	// SyncBatch is how many changes the responder reads per batch.
	SyncBatch int
	// StreamTimeout is the deadline of each read or write on a stream.
	StreamTimeout time.Duration
	// MaxConcurrentSyncs bounds the catch-up streams served at once (more
	// are refused, as are value requests beyond it), and those we run at
	// once (more wait).
	MaxConcurrentSyncs int

	// Limits per remote peer on the catch-up and repair sessions served to
	// it; a peer past one is refused or cut off and reported to OnReject
	// (ReasonSessionLimit, ReasonBandwidth, ReasonSessionTimeout).
	// MaxSessionsPerPeer bounds its sessions at once, so no peer holds every
	// slot. SessionRate (per second) and SessionBurst bound how often it may
	// start one. ServeBytesRate (bytes per second) and ServeBytesBurst bound
	// what it is sent, so asking for the whole state in a loop costs this
	// peer at most the rate. SessionTimeout bounds a whole session, served
	// or initiated, whatever its pace (a slow reader, a trickling
	// responder); it must leave room for the largest catch-up expected.
	MaxSessionsPerPeer int
	// OriginRate (changes per second) and OriginBurst bound what one
	// origin may publish: beyond them its messages are dropped unforwarded
	// (catch-up still serves its real state) and reported with ReasonRate.
	// The defaults are far above an honest writer's bursts. A Gossip run on
	// a PubSub made by NewPubSub with an AppScore shares that PubSub's
	// buckets, and so the rates of the Config given to NewPubSub: what a
	// graylisted peer publishes, dropped on arrival, still counts there.
	OriginRate  float64
	OriginBurst int
	// NewcomerRate (changes per second) and NewcomerBurst bound how fast
	// the changes of an origin without standing — an AppScore under
	// StandingScore — are verified, and NewcomerBacklog how many of its
	// messages may wait for that (more are ignored with ReasonBacklog,
	// left to catch-up). Checking signatures is most of what receiving a
	// change costs, and a fresh identity's first burst looks, within
	// OriginRate and OriginBurst, like any bulk write: paced, it takes a
	// bounded share of the CPU until the rate limit and reputation stop
	// it. Honest origins earn standing with their first valid changes.
	// Without AppScore every origin has standing. The default, 250 a
	// second, is about 2% of a core per newcomer (a signature takes
	// ~80 µs to check), so that many fresh identities flooding at once
	// cost little more than the honest traffic; an honest newcomer's first
	// hundred changes, which give it standing, take 0.4 s at that rate.
	NewcomerRate    float64
	NewcomerBurst   int
	NewcomerBacklog int
	StandingScore   float64
	SessionRate     float64
	SessionBurst    int
	ServeBytesRate  int
	ServeBytesBurst int
	SessionTimeout  time.Duration

	// OnReject, if set, is called for every message or catch-up change
	// rejected as invalid, with the peer that sent it and the reason (one
	// of the Reason constants). It runs on pubsub's validation path,
	// possibly concurrently and even shortly after Close: it must be safe
	// for concurrent use and return quickly.
	OnReject func(p peer.ID, reason string)
	// OnSync, if set, is called after every catch-up this peer initiated,
	// with its statistics and error (nil when it completed). It must be
	// safe for concurrent use and return quickly.
	OnSync func(p peer.ID, st SyncStats, err error)
	// OnApply, if set, is called after every batch of changes from peer p
	// was applied, whichever path brought it (see Applied: the path, the
	// batch, the replica's result, how long the apply took and its error).
	// Refused changes are counted there by origin
	// (replica.ApplyResult.RefusedBy). It must be safe for concurrent use
	// and return quickly.
	OnApply func(p peer.ID, a Applied)

	// AppScore, if set, switches gossipsub's peer scoring on (see
	// NewPubSub) with this as the application-specific score of a peer:
	// its reputation. GraylistScore (negative) is the score below which a
	// peer's messages are not processed; the other thresholds derive from
	// it. Both are read by NewPubSub only.
	AppScore      func(p peer.ID) float64
	GraylistScore float64

	// After returns a channel that delivers after d; time.After if nil.
	// Tests inject it to drive periodic catch-up without sleeping.
	After func(d time.Duration) <-chan time.Time
	// Rand returns a float in [0, 1) for jitter and peer choice;
	// math/rand/v2 if nil.
	Rand func() float64
	// Logger receives debug and warning logs; slog.Default() if nil.
	Logger *slog.Logger
}

// DefaultConfig returns the default configuration.
func DefaultConfig() Config {
	return Config{
		Topic:                 DefaultTopic,
		SyncProtocol:          DefaultSyncProtocol,
		ValueProtocol:         DefaultValueProtocol,
		RepairProtocol:        DefaultRepairProtocol,
		MaxMessageSize:        1 << 20,
		InlineValueLimit:      64 << 10,
		MaxValueSize:          64 << 20,
		QueueSize:             1 << 16,
		QueueBytes:            256 << 20,
		SubscriptionBuffer:    1024,
		FetchWorkers:          2,
		FetchQueue:            1024,
		PeerOutboundQueueSize: 1024,
		ValidateQueueSize:     1024,
		SyncInterval:          10 * time.Second,
		SyncJitter:            0.2,
		SyncFanout:            3,
		SyncBatch:             256,
		StreamTimeout:         30 * time.Second,
		MaxConcurrentSyncs:    8,
		MaxSessionsPerPeer:    2,
		OriginRate:            5000,
		OriginBurst:           50000,
		NewcomerRate:          250,
		NewcomerBurst:         20,
		NewcomerBacklog:       32,
		SessionRate:           2,
		SessionBurst:          20,
		ServeBytesRate:        16 << 20,
		ServeBytesBurst:       1 << 30,
		SessionTimeout:        10 * time.Minute,
	}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	set := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	if c.Topic == "" {
		c.Topic = d.Topic
	}
	if c.SyncProtocol == "" {
		c.SyncProtocol = d.SyncProtocol
	}
	if c.ValueProtocol == "" {
		c.ValueProtocol = d.ValueProtocol
	}
	if c.RepairProtocol == "" {
		c.RepairProtocol = d.RepairProtocol
	}
	set(&c.MaxMessageSize, d.MaxMessageSize)
	set(&c.InlineValueLimit, d.InlineValueLimit)
	set(&c.MaxValueSize, d.MaxValueSize)
	set(&c.QueueSize, d.QueueSize)
	set(&c.QueueBytes, d.QueueBytes)
	set(&c.SubscriptionBuffer, d.SubscriptionBuffer)
	set(&c.FetchWorkers, d.FetchWorkers)
	set(&c.FetchQueue, d.FetchQueue)
	set(&c.PeerOutboundQueueSize, d.PeerOutboundQueueSize)
	set(&c.ValidateQueueSize, d.ValidateQueueSize)
	set(&c.SyncFanout, d.SyncFanout)
	set(&c.SyncBatch, d.SyncBatch)
	set(&c.MaxConcurrentSyncs, d.MaxConcurrentSyncs)
	set(&c.MaxSessionsPerPeer, d.MaxSessionsPerPeer)
	set(&c.SessionBurst, d.SessionBurst)
	set(&c.OriginBurst, d.OriginBurst)
	if c.OriginRate == 0 {
		c.OriginRate = d.OriginRate
	}
	set(&c.NewcomerBurst, d.NewcomerBurst)
	set(&c.NewcomerBacklog, d.NewcomerBacklog)
	if c.NewcomerRate == 0 {
		c.NewcomerRate = d.NewcomerRate
	}
	set(&c.ServeBytesRate, d.ServeBytesRate)
	set(&c.ServeBytesBurst, d.ServeBytesBurst)
	if c.SessionRate == 0 {
		c.SessionRate = d.SessionRate
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = d.SessionTimeout
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = d.SyncInterval
	}
	if c.SyncJitter == 0 {
		c.SyncJitter = d.SyncJitter
	}
	if c.StreamTimeout == 0 {
		c.StreamTimeout = d.StreamTimeout
	}
	return c
}

// minMessageSize leaves room for one change with the longest key and its
// metadata.
const minMessageSize = 4 << 10

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Topic == "" {
		bad("topic is empty")
	}
	if c.SyncProtocol == "" || c.ValueProtocol == "" || c.RepairProtocol == "" {
		bad("stream protocol is empty")
	}
	if c.MaxMessageSize < minMessageSize {
		bad("max message size %d < %d", c.MaxMessageSize, minMessageSize)
	}
	// An announced (or inline) change must fit a message on its own.
	if c.InlineValueLimit < 0 || c.InlineValueLimit+datastore.MaxKeyLen+changeOverhead > c.MaxMessageSize {
		bad("inline value limit %d does not fit max message size %d", c.InlineValueLimit, c.MaxMessageSize)
	}
	if c.MaxValueSize <= 0 {
		bad("max value size %d", c.MaxValueSize)
	}
	for name, v := range map[string]int{
		"queue size": c.QueueSize, "queue bytes": c.QueueBytes, "subscription buffer": c.SubscriptionBuffer,
		"fetch workers": c.FetchWorkers, "fetch queue": c.FetchQueue, "sync fanout": c.SyncFanout,
		"peer outbound queue size": c.PeerOutboundQueueSize, "validate queue size": c.ValidateQueueSize,
		"sync batch": c.SyncBatch, "max concurrent syncs": c.MaxConcurrentSyncs,
		"max sessions per peer": c.MaxSessionsPerPeer, "session burst": c.SessionBurst,
		"serve bytes rate": c.ServeBytesRate, "serve bytes burst": c.ServeBytesBurst, "origin burst": c.OriginBurst,
		"newcomer burst": c.NewcomerBurst, "newcomer backlog": c.NewcomerBacklog,
	} {
		if v <= 0 {
			bad("%s %d must be positive", name, v)
		}
	}
	if c.SyncJitter < 0 || c.SyncJitter >= 1 {
		bad("sync jitter %v not in [0, 1)", c.SyncJitter)
	}
	if c.OriginRate <= 0 {
		bad("origin rate %v must be positive", c.OriginRate)
	}
	if !(c.NewcomerRate > 0) {
		bad("newcomer rate %v must be positive", c.NewcomerRate)
	}
	if c.SessionRate <= 0 || c.SessionTimeout <= 0 {
		bad("session rate %v and session timeout %v must be positive", c.SessionRate, c.SessionTimeout)
	}
	if c.ServeBytesBurst < c.maxFrameSize() {
		bad("serve bytes burst %d is below the largest frame (%d): no such frame could ever be served", c.ServeBytesBurst, c.maxFrameSize())
	}
	if c.StreamTimeout <= 0 {
		bad("stream timeout %v must be positive", c.StreamTimeout)
	}
	if c.SeenMessagesTTL < 0 {
		bad("seen messages TTL %v is negative", c.SeenMessagesTTL)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("gossip: config: %w", err)
	}
	return nil
}

// maxFrameSize is the largest catch-up or value frame accepted: an ordinary
// frame, or one change with the largest value.
func (c Config) maxFrameSize() int {
	return max(c.MaxMessageSize, c.MaxValueSize+datastore.MaxKeyLen+changeOverhead)
}
