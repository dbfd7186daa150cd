package replica

import (
	"context"
	"errors"
	"time"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/internal/engine"
)

// Time to live under replication.
//
// An expiry is part of the replicated change: a write with a TTL carries
// ExpiresAt (the writer's clock plus the TTL), signed with the rest, so
// every peer holds the same deadline and nobody replicates a delete when it
// passes. Each peer applies it by its own clock:
//
//   - Get and List stop showing the entry the moment ExpiresAt has passed.
//   - The replica's expiry loop then marks the local row expired (a local
//     rewrite, not a change: nothing is broadcast, so there is no storm of
//     deletes) and watchers get a Deleted event with Origin "".
//   - An expired change counts as a tombstone one version above it: a
//     later write of the key, on any peer, continues above that version and
//     wins everywhere through the ordinary change order; a re-set with a
//     new TTL or none is just such a write.
//   - The change itself stays in the store (its index entry, signature and
//     fingerprint digest included), so catch-up and repair serve it like
//     any change and fingerprints agree whether or not a peer has run its
//     expiry yet. A peer that receives a change already expired by its
//     clock stores it marked, shows nothing and tells its watchers nothing
//     (or Deleted, if it replaces a live value).
//   - Tombstone collection drops expired entries like tombstones, once
//     ExpiresAt is older than the grace period and every member has the
//     change; until every member has collected it, their fingerprints
//     differ by that key (as they do by any change still on its way).
//
// Precision. Expiry is by each peer's clock: a peer whose clock is d ahead
// of the writer's drops the entry d early, one behind drops it d late.
// Clocks within MaxClockSkew of each other (changes stamped further ahead
// are held back) bound the disagreement to that skew; with NTP it is
// milliseconds. Leases built on a TTL (package election) must allow for it.

var _ datastore.Expirer = (*Replica)(nil)

// SetTTL implements datastore.Expirer: Set with a time to live, counted by
// this peer's clock (Config.Now) and replicated with the value.
func (r *Replica) SetTTL(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error) {
	return r.SetWithTTL(ctx, key, value, ttl)
}

// ExpireDue implements datastore.Expirer: it applies now every expiry that
// has passed by this peer's clock (marks the entries expired and tells
// watchers) and returns how many. The replica's own loop does this by
// itself within milliseconds of each deadline; Get and List hide an
// expired entry from the deadline on either way.
func (r *Replica) ExpireDue(ctx context.Context) (int, error) {
	return r.expiry.Run(ctx)
}

// expiring reports whether c is a value with an expiry.
func (c Change) expiring() bool { return !c.Deleted && c.ExpiresAt != 0 }

// goneAt reports whether c's value has expired by now (Unix nanoseconds) or
// was marked expired here.
func (c Change) goneAt(now int64) bool {
	return c.expiring() && (c.expired || c.ExpiresAt <= now)
}

// expiredNow reports whether c's value has expired by this peer's clock.
func (r *Replica) expiredNow(c Change) bool {
	return c.expiring() && c.goneAt(r.cfg.Now().UnixNano())
}

// goneVersion is the version an expired change counts as deleted at: one
// above it, as if a tombstone had replaced it.
func (c Change) goneVersion() uint64 { return min(c.Version+1, datastore.MaxVersion) }

// visibleRecord is c as local writes see it: an expired value is a
// tombstone one version above it.
func (r *Replica) visibleRecord(c Change) engine.Record {
	if !r.expiredNow(c) {
		return c.record()
	}
	return engine.Record{
		Key: c.Key, Version: c.goneVersion(), Deleted: true,
		CreatedAt: time.Unix(0, c.CreatedAt), UpdatedAt: time.Unix(0, c.ExpiresAt),
	}
}

// markExpired returns c marked expired if its expiry has passed by our
// clock: a remote change that arrives expired is stored so.
func (r *Replica) markExpired(c Change) Change {
	if r.expiredNow(c) {
		c.expired = true
	}
	return c
}

// noteExpiry schedules (or unschedules) the expiry of each change's key,
// once committed.
func (r *Replica) noteExpiry(cs []Change) {
	recs := make([]engine.Record, 0, len(cs))
	for _, c := range cs {
		rec := engine.Record{Key: c.Key, Version: c.Version, Deleted: c.Deleted || c.expired}
		if c.ExpiresAt != 0 {
			rec.ExpiresAt = time.Unix(0, c.ExpiresAt)
		}
		recs = append(recs, rec)
	}
	r.expiries.Note(recs)
}

// expiryCommitter applies the expiry requests of the replica's engine.Expiry
// (pairs of a version check and a delete per due key): each key still
// holding an expired, unmarked change is marked expired in the local
// store. The result's version for the delete is one above the due version
// when that change was marked, which is how engine.Expiry counts expiries.
type expiryCommitter struct{ r *Replica }

func (x expiryCommitter) Commit(ctx context.Context, req engine.Request) (datastore.TxnResult, error) {
	r := x.r
	r.mu.Lock()
	defer r.mu.Unlock()
	for attempt := 0; ; attempt++ {
		res, marked, err := r.expireOnce(ctx, req)
		var busy errBusy
		switch {
		case errors.As(err, &busy): // a local write of the key is committing
			r.mu.Unlock()
			select {
			case <-busy.wait:
			case <-ctx.Done():
				r.mu.Lock()
				return datastore.TxnResult{}, ctx.Err()
			}
			r.mu.Lock()
			attempt--
			continue
		case errors.Is(err, datastore.ErrTxnFailed) && attempt < maxAttempts:
			continue // a writer outside the replica changed a key
		case err != nil:
			return datastore.TxnResult{}, err
		}
		r.noteExpiry(marked)
		return res, nil
	}
}

// expireOnce plans and commits one expiry request; the caller holds r.mu.
func (r *Replica) expireOnce(ctx context.Context, req engine.Request) (datastore.TxnResult, []Change, error) {
	res := datastore.TxnResult{Versions: make([]uint64, len(req.Ops))}
	now := r.cfg.Now().UnixNano()
	var ops []datastore.Op
	var marked []Change
	for i := 1; i < len(req.Ops); i += 2 {
		key, due := req.Ops[i].Key, req.Ops[i-1].Version
		if ch := r.inflight[key]; ch != nil {
			return res, nil, errBusy{ch}
		}
		c, local, found, err := r.currentLocal(ctx, key)
		if err != nil {
			return res, nil, err
		}
		if !found || !c.goneAt(now) || c.expired {
			res.Versions[i] = c.Version
			continue
		}
		c.expired = true
		env, err := encodeEnvelope(c)
		if err != nil {
			return res, nil, err
		}
		ops = append(ops, datastore.OpCheckVersion(key, local.Version), datastore.OpSet(key, env))
		marked = append(marked, c)
		res.Versions[i] = c.Version
		if c.Version == due {
			res.Versions[i] = due + 1
		}
	}
	if len(ops) == 0 {
		return res, nil, nil
	}
	if _, err := r.local.Txn(ctx, ops...); err != nil {
		return res, nil, err
	}
	return res, marked, nil
}
