// Package presence keeps time-limited records in a store: presence records
// (a peer saying it is alive, renewed while it is) and reservations (a key
// claimed for a while by one holder, such as a port or a job). Both are
// entries written with a time to live (datastore.Expirer), so a holder that
// stops renewing disappears by itself, and watchers see it go as a Deleted
// event.
//
// # Guarantees
//
// On a store with linearizable compare-and-set (etcd, or one local store
// shared in a process) a reservation is exclusive: Reserve succeeds for one
// holder at a time.
//
// On a replica under gossip (package replica) it is best effort. Reserve
// checks the key against the local replica only, so two peers that reserve
// the same key before hearing of each other both succeed; the per-key
// change order then keeps one of them on every peer, and the other learns
// it lost when the winner's change arrives (Held reports false, a watch
// shows the other value). Expiry is by each peer's clock, so a record
// lasts TTL give or take the clock skew between the writer and the reader.
// Presence records have no such race: each peer writes its own key.
package presence

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/univrs/peerstate/datastore"
)

// Errors; check them with errors.Is.
var (
	// ErrTaken reports a reservation held by someone else.
	ErrTaken = errors.New("presence: key is reserved")
	// ErrNotHeld reports a reservation that changed hands or expired.
	ErrNotHeld = errors.New("presence: reservation not held")
)

func expirer(s datastore.Store) (datastore.Expirer, error) {
	x, ok := s.(datastore.Expirer)
	if !ok {
		return nil, fmt.Errorf("presence: %T: %w", s, datastore.ErrTTLUnsupported)
	}
	return x, nil
}

// Reservation is a key held until it expires or is released.
type Reservation struct {
	Key     string
	Version uint64 // the key's version when reserved or last extended
	Expires time.Time
}

// Reserve claims key with value for ttl: it succeeds only if the key holds
// nothing (an expired reservation holds nothing), and fails with ErrTaken
// otherwise.
func Reserve(ctx context.Context, s datastore.Store, key string, value []byte, ttl time.Duration) (Reservation, error) {
	return write(ctx, s, key, 0, value, ttl, ErrTaken)
}

// Extend renews r for ttl with value, if r is still held (the key is still
// at r's version); ErrNotHeld otherwise.
func Extend(ctx context.Context, s datastore.Store, r Reservation, value []byte, ttl time.Duration) (Reservation, error) {
	return write(ctx, s, r.Key, r.Version, value, ttl, ErrNotHeld)
}

func write(ctx context.Context, s datastore.Store, key string, expected uint64, value []byte, ttl time.Duration, lost error) (Reservation, error) {
	if _, err := expirer(s); err != nil {
		return Reservation{}, err
	}
	res, err := s.Txn(ctx, datastore.OpCheckVersion(key, expected), datastore.OpSetTTL(key, value, ttl))
	if errors.Is(err, datastore.ErrTxnFailed) {
		return Reservation{}, fmt.Errorf("%w: %s", lost, key)
	}
	if err != nil {
		return Reservation{}, fmt.Errorf("presence: reserve %s: %w", key, err)
	}
	r := Reservation{Key: key, Version: res.Versions[1]}
	if e, err := s.Get(ctx, key); err == nil && e.Version == r.Version {
		r.Expires = e.ExpiresAt
	}
	return r, nil
}

// Held reports whether r is still the key's current state.
func Held(ctx context.Context, s datastore.Store, r Reservation) (bool, error) {
	e, err := s.Get(ctx, r.Key)
	if errors.Is(err, datastore.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("presence: %s: %w", r.Key, err)
	}
	return e.Version == r.Version, nil
}

// Release gives r up; ErrNotHeld if it changed hands or expired since.
func Release(ctx context.Context, s datastore.Store, r Reservation) error {
	_, err := s.Txn(ctx, datastore.OpCheckVersion(r.Key, r.Version), datastore.OpDelete(r.Key))
	if errors.Is(err, datastore.ErrTxnFailed) {
		return fmt.Errorf("%w: %s", ErrNotHeld, r.Key)
	}
	if err != nil {
		return fmt.Errorf("presence: release %s: %w", r.Key, err)
	}
	return nil
}

// Record is a presence record kept alive by a goroutine it owns: written
// with a TTL and rewritten every TTL/3 until Close.
type Record struct {
	x     datastore.Expirer
	s     datastore.Store
	key   string
	ttl   time.Duration
	stop  chan struct{}
	done  chan struct{}
	close sync.Once

	mu    sync.Mutex
	value []byte
	err   error
}

// Announce writes value at key with a time to live of ttl (at least 3 ms)
// and keeps renewing it until Close. A renewal that fails is retried at the
// next tick; Err reports the last failure.
func Announce(ctx context.Context, s datastore.Store, key string, value []byte, ttl time.Duration) (*Record, error) {
	x, err := expirer(s)
	if err != nil {
		return nil, err
	}
	if ttl < 3*time.Millisecond {
		return nil, fmt.Errorf("presence: announce %s: TTL %v below 3ms", key, ttl)
	}
	if _, err := x.SetTTL(ctx, key, value, ttl); err != nil {
		return nil, fmt.Errorf("presence: announce %s: %w", key, err)
	}
	r := &Record{x: x, s: s, key: key, ttl: ttl, value: value, stop: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	return r, nil
}

func (r *Record) run() {
	defer close(r.done)
	t := time.NewTicker(r.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.mu.Lock()
			v := r.value
			r.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), r.ttl) // a renewal later than that is moot
			_, err := r.x.SetTTL(ctx, r.key, v, r.ttl)
			cancel()
			r.mu.Lock()
			r.err = err
			r.mu.Unlock()
		}
	}
}

// Update changes the value written from the next renewal on.
func (r *Record) Update(value []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.value = value
}

// Err returns the error of the last renewal, nil if it succeeded.
func (r *Record) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Close stops renewing and deletes the record, so others see it go at once
// rather than when it expires. It is idempotent and waits for the renewal
// goroutine.
func (r *Record) Close() error {
	var err error
	r.close.Do(func() {
		close(r.stop)
		<-r.done
		err = r.s.Delete(context.Background(), r.key)
		if errors.Is(err, datastore.ErrKeyNotFound) {
			err = nil // expired already
		}
	})
	return err
}
