package replica

import (
	"context"
	"fmt"
	"sync"

	"github.com/univrs/peerstate/datastore"
)

// Watch implements datastore.Store. It follows the local store's watch and
// shows replicated state: versions are the replicated ones, a tombstone
// written over a value is a Deleted event, a remote change carries its
// writer's peer ID as Origin, and bookkeeping is never shown. Revisions are
// the local store's, so FromRevision works as on any store.
func (r *Replica) Watch(ctx context.Context, pattern string, opts ...datastore.WatchOption) (datastore.Watcher, error) {
	select {
	case <-r.closing:
		return nil, fmt.Errorf("replica: watch: %w", datastore.ErrClosed)
	default:
	}
	inner, err := r.local.Watch(ctx, pattern, opts...)
	if err != nil {
		return nil, err
	}
	cfg := datastore.ApplyWatchOptions(opts...)
	w := &watcher{
		inner: inner,
		self:  r.cfg.ID,
		out:   make(chan datastore.Event, cfg.Buffer),
		done:  make(chan struct{}),
		stop:  make(chan struct{}),
		end:   r.closing,
	}
	r.watchers.Go(w.run)
	return w, nil
}

type watcher struct {
	inner datastore.Watcher
	self  string
	out   chan datastore.Event
	done  chan struct{}   // closed when run returns
	stop  chan struct{}   // closed by Close
	end   <-chan struct{} // closed when the replica closes

	mu     sync.Mutex
	err    error
	closed bool
}

func (w *watcher) Events() <-chan datastore.Event { return w.out }

func (w *watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *watcher) Close() error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.stop)
	}
	w.mu.Unlock()
	w.inner.Close()
	<-w.done
	return nil
}

func (w *watcher) run() {
	defer close(w.done)
	defer close(w.out)
	for {
		select {
		case ev, ok := <-w.inner.Events():
			if !ok {
				w.finish(w.inner.Err())
				return
			}
			out, keep, err := w.translate(ev)
			if err != nil {
				w.finish(err)
				w.inner.Close()
				return
			}
			if !keep {
				continue
			}
			select {
			case w.out <- out:
			case <-w.stop:
				return
			case <-w.end:
				w.finish(datastore.ErrClosed)
				return
			}
		case <-w.stop:
			return
		}
	}
}

func (w *watcher) finish(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.err = err
	}
}

// translate maps a local event on an envelope to the replicated event users
// see, if any.
func (w *watcher) translate(ev datastore.Event) (datastore.Event, bool, error) {
	if isReserved(ev.Key) {
		return datastore.Event{}, false, nil
	}
	var oldC, newC Change
	var hadOld, hasNew bool
	if ev.OldValue != nil && ev.Type != datastore.Created {
		c, err := decodeEnvelope(ev.Key, ev.OldValue)
		if err != nil {
			return datastore.Event{}, false, err
		}
		oldC, hadOld = c, !c.Deleted && !c.expired
	}
	if ev.Type != datastore.Deleted {
		c, err := decodeEnvelope(ev.Key, ev.NewValue)
		if err != nil {
			return datastore.Event{}, false, err
		}
		newC, hasNew = c, !c.Deleted && !c.expired
	}
	out := datastore.Event{Key: ev.Key, Revision: ev.Revision}
	switch {
	case hadOld && hasNew:
		out.Type, out.OldValue, out.NewValue, out.Version = datastore.Updated, oldC.Value, newC.Value, newC.Version
	case !hadOld && hasNew:
		out.Type, out.NewValue, out.Version = datastore.Created, newC.Value, newC.Version
	case hadOld && !hasNew:
		out.Type, out.OldValue = datastore.Deleted, oldC.Value
		out.Version = oldC.Version
		if ev.Type != datastore.Deleted {
			out.Version = newC.Version // the tombstone's
		}
	default:
		return datastore.Event{}, false, nil // a tombstone replaced by a tombstone, or collected
	}
	origin := newC.Origin
	switch {
	case !hasNew && ev.Type == datastore.Deleted:
		origin = oldC.Origin
	case newC.expired && hadOld: // an expiry: nobody deleted it
		origin, out.Version = w.self, newC.goneVersion()
	}
	if origin != w.self {
		out.Origin = origin
	}
	return out, true, nil
}

// Close implements datastore.Store: it ends every watcher, waits for them
// and closes the local store. It is idempotent.
func (r *Replica) Close() error {
	var err error
	r.close.Do(func() {
		close(r.closing)
		r.expiry.Close()
		err = r.local.Close()
		r.watchers.Wait()
	})
	return err
}

// Compact implements datastore.Compacter when the local store does.
func (r *Replica) Compact(ctx context.Context, revision uint64) error {
	c, ok := r.local.(datastore.Compacter)
	if !ok {
		return fmt.Errorf("replica: local store %T cannot compact", r.local)
	}
	return c.Compact(ctx, revision)
}
