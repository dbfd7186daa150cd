package reputation

import (
	"cmp"
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/univrs/peerstate/datastore"
)

// DefaultMaxPeers is how many peers a Book keeps in memory unless
// WithMaxPeers says otherwise.
const DefaultMaxPeers = 10_000

// LatencyAlpha is the weight of a new observation in the latency EWMA.
const LatencyAlpha = 0.2

// evictScan is how many of the least recently seen records eviction looks at
// to find one that is neither banned nor connected.
const evictScan = 16

// Errors of Book methods.
var (
	ErrInvalidPeer = errors.New("reputation: invalid peer id")
	ErrInvalidBan  = errors.New("reputation: invalid ban")
	ErrRunning     = errors.New("reputation: Run is already running")
)

// Option tunes New.
type Option func(*options)

type options struct {
	now      func() time.Time
	log      *slog.Logger
	maxPeers int
}

// WithClock sets the clock that drives decay, uptime and bans (time.Now by
// default).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithLogger sets the logger (discarded by default).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithMaxPeers bounds the records kept in memory (DefaultMaxPeers by
// default; n must be > 0). Beyond it the least recently seen record is
// evicted from memory, preferring one that is neither banned nor connected;
// its persisted record stays, and is merged back in at the next Flush if the
// peer shows up again.
func WithMaxPeers(n int) Option { return func(o *options) { o.maxPeers = n } }

// Book keeps the reputation of every peer. Its methods are safe for
// concurrent use. Observations, queries, Ban and Unban never do I/O; Load,
// Flush and Run do.
type Book struct {
	store datastore.Store
	p     Params
	now   func() time.Time
	log   *slog.Logger
	max   int

	mu      sync.Mutex
	live    map[peer.ID]*entry
	lru     *list.List // of *entry, most recently seen first
	evicted map[peer.ID]*entry
	pending map[peer.ID]*transition
	order   []peer.ID // pending, in order of first change
	dropped uint64    // dirty evicted records dropped unflushed

	subsMu sync.Mutex
	subs   []func(p peer.ID, from, to State)

	deliverMu sync.Mutex
	wake      chan struct{} // cap 1: something for Run to do
	running   atomic.Bool
}

type transition struct{ from, to State }

// entry is one peer's live record. Its parts refer to time at.
type entry struct {
	id          peer.ID
	pos, neg    float64
	at          time.Time
	counts      map[Event]uint64
	latency     time.Duration
	bannedUntil time.Time
	banReason   string
	connected   bool

	state State // last evaluated (and reported) state
	dirty bool
	gen   uint64 // bumped on every change, so Flush knows what it wrote
	merge bool   // created without the persisted record: merge it at Flush
	unban bool   // Unban asked before the merge: apply it after
	elem  *list.Element
}

// New returns a Book over store with params p. It starts nothing: call Load
// to read persisted records and run Run on a goroutine of the owner's.
func New(store datastore.Store, p Params, opts ...Option) (*Book, error) {
	if store == nil {
		return nil, errors.New("reputation: nil store")
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	o := options{now: time.Now, log: slog.New(slog.DiscardHandler), maxPeers: DefaultMaxPeers}
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case o.now == nil:
		return nil, errors.New("reputation: nil clock")
	case o.log == nil:
		return nil, errors.New("reputation: nil logger")
	case o.maxPeers <= 0:
		return nil, fmt.Errorf("reputation: max peers %d ≤ 0", o.maxPeers)
	}
	p.Weights = maps.Clone(p.Weights)
	return &Book{
		store: store, p: p, now: o.now, log: o.log, max: o.maxPeers,
		live: make(map[peer.ID]*entry), lru: list.New(), evicted: make(map[peer.ID]*entry),
		pending: make(map[peer.ID]*transition), wake: make(chan struct{}, 1),
	}, nil
}

// Params returns the book's parameters.
func (b *Book) Params() Params {
	p := b.p
	p.Weights = maps.Clone(p.Weights)
	return p
}

