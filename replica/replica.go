// Package replica is the replication state machine of peerstate. A Replica
// wraps a local datastore.Store and is itself a datastore.Store: every local
// write gets replication metadata (origin peer ID, per-origin sequence number,
// hybrid logical clock timestamp) and is handed to a Broadcaster; remote
// changes are applied with compare-and-set against the local store under one
// deterministic order per key — higher version wins, then the later HLC
// timestamp, then the greater origin ID — so every peer ends with the same
// entry (value, version, timestamps) for every key, and versions never go
// backwards.
//
// Consistency is eventual. CompareAndSet and Txn are checked against the
// local replica: two peers may both win a CAS on one key at the same moment;
// the order above then picks one, and the loser's watchers see the winner's
// value as an ordinary Updated event. Clusters that need linearizable CAS
// across machines use the etcd backend instead.
//
// "Higher version wins" favours the peer that wrote a key more often: a
// write's version is the writer's version of the key plus one, so if a sets
// /k twice (versions 1, 2) while b, having seen only version 1, sets it once
// (version 2), the tie goes to the later timestamp; a's third write
// (version 3) then wins over b's whatever the clocks say. Compare-and-set on
// the version read detects a concurrent local writer; across machines use
// the etcd backend.
//
// Integrity. Every change is signed by its origin (Config.Key) over a
// canonical encoding of what orders and identifies it, and Apply checks the
// signature on every path, so any peer may relay changes and none can forge
// them. Sequence numbers count within a generation, new each time a replica
// opens, so a peer that lost its store or runs from an old backup is never
// taken for stale. What a peer merely claims moves nothing beyond what
// signed data proves: watermarks stop at signed heads (Advance), a snapshot
// drops neither our own writes nor anything younger than the grace period
// (Reconcile), and versions are bounded by their timestamps
// (Change.Validate) and never wrap (datastore.MaxVersion). State
// fingerprints (StateFingerprint, Summarize, Items) let peers find and
// repair any divergence.
//
// Deletes replicate as tombstones (a deleted key keeps its version), so a
// delete is ordered like any write and a deleted value never comes back.
//
// The replica keeps its bookkeeping — per-origin watermarks and an index of
// each key's current change by origin and sequence — in the local store under
// the reserved prefix /.peerstate, written in the same local transaction as
// the data it covers. Users cannot write there, and List and Watch never show
// it. The catch-up protocol (package gossip) uses the watermarks to stream
// only the changes a peer lacks.
package replica

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/internal/engine"
)

var _ datastore.Store = (*Replica)(nil)

// Broadcaster is what a replica hands its local changes to: the gossip
// transport, or a simulated network.
type Broadcaster interface {
	// Broadcast publishes changes made on this peer, in sequence order. It
	// must not block for long; a lost broadcast is repaired by catch-up.
	Broadcast(ctx context.Context, changes []Change) error
}

