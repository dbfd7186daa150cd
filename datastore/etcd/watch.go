package etcd

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/internal/engine"
)

// Watch implements datastore.Store on etcd's watch. Without FromRevision it
// starts after the revision current when it is called, so every commit that
// completes after Watch returns is delivered. A FromRevision older than
// etcd's compaction point fails here with ErrCompacted; a compaction that
// overtakes the watcher later ends it with ErrCompacted.
//
// Events come in revision order, those of one commit together in op order.
// The watcher forwards them with blocking sends, so a slow reader holds them
// in etcd's client-side buffer and never loses one; writers are never
// blocked by it. While the cluster is unreachable the watcher waits and
// resumes where it was.
func (s *Store) Watch(ctx context.Context, pattern string, opts ...datastore.WatchOption) (datastore.Watcher, error) {
	pat, err := datastore.ParsePattern(pattern)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cfg := datastore.ApplyWatchOptions(opts...)
	op := fmt.Sprintf("watch %q", pattern)
	if s.isClosed() {
		return nil, fmt.Errorf("etcd: %s: %w", op, datastore.ErrClosed)
	}
	var start int64 // first etcd revision to deliver
	if cfg.HasFrom {
		if cfg.FromRevision >= math.MaxInt64 {
			return nil, fmt.Errorf("etcd: %s: from revision %d: out of etcd's range", op, cfg.FromRevision)
		}
		if err := s.checkNotCompacted(ctx, op, int64(cfg.FromRevision)); err != nil {
			return nil, err
		}
		start = int64(cfg.FromRevision) + 1
	} else {
		rev, err := s.currentRevision(ctx, op)
		if err != nil {
			return nil, err
		}
		start = rev + 1
	}
	// Without its trailing "/": "/w/**" also matches /w itself.
	prefix := strings.TrimSuffix(pat.Prefix(), "/")
	if prefix == "" {
		prefix = "/"
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("etcd: %s: %w", op, datastore.ErrClosed)
	}
	s.watchers.Add(1)
	s.mu.Unlock()

	wctx, cancel := context.WithCancel(ctx)
	stopOnClose := context.AfterFunc(s.ctx, cancel)
	w := &watcher{
		store:   s,
		pattern: pat,
		ctx:     wctx,
		cancel:  func() { stopOnClose(); cancel() },
		out:     make(chan datastore.Event, cfg.Buffer),
		done:    make(chan struct{}),
	}
	// WithRequireLeader: a member cut off from its cluster ends the watch
	// instead of going silent.
	w.in = s.client.Watch(clientv3.WithRequireLeader(wctx), s.etcdKey(prefix),
		clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(start))
	go w.run()
	return w, nil
}

// checkNotCompacted fails with ErrCompacted when the revisions after from are
// no longer all kept: reading at revision from (at least 1) fails exactly
// when from is older than the compaction point.
func (s *Store) checkNotCompacted(ctx context.Context, op string, from int64) error {
	rctx, cancel := s.request(ctx)
	defer cancel()
	_, err := s.client.Get(rctx, s.root, clientv3.WithRev(max(from, 1)), clientv3.WithCountOnly())
	switch {
	case err == nil, errors.Is(err, rpctypes.ErrFutureRev):
		return nil // a future revision: there is nothing to replay yet
	case errors.Is(err, rpctypes.ErrCompacted):
		return fmt.Errorf("etcd: %s from revision %d: %w", op, from, classify(err))
	}
	return s.fail(ctx, op, err)
}

type watcher struct {
	store   *Store
	pattern datastore.Pattern
	ctx     context.Context // the caller's, ended by Close and by the store's Close
	cancel  context.CancelFunc
	in      clientv3.WatchChan
	out     chan datastore.Event
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

func (w *watcher) run() {
	defer w.store.watchers.Done()
	defer close(w.done)
	defer close(w.out)
	err := w.follow()
	switch {
	case w.store.ctx.Err() != nil:
		err = datastore.ErrClosed
	case w.ctx.Err() != nil:
		err = nil // ended by the caller
	}
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
	w.cancel()
}

func (w *watcher) follow() error {
	for {
		var resp clientv3.WatchResponse
		var ok bool
		select {
		case resp, ok = <-w.in:
		case <-w.ctx.Done():
			return w.ctx.Err()
		}
		if !ok {
			if w.ctx.Err() != nil {
				return w.ctx.Err()
			}
			if w.store.isClosed() {
				return datastore.ErrClosed
			}
			return fmt.Errorf("etcd: watch: stream closed: %w", datastore.ErrConnection)
		}
		if resp.CompactRevision != 0 {
			return fmt.Errorf("etcd: watch: history compacted at revision %d: %w", resp.CompactRevision, datastore.ErrCompacted)
		}
		if err := resp.Err(); err != nil {
			return w.store.fail(w.ctx, "watch", err)
		}
		for _, ev := range resp.Events {
			e, ok, err := w.event(ev)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			select {
			case w.out <- e:
			case <-w.ctx.Done():
				return w.ctx.Err()
			}
		}
	}
}

// event translates an etcd event; ok is false for a key the pattern does not
// match.
func (w *watcher) event(ev *clientv3.Event) (e datastore.Event, ok bool, err error) {
	key := w.store.storeKey(ev.Kv.Key)
	if !w.pattern.Match(key) {
		return datastore.Event{}, false, nil
	}
	var prev engine.Record
	switch {
	case ev.PrevKv != nil:
		if prev, err = decodeRecord(key, ev.PrevKv.ModRevision, ev.PrevKv.Value); err != nil {
			return datastore.Event{}, false, err
		}
	case !ev.IsCreate():
		// etcd reads the previous value at the event's revision - 1; it is
		// missing only when a compaction overtook the watcher.
		return datastore.Event{}, false, fmt.Errorf("etcd: watch: previous value of %q at revision %d: %w",
			key, ev.Kv.ModRevision, datastore.ErrCompacted)
	}
	e = datastore.Event{Key: key, Revision: uint64(ev.Kv.ModRevision)}
	if ev.Type == mvccpb.DELETE {
		// This package never deletes etcd keys; someone removed one
		// directly. A live record vanishing is a delete; a tombstone
		// vanishing changes nothing a reader can see.
		if !prev.Live() {
			return datastore.Event{}, false, nil
		}
		e.Type, e.OldValue, e.Version = datastore.Deleted, prev.Value, prev.Version+1
		return e, true, nil
	}
	r, err := decodeRecord(key, ev.Kv.ModRevision, ev.Kv.Value)
	if err != nil {
		return datastore.Event{}, false, err
	}
	e.Version = r.Version
	switch {
	case r.Deleted:
		e.Type, e.OldValue = datastore.Deleted, prev.Value
	case prev.Live():
		e.Type, e.OldValue, e.NewValue = datastore.Updated, prev.Value, r.Value
	default:
		e.Type, e.NewValue = datastore.Created, r.Value
	}
	return e, true, nil
}
