package engine

import (
	"context"
	"sync"
	"time"

	"github.com/google/btree"

	"github.com/univrs/peerstate/datastore"
)

// buildExpire plans a KindExpire request: each (check, delete) pair deletes
// its key if it is still live at the checked version with an expiry.
func buildExpire(req Request, rev uint64, now time.Time, get func(string) (Record, error)) (Plan, error) {
	plan := Plan{Result: datastore.TxnResult{Revision: rev, Versions: make([]uint64, len(req.Ops))}}
	want := map[string]uint64{}
	for i, op := range req.Ops {
		switch op.Kind {
		case datastore.OpKindCheckVersion:
			want[op.Key] = op.Version
		case datastore.OpKindDelete:
			old, err := get(op.Key)
			if err != nil {
				return Plan{}, err
			}
			v, ok := want[op.Key]
			if !ok || !old.Live() || old.Version != v || old.ExpiresAt.IsZero() || old.Version >= datastore.MaxVersion {
				plan.Result.Versions[i] = old.Version
				continue
			}
			next := old.Version + 1
			plan.Writes = append(plan.Writes, Record{Key: op.Key, Version: next, CreatedAt: old.CreatedAt, UpdatedAt: now, Revision: rev, Deleted: true})
			plan.Events = append(plan.Events, datastore.Event{Type: datastore.Deleted, Key: op.Key, OldValue: old.Value, Version: next, Revision: rev})
			plan.Result.Versions[i] = next
		}
	}
	if len(plan.Writes) == 0 {
		plan.Result.Revision = rev - 1
	}
	return plan, nil
}

// Due is an entry waiting to expire.
type Due struct {
	At      time.Time
	Key     string
	Version uint64
}

// ExpireRequest returns the KindExpire request that deletes the given
// entries unless they were written since.
func ExpireRequest(due []Due) Request {
	ops := make([]datastore.Op, 0, 2*len(due))
	for _, d := range due {
		ops = append(ops, datastore.OpCheckVersion(d.Key, d.Version), datastore.OpDelete(d.Key))
	}
	return Request{Kind: KindExpire, Ops: ops}
}

// ExpiryIndex tracks the records that have an expiry, ordered by it. A
// backend feeds it every committed record (Note) and its expiry loop asks
// it what is due. It is safe for concurrent use.
type ExpiryIndex struct {
	mu    sync.Mutex
	byAt  *btree.BTreeG[Due]
	byKey map[string]Due
	wake  chan struct{}
	// onSchedule is called (outside the lock) when an entry is scheduled.
	onSchedule func()
}

// NewExpiryIndex returns an empty index.
func NewExpiryIndex() *ExpiryIndex {
	return &ExpiryIndex{
		byAt: btree.NewG(16, func(a, b Due) bool {
			if !a.At.Equal(b.At) {
				return a.At.Before(b.At)
			}
			return a.Key < b.Key
		}),
		byKey: map[string]Due{},
		wake:  make(chan struct{}, 1),
	}
}

// Note records the committed state of some records: a live record with an
// expiry is (re)scheduled, any other is unscheduled.
func (x *ExpiryIndex) Note(recs []Record) {
	x.mu.Lock()
	scheduled, earliest := false, false
	onSchedule := x.onSchedule
	for _, r := range recs {
		if old, ok := x.byKey[r.Key]; ok {
			x.byAt.Delete(old)
			delete(x.byKey, r.Key)
		}
		if r.Live() && !r.ExpiresAt.IsZero() {
			d := Due{At: r.ExpiresAt, Key: r.Key, Version: r.Version}
			if min, ok := x.byAt.Min(); !ok || d.At.Before(min.At) {
				earliest = true
			}
			x.byAt.ReplaceOrInsert(d)
			x.byKey[r.Key] = d
			scheduled = true
		}
	}
	x.mu.Unlock()
	if scheduled && onSchedule != nil {
		onSchedule()
	}
	if earliest {
		select {
		case x.wake <- struct{}{}:
		default:
		}
	}
}

