// Package gossip is peerstate's replication transport over libp2p: it
// pushes every local change of a replica to its peers on a go-libp2p-pubsub
// topic, and repairs whatever the push misses with a catch-up stream
// protocol (anti-entropy).
//
// # Push
//
// Local changes arrive through Broadcast (gossip implements
// replica.Broadcaster) and wait in a bounded queue. One batcher goroutine
// packs whatever is queued into as few messages as fit Config.MaxMessageSize
// and publishes them: when idle, a change goes out at once; under load,
// changes accumulate while the previous publish runs. Broadcast never
// blocks: when the queue is full the changes that do not fit are dropped and
// counted (Stats.Dropped); receivers see a gap in the origin's sequence and
// catch-up fills it.
//
// A message is CBOR (Message, with a format version). Values larger than
// Config.InlineValueLimit are left out and announced by size and SHA-256;
// receivers fetch them from the origin (or the relaying peer) over
// Config.ValueProtocol and check them against the announcement before
// applying.
//
// Every message is signed (NewPubSub sets strict signing), and a topic
// validator checks each one before it is delivered or forwarded. It rejects
// (and counts per peer and reason, see Stats and Config.OnReject) a message
// that does not decode, has an unknown format version or is too large,
// whose signer is not the origin of its changes, or with a change that
// fails replica.Change.Validate. It ignores a stale replay: a message whose
// changes are all incorporated already, by watermark and by local state.
// Pubsub's seen-cache forgets message IDs after two minutes, so replays are
// recognised by version, not by ID. Changes for keys this replica does not
// replicate are skipped.
//
// # Catch-up
//
// On Config.SyncProtocol the initiator sends its watermark vector and its
// replicated prefixes; the responder streams, in size-capped frames, the
// current state of every key in both peers' prefixes whose last change the
// initiator lacks, then the vector its stream covers and its own prefixes.
// The initiator validates and applies each frame and, only once the whole
// stream arrived and applied cleanly, raises its watermarks with
// replica.Advance. A peer that missed N changes receives O(N) bytes, not
// the whole state. Catch-up runs with every newly identified peer, every
// Config.SyncInterval (jittered) with Config.SyncFanout random peers, and on
// demand (SyncWith, SyncAll).
//
// The responder's final vector is trusted once its stream validated: a
// hostile responder can claim a vector higher than what it holds and so keep
// us from asking other peers for those changes (pubsub still delivers new
// ones; our own origin is never advanced this way). Sharing reputations is
// the intended mitigation.
package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	"golang.org/x/time/rate"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/replica"
)

var _ replica.Broadcaster = (*Gossip)(nil)

// Replica is what gossip needs from the replica it serves; *replica.Replica
// implements it.
type Replica interface {
	ID() string
	Apply(ctx context.Context, from string, changes []replica.Change) (replica.ApplyResult, error)
	Watermarks(ctx context.Context) (replica.Vector, error)
	ChangesSince(ctx context.Context, have replica.Vector, prefixes []string, batch int, fn func([]replica.Change) error) (replica.Vector, error)
	Heads(sources []string) []replica.Change
	Advance(ctx context.Context, v replica.Vector, heads []replica.Change, senderPrefixes []string) (int, error)
	Current(ctx context.Context, key string) (replica.Change, bool, error)
	Prefixes() []string
	Replicates(key string) bool
	VerifyChange(c replica.Change) error
	VerifyChanges(cs []replica.Change) []error
	// Tombstone horizon: peers' vectors are recorded from catch-up, a peer
	// behind the collected horizon gets a full snapshot, and the receiver of
	// a snapshot drops what it shows was deleted.
	ObservePeerRetired(ctx context.Context, id string, v replica.Vector, retired replica.HLC) error
	BehindHorizon(have replica.Vector, retired replica.HLC) bool
	RetiredHorizon() (replica.HLC, uint64)
	Reconcile(ctx context.Context, cover, horizon replica.Vector, floors map[uint16]uint64, senderPrefixes []string, received map[string]bool) (int, error)
	Collected() replica.Vector
	Floors() map[uint16]uint64
	// Fingerprint repair.
	StateFingerprint() replica.Summary
	Summarize(nodes []replica.Node) []replica.Summary
	Items(nodes []replica.Node, limit int) [][]replica.Item
}

// Errors of the Gossip itself.
var (
	ErrClosed    = errors.New("gossip: closed")
	ErrQueueFull = errors.New("gossip: broadcast queue full")
	ErrBusy      = errors.New("gossip: too many concurrent syncs")
)