// Load reads the persisted records (every /peers/{id}/reputation), skipping
// and logging undecodable ones. A peer already observed since New gets the
// persisted record merged into what was observed (and OnState called, on the
// caller's goroutine, if that changes its state); one whose persisted record
// is already in memory is left alone. Loading a banned peer makes no OnState
// call: it starts Banned, and Banned reports it.
func (b *Book) Load(ctx context.Context) error {
	var recs []loaded
	after := ""
	for {
		page, err := b.store.List(ctx, KeyPrefix, datastore.ListOptions{After: after})
		if err != nil {
			return fmt.Errorf("reputation: load: %w", err)
		}
		for _, e := range page.Entries {
			if _, ok := peerOfKey(e.Key); !ok {
				continue
			}
			r, id, err := DecodeRecord(e.Key, e.Value)
			if err != nil {
				b.log.Warn("reputation: skipping undecodable record", "key", e.Key, "err", err)
				continue
			}
			recs = append(recs, loaded{id, r})
		}
		if !page.More {
			break
		}
		after = page.Next
	}
	// Oldest first, so that the most recently updated end up most recently
	// seen and survive eviction.
	slices.SortStableFunc(recs, func(a, c loaded) int { return a.r.UpdatedAt.Compare(c.r.UpdatedAt) })
	now := b.now()
	b.mu.Lock()
	for _, l := range recs {
		if e := b.lookup(l.id); e != nil {
			if e.merge {
				b.mergeInto(e, l.r, now)
				if e.unban {
					b.unbanLocked(e)
					e.unban = false
				}
				b.noteStateLocked(e, b.evalLocked(e, now))
			}
			continue
		}
		e := &entry{id: l.id}
		b.mergeInto(e, l.r, now)
		e.dirty = false
		e.state = b.evalLocked(e, now)
		b.insertLocked(e)
	}
	b.mu.Unlock()
	b.log.Debug("reputation: loaded", "records", len(recs))
	b.deliver() // peers observed before Load may have changed state
	return nil
}

type loaded struct {
	id peer.ID
	r  Record
}

// Observe records n occurrences of e from p. It is cheap, never blocks on
// I/O and is safe to call on pubsub's validation path. Unknown events, n ≤ 0
// and an empty peer ID are ignored.
func (b *Book) Observe(p peer.ID, e Event, n int) {
	if n <= 0 || p == "" || !e.Known() {
		return
	}
	now := b.now()
	b.mu.Lock()
	en := b.touchLocked(p, now)
	en.counts[e] += uint64(n)
	b.applyLocked(en, b.p.Weights[e]*float64(n))
	b.changedLocked(en, now)
	wake := b.wantRunLocked()
	b.mu.Unlock()
	if wake {
		b.poke()
	}
}

// ObserveLatency folds d into p's latency EWMA; a session slower than
// Params.SlowSync also costs Params.SlowSyncWeight.
func (b *Book) ObserveLatency(p peer.ID, d time.Duration) {
	if p == "" || d < 0 {
		return
	}
	now := b.now()
	b.mu.Lock()
	en := b.touchLocked(p, now)
	if en.latency == 0 {
		en.latency = d
	} else {
		en.latency = time.Duration(LatencyAlpha*float64(d) + (1-LatencyAlpha)*float64(en.latency))
	}
	if b.p.SlowSync > 0 && d > b.p.SlowSync {
		b.applyLocked(en, b.p.SlowSyncWeight)
	}
	b.changedLocked(en, now)
	wake := b.wantRunLocked()
	b.mu.Unlock()
	if wake {
		b.poke()
	}
}

// Connected marks p connected: uptime accrues until Disconnected.
func (b *Book) Connected(p peer.ID) { b.setConnected(p, true) }

// Disconnected stops p's uptime.
func (b *Book) Disconnected(p peer.ID) { b.setConnected(p, false) }

func (b *Book) setConnected(p peer.ID, c bool) {
	if p == "" {
		return
	}
	now := b.now()
	b.mu.Lock()
	en := b.touchLocked(p, now)
	en.connected = c
	b.changedLocked(en, now)
	wake := b.wantRunLocked()
	b.mu.Unlock()
	if wake {
		b.poke()
	}
}

// Score returns p's score now, decayed; 0 for an unknown peer.
func (b *Book) Score(p peer.ID) float64 {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.lookup(p)
	if e == nil {
		return 0
	}
	pos, neg := b.partsAt(e, now)
	return pos + neg
}

