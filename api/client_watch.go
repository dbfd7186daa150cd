package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/univrs/peerstate/datastore"
)

// Watch implements datastore.Store: it opens a watch stream and returns once
// the daemon has accepted it (a bad pattern or a compacted revision fails
// here). The stream keeps the daemon's guarantees — revision order, no
// duplicates, no gaps, a transaction's events together. A slow reader slows
// the stream, never loses events: the daemon catches its watch up from the
// change log or ends it with ErrCompacted, which Err then reports. Err is
// nil after Close or the cancellation of ctx, and wraps ErrConnection when
// the stream was cut.
func (c *Client) Watch(ctx context.Context, pattern string, opts ...datastore.WatchOption) (datastore.Watcher, error) {
	if _, err := datastore.ParsePattern(pattern); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	cfg := datastore.ApplyWatchOptions(opts...)
	q := url.Values{}
	if pattern != "" {
		q.Set("pattern", pattern)
	}
	if cfg.HasFrom {
		q.Set("from_revision", strconv.FormatUint(cfg.FromRevision, 10))
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &clientWatcher{
		client: c,
		events: make(chan datastore.Event, cfg.Buffer),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	if !c.addWatcher(w) {
		cancel()
		return nil, fmt.Errorf("api: client closed: %w", datastore.ErrClosed)
	}
	resp, err := c.do(wctx, request{method: http.MethodGet, path: "/v1/watch", query: q, accept: ContentTypeNDJSON})
	if err != nil {
		cancel()
		c.removeWatcher(w)
		return nil, err
	}
	go w.run(wctx, resp.Body)
	return w, nil
}

func (c *Client) addWatcher(w *clientWatcher) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.watchers[w] = struct{}{}
	c.wg.Add(1)
	return true
}

func (c *Client) removeWatcher(w *clientWatcher) {
	c.mu.Lock()
	delete(c.watchers, w)
	c.mu.Unlock()
	c.wg.Done()
}

// clientWatcher is a watch stream read by one goroutine.
type clientWatcher struct {
	client *Client
	events chan datastore.Event
	cancel context.CancelFunc
	done   chan struct{}

	mu  sync.Mutex
	err error
}

// streamLine is one line of a watch stream: an event, or the error that
// ended the stream.
type streamLine struct {
	Event
	Error    string  `json:"error"`
	Code     string  `json:"code"`
	Index    *int    `json:"index"`
	Expected *uint64 `json:"expected"`
	Actual   *uint64 `json:"actual"`
}

func (w *clientWatcher) run(ctx context.Context, body io.ReadCloser) {
	defer w.client.removeWatcher(w)
	defer close(w.done)
	defer close(w.events)
	defer body.Close()
	dec := json.NewDecoder(body)
	for {
		var line streamLine
		if err := dec.Decode(&line); err != nil {
			if ctx.Err() == nil {
				if errors.Is(err, io.EOF) {
					err = errors.New("stream ended without a reason")
				}
				w.setErr(fmt.Errorf("api: watch: %w: %w", datastore.ErrConnection, err))
			}
			return
		}
		if line.Code != "" {
			w.setErr(newError(codeStatus(line.Code), ErrorBody{Error: line.Error, Code: line.Code, Key: line.Key,
				Index: line.Index, Expected: line.Expected, Actual: line.Actual}))
			return
		}
		ev, err := line.Event.Datastore()
		if err != nil {
			w.setErr(fmt.Errorf("api: watch: %w: %w", datastore.ErrConnection, err))
			return
		}
		select {
		case w.events <- ev:
		case <-ctx.Done():
			return
		}
	}
}

// codeStatus is the HTTP status that goes with an error code.
func codeStatus(code string) int {
	for _, c := range codes {
		if c.code == code {
			return c.status
		}
	}
	return http.StatusInternalServerError
}

func (w *clientWatcher) setErr(err error) {
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
}

// Events implements datastore.Watcher.
func (w *clientWatcher) Events() <-chan datastore.Event { return w.events }

// Err implements datastore.Watcher.
func (w *clientWatcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close implements datastore.Watcher: it ends the stream and waits for its
// reader to stop.
func (w *clientWatcher) Close() error {
	w.cancel()
	<-w.done
	return nil
}
