package replica

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/univrs/peerstate/datastore"
)

// ErrInvalidChange reports a remote change that breaks the replication
// rules: a bad key, an oversized value, inconsistent fields.
var ErrInvalidChange = errors.New("replica: invalid change")

// HLC is a hybrid logical clock timestamp: Unix milliseconds in the high 48
// bits, a logical counter in the low 16.
type HLC uint64

const hlcLogicalBits = 16

// Time returns the timestamp's physical part.
func (h HLC) Time() time.Time { return time.UnixMilli(int64(h >> hlcLogicalBits)) }

func (h HLC) String() string {
	return fmt.Sprintf("%d.%d", uint64(h>>hlcLogicalBits), uint64(h)&(1<<hlcLogicalBits-1))
}

// hlcClock issues strictly increasing timestamps that never fall behind the
// wall clock nor behind any timestamp observed from a peer.
type hlcClock struct {
	now     func() time.Time
	maxSkew time.Duration

	mu   sync.Mutex
	last HLC
}

func physical(t time.Time) HLC { return HLC(uint64(t.UnixMilli()) << hlcLogicalBits) }

// Next returns a timestamp for a local write.
func (c *hlcClock) Next() HLC {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pt := physical(c.now()); pt > c.last {
		c.last = pt
	} else {
		c.last++
	}
	return c.last
}

// NextAfter returns a timestamp for a local write that is also above h (the
// timestamp of the change it replaces, which this clock has seen).
func (c *hlcClock) NextAfter(h HLC) HLC {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = max(c.last, h)
	if pt := physical(c.now()); pt > c.last {
		c.last = pt
	} else {
		c.last++
	}
	return c.last
}

// Observe moves the clock past a timestamp seen from a peer, unless that
// timestamp is further ahead of our wall clock than the allowed skew: a peer
// with a runaway clock must not drag everyone's clock along.
func (c *hlcClock) Observe(h HLC) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h > c.last && h <= physical(c.now().Add(c.maxSkew)) {
		c.last = h
	}
}

// Change is one replicated write of one key: the key's full state after the
// write. A delete is a change with Deleted set and no value (a tombstone).
//
// A change is signed by its origin (Sig, see VerifyChange) over everything
// below but the value itself, for which its SHA-256 stands: a change whose
// value is left out (ValueHash set, Value nil) can still be checked, and
// the value, fetched later, is checked against the hash.
type Change struct {
	Key       string
	Value     []byte // nil for a delete, or when left out (ValueHash set)
	Deleted   bool
	Version   uint64 // the replicated per-key version
	HLC       HLC
	Origin    string // the writer's peer ID
	Gen       uint64 // the writer's generation: a new one each time its replica opens
	Seq       uint64 // the writer's sequence number within Gen: 1, 2, 3, …
	CreatedAt int64  // Unix nanoseconds
	UpdatedAt int64  // Unix nanoseconds
	// ValueHash is the SHA-256 of a value left out; nil otherwise.
	ValueHash []byte
	// Sig is the origin's signature.
	Sig []byte
	// ExpiresAt, Unix nanoseconds, is when the value expires (a write with
	// a time to live: the writer's clock plus the TTL); 0 for none. Every
	// peer treats an entry whose expiry has passed by its own clock as
	// deleted; see the package doc (TTL).
	ExpiresAt int64

	// expired is local state, never replicated or signed: this replica has
	// applied the expiry (the envelope is marked, watchers were told).
	expired bool
}

// Less reports whether c comes before d in the deterministic per-key order:
// higher version wins; equal versions are ordered by HLC timestamp, then by
// origin peer ID (then generation and sequence, which only a writer whose
// clock went backwards can need).
func (c Change) Less(d Change) bool {
	if c.Version != d.Version {
		return c.Version < d.Version
	}
	if c.HLC != d.HLC {
		return c.HLC < d.HLC
	}
	if c.Origin != d.Origin {
		return c.Origin < d.Origin
	}
	if c.Gen != d.Gen {
		return c.Gen < d.Gen
	}
	return c.Seq < d.Seq
}