// Config configures a Replica.
type Config struct {
	// Key is this peer's libp2p identity key; it signs every local change.
	// Required. Its peer ID must embed the public key (Ed25519 or
	// secp256k1), so that receivers can check signatures from the ID alone.
	Key crypto.PrivKey
	// ID is this peer's ID, the origin of its writes; derived from Key when
	// empty, and must match it otherwise.
	ID string
	// Broadcaster receives local changes; nil until SetBroadcaster.
	Broadcaster Broadcaster
	// Prefixes limits replication to keys under them; empty replicates
	// everything. Other keys stay local. Widening them between runs makes
	// the next catch-ups fetch what was skipped.
	Prefixes []string
	// Now is the wall clock; time.Now if nil.
	Now func() time.Time
	// MaxValueSize caps values, local and remote; 0 means 64 MiB.
	MaxValueSize int
	// MaxClockSkew bounds how far ahead of our clock a peer's timestamp may
	// be: changes stamped further ahead are not applied yet (catch-up brings
	// them again later). 0 means one minute.
	MaxClockSkew time.Duration
	// DeleteMissingOK makes Delete of an absent key succeed.
	DeleteMissingOK bool
	// TombstoneGrace is how old (by its timestamp) a tombstone must be
	// before it may be collected, besides being behind every member's
	// watermark; 0 means 24 hours. See CollectTombstones. Nothing younger
	// than this is ever dropped on a peer's word.
	TombstoneGrace time.Duration
	// MaxPeers bounds the peers whose vectors are remembered for tombstone
	// collection; the least recently seen are forgotten first. 0 means 1024.
	MaxPeers int
	// Local lists key patterns (datastore pattern syntax: "*" one segment,
	// "**" any) kept on this peer only, even under replicated prefixes:
	// written here, never sent, and remote changes to them are skipped.
	// Peers should agree on them as they do on prefixes: a peer that keeps
	// a key local says nothing, in catch-up, about others' changes to it.
	Local []string
	// Admit, if set, decides which changes of replicated keys may enter
	// the store: the place for a write policy and for schema checks. It
	// sees every remote change once its signature has been verified, and
	// every local change before it commits (with Origin set to ID); keys
	// kept local are not its business. A remote change it refuses is
	// left out, counted in ApplyResult.Refused, and still counts as
	// incorporated for watermarks, so peers with different rules converge
	// on what both accept and catch-up does not bring it back; a local write
	// with a refused change fails as a whole with the error, which wraps
	// ErrRefused. It must be safe for concurrent use and should depend on
	// the change alone, so that every peer with the same rules decides the
	// same way.
	Admit func(c Change) error
}

// ErrRefused wraps the error of Config.Admit for a change it refused.
var ErrRefused = errors.New("change refused")

// DefaultMaxValueSize is the default value cap.
const DefaultMaxValueSize = 64 << 20

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Key == nil {
		return errors.New("replica: config: Key is required: every change is signed")
	}
	id, err := peer.IDFromPrivateKey(c.Key)
	if err != nil {
		return fmt.Errorf("replica: config: Key: %w", err)
	}
	if _, err := id.ExtractPublicKey(); err != nil {
		return fmt.Errorf("replica: config: Key: a %s key's peer ID does not embed it; use Ed25519: %w", c.Key.Type(), err)
	}
	if c.ID != "" && c.ID != id.String() {
		return fmt.Errorf("replica: config: ID %q is not the peer ID of Key (%s)", c.ID, id)
	}
	if err := ValidateOrigin(id.String()); err != nil {
		return fmt.Errorf("replica: config: ID: %w", err)
	}
	for _, p := range c.Prefixes {
		if err := datastore.ValidatePrefix(p); err != nil {
			return fmt.Errorf("replica: config: prefix: %w", err)
		}
	}
	for _, p := range c.Local {
		if _, err := datastore.ParsePattern(p); err != nil {
			return fmt.Errorf("replica: config: local pattern: %w", err)
		}
	}
	if c.MaxValueSize < 0 || c.MaxClockSkew < 0 || c.TombstoneGrace < 0 || c.MaxPeers < 0 {
		return errors.New("replica: config: negative limit")
	}
	return nil
}

// Replica is a replicated datastore.Store; see the package doc.
type Replica struct {
	engine.Writes
	local     datastore.Store
	cfg       Config
	prefixes  []string            // normalized: each ends in "/"; nil: all
	keepLocal []datastore.Pattern // Config.Local
	clock     *hlcClock
	bc        atomic.Pointer[Broadcaster]
	gen       uint64 // our generation: new each time the replica opens
	source    string // SourceOf(cfg.ID, gen)
	keys      keyCache
	fp        *fingerprints
	expiries  *engine.ExpiryIndex // the keys whose values expire (ttl.go)
	expiry    *engine.Expiry

	// mu guards the replication state. Remote changes, watermarks and
	// tombstone collection are written under it; local writes are planned
	// under it and commit outside it, their keys marked in flight.
	mu         sync.Mutex
	inflight   map[string]chan struct{} // keys of local writes committing; closed when done
	seqNext    uint64                   // our next sequence number in gen
	genPending bool                     // gen is not recorded in the store yet
	ownHead    Change                   // our highest committed change in gen, value left out
	seqs       map[string]*seqSet       // per source; seqs[source] counts our numbers done
	heads      map[string]Change        // per source: its highest signed change we know, value left out
	peers      map[string]observed      // other peers' vectors, from catch-up exchanges
	collected  Vector                   // per source: tombstones up to here may be gone
	scanned    Vector                   // per source: no collectable tombstone up to here
	retired    retirement               // the sources retired (retire.go)
	floors     map[uint16]uint64        // per key bucket: versions of collected keys are at most this

	watchers sync.WaitGroup
	closing  chan struct{}
	close    sync.Once
}

