package gossip

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// errGraylistedPeer drops an RPC from a graylisted peer, errOverRate one
// carrying messages of the sender's own over its origin rate.
var (
	errGraylistedPeer = errors.New("gossip: graylisted peer")
	errOverRate       = errors.New("gossip: sender over its origin rate")
)

// rpcOverhead is the room pubsub needs around our payload: the signed
// envelope (author, sequence number, topic, signature, key) and RPC framing.
const rpcOverhead = 64 << 10

// NewPubSub returns a GossipSub with the options peerstate needs:
//   - strict signing, so every message is signed and checked, and the
//     validator can compare a message's signer with its changes' origin;
//   - flood publishing, so our own messages go to every subscribed peer,
//     including writes made right after start-up, before the mesh forms;
//   - outbound and validation queues far above pubsub's default of 32,
//     which loses most of a burst;
//   - a wire message limit matched to cfg.MaxMessageSize (plus envelope),
//     so oversized payloads reach our validator to be counted and rejected;
//   - cfg.SeenMessagesTTL when set;
//   - peer scoring when cfg.AppScore is set (see score.go for the
//     calibration), and then every RPC from a peer whose AppScore is under
//     cfg.GraylistScore dropped on arrival, before its messages' signatures
//     are checked: gossipsub graylists only peers it scores, and it scores
//     only peers it has a stream to, so a peer that never answers the
//     pubsub protocol but pushes messages at us would otherwise have every
//     one of them checked. What it publishes still counts against its
//     origin rate, with the Gossip run on the PubSub, which takes cfg's
//     rate limits from here; and once a peer has spent that rate, what it
//     publishes under its own name is dropped on arrival too (see
//     pubsubShared.inspect).
//
// extra options are applied after these (peer scoring, tracers, …). The
// PubSub lives until ctx is cancelled.
func NewPubSub(ctx context.Context, h host.Host, cfg Config, extra ...pubsub.Option) (*pubsub.PubSub, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts := []pubsub.Option{
		pubsub.WithMessageSignaturePolicy(pubsub.StrictSign),
		pubsub.WithFloodPublish(true),
		pubsub.WithPeerOutboundQueueSize(cfg.PeerOutboundQueueSize),
		pubsub.WithValidateQueueSize(cfg.ValidateQueueSize),
		pubsub.WithMaxMessageSize(cfg.MaxMessageSize + rpcOverhead),
	}
	if cfg.SeenMessagesTTL > 0 {
		opts = append(opts, pubsub.WithSeenMessagesTTL(cfg.SeenMessagesTTL))
	}
	scoring, err := scoreOptions(cfg)
	if err != nil {
		return nil, err
	}
	opts = append(opts, scoring...)
	var shared *pubsubShared
	if cfg.AppScore != nil {
		shared = &pubsubShared{rates: newOriginRates(cfg), onReject: cfg.OnReject}
		opts = append(opts, pubsub.WithAppSpecificRpcInspector(shared.inspect(cfg)))
	}
	ps, err := pubsub.NewGossipSub(ctx, h, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("gossip: new gossipsub: %w", err)
	}
	if shared != nil {
		sharedByPubSub.Store(ps, shared)
		context.AfterFunc(ctx, func() { sharedByPubSub.Delete(ps) })
	}
	return ps, nil
}

// pubsubShared is what a PubSub made by NewPubSub shares with the Gossip
// running on it: the per-origin rates, so that what a graylisted peer
// publishes counts against the same bucket as what it published before,
// and where rejections are reported (the Gossip's, once it runs).
type pubsubShared struct {
	rates    *originRates
	onReject func(peer.ID, string)                 // before a Gossip runs: the Config's
	reject   atomic.Pointer[func(peer.ID, string)] // the Gossip's
}

// sharedByPubSub holds each live PubSub's pubsubShared.
var sharedByPubSub sync.Map // *pubsub.PubSub → *pubsubShared

// inspect drops, on arrival and before any signature in them is checked:
//   - every RPC from a peer under cfg.GraylistScore. The messages it sends
//     still take one change each from its origin-rate bucket — no more
//     than a message holds, so an honest peer, which publishes under its
//     rate, is not charged for its own — and past the rate it is rejected
//     for it: a graylisted peer that keeps flooding goes on to be banned.
//     (Messages it relays count too; a graylisted peer is pruned from our
//     mesh, so it relays little to us.)
//   - an RPC carrying messages a peer publishes under its own name once it
//     has spent its origin rate, each counted against it (ReasonRate), as
//     the validator would: a flooder's messages past its rate cost us no
//     signature check while it goes on to be banned. The claim of
//     authorship is not checked here, but the sender is (the connection's
//     peer): a message it sends under its own name is its doing either
//     way, and an origin's bucket is spent only by messages whose
//     signatures were checked. Another peer's messages relayed under that
//     name go the usual way.
func (sh *pubsubShared) inspect(cfg Config) func(peer.ID, *pubsub.RPC) error {
	return func(p peer.ID, rpc *pubsub.RPC) error {
		msgs := rpc.GetPublish()
		if cfg.AppScore(p) < cfg.GraylistScore {
			if len(msgs) > 0 && !sh.rates.allow(p, len(msgs)) {
				sh.rejectRate(p, 1)
			}
			return errGraylistedPeer
		}
		own := 0
		for _, m := range msgs {
			if peer.ID(m.GetFrom()) == p {
				own++
			}
		}
		if own == 0 || !sh.rates.spent(p) {
			return nil
		}
		sh.rejectRate(p, own)
		return errOverRate
	}
}

// rejectRate counts n rate rejections against p where the Gossip (or,
// before one runs, the Config) reports rejections.
func (sh *pubsubShared) rejectRate(p peer.ID, n int) {
	fn := sh.onReject
	if g := sh.reject.Load(); g != nil {
		fn = *g
	}
	if fn == nil {
		return
	}
	for range n {
		fn(p, ReasonRate)
	}
}