// State returns p's state now (Ok for an unknown peer).
func (b *Book) State(p peer.ID) State {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.lookup(p)
	if e == nil {
		return Ok
	}
	return b.evalLocked(e, now)
}

// Banned reports whether p's score is below BanThreshold or a manual ban of
// it is in force.
func (b *Book) Banned(p peer.ID) bool { return b.State(p) == Banned }

// RecoversIn returns how long p stays banned with no further events: the
// longer of the manual ban's remaining time and Params.RecoveryTime of its
// score. It is 0 for a peer that is not banned.
func (b *Book) RecoversIn(p peer.ID) time.Duration {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.lookup(p)
	if e == nil {
		return 0
	}
	pos, neg := b.partsAt(e, now)
	d := b.p.RecoveryTime(pos + neg)
	if e.bannedUntil.After(now) {
		d = max(d, e.bannedUntil.Sub(now))
	}
	return d
}

// Ban bans p by hand until the given time, which must be in the future; a
// later Ban replaces the earlier one. It is persisted at the next Flush.
func (b *Book) Ban(p peer.ID, until time.Time, reason string) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidPeer, err)
	}
	now := b.now()
	if !until.After(now) {
		return fmt.Errorf("%w: until %v is not after now (%v)", ErrInvalidBan, until, now)
	}
	b.mu.Lock()
	en := b.touchLocked(p, now)
	en.bannedUntil, en.banReason = until, reason
	en.unban = false
	b.changedLocked(en, now)
	wake := b.wantRunLocked()
	b.mu.Unlock()
	if wake {
		b.poke()
	}
	return nil
}

// Unban lifts p's manual ban and, if its score is below BanThreshold, lifts
// the score ban too: the negative part is raised so that the score is
// exactly BanThreshold. The peer is then on probation: Graylisted, and the
// next bad event bans it again; decay alone takes it back toward 0. Unban of
// a peer that is not banned changes nothing. For a peer not in memory (never
// seen, or evicted) the unban is applied when its persisted record is merged
// at the next Flush.
func (b *Book) Unban(p peer.ID) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidPeer, err)
	}
	now := b.now()
	b.mu.Lock()
	en := b.lookup(p)
	if en == nil {
		en = b.touchLocked(p, now)
		en.unban = true
	} else {
		b.advanceLocked(en, now)
		b.unbanLocked(en)
		en.unban = en.merge // the persisted record may hold a ban too
	}
	b.changedLocked(en, now)
	wake := b.wantRunLocked()
	b.mu.Unlock()
	if wake {
		b.poke()
	}
	return nil
}

func (b *Book) unbanLocked(e *entry) {
	e.bannedUntil, e.banReason = time.Time{}, ""
	if e.pos+e.neg >= b.p.BanThreshold {
		return
	}
	e.neg = max(b.p.BanThreshold-e.pos, b.p.MinScore)
	for e.pos+e.neg < b.p.BanThreshold && e.neg < 0 {
		e.neg = math.Nextafter(e.neg, 0) // rounding must not leave it a hair below
	}
}

// Record returns p's record now.
func (b *Book) Record(p peer.ID) (Record, bool) {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.lookup(p)
	if e == nil {
		return Record{}, false
	}
	return b.recordLocked(e, now), true
}

// Records returns every record in memory now, sorted by peer.
func (b *Book) Records() []Record {
	now := b.now()
	b.mu.Lock()
	out := make([]Record, 0, len(b.live)+len(b.evicted))
	for _, e := range b.live {
		out = append(out, b.recordLocked(e, now))
	}
	for _, e := range b.evicted {
		out = append(out, b.recordLocked(e, now))
	}
	b.mu.Unlock()
	slices.SortFunc(out, func(x, y Record) int { return cmp.Compare(x.Peer, y.Peer) })
	return out
}

