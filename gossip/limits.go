package gossip

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
)

// Per-peer limits on what this peer serves. A peer that hits one is refused
// or cut off and reported (Config.OnReject) with one of these reasons; they
// are not validation failures but abuse of the service, which reputation
// scores as such.
const (
	ReasonSessionLimit   = "session-limit"   // too many catch-up/repair sessions at once or too often
	ReasonBandwidth      = "bandwidth"       // served more bytes than its budget allows
	ReasonSessionTimeout = "session-timeout" // a session outlived Config.SessionTimeout
)

// errBudget ends a served session whose peer ran out of byte budget.
var errBudget = errors.New("gossip: peer's serving budget exhausted")

// peerLimits enforces, per remote peer, the limits on the catch-up and
// repair sessions this peer serves: concurrency, a session rate and a
// served-bytes budget, each a token bucket (golang.org/x/time/rate). Its
// table is bounded: idle peers whose buckets are full again carry no state
// worth keeping and are swept.
type peerLimits struct {
	cfg   Config
	now   func() time.Time
	mu    sync.Mutex
	peers map[peer.ID]*peerBudget
}

type peerBudget struct {
	active   int
	sessions *rate.Limiter
	bytes    *rate.Limiter
}

// maxLimitedPeers is the table size above which idle entries are swept.
const maxLimitedPeers = 4096

func newPeerLimits(cfg Config) *peerLimits {
	return &peerLimits{cfg: cfg, now: time.Now, peers: map[peer.ID]*peerBudget{}}
}

// begin admits a session from p, or says which limit refuses it. On
// success the caller must call end when the session is over.
func (l *peerLimits) begin(p peer.ID) (end func(), reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.peers[p]
	if b == nil {
		if len(l.peers) >= maxLimitedPeers {
			l.sweep(now)
		}
		b = &peerBudget{
			sessions: rate.NewLimiter(rate.Limit(l.cfg.SessionRate), l.cfg.SessionBurst),
			bytes:    rate.NewLimiter(rate.Limit(l.cfg.ServeBytesRate), l.cfg.ServeBytesBurst),
		}
		l.peers[p] = b
	}
	if b.active >= l.cfg.MaxSessionsPerPeer || !b.sessions.AllowN(now, 1) {
		return nil, ReasonSessionLimit
	}
	b.active++
	return func() {
		l.mu.Lock()
		b.active--
		l.mu.Unlock()
	}, ""
}

// spend takes n bytes from p's budget; false when it does not hold them.
func (l *peerLimits) spend(p peer.ID, n int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.peers[p]
	return b != nil && b.bytes.AllowN(l.now(), n)
}

// sweep forgets idle peers whose buckets have refilled; the caller holds
// l.mu.
func (l *peerLimits) sweep(now time.Time) {
	for p, b := range l.peers {
		if b.active == 0 && b.sessions.TokensAt(now) >= float64(l.cfg.SessionBurst) &&
			b.bytes.TokensAt(now) >= float64(l.cfg.ServeBytesBurst) {
			delete(l.peers, p)
		}
	}
	if len(l.peers) >= maxLimitedPeers { // all busy or in debt: drop the oldest-looking at random
		for p, b := range l.peers {
			if b.active == 0 {
				delete(l.peers, p)
				if len(l.peers) < maxLimitedPeers/2 {
					break
				}
			}
		}
	}
}

// budgetWriter charges every write to the peer's byte budget.
type budgetWriter struct {
	l *peerLimits
	p peer.ID
	w interface{ Write([]byte) (int, error) }
}

func (b budgetWriter) Write(buf []byte) (int, error) {
	if !b.l.spend(b.p, len(buf)) {
		return 0, fmt.Errorf("%w (%d bytes/s, burst %d)", errBudget, b.l.cfg.ServeBytesRate, b.l.cfg.ServeBytesBurst)
	}
	return b.w.Write(buf)
}

// originRates bounds, per origin, the changes a Gossip accepts from pubsub
// per second, and how fast it verifies them while the origin has no
// standing (two token buckets each, in a bounded table).
type originRates struct {
	limit, verifyLimit rate.Limit
	burst, verifyBurst int
	now                func() time.Time
	mu                 sync.Mutex
	rates              map[peer.ID]*originRate
}