// Same reports whether c and d are the same write of the same key.
func (c Change) Same(d Change) bool {
	return c.Key == d.Key && c.Origin == d.Origin && c.Gen == d.Gen && c.Seq == d.Seq &&
		c.Version == d.Version && c.HLC == d.HLC && c.Deleted == d.Deleted
}

// Elided reports whether the change's value is left out (announced by hash).
func (c Change) Elided() bool { return !c.Deleted && c.Value == nil && c.ValueHash != nil }

// Source returns the change's source: its origin and generation.
func (c Change) Source() string { return SourceOf(c.Origin, c.Gen) }

// SourceOf names one generation of an origin, the unit sequence numbers and
// watermarks count in: "{origin}/{gen}".
func SourceOf(origin string, gen uint64) string {
	return origin + "/" + strconv.FormatUint(gen, 10)
}

// ParseSource splits a source into origin and generation.
func ParseSource(s string) (origin string, gen uint64, err error) {
	origin, num, ok := strings.Cut(s, "/")
	if !ok {
		return "", 0, fmt.Errorf("%w: bad source %q", ErrInvalidChange, s)
	}
	if err := ValidateOrigin(origin); err != nil {
		return "", 0, err
	}
	gen, err = strconv.ParseUint(num, 10, 64)
	if err != nil || gen == 0 || strconv.FormatUint(gen, 10) != num {
		return "", 0, fmt.Errorf("%w: bad source %q", ErrInvalidChange, s)
	}
	return origin, gen, nil
}

// Validate checks a change received from a peer. maxValue caps the value
// size (0: no cap).
func (c Change) Validate(maxValue int) error {
	if err := datastore.ValidateKey(c.Key); err != nil {
		return err
	}
	if isReserved(c.Key) {
		return fmt.Errorf("%w: %q is reserved", datastore.ErrInvalidKey, c.Key)
	}
	if maxValue > 0 && len(c.Value) > maxValue {
		return fmt.Errorf("%q: %d bytes > %d: %w", c.Key, len(c.Value), maxValue, datastore.ErrValueTooLarge)
	}
	if err := ValidateOrigin(c.Origin); err != nil {
		return err
	}
	switch {
	case c.Version == 0:
		return fmt.Errorf("%w: %q: version 0", ErrInvalidChange, c.Key)
	case c.Version > datastore.MaxVersion:
		return fmt.Errorf("%w: %q: version %d over the ceiling %d", ErrInvalidChange, c.Key, c.Version, datastore.MaxVersion)
	case c.Version > uint64(c.HLC):
		// Along a key's history every write's timestamp is above the one it
		// replaced, so a version never exceeds its timestamp; with
		// timestamps bounded by the receivers' clocks, no writer can push a
		// key's version towards the ceiling.
		return fmt.Errorf("%w: %q: version %d above its timestamp %s", ErrInvalidChange, c.Key, c.Version, c.HLC)
	case c.Gen == 0:
		return fmt.Errorf("%w: %q: generation 0", ErrInvalidChange, c.Key)
	case c.Seq == 0:
		return fmt.Errorf("%w: %q: sequence 0", ErrInvalidChange, c.Key)
	case c.Deleted && (c.Value != nil || c.ValueHash != nil):
		return fmt.Errorf("%w: %q: a delete carries a value", ErrInvalidChange, c.Key)
	case c.ValueHash != nil && (c.Value != nil || len(c.ValueHash) != 32):
		return fmt.Errorf("%w: %q: malformed value hash", ErrInvalidChange, c.Key)
	case c.UpdatedAt < c.CreatedAt:
		return fmt.Errorf("%w: %q: updated before created", ErrInvalidChange, c.Key)
	case c.ExpiresAt != 0 && c.Deleted:
		return fmt.Errorf("%w: %q: a delete carries an expiry", ErrInvalidChange, c.Key)
	case c.ExpiresAt != 0 && c.ExpiresAt <= c.UpdatedAt:
		return fmt.Errorf("%w: %q: expires before it was written", ErrInvalidChange, c.Key)
	}
	return nil
}