// Rejection and ignore reasons, as counted in Stats and passed to
// Config.OnReject.
const (
	ReasonTooLarge       = "too-large"       // payload or frame over the size cap
	ReasonMalformed      = "malformed"       // does not decode
	ReasonUnknownVersion = "unknown-version" // format version we do not know
	ReasonForgedOrigin   = "forged-origin"   // a change's origin is not the signer
	ReasonBadSignature   = "bad-signature"   // a change its origin did not sign
	ReasonInvalidKey     = "invalid-key"     // replica.Change.Validate: bad key
	ReasonValueTooLarge  = "value-too-large" // replica.Change.Validate: value over the limit
	ReasonInvalidChange  = "invalid-change"  // replica.Change.Validate: inconsistent fields
	ReasonBadValue       = "bad-value"       // a fetched value does not match its announcement
	ReasonRate           = "rate"            // ignored: its origin publishes faster than Config.OriginRate (counted against the origin)
	ReasonStale          = "stale"           // ignored: every change already incorporated
	ReasonOwn            = "own"             // ignored: our own message, relayed back (a replay)
	ReasonGraylisted     = "graylisted"      // ignored: its origin fell under Config.GraylistScore while the message waited
	ReasonBacklog        = "backlog"         // ignored: its origin, a newcomer, has Config.NewcomerBacklog messages waiting already
)

// Gossip replicates one replica over pubsub and the catch-up protocol. Create
// it with New, hand it to the replica with SetBroadcaster, and Close it
// before closing the host, the pubsub or the replica.
type Gossip struct {
	cfg   Config
	h     host.Host
	ps    *pubsub.PubSub
	r     Replica
	self  peer.ID
	log   *slog.Logger
	topic *pubsub.Topic
	sub   *pubsub.Subscription
	evSub event.Subscription

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	closed     bool
	queue      []replica.Change
	queueBytes int
	syncing    map[peer.ID]bool
	matched    map[peer.ID]MatchState
	// The turn of background catch-ups (startSync): turnHeld while one
	// has it, and the ones waiting for it in the order startSync queued
	// them, each handed the turn by closing its channel.
	turnHeld  bool
	turnQueue []chan struct{}

	kick          chan struct{}
	fetches       chan fetchJob
	inbox         chan inbound  // validated pubsub changes, receiveLoop to applyLoop
	serving       chan struct{} // semaphore: catch-up streams served
	limits        *peerLimits   // per-peer limits on what is served
	origins       *originRates  // per-origin publish rates
	shared        *pubsubShared // what the PubSub shares with us, if NewPubSub made it
	lanes         *originLanes  // per-origin verification, one message at a time
	pace          *rate.Limiter // our own publishing, at the same rate
	servingValues chan struct{} // semaphore: value streams served
	outgoing      chan struct{} // semaphore: catch-up streams started by us
	closeOnce     sync.Once
	closeErr      error

	st stats
}

