package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
)

func testWatchEvents(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	mustSet(t, s, "/before", "x") // before the watch: not delivered
	w := watch(t, s, "/")
	mustSet(t, s, "/k", "1")
	mustSet(t, s, "/k", "2")
	if err := s.Delete(ctx, "/k"); err != nil {
		t.Fatal(err)
	}
	mustSet(t, s, "/k", "3")
	evs := collect(t, w, 4)
	want := []struct {
		typ      datastore.EventType
		old, new string
		version  uint64
	}{
		{datastore.Created, "", "1", 1},
		{datastore.Updated, "1", "2", 2},
		{datastore.Deleted, "2", "", 3},
		{datastore.Created, "", "3", 4},
	}
	for i, ev := range evs {
		wv := want[i]
		if ev.Type != wv.typ || ev.Key != "/k" || string(ev.OldValue) != wv.old || string(ev.NewValue) != wv.new || ev.Version != wv.version {
			t.Fatalf("event %d = %+v, want %+v", i, ev, wv)
		}
		if ev.Origin != "" {
			t.Fatalf("local event has origin %q", ev.Origin)
		}
		if i > 0 && ev.Revision != evs[i-1].Revision+1 {
			t.Fatalf("event revisions %d then %d", evs[i-1].Revision, ev.Revision)
		}
	}
	if e := mustGet(t, s, "/k"); e.Revision != evs[3].Revision {
		t.Fatalf("event revision %d, entry revision %d", evs[3].Revision, e.Revision)
	}
	quiet(t, w)
}

func testWatchPatterns(t *testing.T, newStore Factory) {
	s := newStore(t)
	patterns := []string{"/w/", "/w", "/w/*", "/w/**", "/w/*/rep", "/**/rep", "/w/x"}
	watchers := make([]datastore.Watcher, len(patterns))
	for i, p := range patterns {
		watchers[i] = watch(t, s, p)
	}
	keys := []string{"/w", "/w/x", "/w/x/rep", "/w/x/y/rep", "/wx", "/other/rep", "/w/xy"}
	for _, k := range keys {
		mustSet(t, s, k, "v")
	}
	mustSet(t, s, "/end", "v") // a marker every watcher of "/" would see; none here does
	want := map[string][]string{
		"/w/":      {"/w/x", "/w/x/rep", "/w/x/y/rep", "/w/xy"},
		"/w":       {"/w", "/w/x", "/w/x/rep", "/w/x/y/rep", "/w/xy"},
		"/w/*":     {"/w/x", "/w/xy"},
		"/w/**":    {"/w", "/w/x", "/w/x/rep", "/w/x/y/rep", "/w/xy"},
		"/w/*/rep": {"/w/x/rep"},
		"/**/rep":  {"/w/x/rep", "/w/x/y/rep", "/other/rep"},
		"/w/x":     {"/w/x", "/w/x/rep", "/w/x/y/rep"},
	}
	for i, p := range patterns {
		evs := collect(t, watchers[i], len(want[p]))
		for j, ev := range evs {
			if ev.Key != want[p][j] {
				t.Fatalf("Watch(%q) event %d is %q, want %q", p, j, ev.Key, want[p][j])
			}
		}
		quiet(t, watchers[i])
	}
}

