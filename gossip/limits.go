package gossip

import (
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
// per second (a token bucket each, in a bounded table).
type originRates struct {
	limit rate.Limit
	burst int
	now   func() time.Time
	mu    sync.Mutex
	rates map[peer.ID]*rate.Limiter
}

func newOriginRates(perSecond float64, burst int) *originRates {
	return &originRates{limit: rate.Limit(perSecond), burst: burst, now: time.Now, rates: map[peer.ID]*rate.Limiter{}}
}

// allow takes n changes from origin's bucket; a message larger than the
// whole burst is let through only when the bucket is full.
func (o *originRates) allow(origin peer.ID, n int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	l := o.rates[origin]
	if l == nil {
		if len(o.rates) >= maxLimitedPeers {
			for p, l := range o.rates {
				if l.TokensAt(now) >= float64(o.burst) {
					delete(o.rates, p)
				}
			}
		}
		l = rate.NewLimiter(o.limit, o.burst)
		o.rates[origin] = l
	}
	return l.AllowN(now, min(n, o.burst))
}