// New wraps local, loading the replication state it keeps, and starts a new
// generation of this peer's writes. The replica owns local from then on:
// Close closes it.
//
// Each opening starts a new generation, numbered above the last one this
// store recorded and above the wall clock's Unix nanoseconds: a peer that
// lost its store, or runs from a restored backup, writes under a
// generation nobody has seen, so its new writes are never taken for stale
// ones.
func New(ctx context.Context, local datastore.Store, cfg Config) (*Replica, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	id, _ := peer.IDFromPrivateKey(cfg.Key)
	cfg.ID = id.String()
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxValueSize == 0 {
		cfg.MaxValueSize = DefaultMaxValueSize
	}
	if cfg.MaxClockSkew == 0 {
		cfg.MaxClockSkew = time.Minute
	}
	if cfg.TombstoneGrace == 0 {
		cfg.TombstoneGrace = 24 * time.Hour
	}
	if cfg.MaxPeers == 0 {
		cfg.MaxPeers = 1024
	}
	var patterns []datastore.Pattern
	for _, p := range cfg.Local {
		pat, _ := datastore.ParsePattern(p) // checked by Validate
		patterns = append(patterns, pat)
	}
	r := &Replica{
		local:     local,
		cfg:       cfg,
		prefixes:  NormalizePrefixes(cfg.Prefixes),
		keepLocal: patterns,
		clock:     &hlcClock{now: cfg.Now, maxSkew: cfg.MaxClockSkew},
		fp:        newFingerprints(),
		seqs:      map[string]*seqSet{},
		heads:     map[string]Change{},
		peers:     map[string]observed{},
		collected: Vector{},
		scanned:   Vector{},
		floors:    map[uint16]uint64{},
		inflight:  map[string]chan struct{}{},
		seqNext:   1,
		closing:   make(chan struct{}),
	}
	r.Writes = engine.Writes{C: committer{r}, MaxValueSize: cfg.MaxValueSize, TTL: true}
	r.expiries = engine.NewExpiryIndex()
	r.expiry = engine.NewExpiry(r.expiries, expiryCommitter{r}, cfg.Now)
	if cfg.Broadcaster != nil {
		r.SetBroadcaster(cfg.Broadcaster)
	}
	if err := r.load(ctx); err != nil {
		r.expiry.Close()
		return nil, err
	}
	return r, nil
}

