package replica

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/internal/engine"
)

// maxAttempts bounds the retries of a local transaction that lost a race
// with a writer outside the replica.
const maxAttempts = 16

type committer struct{ r *Replica }

// Commit runs a local write. Its keys are marked in flight under the
// replica's lock first (a write that touches a key in flight waits for it);
// then their current state is read without the lock, the write is planned
// with the shared engine under the lock (versions, sequence numbers, HLC
// timestamps), and its changes are signed and encoded without it, so
// concurrent writers read and sign in parallel. The envelopes and index
// commit in one local transaction, concurrently with other local writes, so
// a backend with group commit syncs once for many of them. Each local write
// stays one local commit with its own revision.
func (c committer) Commit(ctx context.Context, req engine.Request) (datastore.TxnResult, error) {
	r := c.r
	for _, op := range req.Ops {
		if isReserved(op.Key) {
			return datastore.TxnResult{}, validateUserKey(op.Key)
		}
	}
	for attempt := 0; ; attempt++ {
		r.mu.Lock()
		if wait := r.inFlight(req.Ops); wait != nil {
			r.mu.Unlock()
			select {
			case <-wait:
				attempt-- // waiting is not a failed attempt
				continue
			case <-ctx.Done():
				return datastore.TxnResult{}, ctx.Err()
			}
		}
		w := r.reserve(req.Ops)
		r.mu.Unlock()
		err := r.prepareLocal(ctx, req, &w)
		if err != nil || w.ops == nil {
			r.mu.Lock()
			r.finishLocal(w, false)
			r.mu.Unlock()
			return w.result, err
		}
		res, err := r.local.Txn(ctx, w.ops...)
		if err == nil {
			for _, c := range w.changes {
				r.fp.set(c)
			}
			r.noteExpiry(w.written)
		}
		r.mu.Lock()
		r.finishLocal(w, err == nil)
		r.mu.Unlock()
		if errors.Is(err, datastore.ErrTxnFailed) && attempt < maxAttempts {
			continue // a writer outside the replica changed a key: plan again
		}
		if err != nil {
			return datastore.TxnResult{}, fmt.Errorf("replica: commit: %w", err)
		}
		if len(w.changes) > 0 {
			r.broadcast(ctx, w.changes)
		}
		w.result.Revision = res.Revision
		return w.result, nil
	}
}

// localWrite is a planned local write.
type localWrite struct {
	ops     []datastore.Op // nil: nothing to commit
	changes []Change       // the replicated ones, to broadcast
	written []Change       // all of them, replicated or not
	seqs    []uint64
	keys    []string // marked in flight
	done    chan struct{}
	result  datastore.TxnResult
	// recordsGen is set on the writes that record our generation, until
	// one of them commits.
	recordsGen bool
}

// inFlight returns a channel closed when a local write in flight on one of
// the ops' keys finishes, or nil when none is.
func (r *Replica) inFlight(ops []datastore.Op) <-chan struct{} {
	for _, op := range ops {
		if ch := r.inflight[op.Key]; ch != nil {
			return ch
		}
	}
	return nil
}

// reserve marks the ops' keys in flight for a new local write; the caller
// holds r.mu and checked that none is.
func (r *Replica) reserve(ops []datastore.Op) localWrite {
	w := localWrite{done: make(chan struct{})}
	for _, op := range ops {
		if r.inflight[op.Key] == nil {
			r.inflight[op.Key] = w.done
			w.keys = append(w.keys, op.Key)
		}
	}
	return w
}

// prepareLocal plans req into w, whose keys are in flight: it reads their
// state, plans under r.mu, then signs and encodes the changes. On error the
// caller finishes w uncommitted.
func (r *Replica) prepareLocal(ctx context.Context, req engine.Request, w *localWrite) error {
	prev := make(map[string]localState, len(w.keys))
	for _, key := range w.keys {
		c, e, found, err := r.currentLocal(ctx, key)
		if err != nil {
			return err
		}
		prev[key] = localState{change: c, version: e.Version, found: found}
	}
	r.mu.Lock()
	err := r.planLocal(req, prev, w)
	r.mu.Unlock()
	if err != nil {
		return err
	}
	if len(w.changes) == 0 && w.ops == nil {
		w.result.Revision, err = r.localRevision(ctx)
		return err
	}
	for key, p := range prev {
		w.ops = append(w.ops, datastore.OpCheckVersion(key, p.version))
	}
	for i := range w.changes {
		ch := &w.changes[i]
		if err := sign(r.cfg.Key, ch, true); err != nil {
			return err
		}
		wops, err := r.replaceOps(prev[ch.Key].change, prev[ch.Key].found, *ch)
		if err != nil {
			return err
		}
		w.ops = append(w.ops, wops...)
	}
	w.written = slices.Clone(w.changes)
	// Only the replicated changes are broadcast.
	w.changes = slices.DeleteFunc(w.changes, func(c Change) bool { return c.Seq == 0 })
	return nil
}

