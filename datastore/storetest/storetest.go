// Package storetest is the conformance suite every datastore.Store backend
// runs. A backend's test is a few lines:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) datastore.Store {
//			s := memory.New()
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// Durable backends also run RunDurable, which closes and reopens a store and
// checks that nothing committed was lost.
//
// The suite checks the semantics of package datastore: key rules, versions
// and tombstones, revisions, ordered paginated List, compare-and-set and
// create, all-or-nothing transactions, watch ordering and resumption,
// compaction, slow watchers, and concurrency (run it with -race).
package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
)

// Factory returns a new, empty store. It registers the store's cleanup with
// t.Cleanup; the suite may also Close it itself.
type Factory func(t *testing.T) datastore.Store

// Opener opens the durable store kept in dir, creating it on first use. The
// suite closes every store it opens.
type Opener func(t *testing.T, dir string) datastore.Store

// Run runs the conformance suite against stores made by newStore.
func Run(t *testing.T, newStore Factory) {
	tests := []struct {
		name string
		fn   func(*testing.T, Factory)
	}{
		{"Keys", testKeys},
		{"GetMissing", testGetMissing},
		{"SetGet", testSetGet},
		{"ValuesAreCopied", testValuesAreCopied},
		{"VersionsAndTombstones", testVersionsAndTombstones},
		{"Timestamps", testTimestamps},
		{"Revisions", testRevisions},
		{"ListOrderAndPrefix", testListOrderAndPrefix},
		{"ListPagination", testListPagination},
		{"ListPastTombstones", testListPastTombstones},
		{"CompareAndSet", testCompareAndSet},
		{"CreateIfNotExists", testCreateIfNotExists},
		{"Txn", testTxn},
		{"TxnFailureChangesNothing", testTxnFailureChangesNothing},
		{"WatchEvents", testWatchEvents},
		{"WatchPatterns", testWatchPatterns},
		{"WatchTxnTogether", testWatchTxnTogether},
		{"WatchFromRevisionAfterList", testWatchFromRevisionAfterList},
		{"WatchCompacted", testWatchCompacted},
		{"WatchSlowReader", testWatchSlowReader},
		{"WatchEnds", testWatchEnds},
		{"WatchChecker", testWatchChecker},
		{"ConcurrentCASCounter", testConcurrentCASCounter},
		{"ConcurrentWritersAndWatchers", testConcurrentWritersAndWatchers},
		{"CancelledContext", testCancelledContext},
		{"Closed", testClosed},
		{"TTLUnsupported", testTTLUnsupported},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore) })
	}
}

// RunDurable checks that a store reopened from dir keeps every committed
// entry, version, tombstone, revision and the change log.
func RunDurable(t *testing.T, open Opener) {
	t.Run("Reopen", func(t *testing.T) { testReopen(t, open) })
}

const waitTimeout = 10 * time.Second

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustSet(t *testing.T, s datastore.Store, key, value string) uint64 {
	t.Helper()
	v, err := s.Set(ctxT(t), key, []byte(value))
	if err != nil {
		t.Fatalf("Set(%q): %v", key, err)
	}
	return v
}

func mustGet(t *testing.T, s datastore.Store, key string) datastore.Entry {
	t.Helper()
	e, err := s.Get(ctxT(t), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return e
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

func revision(t *testing.T, s datastore.Store) uint64 {
	t.Helper()
	p, err := s.List(ctxT(t), "/", datastore.ListOptions{Limit: 1, KeysOnly: true})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return p.Revision
}

func listAll(t *testing.T, s datastore.Store, prefix string) (keys []string, rev uint64) {
	t.Helper()
	opts := datastore.ListOptions{Limit: 7}
	for first := true; ; first = false {
		p, err := s.List(ctxT(t), prefix, opts)
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		if first {
			rev = p.Revision
		}
		for _, e := range p.Entries {
			keys = append(keys, e.Key)
		}
		if !p.More {
			return keys, rev
		}
		opts.After = p.Next
	}
}

// next receives one event or fails the test.
func next(t *testing.T, w datastore.Watcher) datastore.Event {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if !ok {
			t.Fatalf("watch ended early: %v", w.Err())
		}
		return ev
	case <-time.After(waitTimeout):
		t.Fatalf("no event within %v", waitTimeout)
	}
	return datastore.Event{}
}

// collect receives n events.
func collect(t *testing.T, w datastore.Watcher, n int) []datastore.Event {
	t.Helper()
	evs := make([]datastore.Event, 0, n)
	for len(evs) < n {
		evs = append(evs, next(t, w))
	}
	return evs
}

// quiet asserts no event arrives for a short while.
func quiet(t *testing.T, w datastore.Watcher) {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if ok {
			t.Fatalf("unexpected event %+v", ev)
		}
	case <-time.After(100 * time.Millisecond):
	}
}

func watch(t *testing.T, s datastore.Store, pattern string, opts ...datastore.WatchOption) datastore.Watcher {
	t.Helper()
	w, err := s.Watch(ctxT(t), pattern, opts...)
	if err != nil {
		t.Fatalf("Watch(%q): %v", pattern, err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}