// ValidateOrigin checks a peer ID used as an origin: it must be usable as
// one key segment.
func ValidateOrigin(origin string) error {
	if origin == "" || len(origin) > 128 || strings.ContainsAny(origin, "/*") {
		return fmt.Errorf("%w: bad origin %q", ErrInvalidChange, origin)
	}
	if err := datastore.ValidateKey("/" + origin); err != nil {
		return fmt.Errorf("%w: bad origin %q", ErrInvalidChange, origin)
	}
	return nil
}

// Vector maps a source (SourceOf: an origin's generation) to its watermark:
// the highest sequence number up to which this peer has incorporated every
// one of the source's changes.
type Vector map[string]uint64

// Sources returns the vector's sources, sorted.
func (v Vector) Sources() []string {
	out := make([]string, 0, len(v))
	for s := range v {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// Clone returns a copy.
func (v Vector) Clone() Vector {
	c := make(Vector, len(v))
	for k, s := range v {
		c[k] = s
	}
	return c
}

// seqSet tracks one origin's received sequence numbers: every seq up to
// contig, plus the ones received above it.
type seqSet struct {
	contig uint64
	above  map[uint64]struct{}
}

// add records seq and reports whether contig moved.
func (s *seqSet) add(seq uint64) bool {
	if seq <= s.contig {
		return false
	}
	if seq != s.contig+1 {
		if s.above == nil {
			s.above = map[uint64]struct{}{}
		}
		s.above[seq] = struct{}{}
		return false
	}
	s.contig = seq
	s.absorb()
	return true
}

// raise moves contig up to at least seq.
func (s *seqSet) raise(seq uint64) bool {
	if seq <= s.contig {
		return false
	}
	s.contig = seq
	for k := range s.above {
		if k <= seq {
			delete(s.above, k)
		}
	}
	s.absorb()
	return true
}

func (s *seqSet) absorb() {
	for {
		if _, ok := s.above[s.contig+1]; !ok {
			return
		}
		delete(s.above, s.contig+1)
		s.contig++
	}
}

func (s *seqSet) has(seq uint64) bool {
	if seq <= s.contig {
		return true
	}
	_, ok := s.above[seq]
	return ok
}

// seqDelta is a tentative set of additions to a seqSet, applied by commit
// once the transaction recording them stands.
type seqDelta struct {
	base   *seqSet
	contig uint64
	added  map[uint64]struct{}
}

func newSeqDelta(base *seqSet) *seqDelta {
	if base == nil {
		base = &seqSet{}
	}
	return &seqDelta{base: base, contig: base.contig}
}

func (d *seqDelta) has(seq uint64) bool {
	if seq <= d.contig || d.base.has(seq) {
		return true
	}
	_, ok := d.added[seq]
	return ok
}

// add records seq and reports whether contig moved.
func (d *seqDelta) add(seq uint64) bool {
	if d.has(seq) {
		return false
	}
	if d.added == nil {
		d.added = map[uint64]struct{}{}
	}
	d.added[seq] = struct{}{}
	moved := false
	for d.has(d.contig + 1) {
		d.contig++
		moved = true
	}
	return moved
}

// commit applies the additions to the base set and returns it.
func (d *seqDelta) commit() *seqSet {
	s := d.base
	for seq := s.contig + 1; seq <= d.contig; seq++ {
		delete(s.above, seq)
	}
	s.contig = d.contig
	for seq := range d.added {
		if seq > s.contig {
			if s.above == nil {
				s.above = map[uint64]struct{}{}
			}
			s.above[seq] = struct{}{}
		}
	}
	return s
}

func (s *seqSet) clone() *seqSet {
	c := &seqSet{contig: s.contig}
	if len(s.above) > 0 {
		c.above = make(map[uint64]struct{}, len(s.above))
		for k := range s.above {
			c.above[k] = struct{}{}
		}
	}
	return c
}
