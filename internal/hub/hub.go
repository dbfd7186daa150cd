// Package hub fans committed events out to watchers for the peerstate
// backends that keep their own change log (memory, SQLite, Badger).
//
// The hub keeps the most recent revisions in memory. Each watcher has one
// goroutine that follows the committed revisions from where it last was: from
// the in-memory tail when it can, from the backend's durable log when it fell
// behind the tail, and it ends with datastore.ErrCompacted when the log no
// longer has what it needs. Writers only append to the tail and wake the
// watchers; they never wait for one.
package hub

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/univrs/peerstate/datastore"
)

// Log reads a backend's durable change log.
type Log interface {
	// Since returns the events of whole revisions after `after`, in order,
	// covering at most limit revisions; it fails with ErrCompacted when
	// revisions after `after` are no longer kept.
	Since(ctx context.Context, after uint64, limit int) ([]datastore.Event, error)
}

// batchRevisions caps how many revisions a watcher takes per step.
const batchRevisions = 256

// Hub is the watch fan-out of one store.
type Hub struct {
	log    Log // nil: the in-memory tail is the whole change log
	retain int // revisions kept in the tail

	ctx  context.Context // cancelled by Close
	stop context.CancelFunc

	mu      sync.Mutex
	head    uint64            // last published revision
	base    uint64            // the tail holds every event with revision > base
	tail    []datastore.Event // ordered by revision
	changed chan struct{}     // closed and replaced on every publish or close
	closed  bool
	wg      sync.WaitGroup
}

// New returns a hub whose store is at revision head. Watch(FromRevision(r))
// for r < head is served from log, or fails with ErrCompacted when log is nil.
// retain is how many recent revisions stay in memory.
func New(head uint64, retain int, log Log) *Hub {
	if retain <= 0 {
		retain = 1024
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Hub{log: log, retain: retain, ctx: ctx, stop: stop, head: head, base: head, changed: make(chan struct{})}
}

// Head returns the last published revision.
func (h *Hub) Head() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.head
}

// Publish appends committed events, in revision order, each revision after
// the last published one, and wakes the watchers. It never blocks on them.
func (h *Hub) Publish(events []datastore.Event) {
	if len(events) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.tail = append(h.tail, events...)
	h.head = events[len(events)-1].Revision
	h.trimLocked(h.head - min(h.head, uint64(h.retain)))
	close(h.changed)
	h.changed = make(chan struct{})
}

// Compact drops the in-memory events with revision <= rev. Without a log,
// they are gone for good: watches from before rev fail with ErrCompacted.
func (h *Hub) Compact(rev uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.trimLocked(min(rev, h.head))
}

func (h *Hub) trimLocked(base uint64) {
	if base <= h.base {
		return
	}
	i := sort.Search(len(h.tail), func(i int) bool { return h.tail[i].Revision > base })
	h.base = base
	if i == 0 {
		return
	}
	if i > len(h.tail)/2 {
		// Copy so the dropped events can be collected.
		h.tail = append(make([]datastore.Event, 0, len(h.tail)-i+64), h.tail[i:]...)
	} else {
		clear(h.tail[:i])
		h.tail = h.tail[i:]
	}
}

// Close ends every watcher with ErrClosed and waits for them.
func (h *Hub) Close() {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		close(h.changed)
	}
	h.mu.Unlock()
	h.stop()
	h.wg.Wait()
}

// Watch starts a watcher of pattern.
func (h *Hub) Watch(ctx context.Context, pattern string, opts ...datastore.WatchOption) (datastore.Watcher, error) {
	pat, err := datastore.ParsePattern(pattern)
	if err != nil {
		return nil, err
	}
	cfg := datastore.ApplyWatchOptions(opts...)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, datastore.ErrClosed
	}
	from, base := h.head, h.base
	if cfg.HasFrom {
		from = cfg.FromRevision
	}
	h.mu.Unlock()
	if from < base {
		if h.log == nil {
			return nil, fmt.Errorf("watch from revision %d: %w", from, datastore.ErrCompacted)
		}
		if _, err := h.log.Since(ctx, from, 1); err != nil {
			return nil, fmt.Errorf("watch from revision %d: %w", from, err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	stopOnClose := context.AfterFunc(h.ctx, cancel)
	w := &watcher{
		hub:     h,
		pattern: pat,
		last:    from,
		out:     make(chan datastore.Event, cfg.Buffer),
		cancel:  func() { stopOnClose(); cancel() },
		done:    make(chan struct{}),
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		cancel()
		return nil, datastore.ErrClosed
	}
	h.wg.Add(1)
	h.mu.Unlock()
	go w.run(ctx)
	return w, nil
}

// next returns the events of the revisions after `after` that the tail
// holds, up to batchRevisions of them; or, when the watcher is up to date, a
// channel closed on the next publish. fromLog says the tail no longer reaches
// back to after.
func (h *Hub) next(after uint64) (events []datastore.Event, wait <-chan struct{}, fromLog bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closed:
		return nil, nil, false, datastore.ErrClosed
	case after >= h.head:
		return nil, h.changed, false, nil
	case after < h.base:
		return nil, nil, true, nil
	}
	i := sort.Search(len(h.tail), func(i int) bool { return h.tail[i].Revision > after })
	limit := after + batchRevisions
	j := i + sort.Search(len(h.tail)-i, func(k int) bool { return h.tail[i+k].Revision > limit })
	return append([]datastore.Event(nil), h.tail[i:j]...), nil, false, nil
}

type watcher struct {
	hub     *Hub
	pattern datastore.Pattern
	last    uint64 // every revision <= last has been delivered (or did not match)
	out     chan datastore.Event
	cancel  context.CancelFunc
	done    chan struct{}

	mu  sync.Mutex
	err error
}

func (w *watcher) Events() <-chan datastore.Event { return w.out }

func (w *watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *watcher) Close() error {
	w.cancel()
	<-w.done
	return nil
}

func (w *watcher) run(ctx context.Context) {
	defer w.hub.wg.Done()
	defer close(w.done)
	defer close(w.out)
	err := w.follow(ctx)
	switch {
	case w.hub.ctx.Err() != nil:
		err = datastore.ErrClosed
	case ctx.Err() != nil:
		err = nil // ended by the caller
	}
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
	w.cancel()
}

func (w *watcher) follow(ctx context.Context) error {
	for {
		events, wait, fromLog, err := w.hub.next(w.last)
		if err != nil {
			return err
		}
		if fromLog {
			events, err = w.hub.log.Since(ctx, w.last, batchRevisions)
			if err != nil {
				return err
			}
			if len(events) == 0 {
				return fmt.Errorf("change log has no revisions after %d", w.last)
			}
		}
		if wait != nil {
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		for _, ev := range events {
			if !w.pattern.Match(ev.Key) {
				continue
			}
			select {
			case w.out <- ev:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		w.last = events[len(events)-1].Revision
	}
}