// New starts replicating r: it registers the topic validator, joins and
// subscribes to the topic, installs the stream handlers and starts the
// batcher, the subscription loop, the catch-up loop and the value fetchers.
// h and ps belong to the caller. ps must sign and verify every message
// (strict signing): the validator's origin check rests on it; NewPubSub
// with the same cfg builds such a pubsub. r's ID must be h's peer ID. ctx
// bounds only New itself.
func New(ctx context.Context, h host.Host, ps *pubsub.PubSub, r Replica, cfg Config) (*Gossip, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if h == nil || ps == nil || r == nil {
		return nil, errors.New("gossip: new: nil host, pubsub or replica")
	}
	if r.ID() != h.ID().String() {
		return nil, fmt.Errorf("gossip: new: replica ID %q is not the host's peer ID %s", r.ID(), h.ID())
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("gossip: new: %w", err)
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	g := &Gossip{
		cfg: cfg, h: h, ps: ps, r: r, self: h.ID(),
		log:           cfg.Logger.With("component", "gossip", "peer", h.ID()),
		syncing:       map[peer.ID]bool{},
		matched:       map[peer.ID]MatchState{},
		kick:          make(chan struct{}, 1),
		fetches:       make(chan fetchJob, cfg.FetchQueue),
		inbox:         make(chan inbound, inboxSize),
		serving:       make(chan struct{}, cfg.MaxConcurrentSyncs),
		limits:        newPeerLimits(cfg),
		lanes:         newOriginLanes(),
		pace:          rate.NewLimiter(rate.Limit(cfg.OriginRate*paceShare), max(int(float64(cfg.OriginBurst)*paceShare), 1)),
		servingValues: make(chan struct{}, cfg.MaxConcurrentSyncs),
		outgoing:      make(chan struct{}, cfg.MaxConcurrentSyncs),
	}
	g.st.init()
	if v, ok := sharedByPubSub.Load(ps); ok {
		// The PubSub drops what graylisted peers send on arrival, still
		// counting it against their origin rates: the same buckets as
		// ours, and our rejections.
		g.shared = v.(*pubsubShared)
		g.origins = g.shared.rates
		reject := func(p peer.ID, reason string) { g.reject(p, reason) }
		g.shared.reject.Store(&reject)
	} else {
		g.origins = newOriginRates(cfg)
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	if err := g.start(); err != nil {
		g.cancel()
		if g.shared != nil {
			g.shared.reject.Store(nil)
		}
		return nil, err
	}
	return g, nil
}

// start acquires the pubsub and host resources, undoing them on failure.
func (g *Gossip) start() (err error) {
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	if err := g.ps.RegisterTopicValidator(g.cfg.Topic, g.validate); err != nil {
		return fmt.Errorf("gossip: register validator: %w", err)
	}
	undo = append(undo, func() { _ = g.ps.UnregisterTopicValidator(g.cfg.Topic) })
	if g.topic, err = g.ps.Join(g.cfg.Topic); err != nil {
		return fmt.Errorf("gossip: join %q: %w", g.cfg.Topic, err)
	}
	undo = append(undo, func() { _ = g.topic.Close() })
	if g.sub, err = g.topic.Subscribe(pubsub.WithBufferSize(g.cfg.SubscriptionBuffer)); err != nil {
		return fmt.Errorf("gossip: subscribe %q: %w", g.cfg.Topic, err)
	}
	undo = append(undo, g.sub.Cancel)
	if g.evSub, err = g.h.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted), eventbus.BufSize(256)); err != nil {
		return fmt.Errorf("gossip: subscribe to host events: %w", err)
	}
	g.h.SetStreamHandler(g.cfg.SyncProtocol, g.handleSync)
	g.h.SetStreamHandler(g.cfg.ValueProtocol, g.handleValue)
	g.h.SetStreamHandler(g.cfg.RepairProtocol, g.handleRepair)

	g.goFunc(g.batchLoop)
	g.goFunc(g.receiveLoop)
	g.goFunc(g.applyLoop)
	g.goFunc(g.syncLoop)
	for range g.cfg.FetchWorkers {
		g.goFunc(g.fetchLoop)
	}
	return nil
}

// goFunc runs f in a goroutine Close waits for.
func (g *Gossip) goFunc(f func()) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		f()
	}()
}

// enter registers a unit of work Close must wait for; false once closed.
func (g *Gossip) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	return true
}

// Close stops every goroutine and stream handler of the Gossip, leaves the
// topic and waits. It leaves the host, the pubsub and the replica open. It
// is idempotent.
func (g *Gossip) Close() error {
	g.closeOnce.Do(func() {
		g.mu.Lock()
		g.closed = true
		g.queue, g.queueBytes = nil, 0
		g.mu.Unlock()
		g.h.RemoveStreamHandler(g.cfg.SyncProtocol)
		g.h.RemoveStreamHandler(g.cfg.ValueProtocol)
		g.h.RemoveStreamHandler(g.cfg.RepairProtocol)
		if g.shared != nil {
			g.shared.reject.Store(nil)
		}
		g.cancel()
		g.sub.Cancel()
		evErr := g.evSub.Close()
		g.wg.Wait()
		valErr := g.ps.UnregisterTopicValidator(g.cfg.Topic)
		topicErr := g.topic.Close()
		var errs []error
		for _, err := range []error{evErr, valErr, topicErr} {
			// A pubsub already stopped has nothing left to undo.
			if err != nil && !errors.Is(err, context.Canceled) {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			g.closeErr = fmt.Errorf("gossip: close: %w", err)
		}
	})
	return g.closeErr
}

// MatchState is what the last catch-up with a peer found when it compared
// the two peers' state fingerprints.
type MatchState struct {
	Matched bool      // the fingerprints were equal
	At      time.Time // when
}

// maxMatchStates bounds the peers whose match state is remembered.
const maxMatchStates = 4096

func (g *Gossip) recordMatch(p peer.ID, matched bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.matched[p]; !ok && len(g.matched) >= maxMatchStates {
		for q := range g.matched {
			delete(g.matched, q)
			break
		}
	}
	g.matched[p] = MatchState{Matched: matched, At: time.Now()}
}

// Matches returns, per peer, whether our state fingerprint equalled its own
// at the end of the last catch-up with it.
func (g *Gossip) Matches() map[peer.ID]MatchState {
	g.mu.Lock()
	defer g.mu.Unlock()
	return maps.Clone(g.matched)
}

// Peers returns the peers subscribed to the topic that we know of.
func (g *Gossip) Peers() []peer.ID { return g.topic.ListPeers() }

// Broadcast queues changes made on this peer for publishing and returns at
// once. When the queue is full it drops the changes that do not fit, counts
// them in Stats.Dropped and returns ErrQueueFull; the write stands, and
// catch-up brings the dropped changes to the other peers.
func (g *Gossip) Broadcast(ctx context.Context, changes []replica.Change) error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return ErrClosed
	}
	taken := 0
	for _, c := range changes {
		if len(g.queue) >= g.cfg.QueueSize || g.queueBytes+len(c.Value) > g.cfg.QueueBytes {
			break
		}
		g.queue = append(g.queue, c)
		g.queueBytes += len(c.Value)
		taken++
	}
	g.mu.Unlock()
	g.st.broadcast.Add(uint64(taken))
	if taken > 0 {
		select {
		case g.kick <- struct{}{}:
		default:
		}
	}
	if dropped := len(changes) - taken; dropped > 0 {
		g.st.dropped.Add(uint64(dropped))
		return fmt.Errorf("%w: dropped %d changes", ErrQueueFull, dropped)
	}
	return nil
}

