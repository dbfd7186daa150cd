package election

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/univrs/peerstate/datastore"
)

// Term is one period of leadership of this candidate. While it lasts, a
// goroutine owned by the Election renews the lease every RenewEvery; the
// term ends (Lost closes) when a renewal fails, another lease replaces ours,
// Resign, or the Election closes.
type Term struct {
	e *Election
	// Number is the lease key's version when the term began: it grows with
	// every new term, so it can fence off a former leader's late writes.
	Number uint64
	Lease  Lease // the lease as first won
	lost   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	version  uint64
	deadline time.Time
	err      error
}

func (e *Election) startTerm(l Lease, version uint64, start time.Time) (*Term, error) {
	ctx, cancel := context.WithCancel(context.Background())
	t := &Term{e: e, Number: version, Lease: l, lost: make(chan struct{}), cancel: cancel, done: make(chan struct{}),
		version: version, deadline: start.Add(e.cfg.TTL)}
	// Watch before anything else can change the key, from the revision of
	// our write's entry, so no replacement of our lease is missed.
	en, err := e.s.Get(ctx, e.cfg.Key)
	var w datastore.Watcher
	if err == nil && en.Version == version {
		w, err = e.s.Watch(ctx, e.cfg.Key, datastore.FromRevision(en.Revision))
	} else if err == nil || errors.Is(err, datastore.ErrKeyNotFound) {
		err = ErrLost // already replaced
	}
	if err != nil {
		cancel()
		t.end(err)
		close(t.done)
		return nil, err
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		w.Close()
		cancel()
		return nil, ErrClosed
	}
	e.term = t
	e.wg.Add(1)
	e.mu.Unlock()
	go t.run(ctx, w)
	return t, nil
}

func (t *Term) end(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err == nil {
		t.err = err
		close(t.lost)
	}
}

func (t *Term) active() bool {
	select {
	case <-t.lost:
		return false
	default:
		return t.e.cfg.Now().Before(t.Deadline())
	}
}

// Lost is closed when the term ends.
func (t *Term) Lost() <-chan struct{} { return t.lost }

// Err tells why the term ended: ErrLost (replaced or renewal refused),
// ErrClosed, or the store's error; nil while it lasts.
func (t *Term) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// Deadline is when this leader must stop acting unless a renewal succeeds
// before: the start of the last successful renewal (by our clock) plus TTL.
func (t *Term) Deadline() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.deadline
}

// Valid reports whether this candidate may act as leader now.
func (t *Term) Valid() bool { return t.active() }

func (t *Term) run(ctx context.Context, w datastore.Watcher) {
	e := t.e
	defer e.wg.Done()
	defer close(t.done)
	defer w.Close()
	defer t.cancel()
	tick := time.NewTicker(e.cfg.RenewEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			t.end(ErrLost)
			return
		case <-e.stop:
			t.end(ErrClosed)
			return
		case ev, ok := <-w.Events():
			if !ok {
				t.end(fmt.Errorf("election: watch ended: %w", errors.Join(w.Err(), ErrLost)))
				return
			}
			// Our own renewals come by as well; anything else — a delete,
			// or another holder's lease, even at our version (a replica
			// that ordered a concurrent lease after ours) — ends the term.
			if ev.Type == datastore.Deleted || !isHolder(ev.NewValue, e.cfg.ID) {
				t.end(ErrLost)
				return
			}
		case <-tick.C:
			if err := t.renew(ctx); err != nil {
				t.end(err)
				return
			}
		}
	}
}

func isHolder(value []byte, id string) bool {
	var l Lease
	return json.Unmarshal(value, &l) == nil && l.Holder == id
}

// renew extends the lease by compare-and-set on the version we wrote.
func (t *Term) renew(ctx context.Context) error {
	e := t.e
	t.mu.Lock()
	ver := t.version
	t.mu.Unlock()
	// The version alone does not prove the lease is ours: on a replica a
	// concurrent lease of another holder can take our version's place.
	cur, curVer, err := e.read(ctx)
	if err != nil {
		return err
	}
	if cur == nil || cur.Holder != e.cfg.ID || curVer != ver {
		return ErrLost
	}
	start := e.cfg.Now()
	l := t.Lease
	l.Expires = start.Add(e.cfg.TTL).UnixNano()
	v, ok, err := e.write(ctx, ver, l)
	if err != nil {
		return err
	}
	if !ok {
		return ErrLost
	}
	t.mu.Lock()
	t.version, t.deadline = v, start.Add(e.cfg.TTL)
	t.mu.Unlock()
	return nil
}

// Resign ends the term and deletes the lease if it is still ours, so that
// another candidate takes over at once.
func (t *Term) Resign(ctx context.Context) error {
	t.end(ErrLost)
	t.cancel()
	<-t.done
	t.mu.Lock()
	ver := t.version
	t.mu.Unlock()
	_, err := t.e.s.Txn(ctx, datastore.OpCheckVersion(t.e.cfg.Key, ver), datastore.OpDelete(t.e.cfg.Key))
	if err != nil && !errors.Is(err, datastore.ErrTxnFailed) {
		return fmt.Errorf("election: resign: %w", err)
	}
	return nil
}
