package replica

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/internal/engine"
)

// maxAttempts bounds the retries of a local transaction that lost a race
// with a writer outside the replica.
const maxAttempts = 16

type committer struct{ r *Replica }

// Commit runs a local write: it plans it with the shared engine against the
// replicated state, then commits the new envelopes, the index and our
// sequence number in one local transaction, and broadcasts the changes.
func (c committer) Commit(ctx context.Context, req engine.Request) (datastore.TxnResult, error) {
	r := c.r
	for _, op := range req.Ops {
		if isReserved(op.Key) {
			return datastore.TxnResult{}, validateUserKey(op.Key)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for attempt := 0; ; attempt++ {
		res, changes, err := r.commitOnce(ctx, req)
		if errors.Is(err, errLocalRace) && attempt < maxAttempts {
			continue
		}
		if err != nil {
			return datastore.TxnResult{}, err
		}
		if len(changes) > 0 {
			r.broadcast(ctx, changes)
		}
		return res, nil
	}
}

var errLocalRace = errors.New("replica: local store changed underneath")

func (r *Replica) commitOnce(ctx context.Context, req engine.Request) (datastore.TxnResult, []Change, error) {
	prev := map[string]localState{}
	read := func(key string) (engine.Record, bool, error) {
		c, e, found, err := r.currentLocal(ctx, key)
		if err != nil {
			return engine.Record{}, false, err
		}
		prev[key] = localState{change: c, version: e.Version, found: found}
		if !found {
			if r.floor > 0 { // the key may have been collected: continue past it
				return engine.Record{Key: key, Version: r.floor, Deleted: true}, true, nil
			}
			return engine.Record{}, false, nil
		}
		return c.record(), true, nil
	}
	plan, err := engine.Build(req, 1, r.cfg.Now(), r.cfg.DeleteMissingOK, read)
	if err != nil {
		return datastore.TxnResult{}, nil, fmt.Errorf("replica: %w", err)
	}
	if len(plan.Writes) == 0 {
		rev, err := r.localRevision(ctx)
		plan.Result.Revision = rev
		return plan.Result, nil, err
	}
	self := r.seqs[r.cfg.ID]
	if self == nil {
		self = &seqSet{}
	}
	seq := self.contig
	var ops []datastore.Op
	var changes []Change
	for key, p := range prev {
		ops = append(ops, datastore.OpCheckVersion(key, p.version))
	}
	for _, w := range plan.Writes {
		ch := Change{
			Key: w.Key, Value: w.Value, Deleted: w.Deleted, Version: w.Version,
			HLC: r.clock.Next(), Origin: r.cfg.ID,
			CreatedAt: w.CreatedAt.UnixNano(), UpdatedAt: w.UpdatedAt.UnixNano(),
		}
		if ch.Deleted {
			ch.Value = nil
		}
		if r.Replicates(w.Key) {
			seq++
			ch.Seq = seq
			changes = append(changes, ch)
		}
		wops, err := r.replaceOps(prev[w.Key].change, prev[w.Key].found, ch)
		if err != nil {
			return datastore.TxnResult{}, nil, err
		}
		ops = append(ops, wops...)
	}
	if seq != self.contig {
		ops = append(ops, datastore.OpSet(watermarkKey(r.cfg.ID), []byte(strconv.FormatUint(seq, 10))))
	}
	res, err := r.local.Txn(ctx, ops...)
	if errors.Is(err, datastore.ErrTxnFailed) {
		return datastore.TxnResult{}, nil, errLocalRace
	}
	if err != nil {
		return datastore.TxnResult{}, nil, fmt.Errorf("replica: commit: %w", err)
	}
	self.contig = seq
	r.seqs[r.cfg.ID] = self
	plan.Result.Revision = res.Revision
	return plan.Result, changes, nil
}

type localState struct {
	change  Change
	version uint64 // the local store's version of the key; 0 if absent
	found   bool
}

// replaceOps returns the local ops that make next the key's state in place
// of old: the envelope, and the index moved from old's change to next's.
func (r *Replica) replaceOps(old Change, hadOld bool, next Change) ([]datastore.Op, error) {
	env, err := encodeEnvelope(next)
	if err != nil {
		return nil, fmt.Errorf("replica: encode %q: %w", next.Key, err)
	}
	ops := []datastore.Op{datastore.OpSet(next.Key, env)}
	if hadOld && old.Seq > 0 {
		ops = append(ops, datastore.OpDelete(indexKey(old.Origin, old.Seq)))
	}
	if next.Seq > 0 {
		ops = append(ops, datastore.OpSet(indexKey(next.Origin, next.Seq), []byte(next.Key)))
	}
	return ops, nil
}

func (r *Replica) localRevision(ctx context.Context) (uint64, error) {
	p, err := r.local.List(ctx, reservedRoot, datastore.ListOptions{Limit: 1, KeysOnly: true})
	return p.Revision, err
}

func (r *Replica) broadcast(ctx context.Context, changes []Change) {
	b := r.bc.Load()
	if b == nil || *b == nil {
		return
	}
	// A failed broadcast is repaired by catch-up; the write stands.
	_ = (*b).Broadcast(ctx, changes)
}

// ApplyResult counts what Apply did with a batch.
type ApplyResult struct {
	Applied int // changes that won and are now the keys' state
	Stale   int // changes already incorporated or older than the local state
	Skipped int // changes for keys this replica does not replicate
}

// Apply applies changes received from peer `from` (through pubsub or
// catch-up). Each change is compared with the key's local state under the
// deterministic order and written only if it is newer; the watermarks of the
// changes' origins advance in the same local transaction. Invalid changes
// are left out and reported in the error (wrapping ErrInvalidChange,
// datastore.ErrInvalidKey or datastore.ErrValueTooLarge); the valid ones are
// still applied.
func (r *Replica) Apply(ctx context.Context, from string, changes []Change) (ApplyResult, error) {
	var res ApplyResult
	var invalid []error
	latest := map[string]Change{} // the newest change of each key in the batch
	var order []string
	var valid []Change
	var skipped []Change // not ours to hold, yet incorporated: they count for watermarks
	for _, c := range changes {
		if err := c.Validate(r.cfg.MaxValueSize); err != nil {
			invalid = append(invalid, err)
			continue
		}
		if !r.Replicates(c.Key) {
			skipped = append(skipped, c)
			res.Skipped++
			continue
		}
		valid = append(valid, c)
		if l, ok := latest[c.Key]; !ok || l.Less(c) {
			if !ok {
				order = append(order, c.Key)
			}
			latest[c.Key] = c
		}
	}
	if len(valid)+len(skipped) > 0 {
		r.mu.Lock()
		var err error
		for attempt := 0; ; attempt++ {
			var n ApplyResult
			n, err = r.applyOnce(ctx, valid, skipped, order, latest)
			if errors.Is(err, errLocalRace) && attempt < maxAttempts {
				continue
			}
			res.Applied, res.Stale = n.Applied, n.Stale
			break
		}
		r.mu.Unlock()
		if err != nil {
			return res, err
		}
	}
	if len(invalid) > 0 {
		return res, fmt.Errorf("replica: %d invalid changes from %s: %w", len(invalid), from, errors.Join(invalid...))
	}
	return res, nil
}

func (r *Replica) applyOnce(ctx context.Context, valid, skipped []Change, order []string, latest map[string]Change) (ApplyResult, error) {
	var res ApplyResult
	seqs := map[string]*seqSet{} // tentative copies, kept only if the commit succeeds
	seqsOf := func(origin string) *seqSet {
		if s, ok := seqs[origin]; ok {
			return s
		}
		s := &seqSet{}
		if cur := r.seqs[origin]; cur != nil {
			s = cur.clone()
		}
		seqs[origin] = s
		return s
	}
	var ops []datastore.Op
	for _, key := range order {
		c := latest[key]
		r.clock.Observe(c.HLC)
		old, local, found, err := r.currentLocal(ctx, key)
		if err != nil {
			return res, err
		}
		switch {
		case found && !old.Less(c):
			res.Stale++
			continue
		case !found && seqsOf(c.Origin).has(c.Seq):
			// Already incorporated, and the key is gone since: its tombstone
			// was collected. Applying it would resurrect a deleted key.
			res.Stale++
			continue
		}
		ops = append(ops, datastore.OpCheckVersion(key, local.Version))
		wops, err := r.replaceOps(old, found, c)
		if err != nil {
			return res, err
		}
		ops = append(ops, wops...)
		res.Applied++
	}
	res.Stale += len(valid) - len(order) // superseded within the batch
	for _, c := range append(valid, skipped...) {
		s := seqsOf(c.Origin)
		_, known := r.seqs[c.Origin]
		if s.add(c.Seq) || !known {
			ops = append(ops, datastore.OpSet(watermarkKey(c.Origin), []byte(strconv.FormatUint(s.contig, 10))))
		}
	}
	ops = dedupWatermarkOps(ops)
	if len(ops) > 0 {
		_, err := r.local.Txn(ctx, ops...)
		if errors.Is(err, datastore.ErrTxnFailed) {
			return res, errLocalRace
		}
		if err != nil {
			return res, fmt.Errorf("replica: apply: %w", err)
		}
	}
	for origin, s := range seqs {
		r.seqs[origin] = s
	}
	return res, nil
}

// dedupWatermarkOps keeps the last write of each key: a batch may move one
// origin's watermark several times.
func dedupWatermarkOps(ops []datastore.Op) []datastore.Op {
	last := map[string]int{}
	for i, op := range ops {
		if op.Kind == datastore.OpKindSet {
			last[op.Key] = i
		}
	}
	out := ops[:0]
	for i, op := range ops {
		if op.Kind == datastore.OpKindSet && last[op.Key] != i {
			continue
		}
		out = append(out, op)
	}
	return out
}
