package sim

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/univrs/peerstate/datastore"
)

// watchLog records one watcher's stream for the end-of-run check.
type watchLog struct {
	w      datastore.Watcher
	done   chan struct{}
	mu     sync.Mutex
	events []datastore.Event
	notify chan struct{}
}

// startWatch watches every key of s; a goroutine collects the events until
// stop.
func startWatch(ctx context.Context, s datastore.Store) (*watchLog, error) {
	return startWatchFunc(ctx, s, nil)
}

// startWatchFunc is startWatch that also passes each event to fn, if set,
// on the collecting goroutine.
func startWatchFunc(ctx context.Context, s datastore.Store, fn func(datastore.Event)) (*watchLog, error) {
	w, err := s.Watch(ctx, "/")
	if err != nil {
		return nil, fmt.Errorf("sim: watch: %w", err)
	}
	l := &watchLog{w: w, done: make(chan struct{}), notify: make(chan struct{}, 1)}
	go func() {
		defer close(l.done)
		for ev := range w.Events() {
			if fn != nil {
				fn(ev)
			}
			l.mu.Lock()
			l.events = append(l.events, ev)
			l.mu.Unlock()
			select {
			case l.notify <- struct{}{}:
			default:
			}
		}
	}()
	return l, nil
}

func (l *watchLog) stop() {
	_ = l.w.Close()
	<-l.done
}

// check waits (up to wait) until the stream shows final, the peer's final
// state of each key (absent keys deleted or never written), then checks the
// stream: revisions never go back, a key's versions only go up, no event
// repeats, and the last event of each key is its final state. It returns
// the problems found.
func (l *watchLog) check(final map[string]change, wait time.Duration) []string {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		probs := l.verify(final)
		if len(probs) == 0 {
			return nil
		}
		select {
		case <-l.notify:
		case <-l.done:
			return l.verify(final)
		case <-deadline.C:
			return probs
		}
	}
}

func (l *watchLog) verify(final map[string]change) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var probs []string
	last := map[string]datastore.Event{}
	var rev uint64
	for i, ev := range l.events {
		if ev.Revision < rev {
			probs = append(probs, fmt.Sprintf("event %d: revision %d after %d", i, ev.Revision, rev))
		}
		rev = ev.Revision
		// Two peers may write one version concurrently; the loser's
		// watchers then see the winner's write at that same version.
		if prev, ok := last[ev.Key]; ok {
			switch {
			case ev.Version < prev.Version:
				probs = append(probs, fmt.Sprintf("event %d: %s version %d after %d", i, ev.Key, ev.Version, prev.Version))
			case ev.Version == prev.Version && ev.Type == prev.Type && bytes.Equal(ev.NewValue, prev.NewValue):
				probs = append(probs, fmt.Sprintf("event %d: %s version %d repeated", i, ev.Key, ev.Version))
			}
		}
		last[ev.Key] = ev
	}
	for key, c := range final {
		ev, seen := last[key]
		switch {
		case c.Deleted && seen && ev.Type != datastore.Deleted:
			probs = append(probs, fmt.Sprintf("%s: deleted, the stream ends at version %d", key, ev.Version))
		case !c.Deleted && (!seen || ev.Type == datastore.Deleted || ev.Version != c.Version || string(ev.NewValue) != string(c.Value)):
			probs = append(probs, fmt.Sprintf("%s: at version %d, the stream does not end there", key, c.Version))
		}
	}
	if len(probs) > 5 {
		probs = append(probs[:5], fmt.Sprintf("and %d more", len(probs)-5))
	}
	return probs
}