// planLocal plans req against prev, the state of its keys, into w: the
// changes it makes, with versions, sequence numbers and timestamps, unsigned;
// w.ops holds the bookkeeping ops, nil when req commits nothing. The caller
// holds r.mu.
func (r *Replica) planLocal(req engine.Request, prev map[string]localState, w *localWrite) error {
	read := func(key string) (engine.Record, bool, error) {
		p, ok := prev[key]
		if !ok {
			return engine.Record{}, false, fmt.Errorf("replica: %q was not read", key)
		}
		if !p.found {
			if f := r.floors[floorBucket(key)]; f > 0 { // the key may have been collected: continue past it
				return engine.Record{Key: key, Version: f, Deleted: true}, true, nil
			}
			return engine.Record{}, false, nil
		}
		return r.visibleRecord(p.change), true, nil
	}
	plan, err := engine.Build(req, 1, r.cfg.Now(), r.cfg.DeleteMissingOK, read)
	if err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	w.result = plan.Result
	if len(plan.Writes) == 0 {
		return nil
	}
	w.ops = []datastore.Op{}
	if book := r.bookOps(); book != nil {
		w.ops = append(w.ops, book...)
		w.recordsGen = true
	}
	for _, pw := range plan.Writes {
		// A change's timestamp is above the one it replaces and at least its
		// version: receivers check the latter (Change.Validate).
		after := HLC(pw.Version - 1)
		if p := prev[pw.Key]; p.found {
			after = max(after, p.change.HLC)
		}
		ch := Change{
			Key: pw.Key, Value: pw.Value, Deleted: pw.Deleted, Version: pw.Version,
			HLC: r.clock.NextAfter(after), Origin: r.cfg.ID, Gen: r.gen,
			CreatedAt: pw.CreatedAt.UnixNano(), UpdatedAt: pw.UpdatedAt.UnixNano(),
		}
		// A key created by a peer whose clock runs ahead must not look
		// updated before it was created here: receivers reject that.
		ch.UpdatedAt = max(ch.UpdatedAt, ch.CreatedAt)
		if !pw.ExpiresAt.IsZero() { // the TTL counts from the write
			ch.ExpiresAt = ch.UpdatedAt + pw.ExpiresAt.Sub(pw.UpdatedAt).Nanoseconds()
		}
		if ch.Deleted {
			ch.Value = nil
		}
		if r.Replicates(pw.Key) {
			if err := r.admit(ch); err != nil {
				return err
			}
			ch.Seq = r.seqNext
			r.seqNext++
			w.seqs = append(w.seqs, ch.Seq)
		}
		w.changes = append(w.changes, ch)
	}
	return nil
}

// finishLocal ends a local write, committed or not; the caller holds r.mu.
// Its sequence numbers count as done either way: a failed write's numbers
// are never used (receivers step over them when a catch-up responder's
// vector, bounded by the signed head, covers them).
func (r *Replica) finishLocal(w localWrite, committed bool) {
	for _, key := range w.keys {
		delete(r.inflight, key)
	}
	if committed && w.recordsGen {
		r.genPending = false
	}
	if committed {
		for _, c := range w.changes {
			if c.Seq > r.ownHead.Seq {
				r.ownHead = c.Elide()
			}
		}
	}
	close(w.done)
	r.abandon(w.seqs)
}

// abandon marks sequence numbers as done; the caller holds r.mu.
func (r *Replica) abandon(seqs []uint64) {
	self := r.seqs[r.source]
	for _, s := range seqs {
		self.add(s)
	}
}

var errLocalRace = errors.New("replica: local store changed underneath")

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
	if hadOld && old.Seq > 0 && old.Gen > 0 {
		ops = append(ops, datastore.OpDelete(indexKey(old.Source(), old.Seq)))
	}
	if next.Seq > 0 {
		ops = append(ops, datastore.OpSet(indexKey(next.Source(), next.Seq), []byte(next.Key)))
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
	// Future counts changes stamped further ahead of our clock than
	// MaxClockSkew: not applied now, they come again with a later catch-up.
	Future int
	// Invalid counts changes rejected: unsigned or not signed by their
	// origin, or breaking the replication rules. The error says why.
	Invalid int
	// Refused counts validly signed changes that Config.Admit refused, and
	// RefusedBy counts them by origin: the signature proves the origin
	// wrote them, whoever relayed them.
	Refused   int
	RefusedBy map[string]int
}