// drop unschedules d if it is still scheduled exactly so.
func (x *ExpiryIndex) drop(d Due) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if cur, ok := x.byKey[d.Key]; ok && cur == d {
		x.byAt.Delete(d)
		delete(x.byKey, d.Key)
	}
}

// Due returns up to limit entries whose expiry is at or before now, earliest
// first.
func (x *ExpiryIndex) Due(now time.Time, limit int) []Due {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []Due
	x.byAt.Ascend(func(d Due) bool {
		if d.At.After(now) || len(out) == limit {
			return false
		}
		out = append(out, d)
		return true
	})
	return out
}

// Next returns the earliest scheduled expiry.
func (x *ExpiryIndex) Next() (time.Time, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	d, ok := x.byAt.Min()
	return d.At, ok
}

// Len is how many entries are scheduled.
func (x *ExpiryIndex) Len() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.byKey)
}

// expireBatch bounds the entries one expiry commit deletes.
const expireBatch = 256

// MaxExpiryWait is the longest the expiry loop sleeps between two looks at
// the clock, so that an injected clock moved forward is noticed.
const MaxExpiryWait = time.Second

// Expiry deletes expired entries through a Committer, by itself (a loop it
// owns, started by the first entry with an expiry, so a store that never
// uses TTL runs no goroutine for it) or on demand (Run). The Committer must
// Note every commit's records in the index.
type Expiry struct {
	idx *ExpiryIndex
	c   Committer
	now func() time.Time
	run sync.Mutex // one expiry pass at a time

	mu      sync.Mutex
	started bool
	closed  bool
	stop    chan struct{}
	done    chan struct{}
}

// NewExpiry returns the expiry of idx over c with clock now; its loop
// starts on the first Note of an entry with an expiry.
func NewExpiry(idx *ExpiryIndex, c Committer, now func() time.Time) *Expiry {
	e := &Expiry{idx: idx, c: c, now: now, stop: make(chan struct{}), done: make(chan struct{})}
	idx.mu.Lock()
	idx.onSchedule = e.start
	idx.mu.Unlock()
	return e
}

func (e *Expiry) start() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started || e.closed {
		return
	}
	e.started = true
	go e.loop()
}

func (e *Expiry) loop() {
	defer close(e.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t := time.NewTimer(MaxExpiryWait)
	defer t.Stop()
	for {
		wait := MaxExpiryWait
		if at, ok := e.idx.Next(); ok {
			wait = min(max(at.Sub(e.now()), 0), MaxExpiryWait)
		}
		t.Reset(wait)
		select {
		case <-e.stop:
			return
		case <-e.idx.wake:
		case <-t.C:
			if _, err := e.Run(ctx); err != nil {
				// The store is failing or closed; look again later.
				select {
				case <-e.stop:
					return
				case <-time.After(MaxExpiryWait):
				}
			}
		}
	}
}

// Run deletes every entry due by the clock now and returns how many it
// deleted.
func (e *Expiry) Run(ctx context.Context) (int, error) {
	e.run.Lock()
	defer e.run.Unlock()
	n := 0
	for {
		due := e.idx.Due(e.now(), expireBatch)
		if len(due) == 0 {
			return n, nil
		}
		res, err := e.c.Commit(ctx, ExpireRequest(due))
		if err != nil {
			return n, err
		}
		deleted := 0
		for i := 1; i < len(res.Versions); i += 2 {
			if d := due[i/2]; res.Versions[i] == d.Version+1 {
				deleted++
			} else {
				e.idx.drop(d) // written since: that commit rescheduled it
			}
		}
		n += deleted
		if len(due) < expireBatch {
			return n, nil
		}
	}
}

// Close stops the loop and waits for it; it is idempotent.
func (e *Expiry) Close() {
	e.mu.Lock()
	started, already := e.started, e.closed
	e.closed = true
	e.mu.Unlock()
	if !already {
		close(e.stop)
	}
	if started {
		<-e.done
	}
}
