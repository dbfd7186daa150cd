package replica

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/univrs/peerstate/datastore"
)

// Retiring dead sources. Every source (an origin's generation) that ever
// wrote leaves a watermark, a signed head and perhaps a collected horizon,
// and an entry in every catch-up vector this replica sends and in every
// peer vector it keeps. In an open network identities come and go, so
// without retirement that state only grows.
//
// A source is retired once nothing here needs it: none of its changes is
// the current state of any key (its index is empty: every change it made
// was superseded, and tombstones of its own were collected), every change
// it made up to its newest signed head is incorporated, every member has
// incorporated as much, and its newest change is older than the tombstone
// grace period. Peers holding the same state retire the same sources.
//
// What a retired source's watermark did is then done by one number, the
// retirement horizon: the newest head timestamp among the retired sources.
// A change older than the grace period and than the horizon, for a key that
// is gone, from a source this replica does not track, was incorporated
// before and superseded (every change a retired source made was); applying
// it would resurrect a deleted key, so it is stale. Younger changes are
// never held back: a retired source that writes again is simply tracked
// again, and catch-up with it (its signed head) restores its watermark.
//
// A catch-up request carries the horizon, so a responder that still tracks
// a retired source (it has not run retirement yet) does not take its
// absence from the vector for a peer that missed collected tombstones (see
// BehindHorizon).

const retiredKey = reservedRoot + "/retired"

// retirement is the persisted record: the horizon and how many sources
// were retired in all.
type retirement struct {
	horizon HLC
	count   uint64
}

func (t retirement) encode() []byte {
	return []byte(strconv.FormatUint(uint64(t.horizon), 10) + " " + strconv.FormatUint(t.count, 10))
}

func decodeRetirement(b []byte) (retirement, error) {
	var h, n uint64
	if _, err := fmt.Sscanf(string(b), "%d %d", &h, &n); err != nil {
		return retirement{}, fmt.Errorf("replica: corrupt retirement record %q: %w", b, err)
	}
	return retirement{horizon: HLC(h), count: n}, nil
}

func (r *Replica) loadRetirement(ctx context.Context) error {
	e, err := r.local.Get(ctx, retiredKey)
	switch {
	case err == nil:
		r.retired, err = decodeRetirement(e.Value)
		return err
	case errors.Is(err, datastore.ErrKeyNotFound):
		return nil
	default:
		return fmt.Errorf("replica: read retirement record: %w", err)
	}
}

// RetiredHorizon returns the retirement horizon (0 until a source was
// retired) and how many sources were retired here in all.
func (r *Replica) RetiredHorizon() (HLC, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.retired.horizon, r.retired.count
}

// Sources returns how many sources this replica tracks (its vector's
// length).
func (r *Replica) Sources() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seqs)
}

// RetireSources retires the dead sources (see above) given the current
// membership, this peer excluded: the peers passed to CollectTombstones.
// It returns how many it retired.
func (r *Replica) RetireSources(ctx context.Context, peers []string) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cutoff := physical(r.cfg.Now().Add(-r.cfg.TombstoneGrace))
	var dead []string
	next := r.retired
	for src, s := range r.seqs {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if !r.deadLocked(src, s, peers, cutoff) {
			continue
		}
		empty, err := r.indexEmpty(ctx, src)
		if err != nil {
			return 0, err
		}
		if !empty {
			continue
		}
		dead = append(dead, src)
		next.horizon = max(next.horizon, r.heads[src].HLC)
		next.count++
	}
	if len(dead) == 0 {
		return 0, nil
	}
	ops := make([]datastore.Op, 0, 3*len(dead)+1)
	for _, src := range dead {
		ops = append(ops,
			datastore.OpDelete(watermarkKey(src)),
			datastore.OpDelete(headKey(src)),
			datastore.OpDelete(horizonRoot+sourcePath(src)))
	}
	ops = append(ops, datastore.OpSet(retiredKey, next.encode()))
	if _, err := r.local.Txn(ctx, ops...); err != nil {
		return 0, fmt.Errorf("replica: retire sources: %w", err)
	}
	for _, src := range dead {
		delete(r.seqs, src)
		delete(r.heads, src)
		delete(r.collected, src)
		delete(r.scanned, src)
	}
	r.retired = next
	return len(dead), nil
}

// deadLocked checks what RetireSources can tell without reading the store.
func (r *Replica) deadLocked(src string, s *seqSet, peers []string, cutoff HLC) bool {
	origin, _, err := ParseSource(src)
	if err != nil || origin == r.cfg.ID || len(s.above) > 0 {
		return false // our own generations are ours to keep; a gap is still to be filled
	}
	h, ok := r.heads[src]
	if !ok || h.Seq != s.contig || h.HLC > cutoff {
		return false // not every change up to its newest is here, or it wrote lately
	}
	for _, p := range peers {
		o, ok := r.peers[p]
		if !ok {
			return false
		}
		if seq, listed := o.V[src]; listed && seq >= s.contig || !listed && r.retiredBy(o.R, src) {
			continue // it has all of it, or retired it already
		}
		return false // a member has not incorporated all of it yet
	}
	return true
}

// indexEmpty reports whether no key's current change is from src.
func (r *Replica) indexEmpty(ctx context.Context, src string) (bool, error) {
	p, err := r.local.List(ctx, indexPrefix(src), datastore.ListOptions{Limit: 1, KeysOnly: true})
	if err != nil {
		return false, fmt.Errorf("replica: list index of %s: %w", src, err)
	}
	return len(p.Entries) == 0, nil
}

// retiredSource reports whether c, from a source not tracked here, is no
// newer than the retirement horizon: a retired source's, incorporated and
// superseded before it was retired.
func (r *Replica) retiredSource(c Change) bool {
	_, tracked := r.seqs[c.Source()]
	return !tracked && c.HLC <= r.retired.horizon
}

// retiredBy reports whether a peer with retirement horizon retired, which
// left src out of its vector, retired it: its horizon reaches src's newest
// change known here. Like tombstone collection, this rests on the grace
// period: a change older than it has reached every member.
func (r *Replica) retiredBy(retired HLC, src string) bool {
	h, ok := r.heads[src]
	return ok && retired > 0 && h.HLC <= retired
}
