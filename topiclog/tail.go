package topiclog

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/univrs/peerstate/datastore"
)

// Tail is a live stream of a topic's messages: first every message after the
// starting position in log order, then each new message as it arrives
// (arrival order; see the package doc). Deletions by retention are not
// shown. A slow reader never blocks writers: the underlying watch catches it
// up from the store's change log, or ends the tail with ErrCompacted.
type Tail struct {
	msgs   chan Message
	cancel context.CancelFunc
	done   chan struct{}

	mu  sync.Mutex
	err error
}

// Tail streams the messages after position after ("" from the start of what
// retention keeps), then live ones, until ctx ends or Close.
func (l *Log) Tail(ctx context.Context, after string) (*Tail, error) {
	if after != "" {
		if _, _, err := ParsePosition(after); err != nil {
			return nil, err
		}
	}
	// The watch starts at the revision the first backlog page is read at,
	// so the backlog and the watch together miss nothing; a backlog entry
	// committed after that revision is left to the watch.
	first, err := l.s.List(ctx, l.prefix, datastore.ListOptions{Limit: 1, KeysOnly: true})
	if err != nil {
		return nil, fmt.Errorf("topiclog: tail %s: %w", l.topic, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	w, err := l.s.Watch(ctx, l.prefix, datastore.FromRevision(first.Revision))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("topiclog: tail %s: %w", l.topic, err)
	}
	t := &Tail{msgs: make(chan Message, 64), cancel: cancel, done: make(chan struct{})}
	go t.run(ctx, l, w, after, first.Revision)
	return t, nil
}

func (t *Tail) fail(err error) {
	t.mu.Lock()
	if t.err == nil {
		t.err = err
	}
	t.mu.Unlock()
}

func (t *Tail) run(ctx context.Context, l *Log, w datastore.Watcher, after string, rev uint64) {
	defer close(t.done)
	defer close(t.msgs)
	defer w.Close()
	send := func(m Message) bool {
		select {
		case t.msgs <- m:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for pos := after; ; {
		p, err := l.Read(ctx, pos, 500)
		if err != nil {
			if ctx.Err() == nil {
				t.fail(err)
			}
			return
		}
		for _, m := range p.Messages {
			if m.Revision > rev {
				continue // the watch delivers it
			}
			if !send(m) {
				return
			}
		}
		if !p.More {
			break
		}
		pos = p.Next
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events():
			if !ok {
				if err := w.Err(); err != nil {
					t.fail(fmt.Errorf("topiclog: tail %s: %w", l.topic, err))
				}
				return
			}
			if ev.Type != datastore.Created || !strings.HasPrefix(ev.Key, l.prefix) {
				continue
			}
			m, err := l.decode(datastore.Entry{Key: ev.Key, Value: ev.NewValue, Revision: ev.Revision})
			if err != nil {
				t.fail(err)
				return
			}
			if after != "" && m.Position <= after {
				continue
			}
			if !send(m) {
				return
			}
		}
	}
}

// Messages is closed when the tail ends.
func (t *Tail) Messages() <-chan Message { return t.msgs }

// Err tells why the tail ended: nil after Close or cancellation.
func (t *Tail) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// Close ends the tail and waits for it; it is idempotent.
func (t *Tail) Close() error {
	t.cancel()
	<-t.done
	return nil
}