// OnState registers fn to be called when a peer's state changes, e.g. to
// Banned so that the node can disconnect it. Calls are made outside the
// book's locks, one at a time, on the goroutine of Run (or of a Check, Load
// or Flush call), never on the goroutine of Observe or the other observation
// and query methods; so Observe never waits for fn. Without Run, changes
// wait (one pending entry per peer) until the next Check. For each
// peer, a call's from is the previous call's to: changes that happen between
// two deliveries are coalesced into one call, and none is made if the peer
// ended where it started. fn may call the book's methods except Check, Flush
// and Run.
func (b *Book) OnState(fn func(p peer.ID, from, to State)) {
	if fn == nil {
		return
	}
	b.subsMu.Lock()
	b.subs = append(b.subs, fn)
	b.subsMu.Unlock()
}

// Check re-evaluates every peer's state now (recovery by decay and expiry
// of manual bans happen without any event) and delivers the pending OnState
// calls on the caller's goroutine. Run calls it every FlushInterval.
func (b *Book) Check() {
	now := b.now()
	b.mu.Lock()
	for _, e := range b.live {
		b.checkLocked(e, now)
	}
	for _, e := range b.evicted {
		b.checkLocked(e, now)
	}
	b.mu.Unlock()
	b.deliver()
}

func (b *Book) checkLocked(e *entry, now time.Time) {
	if !e.bannedUntil.IsZero() && !e.bannedUntil.After(now) {
		e.bannedUntil, e.banReason = time.Time{}, ""
		e.dirty = true
		e.gen++
	}
	b.noteStateLocked(e, b.evalLocked(e, now))
}

// Flush persists every dirty record in one transaction. Records created in
// memory for a peer whose persisted record was not loaded (new peers, and
// evicted ones seen again) first get that record read and merged in.
// OnState calls those merges cause are made on the caller's goroutine.
func (b *Book) Flush(ctx context.Context) error {
	if err := b.resolveMerges(ctx); err != nil {
		return err
	}
	now := b.now()
	type out struct {
		id  peer.ID
		gen uint64
		rec Record
	}
	var outs []out
	b.mu.Lock()
	collect := func(e *entry) {
		if !e.dirty || e.merge {
			return // a record still waiting for its merge would overwrite the persisted one
		}
		b.advanceLocked(e, now)
		outs = append(outs, out{e.id, e.gen, b.recordLocked(e, now)})
	}
	for _, e := range b.live {
		collect(e)
	}
	for _, e := range b.evicted {
		collect(e)
	}
	dropped := b.dropped
	b.dropped = 0
	b.mu.Unlock()
	if dropped > 0 {
		b.log.Warn("reputation: evicted records dropped before they were flushed", "count", dropped)
	}
	if len(outs) == 0 {
		return nil
	}
	slices.SortFunc(outs, func(x, y out) int { return cmp.Compare(x.id, y.id) })
	ops := make([]datastore.Op, 0, len(outs))
	for _, o := range outs {
		v, err := json.Marshal(o.rec)
		if err != nil {
			return fmt.Errorf("reputation: flush: encode %s: %w", o.id, err)
		}
		ops = append(ops, datastore.OpSet(Key(o.id), v))
	}
	if _, err := b.store.Txn(ctx, ops...); err != nil {
		return fmt.Errorf("reputation: flush %d records: %w", len(ops), err)
	}
	b.mu.Lock()
	for _, o := range outs {
		if e := b.live[o.id]; e != nil && e.gen == o.gen {
			e.dirty = false
		}
		if e := b.evicted[o.id]; e != nil && e.gen == o.gen {
			delete(b.evicted, o.id)
		}
	}
	b.mu.Unlock()
	return nil
}