// Commit limits of one local transaction of Apply: a batch is applied in as
// many transactions as it needs, each with the watermarks it covers, so no
// backend meets its transaction limits (Badger's are the tightest).
const (
	applyChunkChanges = 512
	applyChunkBytes   = 4 << 20
)

// Apply applies changes received from peer `from` (through pubsub,
// catch-up, a value fetch or repair). Each change must be signed by its
// origin and valid (Change.Validate); the others are left out and reported
// in the error (wrapping ErrBadSignature, ErrInvalidChange,
// datastore.ErrInvalidKey or datastore.ErrValueTooLarge) while the valid
// ones are still applied. Each change is compared with the key's local state
// under the deterministic order and written only if it is newer; the
// watermarks of the changes' sources advance in the same local transaction.
func (r *Replica) Apply(ctx context.Context, from string, changes []Change) (ApplyResult, error) {
	var res ApplyResult
	var invalid []error
	var checked []Change
	for _, c := range changes {
		if err := c.Validate(r.cfg.MaxValueSize); err != nil {
			invalid = append(invalid, err)
			continue
		}
		if c.Elided() && r.Replicates(c.Key) {
			invalid = append(invalid, fmt.Errorf("%w: %q: value left out", ErrInvalidChange, c.Key))
			continue
		}
		checked = append(checked, c)
	}
	var valid, refused []Change
	var refusals []error
	horizon := physical(r.cfg.Now().Add(r.cfg.MaxClockSkew))
	for i, err := range r.keys.verifyAll(checked) {
		c := checked[i]
		switch {
		case err != nil:
			invalid = append(invalid, err)
		case c.HLC > horizon:
			res.Future++
		default:
			if !r.Replicates(c.Key) {
				valid = append(valid, c) // skipped below, whatever its content
				continue
			}
			if err := r.admit(c); err != nil {
				refused = append(refused, c)
				if len(refusals) < maxReportedRefusals {
					refusals = append(refusals, err)
				}
				if res.RefusedBy == nil {
					res.RefusedBy = map[string]int{}
				}
				res.RefusedBy[c.Origin]++
				continue
			}
			valid = append(valid, c)
		}
	}
	res.Invalid = len(invalid)
	res.Refused = len(refused)
	for len(valid) > 0 || len(refused) > 0 {
		n, size := 0, 0
		for n < len(valid) && n < applyChunkChanges && (n == 0 || size+len(valid[n].Value) <= applyChunkBytes) {
			size += len(valid[n].Value) + len(valid[n].Key)
			n++
		}
		// Refused changes carry no value into the store: only their
		// sequence numbers go with the first chunk.
		part, err := r.applyChunk(ctx, valid[:n], refused)
		res.Applied += part.Applied
		res.Stale += part.Stale
		res.Skipped += part.Skipped
		if err != nil {
			return res, err
		}
		valid, refused = valid[n:], nil
	}
	var errs []error
	if len(invalid) > 0 {
		errs = append(errs, fmt.Errorf("replica: %d invalid changes from %s: %w", len(invalid), from, errors.Join(invalid...)))
	}
	if len(refusals) > 0 {
		errs = append(errs, fmt.Errorf("replica: %d changes from %s refused: %w", res.Refused, from, errors.Join(refusals...)))
	}
	return res, errors.Join(errs...)
}

// maxReportedRefusals bounds the refusals Apply's error spells out.
const maxReportedRefusals = 8

// admit asks Config.Admit about c.
func (r *Replica) admit(c Change) error {
	if r.cfg.Admit == nil {
		return nil
	}
	if err := r.cfg.Admit(c); err != nil {
		return fmt.Errorf("%w: %q: %w", ErrRefused, c.Key, err)
	}
	return nil
}

