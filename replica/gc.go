package replica

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/univrs/peerstate/datastore"
)

// Tombstone collection. A tombstone can be dropped once every peer has
// incorporated it: then no peer holds the value it deleted, and the
// resurrection guard in Apply (a change already incorporated for a key that
// is gone is stale) keeps the key deleted. The horizon of a set of peers is,
// per origin, the lowest watermark among them and us; tombstones whose
// change is at or below it are collected, and the horizon is recorded under
// /.peerstate/horizon/{origin}.
//
// A peer that comes back from beyond the horizon (its watermark for some
// origin is below our recorded horizon) may hold values whose tombstones are
// gone. It gets a full snapshot instead of a delta, and Reconcile drops what
// the snapshot shows was deleted.

const horizonRoot = reservedRoot + "/horizon/"

// Version floors. A key written after its tombstone is gone starts above
// the highest version collected in its bucket, so versions still never
// repeat for a key and a stale compare-and-set cannot succeed. Floors are
// kept per bucket of keys (by key hash), not per key — a record per deleted
// key would keep what collection exists to drop — and not for the whole
// store: a tombstone, however high its version, lifts the floor of 1/1024
// of the keys, and since a version never exceeds its timestamp
// (Change.Validate) no floor comes near the ceiling.
const floorBuckets = 1024

func floorBucket(key string) uint16 { return uint16(KeyHash(key) % floorBuckets) }

func floorKey(b uint16) string { return floorRoot + strconv.Itoa(int(b)) }

type observed struct {
	V  Vector    `cbor:"1,keyasint"`
	At time.Time `cbor:"2,keyasint"`
	R  HLC       `cbor:"3,keyasint,omitempty"` // its retirement horizon (retire.go)
}

// ObservePeer records a peer's vector, learned in a catch-up exchange. The
// record is kept in the local store, so tombstone collection after a restart
// still counts the peers seen before it; at most Config.MaxPeers are kept,
// the least recently seen forgotten first.
func (r *Replica) ObservePeer(ctx context.Context, id string, v Vector) error {
	return r.ObservePeerRetired(ctx, id, v, 0)
}

