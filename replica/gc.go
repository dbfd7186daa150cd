package replica

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

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

const (
	horizonRoot = reservedRoot + "/horizon/"
	// floorKey holds the highest version of a collected key: a key written
	// after its tombstone is gone starts above it, so versions still never
	// repeat for a key and a stale compare-and-set cannot succeed.
	floorKey = reservedRoot + "/floor"
)

type observed struct {
	v  Vector
	at time.Time
}

// ObservePeer records a peer's vector, learned in a catch-up exchange.
func (r *Replica) ObservePeer(id string, v Vector) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.peers == nil {
		r.peers = map[string]observed{}
	}
	r.peers[id] = observed{v: v.Clone(), at: r.cfg.Now()}
}

// ObservedPeers returns the peers whose vector was observed since t: the
// membership a node passes to CollectTombstones.
func (r *Replica) ObservedPeers(since time.Time) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id, o := range r.peers {
		if !o.at.Before(since) {
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
	for origin, s := range r.seqs {
		h[origin] = s.contig
	}
	for _, p := range peers {
		o, ok := r.peers[p]
		if !ok {
			return Vector{}
		}
		for origin, seq := range h {
			h[origin] = min(seq, o.v[origin])
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
	floor := r.floor
	for origin, upto := range h {
		from := max(r.collected[origin], r.scanned[origin])
		if upto <= from {
			continue
		}
		var ops []datastore.Op
		reached := upto // the horizon stops before the first tombstone kept for its age
		err := r.scanRange(ctx, indexRoot+origin+"/", indexKey(origin, from), indexKey(origin, upto), func(e datastore.Entry) error {
			key := string(e.Value)
			c, local, found, err := r.currentLocal(ctx, key)
			if err != nil || !found || !c.Deleted || c.Origin != origin || r.inflight[key] != nil {
				return err
			}
			if c.HLC > cutoff {
				reached = min(reached, c.Seq-1)
				return nil
			}
			ops = append(ops, datastore.OpCheckVersion(key, local.Version), datastore.OpDelete(key), datastore.OpDelete(e.Key))
			floor = max(floor, c.Version)
			dropped++
			return nil
		})
		if err != nil {
			return 0, err
		}
		if r.scanned == nil {
			r.scanned = Vector{}
		}
		r.scanned[origin] = max(r.scanned[origin], reached)
		if len(ops) == 0 {
			continue // nothing dropped: peers behind here need no snapshot
		}
		reached = max(reached, r.collected[origin])
		ops = append(ops, datastore.OpSet(horizonRoot+origin, []byte(strconv.FormatUint(reached, 10))))
		if floor > r.floor {
			ops = append(ops, datastore.OpSet(floorKey, []byte(strconv.FormatUint(floor, 10))))
		}
		if _, err := r.local.Txn(ctx, ops...); err != nil {
			return 0, fmt.Errorf("replica: collect tombstones of %s: %w", origin, err)
		}
		if r.collected == nil {
			r.collected = Vector{}
		}
		r.collected[origin] = reached
		r.floor = floor
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

// BehindHorizon reports whether a peer with vector have missed tombstones
// this replica has collected: it then needs a full snapshot, not a delta.
func (r *Replica) BehindHorizon(have Vector) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for origin, upto := range r.collected {
		if have[origin] < upto {
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
// Only changes older than the tombstone grace period are dropped: a
// collected tombstone was older than that, and so, but for clock skew
// between concurrent writers, is what it deleted. This bounds what a lying
// responder can make a peer drop to state that old.
func (r *Replica) Reconcile(ctx context.Context, cover Vector, senderPrefixes []string, received map[string]bool) (int, error) {
	if !coversAll(NormalizePrefixes(senderPrefixes), r.prefixes) {
		return 0, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var ops []datastore.Op
	floor := r.floor
	cutoff := physical(r.cfg.Now().Add(-r.cfg.TombstoneGrace))
	for origin := range r.seqs {
		upto := cover[origin]
		if upto == 0 {
			continue
		}
		err := r.scanRange(ctx, indexRoot+origin+"/", "", indexKey(origin, upto), func(e datastore.Entry) error {
			key := string(e.Value)
			if received[key] || r.inflight[key] != nil {
				return nil
			}
			c, local, found, err := r.currentLocal(ctx, key)
			if err != nil || !found || c.HLC > cutoff {
				return err
			}
			ops = append(ops, datastore.OpCheckVersion(key, local.Version), datastore.OpDelete(key), datastore.OpDelete(e.Key))
			floor = max(floor, c.Version+1) // the sender deleted it at a later version
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	if len(ops) == 0 {
		return 0, nil
	}
	dropped := len(ops) / 3
	if floor > r.floor {
		ops = append(ops, datastore.OpSet(floorKey, []byte(strconv.FormatUint(floor, 10))))
	}
	if _, err := r.local.Txn(ctx, ops...); err != nil {
		return 0, fmt.Errorf("replica: reconcile snapshot: %w", err)
	}
	r.floor = floor
	return dropped, nil
}