type originRate struct {
	publish *rate.Limiter // what it may publish: OriginRate, OriginBurst
	verify  *rate.Limiter // verification while a newcomer: NewcomerRate, NewcomerBurst
}

func newOriginRates(cfg Config) *originRates {
	return &originRates{
		limit: rate.Limit(cfg.OriginRate), burst: cfg.OriginBurst,
		verifyLimit: rate.Limit(cfg.NewcomerRate), verifyBurst: cfg.NewcomerBurst,
		now: time.Now, rates: map[peer.ID]*originRate{},
	}
}

// allow takes n changes from origin's bucket; a message larger than the
// whole burst is let through only when the bucket is full.
func (o *originRates) allow(origin peer.ID, n int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	return o.entryLocked(origin, now).publish.AllowN(now, min(n, o.burst))
}

// spent reports whether origin has used its whole rate: its bucket holds
// less than one change. An origin not tracked has not.
func (o *originRates) spent(origin peer.ID) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	e := o.rates[origin]
	return e != nil && e.publish.TokensAt(o.now()) < 1
}

// verifier is origin's verification bucket, for a newcomer: wait on it
// for each change.
func (o *originRates) verifier(origin peer.ID) *rate.Limiter {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.entryLocked(origin, o.now()).verify
}

// entryLocked returns origin's buckets, made full if it has none; when the
// table is full, the origins whose buckets are full again (idle long
// enough to have forgotten them) are dropped first.
func (o *originRates) entryLocked(origin peer.ID, now time.Time) *originRate {
	if e := o.rates[origin]; e != nil {
		return e
	}
	if len(o.rates) >= maxLimitedPeers {
		for p, e := range o.rates {
			if e.publish.TokensAt(now) >= float64(o.burst) && e.verify.TokensAt(now) >= float64(o.verifyBurst) {
				delete(o.rates, p)
			}
		}
	}
	e := &originRate{publish: rate.NewLimiter(o.limit, o.burst), verify: rate.NewLimiter(o.verifyLimit, o.verifyBurst)}
	o.rates[origin] = e
	return e
}

// originLanes verifies each origin's messages one at a time: the validator
// runs concurrently for every message pubsub receives, so without lanes an
// origin publishing a burst has as many goroutines verifying its
// signatures as it has messages in flight, and every other origin's
// messages wait for the CPU behind them. With lanes an origin's messages
// are verified one at a time however many it sends (within its rate), and
// a quiet origin's message is verified as soon as it arrives.
type originLanes struct {
	mu    sync.Mutex
	lanes map[peer.ID]*lane
}

// lane is one origin's: busy holds a token while a message is verified;
// users counts the validators holding or waiting for it, so that an idle
// lane is dropped and the table holds only origins in flight (at most
// pubsub's validation concurrency).
type lane struct {
	busy  chan struct{}
	users int
}

// errBacklog: an origin has as many messages waiting in its lane as it may.
var errBacklog = errors.New("gossip: origin backlog full")

func newOriginLanes() *originLanes { return &originLanes{lanes: map[peer.ID]*lane{}} }

// enter waits for origin's lane and returns the function that leaves it.
// With backlog > 0 a lane already held by that many messages is not
// entered (errBacklog); ctx ending returns its error.
func (o *originLanes) enter(ctx context.Context, origin peer.ID, backlog int) (leave func(), err error) {
	o.mu.Lock()
	l := o.lanes[origin]
	if l == nil {
		l = &lane{busy: make(chan struct{}, 1)}
		o.lanes[origin] = l
	}
	if backlog > 0 && l.users >= backlog {
		o.mu.Unlock()
		return nil, errBacklog
	}
	l.users++
	o.mu.Unlock()
	select {
	case l.busy <- struct{}{}:
		return func() { <-l.busy; o.release(origin, l) }, nil
	case <-ctx.Done():
		o.release(origin, l)
		return nil, ctx.Err()
	}
}

func (o *originLanes) release(origin peer.ID, l *lane) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if l.users--; l.users == 0 {
		delete(o.lanes, origin)
	}
}

// inFlight is the number of origins with a message being verified or
// waiting to be.
func (o *originLanes) inFlight() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.lanes)
}