// batchLoop publishes queued changes, packing all that are waiting.
func (g *Gossip) batchLoop() {
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-g.kick:
		}
		for {
			g.mu.Lock()
			batch := g.queue
			g.queue, g.queueBytes = nil, 0
			g.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			g.publish(batch)
		}
	}
}

// publish packs changes into messages and publishes them in order.
func (g *Gossip) publish(changes []replica.Change) {
	origin := g.self.String()
	// The message's own fields (version, origin, array header) come on top
	// of the packer's frame overhead.
	p := newPacker(g.cfg.MaxMessageSize - len(origin) - groupOverhead)
	send := func() {
		groups := p.take()
		if len(groups) == 0 {
			return
		}
		// We publish below the rate we let any origin publish to us, so
		// that peers with the same limits never take a burst of ours for
		// a flood, however the network bunches our messages; what waits
		// meanwhile queues (bounded), and what the queue drops, catch-up
		// delivers.
		if err := g.pace.WaitN(g.ctx, min(len(groups[0].Changes), g.pace.Burst())); err != nil {
			return // closing
		}
		data, err := marshal(groups[0])
		if err == nil {
			err = g.topic.Publish(g.ctx, data)
		}
		if err != nil {
			g.st.publishErrors.Add(1)
			if g.ctx.Err() == nil {
				g.log.Warn("publish failed; catch-up will repair", "changes", len(groups[0].Changes), "err", err)
			}
			return
		}
		g.st.published.Add(1)
		g.st.publishedChanges.Add(uint64(len(groups[0].Changes)))
		g.st.pubsubBytesSent.Add(uint64(len(data)))
	}
	for _, c := range changes {
		if c.Origin != origin || !g.r.Replicates(c.Key) {
			continue // not ours to announce
		}
		enc, err := encodeChange(toWire(c, g.cfg.InlineValueLimit, false))
		if err != nil {
			g.st.publishErrors.Add(1)
			continue
		}
		if !p.fits(origin, len(enc)) {
			send()
		}
		p.add(origin, enc)
	}
	send()
}

// received is what the validator hands the receive loop.
type received struct {
	changes []replica.Change      // validated; values left out have Value nil
	pending map[int]*announcement // by index into changes
	// foreign are changes to keys we do not replicate, values dropped: the
	// replica skips them but counts them toward the origin's watermark.
	foreign []replica.Change
}

