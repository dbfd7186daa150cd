// Package election elects one leader among candidates sharing a store, on
// a lease key (/cluster/leader by default): a candidate becomes leader by
// creating the key if it does not exist, keeps the lease by renewing it with
// compare-and-set before it runs out, and hands over by deleting it; a
// leader that stops renewing loses the lease when it runs out, and another
// candidate takes the key.
//
// The lease is a JSON value {holder, expires}: the holder's ID and the
// lease's end by the writer's clock. A term's number is the key's version
// when the term began; versions never repeat, even across the lease's
// deletion, so term numbers only grow and serve as fencing tokens. On a store that implements datastore.Expirer the
// key is also written with the lease as its TTL, so the store itself deletes
// an abandoned lease and every watcher sees it go; on other stores an expired
// lease is taken over by compare-and-set on its version.
//
// # Guarantees, per backend
//
// etcd (linearizable compare-and-set, one shared store): at most one
// candidate holds a given term, and a candidate that holds it knows so. A
// leader must still stop acting at Term.Deadline — computed from its own
// clock before the renewal was sent — since after that another candidate
// may take over; this is safe as long as clocks run at nearly the same rate
// (drift well below the lease length), the usual assumption of every lease.
//
// A single local store (memory, SQLite, Badger) shared by candidates in one
// process: the same as etcd.
//
// A replica under gossip: best effort. Compare-and-set is checked against
// each peer's own replica, so two peers that campaign while they cannot
// hear each other (a partition, or just the propagation delay) can both
// win. The replica's per-key order then picks one lease on every peer; the
// other leader sees the winner's lease arrive, its Term ends (Lost closes)
// and its next renewal fails. Until that arrives both act as leader. An
// expired lease is judged by each peer's clock, so clock skew moves
// hand-over earlier or later by the skew. Use it where two leaders for a
// moment are harmless (a maintenance task that is idempotent), and use etcd
// where they are not.
package election

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/univrs/peerstate/datastore"
)

// DefaultKey is the lease key.
const DefaultKey = "/cluster/leader"

// Errors; check them with errors.Is.
var (
	ErrNoLeader = errors.New("election: no leader")
	ErrLost     = errors.New("election: leadership lost")
	ErrClosed   = errors.New("election: closed")
	ErrBadLease = errors.New("election: lease key holds no valid lease")
)

