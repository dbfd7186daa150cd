package topiclog_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/internal/replicatest"
	"github.com/univrs/peerstate/topiclog"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func open(t *testing.T, s datastore.Store, topic string, cfg topiclog.Config) *topiclog.Log {
	t.Helper()
	l, err := topiclog.Open(s, topic, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// readAll reads the whole log in pages of 7.
func readAll(t *testing.T, l *topiclog.Log) []topiclog.Message {
	t.Helper()
	var all []topiclog.Message
	after := ""
	for {
		p, err := l.Read(context.Background(), after, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Messages) > 7 {
			t.Fatalf("page of %d > limit 7", len(p.Messages))
		}
		all = append(all, p.Messages...)
		if !p.More {
			return all
		}
		after = p.Next
	}
}

func positions(ms []topiclog.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Position
	}
	return out
}

func TestLog_AppendReadPages(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	defer s.Close()
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)} // a clock that stands still
	l := open(t, s, "chat", topiclog.Config{Writer: "w1", Now: clk.Now})
	var want []string
	for i := range 30 {
		m, err := l.Append(ctx, []byte(fmt.Sprint("m", i)))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, m.Position)
	}
	got := readAll(t, l)
	if !slices.Equal(positions(got), want) || !slices.IsSorted(want) {
		t.Fatalf("positions %v, want %v", positions(got), want)
	}
	for i, m := range got {
		if string(m.Data) != fmt.Sprint("m", i) || m.Writer != "w1" || m.Topic != "chat" {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	// Reading from a position continues after it.
	p, err := l.Read(ctx, want[9], 5)
	if err != nil || !slices.Equal(positions(p.Messages), want[10:15]) || !p.More {
		t.Fatalf("read after 10th: %v %v", positions(p.Messages), err)
	}
	// The stored form is CBOR under /topics/chat/messages/.
	e, err := s.Get(ctx, topiclog.Prefix("chat")+want[0])
	if err != nil || e.Value[0]&0xe0 != 0xa0 {
		t.Fatalf("stored %x %v", e.Value, err)
	}
}

func TestLog_BadInput(t *testing.T) {
	s := memory.New()
	defer s.Close()
	for _, topic := range []string{"", "a/b", "bad\x00"} {
		if _, err := topiclog.Open(s, topic, topiclog.Config{Writer: "w"}); !errors.Is(err, topiclog.ErrInvalidTopic) {
			t.Errorf("topic %q: %v", topic, err)
		}
	}
	for _, w := range []string{"", "a.b", "a/b"} {
		if _, err := topiclog.Open(s, "t", topiclog.Config{Writer: w}); !errors.Is(err, topiclog.ErrInvalidWriter) {
			t.Errorf("writer %q: %v", w, err)
		}
	}
	l := open(t, s, "t", topiclog.Config{Writer: "w"})
	for _, pos := range []string{"x", "zzzzzzzzzzzzzzzz.w", "0001.w"} {
		if _, err := l.Read(context.Background(), pos, 0); !errors.Is(err, topiclog.ErrBadPosition) {
			t.Errorf("position %q: %v", pos, err)
		}
	}
	l.Close()
	if _, err := l.Append(context.Background(), nil); !errors.Is(err, topiclog.ErrClosed) {
		t.Error(err)
	}
}

// Three replicated peers, three appenders each, all at once: every peer ends
// with the same messages in the same order, each writer's in its own order,
// and a live tail on one peer sees every message once.
func TestLog_ConcurrentAppendersThreePeers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	net, err := replicatest.New(3, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	const appenders, perAppender = 3, 40
	total := len(net.Replicas) * appenders * perAppender

	tailLog := open(t, net.Replicas[2], "chat", topiclog.Config{})
	tail, err := tailLog.Tail(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer tail.Close()

	var wg sync.WaitGroup
	for p, r := range net.Replicas {
		for a := range appenders {
			// Each appender is a writer of its own (peer and goroutine).
			l := open(t, r, "chat", topiclog.Config{Writer: fmt.Sprintf("%s-%d", r.ID(), a)})
			wg.Go(func() {
				for i := range perAppender {
					if _, err := l.Append(ctx, []byte(fmt.Sprintf("p%d a%d #%03d", p, a, i))); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	seen := map[string]bool{}
	for len(seen) < total {
		select {
		case m, ok := <-tail.Messages():
			if !ok {
				t.Fatalf("tail ended after %d: %v", len(seen), tail.Err())
			}
			if seen[m.Position] {
				t.Fatalf("tail repeated %s", m.Position)
			}
			seen[m.Position] = true
		case <-ctx.Done():
			t.Fatalf("tail saw %d of %d", len(seen), total)
		}
	}
	wg.Wait()
	if err := net.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	var first []string
	for i, r := range net.Replicas {
		msgs := readAll(t, open(t, r, "chat", topiclog.Config{Writer: "reader"}))
		if len(msgs) != total {
			t.Fatalf("peer %d has %d messages, want %d", i, len(msgs), total)
		}
		pos := positions(msgs)
		if i == 0 {
			first = pos
		} else if !slices.Equal(pos, first) {
			t.Fatalf("peer %d orders the log differently", i)
		}
		last := map[string]string{}
		for _, m := range msgs {
			if string(m.Data) <= last[m.Writer] {
				t.Fatalf("peer %d: writer %s out of order: %q after %q", i, m.Writer, m.Data, last[m.Writer])
			}
			last[m.Writer] = string(m.Data)
			if !seen[m.Position] {
				t.Fatalf("tail missed %s", m.Position)
			}
		}
	}
}

// Count retention: every peer shows the same newest N before any trim, and
// after each writer trims its own, every peer holds exactly those N.
func TestLog_RetentionByCountThreePeers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	net, err := replicatest.New(3, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	const keep = 20
	var logs []*topiclog.Log
	for _, r := range net.Replicas {
		logs = append(logs, open(t, r, "events", topiclog.Config{MaxCount: keep}))
	}
	var wg sync.WaitGroup
	for _, l := range logs {
		wg.Go(func() {
			for i := range 30 {
				l.Append(ctx, []byte(fmt.Sprint(i)))
			}
		})
	}
	wg.Wait()
	if err := net.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	want := positions(readAll(t, logs[0]))
	if len(want) != keep {
		t.Fatalf("retention shows %d, want %d", len(want), keep)
	}
	for i, l := range logs[1:] {
		if got := positions(readAll(t, l)); !slices.Equal(got, want) {
			t.Fatalf("peer %d shows another window", i+1)
		}
	}
	deleted := 0
	for _, l := range logs {
		n, err := l.Trim(ctx)
		if err != nil {
			t.Fatal(err)
		}
		deleted += n
	}
	if err := net.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	if deleted != 90-keep {
		t.Fatalf("trim deleted %d, want %d (each message once)", deleted, 90-keep)
	}
	for i, r := range net.Replicas {
		p, err := r.List(ctx, topiclog.Prefix("events"), datastore.ListOptions{KeysOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		var stored []string
		for _, e := range p.Entries {
			stored = append(stored, e.Key[len(topiclog.Prefix("events")):])
		}
		if !slices.Equal(stored, want) {
			t.Fatalf("peer %d stores %d messages, not the retained %d", i, len(stored), keep)
		}
	}
}

func TestLog_RetentionByAge(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	defer s.Close()
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	mine := open(t, s, "presence", topiclog.Config{Writer: "me", Now: clk.Now, MaxAge: time.Minute})
	other := open(t, s, "presence", topiclog.Config{Writer: "other", Now: clk.Now})
	mine.Append(ctx, []byte("old mine"))
	other.Append(ctx, []byte("old other"))
	clk.Advance(45 * time.Second)
	mine.Append(ctx, []byte("new"))
	clk.Advance(30 * time.Second) // the first two are 75 s old now
	got := readAll(t, mine)
	if len(got) != 1 || string(got[0].Data) != "new" {
		t.Fatalf("after a minute: %v", got)
	}
	if n, err := mine.Trim(ctx); n != 1 || err != nil {
		t.Fatalf("trim: %d %v", n, err)
	}
	// The other writer's old message is hidden but left to its writer.
	if p, _ := s.List(ctx, "/topics/presence/", datastore.ListOptions{}); len(p.Entries) != 2 {
		t.Fatalf("stored %d", len(p.Entries))
	}
	all := open(t, s, "presence", topiclog.Config{Writer: "leader", Now: clk.Now, MaxAge: time.Minute, TrimAll: true})
	if n, err := all.Trim(ctx); n != 1 || err != nil {
		t.Fatalf("trim all: %d %v", n, err)
	}
}

func TestLog_BackgroundTrim(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	defer s.Close()
	l := open(t, s, "t", topiclog.Config{Writer: "w", MaxCount: 2, TrimInterval: 5 * time.Millisecond})
	for range 5 {
		l.Append(ctx, nil)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		p, _ := s.List(ctx, "/topics/t/", datastore.ListOptions{})
		if len(p.Entries) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("background trim left %d", len(p.Entries))
		}
		time.Sleep(5 * time.Millisecond)
	}
	l.Close()
	l.Close()
}

func TestTail_FromPosition(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := memory.New()
	defer s.Close()
	l := open(t, s, "t", topiclog.Config{Writer: "w"})
	var pos []string
	for i := range 5 {
		m, _ := l.Append(ctx, []byte{byte(i)})
		pos = append(pos, m.Position)
	}
	tail, err := l.Tail(ctx, pos[1])
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		m, _ := l.Append(ctx, []byte{byte(5 + i)})
		pos = append(pos, m.Position)
	}
	var got []string
	for len(got) < 6 {
		m := <-tail.Messages()
		got = append(got, m.Position)
	}
	if !slices.Equal(got, pos[2:]) {
		t.Fatalf("tail from 2nd: %v, want %v", got, pos[2:])
	}
	tail.Close()
	if _, ok := <-tail.Messages(); ok {
		t.Fatal("messages after close")
	}
	if tail.Err() != nil || tail.Close() != nil {
		t.Fatal(tail.Err())
	}
}
