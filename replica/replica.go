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
	// ID is this peer's ID, the origin of its writes. Required.
	ID string
	// Broadcaster receives local changes; nil until SetBroadcaster.
	Broadcaster Broadcaster
	// Prefixes limits replication to keys under them; empty replicates
	// everything. Other keys stay local.
	Prefixes []string
	// Now is the wall clock; time.Now if nil.
	Now func() time.Time
	// MaxValueSize caps values, local and remote; 0 means 64 MiB.
	MaxValueSize int
	// MaxClockSkew bounds how far ahead of our clock a peer's timestamp may
	// pull our hybrid logical clock; 0 means one minute.
	MaxClockSkew time.Duration
	// DeleteMissingOK makes Delete of an absent key succeed.
	DeleteMissingOK bool
	// TombstoneGrace is how old (by its timestamp) a tombstone must be
	// before it may be collected, besides being behind every member's
	// watermark; 0 means 24 hours. See CollectTombstones.
	TombstoneGrace time.Duration
}

// DefaultMaxValueSize is the default value cap.
const DefaultMaxValueSize = 64 << 20

// Validate checks the configuration.
func (c Config) Validate() error {
	if err := ValidateOrigin(c.ID); err != nil {
		return fmt.Errorf("replica: config: ID: %w", err)
	}
	for _, p := range c.Prefixes {
		if err := datastore.ValidatePrefix(p); err != nil {
			return fmt.Errorf("replica: config: prefix: %w", err)
		}
	}
	if c.MaxValueSize < 0 || c.MaxClockSkew < 0 || c.TombstoneGrace < 0 {
		return errors.New("replica: config: negative limit")
	}
	return nil
}

// Replica is a replicated datastore.Store; see the package doc.
type Replica struct {
	engine.Writes
	local    datastore.Store
	cfg      Config
	prefixes []string // normalized: each ends in "/"; nil: all
	clock    *hlcClock
	bc       atomic.Pointer[Broadcaster]

	// mu guards the replication state. Remote changes, watermarks and
	// tombstone collection are written under it; local writes are planned
	// under it and commit outside it, their keys marked in flight.
	mu          sync.Mutex
	inflight    map[string]chan struct{} // keys of local writes committing; closed when done
	seqNext     uint64                   // our next sequence number
	seqReserved uint64                   // numbers up to here are reserved on disk
	reserving   chan struct{}            // the local write reserving the next block, while it commits
	seqs        map[string]*seqSet       // per origin; seqs[cfg.ID] counts our numbers done
	peers       map[string]observed      // other peers' vectors, from catch-up exchanges
	collected   Vector                   // per origin: tombstones up to here may be gone
	scanned     Vector                   // per origin: no collectable tombstone up to here
	floor       uint64                   // versions of collected keys are at most this
	close       sync.Once
}

// New wraps local, loading the replication state it keeps. The replica owns
// local from then on: Close closes it.
func New(ctx context.Context, local datastore.Store, cfg Config) (*Replica, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
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
	r := &Replica{
		local:    local,
		cfg:      cfg,
		prefixes: NormalizePrefixes(cfg.Prefixes),
		clock:    &hlcClock{now: cfg.Now, maxSkew: cfg.MaxClockSkew},
		seqs:     map[string]*seqSet{},
		inflight: map[string]chan struct{}{},
	}
	r.Writes = engine.Writes{C: committer{r}, MaxValueSize: cfg.MaxValueSize}
	if cfg.Broadcaster != nil {
		r.SetBroadcaster(cfg.Broadcaster)
	}
	if err := r.load(ctx); err != nil {
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

// load reads the watermarks and the latest HLC of our own writes.
func (r *Replica) load(ctx context.Context) error {
	err := r.scan(ctx, watermarkRoot, func(e datastore.Entry) error {
		n, err := strconv.ParseUint(string(e.Value), 10, 64)
		if err != nil {
			return fmt.Errorf("replica: corrupt watermark %q: %w", e.Key, err)
		}
		r.seqs[strings.TrimPrefix(e.Key, watermarkRoot)] = &seqSet{contig: n}
		return nil
	})
	if err != nil {
		return err
	}
	r.collected = Vector{}
	err = r.scan(ctx, horizonRoot, func(e datastore.Entry) error {
		n, err := strconv.ParseUint(string(e.Value), 10, 64)
		if err != nil {
			return fmt.Errorf("replica: corrupt horizon %q: %w", e.Key, err)
		}
		r.collected[strings.TrimPrefix(e.Key, horizonRoot)] = n
		return nil
	})
	if err != nil {
		return err
	}
	// Our numbering resumes past the last reserved block.
	if r.seqs[r.cfg.ID] == nil {
		r.seqs[r.cfg.ID] = &seqSet{}
	}
	r.seqReserved = r.seqs[r.cfg.ID].contig
	r.seqNext = r.seqReserved + 1
	if e, err := r.local.Get(ctx, floorKey); err == nil {
		if r.floor, err = strconv.ParseUint(string(e.Value), 10, 64); err != nil {
			return fmt.Errorf("replica: corrupt version floor: %w", err)
		}
	} else if !errors.Is(err, datastore.ErrKeyNotFound) {
		return fmt.Errorf("replica: read version floor: %w", err)
	}
	// Our clock must not fall behind our own last write.
	return r.scan(ctx, indexRoot+r.cfg.ID+"/", func(e datastore.Entry) error {
		c, found, err := r.current(ctx, string(e.Value))
		if err == nil && found {
			r.clock.Observe(c.HLC)
		}
		return err
	})
}

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

// Replicates reports whether key is replicated.
func (r *Replica) Replicates(key string) bool { return covered(r.prefixes, key) }

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
	if !found || c.Deleted {
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
	return page, nil
}

func (r *Replica) listOnce(ctx context.Context, prefix string, opts datastore.ListOptions) (datastore.Page, bool, error) {
	limit := engine.ListLimit(opts)
	page := datastore.Page{Entries: []datastore.Entry{}}
	local := datastore.ListOptions{Limit: min(limit+limit/4+16, datastore.MaxListLimit), After: opts.After}
	consistent := true
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
			if c.Deleted {
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