func (b *Book) resolveMerges(ctx context.Context) error {
	b.mu.Lock()
	var ids []peer.ID
	for id, e := range b.live {
		if e.merge {
			ids = append(ids, id)
		}
	}
	for id, e := range b.evicted {
		if e.merge {
			ids = append(ids, id)
		}
	}
	b.mu.Unlock()
	for _, id := range ids {
		key := Key(id)
		var rec *Record
		ent, err := b.store.Get(ctx, key)
		switch {
		case errors.Is(err, datastore.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("reputation: flush: read %s: %w", key, err)
		default:
			if r, _, err := DecodeRecord(key, ent.Value); err != nil {
				b.log.Warn("reputation: skipping undecodable record", "key", key, "err", err)
			} else {
				rec = &r
			}
		}
		now := b.now()
		b.mu.Lock()
		if e := b.lookup(id); e != nil && e.merge {
			if rec != nil {
				b.mergeInto(e, *rec, now)
			}
			e.merge = false
			if e.unban {
				b.advanceLocked(e, now)
				b.unbanLocked(e)
				e.unban = false
			}
			b.changedLocked(e, now)
		}
		b.mu.Unlock()
	}
	if len(ids) > 0 {
		b.deliver() // merged records may have changed state
	}
	return nil
}

// Run is the owner's goroutine: it delivers OnState calls as soon as they
// are pending, and every FlushInterval flushes (logging failures) and runs
// Check. When ctx ends it flushes a last time (with a fresh 10 s deadline)
// and returns ctx.Err(), joined with that flush's error if any. Only one Run
// may run at a time.
func (b *Book) Run(ctx context.Context) error {
	if !b.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer b.running.Store(false)
	t := time.NewTicker(b.p.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			err := b.Flush(fctx)
			cancel()
			b.deliver()
			return errors.Join(ctx.Err(), err)
		case <-b.wake:
			b.mu.Lock()
			flushSoon := len(b.evicted) >= max(1, b.max/2)
			b.mu.Unlock()
			if flushSoon {
				b.flushLogged(ctx)
			}
			b.deliver()
		case <-t.C:
			b.flushLogged(ctx)
			b.Check()
		}
	}
}

func (b *Book) flushLogged(ctx context.Context) {
	if err := b.Flush(ctx); err != nil && ctx.Err() == nil {
		b.log.Warn("reputation: flush failed", "err", err)
	}
}

// wantRunLocked reports whether Run has something to do now: OnState calls
// to deliver, or evicted records piling up for a flush.
func (b *Book) wantRunLocked() bool {
	return len(b.pending) > 0 || len(b.evicted) >= max(1, b.max/2)
}

// poke wakes Run without blocking.
func (b *Book) poke() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// deliver makes the pending OnState calls, outside b.mu.
func (b *Book) deliver() {
	b.deliverMu.Lock()
	defer b.deliverMu.Unlock()
	b.mu.Lock()
	order := b.order
	pend := b.pending
	b.order, b.pending = nil, make(map[peer.ID]*transition)
	b.mu.Unlock()
	if len(order) == 0 {
		return
	}
	b.subsMu.Lock()
	subs := slices.Clone(b.subs)
	b.subsMu.Unlock()
	for _, id := range order {
		t := pend[id]
		if t.from == t.to {
			continue
		}
		b.log.Info("reputation: peer state changed", "peer", id, "from", t.from, "to", t.to)
		for _, fn := range subs {
			fn(id, t.from, t.to)
		}
	}
}

// --- internals; all *Locked methods need b.mu held ---

func (b *Book) lookup(p peer.ID) *entry {
	if e := b.live[p]; e != nil {
		return e
	}
	return b.evicted[p]
}

// touchLocked returns p's live entry, creating it (or bringing it back from
// the evicted set) and marking it most recently seen, advanced to now.
func (b *Book) touchLocked(p peer.ID, now time.Time) *entry {
	if e := b.live[p]; e != nil {
		b.lru.MoveToFront(e.elem)
		b.advanceLocked(e, now)
		return e
	}
	e := b.evicted[p]
	if e != nil {
		delete(b.evicted, p)
		b.advanceLocked(e, now)
	} else {
		e = &entry{id: p, at: now, counts: make(map[Event]uint64), state: Ok, merge: true}
	}
	b.insertLocked(e)
	return e
}

func (b *Book) insertLocked(e *entry) {
	if e.counts == nil {
		e.counts = make(map[Event]uint64)
	}
	e.elem = b.lru.PushFront(e)
	b.live[e.id] = e
	for len(b.live) > b.max {
		b.evictLocked()
	}
}

func (b *Book) evictLocked() {
	victim := b.lru.Back()
	for el, i := victim, 0; el != nil && i < evictScan; el, i = el.Prev(), i+1 {
		if e := el.Value.(*entry); e.state != Banned && !e.connected {
			victim = el
			break
		}
	}
	e := victim.Value.(*entry)
	b.lru.Remove(victim)
	e.elem = nil
	delete(b.live, e.id)
	if !e.dirty && !e.merge {
		return // the persisted record is up to date
	}
	if len(b.evicted) >= b.max {
		b.dropped++
		return
	}
	b.evicted[e.id] = e
}