// applyChunk applies verified changes in one local transaction; refused
// ones only count as incorporated.
func (r *Replica) applyChunk(ctx context.Context, changes, refused []Change) (ApplyResult, error) {
	var res ApplyResult
	latest := map[string]Change{} // the newest change of each key in the batch
	var order []string
	var valid []Change
	skipped := slices.Clip(refused) // not ours to hold, yet incorporated: they count for watermarks
	for _, c := range changes {
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
	r.mu.Lock()
	defer r.mu.Unlock()
	for attempt := 0; ; attempt++ {
		n, applied, err := r.applyOnce(ctx, valid, skipped, order, latest)
		if errors.Is(err, errLocalRace) && attempt < maxAttempts {
			continue
		}
		var busy errBusy
		if errors.As(err, &busy) { // wait out the local write, then plan again
			r.mu.Unlock()
			select {
			case <-busy.wait:
			case <-ctx.Done():
				r.mu.Lock()
				return res, ctx.Err()
			}
			r.mu.Lock()
			attempt--
			continue
		}
		if err == nil {
			for _, c := range applied {
				r.fp.set(c)
			}
			r.noteExpiry(applied)
		}
		res.Applied, res.Stale = n.Applied, n.Stale
		return res, err
	}
}

func (r *Replica) applyOnce(ctx context.Context, valid, skipped []Change, order []string, latest map[string]Change) (ApplyResult, []Change, error) {
	var res ApplyResult
	seqs := map[string]*seqDelta{} // tentative, kept only if the commit succeeds
	seqsOf := func(src string) *seqDelta {
		if s, ok := seqs[src]; ok {
			return s
		}
		s := newSeqDelta(r.seqs[src])
		seqs[src] = s
		return s
	}
	cutoff := physical(r.cfg.Now().Add(-r.cfg.TombstoneGrace))
	var ops []datastore.Op
	var applied []Change
	for _, key := range order {
		c := latest[key]
		if ch := r.inflight[key]; ch != nil {
			return res, nil, errBusy{ch}
		}
		r.clock.Observe(c.HLC)
		old, local, found, err := r.currentLocal(ctx, key)
		if err != nil {
			return res, nil, err
		}
		switch {
		case found && !old.Less(c):
			res.Stale++
			continue
		case !found && c.HLC <= cutoff && (r.retiredSource(c) || seqsOf(c.Source()).has(c.Seq) || c.Seq <= r.collected[c.Source()]):
			// Already incorporated, older than the grace period, and the
			// key is gone since: its tombstone was collected. Applying it
			// would resurrect a deleted key. Nothing younger is ever
			// dropped here, whatever a peer made our watermarks say.
			res.Stale++
			continue
		}
		c = r.markExpired(c) // arrived expired: stored so
		ops = append(ops, datastore.OpCheckVersion(key, local.Version))
		wops, err := r.replaceOps(old, found, c)
		if err != nil {
			return res, nil, err
		}
		ops = append(ops, wops...)
		applied = append(applied, c)
		res.Applied++
	}
	res.Stale += len(valid) - len(order) // superseded within the batch
	heads := map[string]Change{}
	for _, c := range append(valid, skipped...) {
		src := c.Source()
		if src == r.source {
			continue // our own numbering is counted where it is handed out
		}
		if r.retiredSource(c) {
			continue // a retired source's old change: not tracked again for it
		}
		if h, ok := r.heads[src]; (!ok || c.Seq > h.Seq) && c.Seq > heads[src].Seq {
			heads[src] = c
		}
		s := seqsOf(src)
		_, known := r.seqs[src]
		if s.add(c.Seq) || !known {
			ops = append(ops, datastore.OpSet(watermarkKey(src), []byte(strconv.FormatUint(s.contig, 10))))
		}
	}
	for src, h := range heads {
		enc, err := encodeHead(h)
		if err != nil {
			return res, nil, err
		}
		ops = append(ops, datastore.OpSet(headKey(src), enc))
	}
	ops = dedupWatermarkOps(ops)
	book := false
	if len(ops) > 0 {
		if b := r.bookOps(); b != nil {
			ops, book = append(ops, b...), true
		}
		_, err := r.local.Txn(ctx, ops...)
		if errors.Is(err, datastore.ErrTxnFailed) {
			return res, nil, errLocalRace
		}
		if err != nil {
			return res, nil, fmt.Errorf("replica: apply: %w", err)
		}
	}
	if book {
		r.genPending = false
	}
	for src, s := range seqs {
		r.seqs[src] = s.commit()
	}
	for src, h := range heads {
		r.heads[src] = h.Elide()
	}
	return res, applied, nil
}

// errBusy sends Apply to wait for a local write in flight on one of its
// keys.
type errBusy struct{ wait <-chan struct{} }

func (errBusy) Error() string { return "replica: key busy with a local write" }

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