// Config configures a candidate.
type Config struct {
	// ID names the candidate; required. Every candidate's must differ.
	ID string
	// Key is the lease key; DefaultKey if empty.
	Key string
	// TTL is the lease length; 10 s if 0.
	TTL time.Duration
	// RenewEvery is how often the leader renews; TTL/3 if 0. It must be
	// below TTL.
	RenewEvery time.Duration
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// DefaultConfig returns the defaults for candidate id.
func DefaultConfig(id string) Config {
	return Config{ID: id, Key: DefaultKey, TTL: 10 * time.Second, RenewEvery: 10 * time.Second / 3, Now: time.Now}
}

func (c *Config) fill() {
	if c.Key == "" {
		c.Key = DefaultKey
	}
	if c.TTL == 0 {
		c.TTL = 10 * time.Second
	}
	if c.RenewEvery == 0 {
		c.RenewEvery = c.TTL / 3
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	c.fill()
	switch {
	case c.ID == "":
		return errors.New("election: config: ID is required")
	case c.TTL < time.Millisecond:
		return fmt.Errorf("election: config: TTL %v is below 1ms", c.TTL)
	case c.RenewEvery <= 0 || c.RenewEvery >= c.TTL:
		return fmt.Errorf("election: config: RenewEvery %v must be positive and below TTL %v", c.RenewEvery, c.TTL)
	}
	if err := datastore.ValidateKey(c.Key); err != nil {
		return fmt.Errorf("election: config: key: %w", err)
	}
	return nil
}

// Lease is what the lease key holds.
type Lease struct {
	Holder  string `json:"holder"`
	Expires int64  `json:"expires"` // Unix nanoseconds, by the writer's clock
}

// ExpiresAt returns the lease's end.
func (l Lease) ExpiresAt() time.Time { return time.Unix(0, l.Expires) }

// Election is one candidate. It is safe for concurrent use.
type Election struct {
	s   datastore.Store
	cfg Config
	ttl bool // the store expires keys itself

	mu     sync.Mutex
	closed bool
	term   *Term
	stop   chan struct{}
	wg     sync.WaitGroup
}

// New returns a candidate over s; it does not own s.
func New(s datastore.Store, cfg Config) (*Election, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.fill()
	return &Election{s: s, cfg: cfg, ttl: datastore.HasTTL(s), stop: make(chan struct{})}, nil
}

// Leader returns the current lease; ErrNoLeader if there is none or it has
// run out by our clock.
func (e *Election) Leader(ctx context.Context) (Lease, error) {
	l, _, err := e.read(ctx)
	if err != nil {
		return Lease{}, err
	}
	if l == nil || !e.cfg.Now().Before(l.ExpiresAt()) {
		return Lease{}, ErrNoLeader
	}
	return *l, nil
}

// read returns the lease and the key's version; nil when absent.
func (e *Election) read(ctx context.Context) (*Lease, uint64, error) {
	en, err := e.s.Get(ctx, e.cfg.Key)
	if errors.Is(err, datastore.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("election: read %s: %w", e.cfg.Key, err)
	}
	var l Lease
	if err := json.Unmarshal(en.Value, &l); err != nil || l.Holder == "" {
		return nil, en.Version, fmt.Errorf("%w: %s: %q", ErrBadLease, e.cfg.Key, en.Value)
	}
	return &l, en.Version, nil
}

// write puts l at the key if it is at version expected (0: absent), with
// the lease as TTL where the store supports it, and returns the new version;
// false when another write got there first.
func (e *Election) write(ctx context.Context, expected uint64, l Lease) (uint64, bool, error) {
	b, err := json.Marshal(l)
	if err != nil {
		return 0, false, err
	}
	set := datastore.OpSet(e.cfg.Key, b)
	if e.ttl {
		set = datastore.OpSetTTL(e.cfg.Key, b, e.cfg.TTL)
	}
	res, err := e.s.Txn(ctx, datastore.OpCheckVersion(e.cfg.Key, expected), set)
	if errors.Is(err, datastore.ErrTxnFailed) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("election: write %s: %w", e.cfg.Key, err)
	}
	return res.Versions[1], true, nil
}

// TryAcquire makes one attempt to become leader: it creates the lease if
// there is none, or takes it over if it ran out. It returns the Term when it
// succeeded, nil when another candidate leads.
func (e *Election) TryAcquire(ctx context.Context) (*Term, error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, ErrClosed
	}
	if t := e.term; t != nil && t.active() {
		e.mu.Unlock()
		return t, nil
	}
	e.mu.Unlock()
	cur, ver, err := e.read(ctx)
	if err != nil && !errors.Is(err, ErrBadLease) {
		return nil, err
	}
	start := e.cfg.Now()
	next := Lease{Holder: e.cfg.ID, Expires: start.Add(e.cfg.TTL).UnixNano()}
	if cur != nil && start.Before(cur.ExpiresAt()) && cur.Holder != e.cfg.ID {
		return nil, nil // someone else holds a live lease
	}
	v, ok, err := e.write(ctx, ver, next)
	if err != nil || !ok {
		return nil, err
	}
	return e.startTerm(next, v, start)
}

// Campaign blocks until this candidate is leader, or ctx ends. It retries
// whenever the lease key changes and when the current lease runs out.
func (e *Election) Campaign(ctx context.Context) (*Term, error) {
	w, err := e.s.Watch(ctx, e.cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("election: watch %s: %w", e.cfg.Key, err)
	}
	defer w.Close()
	for {
		t, err := e.TryAcquire(ctx)
		if err != nil || t != nil {
			return t, err
		}
		wait := e.cfg.RenewEvery
		if l, _, err := e.read(ctx); err == nil && l != nil {
			wait = min(max(l.ExpiresAt().Sub(e.cfg.Now()), time.Millisecond), wait)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-e.stop:
			timer.Stop()
			return nil, ErrClosed
		case _, ok := <-w.Events():
			timer.Stop()
			if !ok {
				if err := w.Err(); err != nil {
					return nil, fmt.Errorf("election: watch %s: %w", e.cfg.Key, err)
				}
				return nil, ctx.Err()
			}
		case <-timer.C:
		}
	}
}

// Close stops campaigning and renewing, without resigning: a lease this
// candidate holds runs out by itself (as after a crash). Use Term.Resign to
// hand over at once. Close waits for the renewal goroutine; it is
// idempotent.
func (e *Election) Close() error {
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		close(e.stop)
	}
	e.mu.Unlock()
	e.wg.Wait()
	return nil
}