// validate is the topic validator; see the package doc.
func (g *Gossip) validate(ctx context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	signer := msg.GetFrom()
	switch {
	case from == g.self:
		return pubsub.ValidationAccept // our own publish
	case signer == g.self:
		// Our own message coming back can only be a replay (pubsub's
		// seen-cache holds what we published, and routers never send a
		// message to its author): do not pass it on.
		g.st.ignore(ReasonOwn)
		return pubsub.ValidationIgnore
	}
	data := msg.GetData()
	g.st.pubsubBytesReceived.Add(uint64(len(data)))
	if g.origins.spent(signer) {
		// Its next message is over the rate whatever it holds: not worth
		// decoding (the signer is pubsub's checked signature).
		g.reject(signer, ReasonRate)
		return pubsub.ValidationIgnore
	}
	m, err := DecodeMessage(data, g.cfg.MaxMessageSize)
	if err != nil {
		return g.reject(from, reasonOf(err))
	}
	if m.Origin != signer.String() {
		return g.reject(from, ReasonForgedOrigin)
	}
	if !g.origins.allow(signer, len(m.Changes)) {
		// A flood from one origin, however valid: dropped here and not
		// passed on (catch-up serves what was real), counted against the
		// origin, never against the peer relaying it.
		g.reject(signer, ReasonRate)
		return pubsub.ValidationIgnore
	}
	// Verification is most of what a change costs us. Each origin's
	// messages are verified in its lane, one at a time; a newcomer's
	// (an origin without standing) at most NewcomerRate changes a second,
	// with at most NewcomerBacklog messages waiting: a fresh identity's
	// burst, which within its rate limit looks like any bulk write, then
	// takes a bounded share of the CPU until the rate limit and reputation
	// catch it, and honest origins' messages do not wait behind it.
	newcomer := g.cfg.AppScore != nil && g.cfg.AppScore(signer) < g.cfg.StandingScore
	backlog := 0
	if newcomer {
		backlog = g.cfg.NewcomerBacklog
	}
	leave, err := g.lanes.enter(ctx, signer, backlog)
	if errors.Is(err, errBacklog) {
		g.st.ignore(ReasonBacklog) // catch-up brings what was real
		return pubsub.ValidationIgnore
	}
	if err != nil {
		return pubsub.ValidationIgnore // closing
	}
	defer leave()
	rc := &received{changes: make([]replica.Change, 0, len(m.Changes))}
	for _, w := range m.Changes {
		c, ann, err := w.change(m.Origin, g.cfg.MaxValueSize)
		if err != nil {
			return g.reject(from, reasonOf(err))
		}
		if !g.r.Replicates(c.Key) {
			rc.foreign = append(rc.foreign, c)
			continue
		}
		if ann != nil {
			if rc.pending == nil {
				rc.pending = map[int]*announcement{}
			}
			rc.pending[len(rc.changes)] = ann
		}
		rc.changes = append(rc.changes, c)
	}
	// Every change must carry its origin's own signature, checked before the
	// message is passed on: receivers of a relayed message check it again
	// (from a cache, when it is the same change) on every path.
	if res, ok := g.verifyIn(ctx, from, signer, newcomer, slices.Concat(rc.changes, rc.foreign)); !ok {
		return res
	}
	for i := range rc.foreign {
		rc.foreign[i] = rc.foreign[i].Elide() // only its metadata counts here
	}
	if len(rc.changes) > 0 && g.allStale(ctx, rc.changes) {
		g.st.ignore(ReasonStale)
		return pubsub.ValidationIgnore
	}
	msg.ValidatorData = rc
	return pubsub.ValidationAccept
}

// verifyIn checks the signatures of changes, signed by signer and received
// from from, in signer's lane: a chunk at a time, each chunk in parallel
// for an origin with standing, one change at a time at NewcomerRate for a
// newcomer, yielding the CPU after each chunk or change and looking between
// chunks whether the origin has been graylisted meanwhile. It returns the
// validation result and false when the message is to go no further.
func (g *Gossip) verifyIn(ctx context.Context, from, signer peer.ID, newcomer bool, changes []replica.Change) (pubsub.ValidationResult, bool) {
	var pace *rate.Limiter
	if newcomer {
		pace = g.origins.verifier(signer)
	}
	for chunk := range slices.Chunk(changes, verifyChunk) {
		if g.cfg.AppScore != nil && g.cfg.AppScore(signer) < g.cfg.GraylistScore {
			// Graylisted or banned while its message waited (its own
			// earlier ones, typically, were caught by the rate limit).
			g.st.ignore(ReasonGraylisted)
			return pubsub.ValidationIgnore, false
		}
		if !newcomer {
			for _, err := range g.r.VerifyChanges(chunk) {
				if err != nil {
					return g.reject(from, reasonOf(err)), false
				}
			}
			runtime.Gosched()
			continue
		}
		for _, c := range chunk {
			if pace.Wait(ctx) != nil {
				return pubsub.ValidationIgnore, false // closing
			}
			if err := g.r.VerifyChange(c); err != nil {
				return g.reject(from, reasonOf(err)), false
			}
			runtime.Gosched()
		}
	}
	return pubsub.ValidationAccept, true
}

