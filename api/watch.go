package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/univrs/peerstate/datastore"
)

// Content types of a watch stream.
const (
	ContentTypeNDJSON = "application/x-ndjson"
	ContentTypeSSE    = "text/event-stream"
)

// shutdownGrace is how long a watch stream may still write once the server
// shuts down.
const shutdownGrace = time.Second

// handleWatch streams the events matching ?pattern= (default: every key),
// from ?from_revision= if given, one JSON Event a line, flushed as soon as
// no further event is waiting. A stream that ends with an error ends with
// an ErrorBody line (in text/event-stream, an "error" event); one that ends
// without it was cut. With "Accept: text/event-stream" each event
// is an SSE event named after its type, with the revision as its id, and an
// idle stream gets a comment line every Heartbeat.
//
// A slow reader is handled by the store's watch: the server writes no faster
// than the client reads, and the store catches the watcher up from its
// change log or ends it with ErrCompacted, which arrives as the stream's last
// line. Shutdown ends every stream with a "closed" error line.
func (s *Server) handleWatch(w http.ResponseWriter, r *http.Request) {
	q, err := params(r, "pattern", "from_revision")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	from, hasFrom, err := paramUint(q, "from_revision")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	pattern := q.Get("pattern")
	if pattern == "" {
		pattern = "/"
	}
	if !s.startStream() {
		s.writeError(w, r, fmt.Errorf("api: server shutting down: %w", datastore.ErrClosed))
		return
	}
	defer s.streams.Done()

	// Shutdown ends the watch, and gives a client that stopped reading a
	// moment to take the last line before its writes fail.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	rc := http.NewResponseController(w)
	stop := context.AfterFunc(s.ctx, func() {
		cancel()
		rc.SetWriteDeadline(time.Now().Add(shutdownGrace))
	})
	defer stop()

	var opts []datastore.WatchOption
	if hasFrom {
		opts = append(opts, datastore.FromRevision(from))
	}
	watcher, err := s.store.Watch(ctx, pattern, opts...)
	s.metrics.storeOp("watch", err)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer watcher.Close()

	s.metrics.streams.Inc()
	defer s.metrics.streams.Dec()

	out := newStreamWriter(w, wantsSSE(r))
	h := w.Header()
	h.Set("Content-Type", out.contentType())
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if out.flush() != nil {
		return
	}

	var heartbeat <-chan time.Time
	if out.sse && s.cfg.Heartbeat > 0 {
		t := time.NewTicker(s.cfg.Heartbeat)
		defer t.Stop()
		heartbeat = t.C
	}
	events := watcher.Events()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				s.endStream(out, watcher, r)
				return
			}
			if out.event(FromEvent(ev)) != nil {
				return
			}
			s.metrics.events.Inc()
			if len(events) == 0 && out.flush() != nil {
				return
			}
		case <-heartbeat:
			if out.comment("keepalive") != nil || out.flush() != nil {
				return
			}
		}
	}
}

// endStream writes why the stream ended: the watch's error, or "closed" when
// the server is shutting down. A client that went away gets nothing.
func (s *Server) endStream(out *streamWriter, watcher datastore.Watcher, r *http.Request) {
	err := watcher.Err()
	switch {
	case err != nil:
	case s.ctx.Err() != nil:
		err = fmt.Errorf("api: server shutting down: %w", datastore.ErrClosed)
	case r.Context().Err() != nil:
		return
	default:
		err = fmt.Errorf("api: watch ended: %w", datastore.ErrClosed)
	}
	body, _ := errorBody(err)
	if out.error(body) == nil {
		out.flush()
	}
}

// wantsSSE reports whether the Accept header asks for text/event-stream.
func wantsSSE(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == ContentTypeSSE {
			return true
		}
	}
	return false
}

// streamWriter writes watch events as NDJSON or SSE.
type streamWriter struct {
	w   io.Writer
	rc  *http.ResponseController
	sse bool
	buf []byte
}

func newStreamWriter(w http.ResponseWriter, sse bool) *streamWriter {
	return &streamWriter{w: w, rc: http.NewResponseController(w), sse: sse}
}

func (s *streamWriter) contentType() string {
	if s.sse {
		return ContentTypeSSE
	}
	return ContentTypeNDJSON
}

func (s *streamWriter) event(ev Event) error {
	return s.write(ev.Type, strconv.FormatUint(ev.Revision, 10), ev)
}

func (s *streamWriter) error(body ErrorBody) error { return s.write("error", "", body) }

func (s *streamWriter) write(name, id string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	s.buf = s.buf[:0]
	if s.sse {
		if id != "" {
			s.buf = append(s.buf, "id: "...)
			s.buf = append(s.buf, id...)
			s.buf = append(s.buf, '\n')
		}
		s.buf = append(s.buf, "event: "...)
		s.buf = append(s.buf, name...)
		s.buf = append(s.buf, "\ndata: "...)
		s.buf = append(s.buf, data...)
		s.buf = append(s.buf, "\n\n"...)
	} else {
		s.buf = append(s.buf, data...)
		s.buf = append(s.buf, '\n')
	}
	_, err = s.w.Write(s.buf)
	return err
}

func (s *streamWriter) comment(text string) error {
	_, err := fmt.Fprintf(s.w, ": %s\n\n", text)
	return err
}

func (s *streamWriter) flush() error { return s.rc.Flush() }