// NormalizePrefixes puts a prefix set in canonical form: each prefix ends in
// "/" and covers the key before it and everything under it ("/a/" covers /a
// and /a/...), sorted without duplicates; nil means every key.
func NormalizePrefixes(ps []string) []string {
	var out []string
	for _, p := range ps {
		if p == "" || p == "/" {
			return nil
		}
		if !strings.HasSuffix(p, "/") {
			p += "/"
		}
		out = append(out, p)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// IntersectPrefixes returns the keys both prefix sets cover, as a prefix
// set, and whether they overlap at all.
func IntersectPrefixes(a, b []string) ([]string, bool) {
	na, nb := NormalizePrefixes(a), NormalizePrefixes(b)
	if na == nil {
		return nb, true
	}
	if nb == nil {
		return na, true
	}
	var out []string
	for _, p := range na {
		for _, q := range nb {
			switch {
			case strings.HasPrefix(p, q):
				out = append(out, p)
			case strings.HasPrefix(q, p):
				out = append(out, q)
			}
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	return out, len(out) > 0
}

// load reads the replication state and starts our new generation.
func (r *Replica) load(ctx context.Context) error {
	// The layout version is recorded with our first write (planLocal); a
	// store of the first layout, which had none, is told apart by its
	// watermark keys (no generation).
	var ops []datastore.Op
	format, err := r.local.Get(ctx, formatKey)
	switch {
	case errors.Is(err, datastore.ErrKeyNotFound):
	case err != nil:
		return fmt.Errorf("replica: read bookkeeping format: %w", err)
	case string(format.Value) != layoutFormat:
		return fmt.Errorf("replica: the store holds replication state of layout %q; this peerstate reads layout %s", format.Value, layoutFormat)
	}
	var last uint64
	if e, err := r.local.Get(ctx, genKey); err == nil {
		if last, err = strconv.ParseUint(string(e.Value), 10, 64); err != nil {
			return fmt.Errorf("replica: corrupt generation: %w", err)
		}
	} else if !errors.Is(err, datastore.ErrKeyNotFound) {
		return fmt.Errorf("replica: read generation: %w", err)
	}
	r.gen = max(uint64(r.cfg.Now().UnixNano()), last+1)
	r.source = SourceOf(r.cfg.ID, r.gen)
	r.seqs[r.source] = &seqSet{}
	// The generation is recorded with the first local write that uses it
	// (planLocal), so opening a store writes nothing unless its
	// configuration changed.
	r.genPending = true

	err = r.scan(ctx, watermarkRoot, func(e datastore.Entry) error {
		rest := strings.TrimPrefix(e.Key, watermarkRoot)
		src, ok := parseSourcePath(rest)
		n, err := strconv.ParseUint(string(e.Value), 10, 64)
		if !ok && !strings.Contains(rest, "/") {
			return fmt.Errorf("replica: the store holds replication state of an older format (layout 1); start this peer on an empty data directory and let it catch up")
		}
		if !ok || err != nil {
			return fmt.Errorf("replica: corrupt watermark %q", e.Key)
		}
		r.seqs[src] = &seqSet{contig: n}
		return nil
	})
	if err != nil {
		return err
	}
	err = r.scan(ctx, headRoot, func(e datastore.Entry) error {
		c, err := decodeEnvelope(e.Key, e.Value)
		if err != nil {
			return err
		}
		r.heads[c.Source()] = c
		return nil
	})
	if err != nil {
		return err
	}
	err = r.scan(ctx, horizonRoot, func(e datastore.Entry) error {
		src, ok := parseSourcePath(strings.TrimPrefix(e.Key, horizonRoot))
		n, err := strconv.ParseUint(string(e.Value), 10, 64)
		if !ok || err != nil {
			return fmt.Errorf("replica: corrupt horizon %q", e.Key)
		}
		r.collected[src] = n
		return nil
	})
	if err != nil {
		return err
	}
	err = r.scan(ctx, floorRoot, func(e datastore.Entry) error {
		b, err1 := strconv.ParseUint(strings.TrimPrefix(e.Key, floorRoot), 10, 16)
		n, err2 := strconv.ParseUint(string(e.Value), 10, 64)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("replica: corrupt version floor %q", e.Key)
		}
		r.floors[uint16(b)] = n
		return nil
	})
	if err != nil {
		return err
	}
	if err := r.loadRetirement(ctx); err != nil {
		return err
	}
	if err := r.loadPeers(ctx); err != nil {
		return err
	}
	// Our earlier generations: we incorporated all of them, up to the
	// highest number our index still holds, which is also their head. They
	// are served in catch-up like any source, so a peer that missed them
	// (or our own restored store) gets them.
	own := map[string]uint64{}
	err = r.scan(ctx, indexRoot+r.cfg.ID+"/", func(e datastore.Entry) error {
		if src, seq, ok := parseIndexKey(e.Key); ok {
			own[src] = max(own[src], seq)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for src, top := range own {
		if s := r.seqs[src]; s == nil || s.contig < top {
			r.seqs[src] = &seqSet{contig: top}
		}
		if r.heads[src].Seq < top {
			key, err := r.local.Get(ctx, indexKey(src, top))
			if err != nil {
				return fmt.Errorf("replica: read own index: %w", err)
			}
			if c, found, err := r.current(ctx, string(key.Value)); err == nil && found && c.Source() == src && c.Seq == top {
				r.heads[src] = c.Elide()
			}
		}
	}
	// Widened prefixes: what the old watermarks counted as incorporated was
	// partly skipped, so they start over and catch-up brings the rest.
	prev, err := r.local.Get(ctx, prefixesKey)
	switch {
	case err == nil:
		var old, oldLocal []string
		if s := string(prev.Value); s != "" {
			for _, line := range strings.Split(s, "\n") {
				if pat, ok := strings.CutPrefix(line, "!"); ok {
					oldLocal = append(oldLocal, pat)
				} else {
					old = append(old, line)
				}
			}
		}
		if old == nil {
			old = []string{"/"}
		}
		if !coversAll(NormalizePrefixes(old), r.prefixes) || !r.keepsLocal(oldLocal) {
			for src := range r.seqs {
				if src != r.source {
					ops = append(ops, datastore.OpDelete(watermarkKey(src)))
					delete(r.seqs, src)
				}
			}
		}
	case !errors.Is(err, datastore.ErrKeyNotFound):
		return fmt.Errorf("replica: read prefixes: %w", err)
	}
	if len(ops) > 0 { // record the new prefixes with the reset
		ops = append(ops, datastore.OpSet(prefixesKey, []byte(strings.Join(r.replicationRecord(), "\n"))))
	}
	if len(ops) > 0 {
		if _, err := r.local.Txn(ctx, ops...); err != nil {
			return fmt.Errorf("replica: record prefixes: %w", err)
		}
	}
	// Fingerprints of the live replicated keys; the clock must not fall
	// behind any timestamp we hold. Keys written while they were local
	// only and replicated now (the prefixes widened) are promoted: they
	// get a sequence number of this generation and a signature, and
	// replicate like any write, competing by their own version and time.
	var promote []Change
	err = r.scanUser(ctx, func(c Change) error {
		r.clock.Observe(c.HLC)
		r.noteExpiry([]Change{c})
		switch {
		case !r.Replicates(c.Key):
		case c.Seq == 0:
			promote = append(promote, c)
		default:
			r.fp.set(c)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return r.promote(ctx, promote)
}

// promote makes local-only state replicated; see load.
func (r *Replica) promote(ctx context.Context, cs []Change) error {
	for len(cs) > 0 {
		n := min(len(cs), applyChunkChanges)
		ops := r.bookOps()
		var done []Change
		for _, c := range cs[:n] {
			next := c
			next.Origin, next.Gen, next.Seq = r.cfg.ID, r.gen, r.seqNext
			r.seqNext++
			if err := sign(r.cfg.Key, &next, true); err != nil {
				return err
			}
			wops, err := r.replaceOps(c, true, next)
			if err != nil {
				return err
			}
			ops = append(ops, wops...)
			done = append(done, next)
		}
		if _, err := r.local.Txn(ctx, ops...); err != nil {
			return fmt.Errorf("replica: replicate keys under widened prefixes: %w", err)
		}
		r.genPending = false
		r.noteExpiry(done)
		for _, c := range done {
			r.seqs[r.source].add(c.Seq)
			r.fp.set(c)
			if c.Seq > r.ownHead.Seq {
				r.ownHead = c.Elide()
			}
		}
		cs = cs[n:]
	}
	return nil
}

// scanUser visits the replicated state of every user key.
func (r *Replica) scanUser(ctx context.Context, fn func(Change) error) error {
	opts := datastore.ListOptions{Limit: 1000}
	for {
		p, err := r.local.List(ctx, "/", opts)
		if err != nil {
			return fmt.Errorf("replica: list: %w", err)
		}
		for _, e := range p.Entries {
			if isReserved(e.Key) {
				continue
			}
			c, err := decodeEnvelope(e.Key, e.Value)
			if err != nil {
				return err
			}
			if err := fn(c); err != nil {
				return err
			}
		}
		if !p.More {
			return nil
		}
		opts.After = p.Next
		if isReserved(p.Next) {
			opts.After = reservedRoot + "/\xff"
		}
	}
}

// bookOps returns the bookkeeping a store opened by this replica has not
// recorded yet — layout, generation, prefixes — for the next local
// transaction to carry (opening a store writes nothing unless its prefixes
// widened); nil once recorded. The caller holds r.mu.
func (r *Replica) bookOps() []datastore.Op {
	if !r.genPending {
		return nil
	}
	return []datastore.Op{
		datastore.OpSet(formatKey, []byte(layoutFormat)),
		datastore.OpSet(genKey, []byte(strconv.FormatUint(r.gen, 10))),
		datastore.OpSet(prefixesKey, []byte(strings.Join(r.replicationRecord(), "\n"))),
	}
}

// Generation returns this peer's current generation.
func (r *Replica) Generation() uint64 { return r.gen }

// scan visits every local entry under prefix.
func (r *Replica) scan(ctx context.Context, prefix string, fn func(datastore.Entry) error) error {
	opts := datastore.ListOptions{Limit: 1000}
	for {
		p, err := r.local.List(ctx, prefix, opts)
		if err != nil {
			return fmt.Errorf("replica: list %q: %w", prefix, err)
		}
		for _, e := range p.Entries {
			if err := fn(e); err != nil {
				return err
			}
		}
		if !p.More {
			return nil
		}
		opts.After = p.Next
	}
}

// ID returns this peer's ID.
func (r *Replica) ID() string { return r.cfg.ID }

// SetBroadcaster sets where local changes go.
func (r *Replica) SetBroadcaster(b Broadcaster) { r.bc.Store(&b) }

// Prefixes returns the replicated prefixes; nil means every key.
func (r *Replica) Prefixes() []string { return slices.Clone(r.prefixes) }

// replicationRecord is what a store records of what it replicates: the
// prefixes, and the local patterns marked with "!".
func (r *Replica) replicationRecord() []string {
	out := slices.Clone(r.prefixes)
	for _, p := range r.keepLocal {
		out = append(out, "!"+p.String())
	}
	return out
}

// keepsLocal reports whether every one of the patterns is still kept
// local: otherwise keys under them replicate now, and what the watermarks
// counted while they were skipped must be fetched.
func (r *Replica) keepsLocal(patterns []string) bool {
	for _, pat := range patterns {
		if !slices.ContainsFunc(r.keepLocal, func(p datastore.Pattern) bool { return p.String() == pat }) {
			return false
		}
	}
	return true
}

// Replicates reports whether key is replicated.
func (r *Replica) Replicates(key string) bool {
	if !covered(r.prefixes, key) {
		return false
	}
	for _, p := range r.keepLocal {
		if p.Match(key) {
			return false
		}
	}
	return true
}

func covered(prefixes []string, key string) bool {
	if prefixes == nil {
		return true
	}
	for _, p := range prefixes {
		if strings.HasPrefix(key+"/", p) {
			return true
		}
	}
	return false
}

// current returns the replicated state of key, tombstone included, and the
// local entry's version.
func (r *Replica) current(ctx context.Context, key string) (Change, bool, error) {
	c, _, found, err := r.currentLocal(ctx, key)
	return c, found, err
}

func (r *Replica) currentLocal(ctx context.Context, key string) (c Change, local datastore.Entry, found bool, err error) {
	e, err := r.local.Get(ctx, key)
	if errors.Is(err, datastore.ErrKeyNotFound) {
		return Change{}, datastore.Entry{}, false, nil
	}
	if err != nil {
		return Change{}, datastore.Entry{}, false, err
	}
	c, err = decodeEnvelope(key, e.Value)
	if err != nil {
		return Change{}, datastore.Entry{}, false, err
	}
	return c, e, true, nil
}

// Current returns the replicated state of key, tombstones included.
func (r *Replica) Current(ctx context.Context, key string) (Change, bool, error) {
	if err := datastore.ValidateKey(key); err != nil {
		return Change{}, false, err
	}
	return r.current(ctx, key)
}

// Get implements datastore.Store.
func (r *Replica) Get(ctx context.Context, key string) (datastore.Entry, error) {
	if err := validateUserKey(key); err != nil {
		return datastore.Entry{}, err
	}
	c, e, found, err := r.currentLocal(ctx, key)
	if err != nil {
		return datastore.Entry{}, err
	}
	if !found || c.Deleted || r.expiredNow(c) {
		return datastore.Entry{}, fmt.Errorf("replica: get %q: %w", key, datastore.ErrKeyNotFound)
	}
	return c.entry(e.Revision), nil
}

func validateUserKey(key string) error {
	if err := datastore.ValidateKey(key); err != nil {
		return err
	}
	if isReserved(key) {
		return fmt.Errorf("%w: %q: %s is reserved for replication state", datastore.ErrInvalidKey, key, reservedRoot)
	}
	return nil
}

// List implements datastore.Store. Tombstones and bookkeeping are skipped;
// the page is read at one local revision (it is read again if a write lands
// between the local pages it needs).
func (r *Replica) List(ctx context.Context, prefix string, opts datastore.ListOptions) (datastore.Page, error) {
	if err := datastore.ValidatePrefix(prefix); err != nil {
		return datastore.Page{}, err
	}
	var page datastore.Page
	var err error
	for range 5 {
		var consistent bool
		page, consistent, err = r.listOnce(ctx, prefix, opts)
		if err != nil || consistent {
			return page, err
		}
	}
	// Writes kept landing between the local pages this page needed: say so
	// rather than return a page whose revision does not hold. Retryable.
	return datastore.Page{}, fmt.Errorf("replica: list %q: the store changed under every attempt: %w", prefix, datastore.ErrTxnFailed)
}

func (r *Replica) listOnce(ctx context.Context, prefix string, opts datastore.ListOptions) (datastore.Page, bool, error) {
	limit := engine.ListLimit(opts)
	page := datastore.Page{Entries: []datastore.Entry{}}
	local := datastore.ListOptions{Limit: min(limit+limit/4+16, datastore.MaxListLimit), After: opts.After}
	consistent := true
	now := r.cfg.Now().UnixNano() // expired values are left out
	for first := true; ; first = false {
		p, err := r.local.List(ctx, prefix, local)
		if err != nil {
			return datastore.Page{}, false, err
		}
		if first {
			page.Revision = p.Revision
		} else if p.Revision != page.Revision {
			consistent = false
		}
		for _, e := range p.Entries {
			if isReserved(e.Key) {
				continue
			}
			c, err := decodeEnvelope(e.Key, e.Value)
			if err != nil {
				return datastore.Page{}, false, err
			}
			if c.Deleted || c.goneAt(now) {
				continue
			}
			if len(page.Entries) == limit {
				page.More, page.Next = true, page.Entries[limit-1].Key
				return page, consistent, nil
			}
			en := c.entry(e.Revision)
			if opts.KeysOnly {
				en.Value = nil
			}
			page.Entries = append(page.Entries, en)
		}
		if !p.More {
			return page, consistent, nil
		}
		local.After = p.Next
		if isReserved(p.Next) && !isReserved(prefix) {
			local.After = reservedRoot + "/\xff" // past every bookkeeping key
		}
	}
}