// allStale reports whether every change is already incorporated: its
// sequence number is under its origin's watermark and the key's local state
// is at least as new. Errors count as "not stale": Apply decides then.
func (g *Gossip) allStale(ctx context.Context, changes []replica.Change) bool {
	wm, err := g.r.Watermarks(ctx)
	if err != nil {
		return false
	}
	for _, c := range changes {
		if c.Seq > wm[c.Source()] {
			return false
		}
	}
	for _, c := range changes {
		cur, found, err := g.r.Current(ctx, c.Key)
		if err != nil || (found && cur.Less(c)) {
			return false
		}
	}
	return true
}

// reject counts a rejection and reports it.
func (g *Gossip) reject(from peer.ID, reason string) pubsub.ValidationResult {
	if g.st.reject(from, reason) == 1 && reason == ReasonUnknownVersion {
		g.log.Warn("peer speaks another peerstate wire format; its messages are refused until both run the same release",
			"from", from, "ours", FormatVersion)
	}
	if g.cfg.OnReject != nil {
		g.cfg.OnReject(from, reason)
	}
	if reason == ReasonUnknownVersion {
		// Another release, not a fault: pubsub must not penalise the
		// peer (nor whoever relays it) during a rolling upgrade.
		return pubsub.ValidationIgnore
	}
	return pubsub.ValidationReject
}

// reasonOf maps a validation error to its reason.
func reasonOf(err error) string {
	switch {
	case errors.Is(err, ErrMessageTooLarge):
		return ReasonTooLarge
	case errors.Is(err, ErrUnknownVersion):
		return ReasonUnknownVersion
	case errors.Is(err, ErrMalformed):
		return ReasonMalformed
	case errors.Is(err, ErrForgedOrigin):
		return ReasonForgedOrigin
	case errors.Is(err, replica.ErrBadSignature):
		return ReasonBadSignature
	case errors.Is(err, ErrBadValue):
		return ReasonBadValue
	case errors.Is(err, datastore.ErrInvalidKey):
		return ReasonInvalidKey
	case errors.Is(err, datastore.ErrValueTooLarge):
		return ReasonValueTooLarge
	}
	return ReasonInvalidChange
}

// inbound is what one pubsub message brings to apply now.
type inbound struct {
	from    peer.ID // the peer we received the message from
	changes []replica.Change
}

const (
	// paceShare is the share of the origin rate and burst we publish at
	// ourselves: the rest is headroom for messages the network delivers
	// bunched together.
	paceShare = 0.8
	// inboxSize bounds the messages between receiveLoop and applyLoop
	// (the subscription's own buffer is behind it).
	inboxSize = 256
	// maxApplyBatch bounds the changes applyLoop hands the replica at once.
	maxApplyBatch = 512
	// verifyChunk is how many of a message's changes the validator
	// verifies between yielding the CPU and looking whether their origin
	// has been graylisted.
	verifyChunk = 64
)

// receiveLoop takes validated messages from the topic and passes what is
// ready to applyLoop; changes whose values must be fetched go to the
// fetchers.
func (g *Gossip) receiveLoop() {
	for {
		msg, err := g.sub.Next(g.ctx)
		if err != nil {
			return // cancelled or closed
		}
		if msg.GetFrom() == g.self || msg.ReceivedFrom == g.self {
			continue // our own
		}
		rc, ok := msg.ValidatorData.(*received)
		if !ok {
			continue // not validated by us (cannot happen while registered)
		}
		g.st.received.Add(1)
		g.st.receivedChanges.Add(uint64(len(rc.changes)))
		ready := rc.changes
		if len(rc.pending) > 0 {
			ready = make([]replica.Change, 0, len(rc.changes)-len(rc.pending))
			for i, c := range rc.changes {
				ann, ok := rc.pending[i]
				if !ok {
					ready = append(ready, c)
					continue
				}
				job := fetchJob{change: c, ann: *ann, from: []peer.ID{msg.GetFrom(), msg.ReceivedFrom}}
				select {
				case g.fetches <- job:
				default:
					g.st.fetchDropped.Add(1)
				}
			}
		}
		if ready = append(ready, rc.foreign...); len(ready) == 0 {
			continue
		}
		select {
		case g.inbox <- inbound{from: msg.ReceivedFrom, changes: ready}:
		case <-g.ctx.Done():
			return
		}
	}
}