// ObservePeerRetired is ObservePeer for a peer that also told its
// retirement horizon (RetiredHorizon): a source missing from v whose newest
// change is no newer than retired counts as fully incorporated there.
func (r *Replica) ObservePeerRetired(ctx context.Context, id string, v Vector, retired HLC) error {
	if ValidateOrigin(id) != nil {
		return fmt.Errorf("%w: bad peer %q", ErrInvalidChange, id)
	}
	o := observed{V: v.Clone(), At: r.cfg.Now(), R: retired}
	enc, err := cbor.Marshal(o)
	if err != nil {
		return fmt.Errorf("replica: encode peer vector: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	ops := []datastore.Op{datastore.OpSet(peerRoot+id, enc)}
	var evict []string
	if _, known := r.peers[id]; !known && len(r.peers) >= r.cfg.MaxPeers {
		oldest := ""
		for p, ob := range r.peers {
			if oldest == "" || ob.At.Before(r.peers[oldest].At) {
				oldest = p
			}
		}
		evict = append(evict, oldest)
		ops = append(ops, datastore.OpDelete(peerRoot+oldest))
	}
	if _, err := r.local.Txn(ctx, ops...); err != nil {
		return fmt.Errorf("replica: record peer vector: %w", err)
	}
	for _, p := range evict {
		delete(r.peers, p)
	}
	r.peers[id] = o
	return nil
}

func (r *Replica) loadPeers(ctx context.Context) error {
	return r.scan(ctx, peerRoot, func(e datastore.Entry) error {
		var o observed
		if err := cbor.Unmarshal(e.Value, &o); err != nil {
			return fmt.Errorf("replica: corrupt peer record %q: %w", e.Key, err)
		}
		r.peers[strings.TrimPrefix(e.Key, peerRoot)] = o
		return nil
	})
}

// ObservedPeers returns the peers whose vector was observed since t: the
// membership a node passes to CollectTombstones.
func (r *Replica) ObservedPeers(since time.Time) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id, o := range r.peers {
		if !o.At.Before(since) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// Horizon returns, per origin, the lowest watermark among this replica and
// the given peers; an origin a peer has not heard of is at 0. A peer whose
// vector was never observed makes the horizon empty.
func (r *Replica) Horizon(peers []string) Vector {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.horizonLocked(peers)
}

func (r *Replica) horizonLocked(peers []string) Vector {
	h := Vector{}
	for src, s := range r.seqs {
		h[src] = s.contig
	}
	for _, p := range peers {
		o, ok := r.peers[p]
		if !ok {
			return Vector{}
		}
		for src, seq := range h {
			v, listed := o.V[src]
			if !listed && r.retiredBy(o.R, src) {
				continue // retired there: it had all of it
			}
			h[src] = min(seq, v)
		}
	}
	return h
}

// CollectTombstones deletes the tombstones behind the horizon of peers (the
// current membership, this peer excluded) that are older than the tombstone
// grace period, and returns how many it dropped.
//
// The grace period covers what watermarks cannot: a write that a delete
// superseded but that has not reached every member yet. Once the tombstone is
// gone, such a write arriving late would look new. Like Cassandra's
// gc_grace_seconds, the grace period must exceed the time changes take to
// reach every member (catch-up runs every few seconds, so a day is ample).
func (r *Replica) CollectTombstones(ctx context.Context, peers []string) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.horizonLocked(peers)
	cutoff := physical(r.cfg.Now().Add(-r.cfg.TombstoneGrace))
	dropped := 0
	for src, upto := range h {
		from := max(r.collected[src], r.scanned[src])
		if upto <= from {
			continue
		}
		var ops []datastore.Op
		var keys []string
		floors := map[uint16]uint64{}
		reached := upto // the horizon stops before the first tombstone kept for its age
		err := r.scanRange(ctx, indexPrefix(src), indexKey(src, from), indexKey(src, upto), func(e datastore.Entry) error {
			key := string(e.Value)
			c, local, found, err := r.currentLocal(ctx, key)
			// Expired values go like tombstones, by the age of their expiry.
			gone, at, version := c.Deleted, c.HLC, c.Version
			if c.expired {
				gone, at, version = true, max(at, physical(time.Unix(0, c.ExpiresAt))), c.goneVersion()
			}
			if err != nil || !found || !gone || c.Source() != src || r.inflight[key] != nil {
				return err
			}
			if at > cutoff {
				reached = min(reached, c.Seq-1)
				return nil
			}
			ops = append(ops, datastore.OpCheckVersion(key, local.Version), datastore.OpDelete(key), datastore.OpDelete(e.Key))
			b := floorBucket(key)
			floors[b] = max(floors[b], r.floors[b], version)
			keys = append(keys, key)
			return nil
		})
		if err != nil {
			return dropped, err
		}
		if len(ops) > 0 {
			rec := max(reached, r.collected[src])
			ops = append(ops, datastore.OpSet(horizonRoot+sourcePath(src), []byte(strconv.FormatUint(rec, 10))))
			for b, f := range floors {
				if f > r.floors[b] {
					ops = append(ops, datastore.OpSet(floorKey(b), []byte(strconv.FormatUint(f, 10))))
				}
			}
			if _, err := r.local.Txn(ctx, ops...); err != nil {
				return dropped, fmt.Errorf("replica: collect tombstones of %s: %w", src, err)
			}
			r.collected[src] = rec
			for b, f := range floors {
				r.floors[b] = max(r.floors[b], f)
			}
			for _, k := range keys {
				r.fp.remove(k) // an expired value's change counted until now
			}
			dropped += len(keys)
		}
		// Only once the commit stands does the scan move on.
		r.scanned[src] = max(r.scanned[src], reached)
	}
	return dropped, nil
}

// scanRange visits the local entries under prefix with after < key <= upto.
func (r *Replica) scanRange(ctx context.Context, prefix, after, upto string, fn func(datastore.Entry) error) error {
	opts := datastore.ListOptions{Limit: 1000, After: after}
	for {
		p, err := r.local.List(ctx, prefix, opts)
		if err != nil {
			return fmt.Errorf("replica: list %q: %w", prefix, err)
		}
		for _, e := range p.Entries {
			if e.Key > upto {
				return nil
			}
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

// Floors returns the version floors of the key buckets that had keys
// collected here: what a snapshot's receiver adopts (Reconcile).
func (r *Replica) Floors() map[uint16]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.floors)
}

// Collected returns, per source, how far tombstones may have been collected
// here: the horizon a snapshot's receiver adopts (Reconcile).
func (r *Replica) Collected() Vector {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.collected.Clone()
}

// BehindHorizon reports whether a peer with vector have missed tombstones
// this replica has collected: it then needs a full snapshot, not a delta.
// retired is the peer's retirement horizon (RetiredHorizon): a source
// missing from its vector whose newest change is no newer than that was
// retired there, not missed (retire.go).
func (r *Replica) BehindHorizon(have Vector, retired HLC) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for src, upto := range r.collected {
		seq, listed := have[src]
		if !listed && r.retiredBy(retired, src) {
			continue
		}
		if seq < upto {
			return true
		}
	}
	return false
}

// Reconcile finishes a full snapshot received from a peer whose prefixes
// cover ours: every local key the snapshot did not include, whose change the
// sender had incorporated (at or below cover), was deleted and collected
// there, so it is dropped here too. It returns how many keys it dropped.
//
// A snapshot is the sender's word, so Reconcile drops only what that word
// cannot hurt: never a change of this peer's own (in any generation), never
// a change younger than the tombstone grace period (a collected tombstone
// was older than that, and so is what it deleted), and only up to the
// watermark this replica itself has for the change's source (which signed
// heads bound).
//
// horizon is the sender's collected horizon (Collected): once this replica
// holds the sender's state it holds the same truth — a change of a source at
// or below it that is not here was deleted and collected — so it adopts it,
// bounded by its own watermarks, and a stale peer cannot later hand it a
// value whose tombstone is gone (the resurrection guard in Apply, which
// only ever holds back changes older than the grace period).
//
// floors are the sender's version floors (Floors), adopted as well: a key
// collected there and absent here is re-created above its old versions.
func (r *Replica) Reconcile(ctx context.Context, cover, horizon Vector, floors map[uint16]uint64, senderPrefixes []string, received map[string]bool) (int, error) {
	if !coversAll(NormalizePrefixes(senderPrefixes), r.prefixes) {
		return 0, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var ops []datastore.Op
	newFloors := map[uint16]uint64{}
	for b, f := range floors {
		if b < floorBuckets && f <= datastore.MaxVersion && f > r.floors[b] {
			newFloors[b] = f
		}
	}
	adopted := Vector{}
	for src, h := range horizon {
		if _, _, err := ParseSource(src); err != nil {
			continue
		}
		s := r.seqs[src]
		if s == nil {
			continue
		}
		if h = min(h, cover[src], s.contig); h > r.collected[src] {
			adopted[src] = h
			ops = append(ops, datastore.OpSet(horizonRoot+sourcePath(src), []byte(strconv.FormatUint(h, 10))))
		}
	}
	var keys []string
	cutoff := physical(r.cfg.Now().Add(-r.cfg.TombstoneGrace))
	for src, s := range r.seqs {
		origin, _, err := ParseSource(src)
		if err != nil || origin == r.cfg.ID {
			continue
		}
		upto := min(cover[src], s.contig)
		if upto == 0 {
			continue
		}
		err = r.scanRange(ctx, indexPrefix(src), "", indexKey(src, upto), func(e datastore.Entry) error {
			key := string(e.Value)
			if received[key] || r.inflight[key] != nil {
				return nil
			}
			c, local, found, err := r.currentLocal(ctx, key)
			if err != nil || !found || c.HLC > cutoff || c.Source() != src {
				return err
			}
			ops = append(ops, datastore.OpCheckVersion(key, local.Version), datastore.OpDelete(key), datastore.OpDelete(e.Key))
			b := floorBucket(key)
			newFloors[b] = max(newFloors[b], r.floors[b], c.Version+1) // the sender deleted it at a later version
			keys = append(keys, key)
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	for b, f := range newFloors {
		if f > r.floors[b] {
			ops = append(ops, datastore.OpSet(floorKey(b), []byte(strconv.FormatUint(f, 10))))
		}
	}
	if len(ops) == 0 {
		return 0, nil
	}
	if _, err := r.local.Txn(ctx, ops...); err != nil {
		return 0, fmt.Errorf("replica: reconcile snapshot: %w", err)
	}
	for src, h := range adopted {
		r.collected[src] = h
	}
	for b, f := range newFloors {
		r.floors[b] = max(r.floors[b], f)
	}
	for _, k := range keys {
		r.fp.remove(k)
	}
	return len(keys), nil
}