func testWatchTxnTogether(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	w := watch(t, s, "/t/")
	var writes []datastore.Op
	for i := range 20 {
		writes = append(writes, datastore.OpSet(fmt.Sprintf("/t/%02d", i), []byte("v")))
	}
	done := make(chan error, 1)
	go func() { // a concurrent writer whose commits must not split the txn
		for i := range 50 {
			if _, err := s.Set(ctx, fmt.Sprintf("/t/other/%d", i), nil); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	res, err := s.Txn(ctx, writes...)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	evs := collect(t, w, 70)
	start := -1
	for i, ev := range evs {
		if ev.Revision == res.Revision {
			start = i
			break
		}
	}
	if start < 0 || start+20 > len(evs) {
		t.Fatalf("txn events not found")
	}
	for i := range 20 {
		ev := evs[start+i]
		if ev.Revision != res.Revision || ev.Key != fmt.Sprintf("/t/%02d", i) || ev.Type != datastore.Created {
			t.Fatalf("txn event %d = %+v: the txn's events are not delivered together in op order", i, ev)
		}
	}
	checkOrdered(t, evs)
}

// checkOrdered asserts revisions never go backwards and no (revision, key)
// repeats.
func checkOrdered(t *testing.T, evs []datastore.Event) {
	t.Helper()
	seen := map[string]bool{}
	for i, ev := range evs {
		if i > 0 && ev.Revision < evs[i-1].Revision {
			t.Fatalf("event %d at revision %d after %d", i, ev.Revision, evs[i-1].Revision)
		}
		id := fmt.Sprint(ev.Revision, ev.Key)
		if seen[id] {
			t.Fatalf("duplicate event %+v", ev)
		}
		seen[id] = true
	}
}

func testWatchFromRevisionAfterList(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	for i := range 10 {
		mustSet(t, s, fmt.Sprintf("/l/%d", i), "0")
	}
	page, err := s.List(ctx, "/l/", datastore.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Writes between the List and the Watch are not missed...
	mustSet(t, s, "/l/0", "1")
	mustSet(t, s, "/l/new", "1")
	w := watch(t, s, "/l/", datastore.FromRevision(page.Revision))
	mustSet(t, s, "/l/1", "2")
	evs := collect(t, w, 3)
	// ...and nothing from before the List is repeated.
	want := []string{"/l/0", "/l/new", "/l/1"}
	for i, ev := range evs {
		if ev.Key != want[i] || ev.Revision != page.Revision+uint64(i)+1 {
			t.Fatalf("event %d = %s at %d, want %s at %d", i, ev.Key, ev.Revision, want[i], page.Revision+uint64(i)+1)
		}
	}
	quiet(t, w)
	// Resuming from any revision in the window replays exactly what follows.
	for from := page.Revision - 5; from <= page.Revision+3; from++ {
		w := watch(t, s, "/", datastore.FromRevision(from))
		head := revision(t, s)
		evs := collect(t, w, int(head-from))
		for i, ev := range evs {
			if ev.Revision != from+uint64(i)+1 {
				t.Fatalf("resume from %d: event %d at revision %d", from, i, ev.Revision)
			}
		}
		quiet(t, w)
		w.Close()
	}
}

func testWatchCompacted(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	c, ok := s.(datastore.Compacter)
	if !ok {
		t.Fatalf("%T does not implement datastore.Compacter", s)
	}
	for i := range 10 {
		mustSet(t, s, "/c", fmt.Sprint(i))
	}
	head := revision(t, s)
	if err := c.Compact(ctx, head-3); err != nil {
		t.Fatal(err)
	}
	_, err := s.Watch(ctx, "/", datastore.FromRevision(head-5))
	wantErr(t, "watch from a compacted revision", err, datastore.ErrCompacted)
	// At the compaction point and after, the log still serves.
	w := watch(t, s, "/", datastore.FromRevision(head-3))
	evs := collect(t, w, 3)
	if evs[0].Revision != head-2 || evs[2].Revision != head {
		t.Fatalf("after compaction got revisions %d..%d, want %d..%d", evs[0].Revision, evs[2].Revision, head-2, head)
	}
}

func testWatchSlowReader(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	const n = 3000
	slow := watch(t, s, "/s/", datastore.WithWatchBuffer(1))
	// Writers must finish although nobody reads the watcher.
	done := make(chan error, 1)
	go func() {
		for i := range n {
			if _, err := s.Set(ctx, fmt.Sprintf("/s/%d", i%50), []byte(fmt.Sprint(i))); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("writers blocked behind a slow watcher")
	}
	// The slow watcher then gets every event, in order, or ends with
	// ErrCompacted: never a silent gap.
	var last uint64
	got := 0
	for got < n {
		select {
		case ev, ok := <-slow.Events():
			if !ok {
				if errors.Is(slow.Err(), datastore.ErrCompacted) {
					t.Logf("slow watcher ended with ErrCompacted after %d events", got)
					return
				}
				t.Fatalf("slow watcher ended after %d of %d events: %v", got, n, slow.Err())
			}
			if last != 0 && ev.Revision != last+1 {
				t.Fatalf("gap: revision %d after %d", ev.Revision, last)
			}
			if want := fmt.Sprint(got); string(ev.NewValue) != want {
				t.Fatalf("event %d carries %q", got, ev.NewValue)
			}
			last = ev.Revision
			got++
		case <-time.After(waitTimeout):
			t.Fatalf("slow watcher stalled after %d of %d events", got, n)
		}
	}
}

func testWatchEnds(t *testing.T, newStore Factory) {
	s := newStore(t)
	// Close ends the stream with no error.
	w, err := s.Watch(ctxT(t), "/")
	if err != nil {
		t.Fatal(err)
	}
	mustSet(t, s, "/a", "1")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	drain(t, w)
	if err := w.Err(); err != nil {
		t.Fatalf("Err after Close = %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	// So does cancelling the watch's context.
	ctx, cancel := context.WithCancel(context.Background())
	w, err = s.Watch(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	drain(t, w)
	if err := w.Err(); err != nil {
		t.Fatalf("Err after cancel = %v", err)
	}
	w.Close()
	// Closing the store ends every watcher.
	w, err = s.Watch(ctxT(t), "/")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	drain(t, w)
	w.Close()
}

// drain reads until the stream closes.
func drain(t *testing.T, w datastore.Watcher) {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case _, ok := <-w.Events():
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("watch stream did not close")
		}
	}
}