// applyLoop applies what receiveLoop passes on. Whatever has queued up
// while the last apply ran goes to the replica together, one apply (one
// commit) per relaying peer, so under load the store commits batches
// rather than one message at a time. The order of changes does not matter:
// the replica orders every key's changes itself.
func (g *Gossip) applyLoop() {
	var order []peer.ID
	batch := map[peer.ID][]replica.Change{}
	for {
		var in inbound
		select {
		case in = <-g.inbox:
		case <-g.ctx.Done():
			return
		}
		n := 0
	drain:
		for {
			if _, ok := batch[in.from]; !ok {
				order = append(order, in.from)
			}
			batch[in.from] = append(batch[in.from], in.changes...)
			if n += len(in.changes); n >= maxApplyBatch {
				break
			}
			select {
			case in = <-g.inbox:
			default:
				break drain
			}
		}
		for _, p := range order {
			g.apply(g.ctx, p, PathPubsub, batch[p])
			delete(batch, p)
		}
		order = order[:0]
	}
}

// The paths by which remote changes arrive, as Applied.Path names them.
const (
	PathPubsub  = "pubsub"  // pushed on the topic
	PathFetch   = "fetch"   // announced on the topic, its value fetched over a stream
	PathCatchUp = "catchup" // the catch-up stream (missing changes or a snapshot)
	PathRepair  = "repair"  // fingerprint repair, pulled by us or pushed to us
)

// Applied describes one batch of remote changes applied (Config.OnApply).
type Applied struct {
	Path    string           // one of the Path constants
	Changes []replica.Change // the batch as received: read it, never keep or change it
	Result  replica.ApplyResult
	Took    time.Duration // how long the replica took to apply it
	Err     error
}

// apply applies changes from peer p, which came by path, and counts the
// result.
func (g *Gossip) apply(ctx context.Context, p peer.ID, path string, changes []replica.Change) (replica.ApplyResult, error) {
	start := time.Now()
	res, err := g.r.Apply(ctx, p.String(), changes)
	if g.cfg.OnApply != nil {
		g.cfg.OnApply(p, Applied{Path: path, Changes: changes, Result: res, Took: time.Since(start), Err: err})
	}
	g.st.refused.Add(uint64(res.Refused))
	if res.Invalid == 0 && errors.Is(err, replica.ErrRefused) {
		// The replica's rule, not a fault of the stream: what it accepted
		// is applied and the refusals are incorporated.
		g.log.Debug("changes refused", "from", p, "refused", res.Refused, "by", res.RefusedBy, "err", err)
		err = nil
	}
	if res.Invalid > 0 {
		g.reject(p, reasonOf(err))
	}
	g.st.future.Add(uint64(res.Future))
	g.st.applied.Add(uint64(res.Applied))
	g.st.stale.Add(uint64(res.Stale))
	g.st.skipped.Add(uint64(res.Skipped))
	if err != nil {
		g.st.applyErrors.Add(1)
		if ctx.Err() == nil {
			g.log.Warn("apply failed", "from", p, "changes", len(changes), "err", err)
		}
	}
	return res, err
}

// Stats are cumulative counters of a Gossip.
type Stats struct {
	Broadcast        uint64 // changes handed to Broadcast and queued
	Dropped          uint64 // changes dropped because the queue was full
	Published        uint64 // pubsub messages published
	PublishedChanges uint64 // changes in them
	PublishErrors    uint64

	Received        uint64 // messages from peers accepted and delivered
	ReceivedChanges uint64 // replicated changes in them
	Applied         uint64 // changes applied (pubsub, fetch and catch-up)
	Stale           uint64 // changes already incorporated or superseded
	Skipped         uint64 // changes for keys we do not replicate
	Future          uint64 // changes stamped too far ahead of our clock, left for later
	Refused         uint64 // validly signed changes the replica's Admit rule refused
	ApplyErrors     uint64

	// Rejected counts rejected messages, frames and values by reason;
	// RejectedByPeer by the peer that sent them (for pubsub, the peer we
	// received the message from).
	Rejected       map[string]uint64
	RejectedByPeer map[peer.ID]uint64
	// Ignored counts messages ignored (neither delivered nor forwarded,
	// without penalty) by reason: ReasonStale, ReasonOwn.
	Ignored map[string]uint64

	PubsubBytesSent     uint64 // payload bytes published
	PubsubBytesReceived uint64 // payload bytes of peers' messages validated

	Syncs               uint64 // catch-ups we initiated that completed
	SyncErrors          uint64 // catch-ups we initiated that failed
	SyncsServed         uint64 // catch-up streams we answered
	SyncsRefused        uint64 // refused as over MaxConcurrentSyncs
	SyncChangesSent     uint64
	SyncChangesReceived uint64
	// SyncBytesSent and SyncBytesReceived count every byte of the catch-up
	// protocol on the stream, in both roles.
	SyncBytesSent     uint64
	SyncBytesReceived uint64

	Repairs         uint64 // fingerprint repairs we initiated
	RepairErrors    uint64 // of which failed
	RepairsServed   uint64 // repair streams we answered
	RepairedEntries uint64 // changes applied by repairs we initiated
	RepairBytes     uint64 // repair protocol bytes, both roles and directions

	Fetches            uint64 // large values fetched and applied
	FetchErrors        uint64 // fetches that found no valid value
	FetchDropped       uint64 // fetches dropped as the queue was full
	ValueBytesSent     uint64
	ValueBytesReceived uint64
}