// partsAt returns e's parts decayed (and credited with uptime) to now,
// without changing e.
func (b *Book) partsAt(e *entry, now time.Time) (pos, neg float64) {
	if !now.After(e.at) {
		return e.pos, e.neg
	}
	dt := float64(now.Sub(e.at))
	h := float64(b.p.HalfLife)
	f := math.Exp2(-dt / h)
	pos, neg = e.pos*f, e.neg*f
	if e.connected && b.p.UptimeWeight > 0 {
		// ∫ w·2^(-(Δ-s)/H) ds over the Δ connected: exact and independent of
		// how often the record is advanced.
		pos += b.p.UptimeWeight * (h / float64(time.Hour)) / math.Ln2 * (1 - f)
	}
	return min(pos, b.p.MaxScore), neg
}

func (b *Book) advanceLocked(e *entry, now time.Time) {
	if !now.After(e.at) {
		return
	}
	uptime := e.connected && b.p.UptimeWeight > 0
	e.pos, e.neg = b.partsAt(e, now)
	e.at = now
	if uptime {
		e.dirty = true
		e.gen++
	}
}

// applyLocked adds a score change to the part its sign belongs to.
func (b *Book) applyLocked(e *entry, w float64) {
	switch {
	case w > 0:
		e.pos = min(e.pos+w, b.p.MaxScore)
	case w < 0:
		e.neg = max(e.neg+w, b.p.MinScore)
	}
}

// changedLocked marks e dirty and re-evaluates its state.
func (b *Book) changedLocked(e *entry, now time.Time) {
	e.dirty = true
	e.gen++
	b.noteStateLocked(e, b.evalLocked(e, now))
}

func (b *Book) evalLocked(e *entry, now time.Time) State {
	if e.bannedUntil.After(now) {
		return Banned
	}
	pos, neg := b.partsAt(e, now)
	return b.p.state(pos + neg)
}

func (b *Book) noteStateLocked(e *entry, s State) {
	if s == e.state {
		return
	}
	t := b.pending[e.id]
	if t == nil {
		t = &transition{from: e.state}
		b.pending[e.id] = t
		b.order = append(b.order, e.id)
	}
	t.to = s
	e.state = s
}

func (b *Book) recordLocked(e *entry, now time.Time) Record {
	pos, neg := b.partsAt(e, now)
	at := now
	if e.at.After(now) {
		at = e.at
	}
	r := Record{
		Peer: e.id.String(), Score: pos + neg, State: b.evalLocked(e, now),
		Positive: pos, Negative: neg, UpdatedAt: at, Latency: e.latency,
		BannedUntil: e.bannedUntil, BanReason: e.banReason, Connected: e.connected,
		Version: RecordVersion,
	}
	if len(e.counts) > 0 {
		r.Counts = maps.Clone(e.counts)
	}
	return r
}

// mergeInto adds persisted record r into e: both are brought to the later of
// their times, parts add (then capped and floored), counts add, the later
// manual ban wins, and e's latency wins unless it has none.
func (b *Book) mergeInto(e *entry, r Record, now time.Time) {
	rat := r.UpdatedAt
	if rat.After(now) {
		rat = now // a record from the future (clock moved back) is taken as now
	}
	t := e.at
	if t.IsZero() || rat.After(t) {
		t = rat
	}
	b.advanceLocked(e, t)
	e.at = t
	f := 1.0
	if t.After(rat) {
		f = math.Exp2(-float64(t.Sub(rat)) / float64(b.p.HalfLife))
	}
	e.pos = min(e.pos+r.Positive*f, b.p.MaxScore)
	e.neg = max(e.neg+r.Negative*f, b.p.MinScore)
	if e.counts == nil {
		e.counts = make(map[Event]uint64)
	}
	for ev, n := range r.Counts {
		e.counts[ev] += n
	}
	if e.latency == 0 {
		e.latency = r.Latency
	}
	if r.BannedUntil.After(e.bannedUntil) {
		e.bannedUntil, e.banReason = r.BannedUntil, r.BanReason
	}
	e.merge = false
	e.dirty = true
	e.gen++
}