// Stats returns a snapshot of the counters.
func (g *Gossip) Stats() Stats { return g.st.snapshot() }

type stats struct {
	broadcast, dropped, published, publishedChanges, publishErrors  atomic.Uint64
	received, receivedChanges, applied, stale, skipped, applyErrors atomic.Uint64
	future, refused                                                 atomic.Uint64
	pubsubBytesSent, pubsubBytesReceived                            atomic.Uint64
	syncs, syncErrors, syncsServed, syncsRefused                    atomic.Uint64
	syncChangesSent, syncChangesReceived                            atomic.Uint64
	syncBytesSent, syncBytesReceived                                atomic.Uint64
	fetches, fetchErrors, fetchDropped                              atomic.Uint64
	valueBytesSent, valueBytesReceived                              atomic.Uint64
	repairs, repairErrors, repairsServed, repaired, repairBytes     atomic.Uint64

	mu             sync.Mutex
	rejected       map[string]uint64
	rejectedByPeer map[peer.ID]uint64
	ignored        map[string]uint64
	versionWarned  map[peer.ID]uint64
}

func (s *stats) init() {
	s.rejected, s.rejectedByPeer, s.ignored = map[string]uint64{}, map[peer.ID]uint64{}, map[string]uint64{}
	s.versionWarned = map[peer.ID]uint64{}
}

// reject counts a rejection and returns how many of this reason the peer
// has had (1: the first).
func (s *stats) reject(p peer.ID, reason string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejected[reason]++
	s.rejectedByPeer[p]++
	if reason != ReasonUnknownVersion {
		return 0
	}
	if len(s.versionWarned) > 4096 {
		clear(s.versionWarned)
	}
	s.versionWarned[p]++
	return s.versionWarned[p]
}

func (s *stats) ignore(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ignored[reason]++
}

func (s *stats) snapshot() Stats {
	out := Stats{
		Broadcast: s.broadcast.Load(), Dropped: s.dropped.Load(), Published: s.published.Load(),
		PublishedChanges: s.publishedChanges.Load(), PublishErrors: s.publishErrors.Load(),
		Received: s.received.Load(), ReceivedChanges: s.receivedChanges.Load(), Applied: s.applied.Load(),
		Stale: s.stale.Load(), Skipped: s.skipped.Load(), ApplyErrors: s.applyErrors.Load(), Future: s.future.Load(), Refused: s.refused.Load(),
		PubsubBytesSent: s.pubsubBytesSent.Load(), PubsubBytesReceived: s.pubsubBytesReceived.Load(),
		Syncs: s.syncs.Load(), SyncErrors: s.syncErrors.Load(), SyncsServed: s.syncsServed.Load(),
		SyncsRefused: s.syncsRefused.Load(), SyncChangesSent: s.syncChangesSent.Load(),
		SyncChangesReceived: s.syncChangesReceived.Load(), SyncBytesSent: s.syncBytesSent.Load(),
		SyncBytesReceived: s.syncBytesReceived.Load(), Fetches: s.fetches.Load(),
		FetchErrors: s.fetchErrors.Load(), FetchDropped: s.fetchDropped.Load(),
		ValueBytesSent: s.valueBytesSent.Load(), ValueBytesReceived: s.valueBytesReceived.Load(),
		Repairs: s.repairs.Load(), RepairErrors: s.repairErrors.Load(), RepairsServed: s.repairsServed.Load(),
		RepairedEntries: s.repaired.Load(), RepairBytes: s.repairBytes.Load(),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out.Rejected = maps.Clone(s.rejected)
	out.RejectedByPeer = maps.Clone(s.rejectedByPeer)
	out.Ignored = maps.Clone(s.ignored)
	return out
}
