// Package watchcheck checks watch streams: events in revision order, no
// duplicates, no gaps, the events of one transaction together, a stream
// resumed from any revision in the window equal to the tail of the full one,
// and List followed by Watch(FromRevision) missing and repeating nothing.
//
// The checks take plain event slices and a Log of what writers committed,
// so storetest, simulations and integration tests (where events come over
// HTTP from another process) use the same ones. Run drives a complete
// workload against one store.
package watchcheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/univrs/peerstate/datastore"
)

// Commit is one key written by an acknowledged commit.
type Commit struct {
	Revision uint64
	Key      string
	Version  uint64
	Deleted  bool
	Value    []byte // the new value of a set
}

// Log collects what writers committed, as the reference the streams are
// compared with. It is safe for concurrent use.
type Log struct {
	mu      sync.Mutex
	commits []Commit
}

// Txn records the writes of a committed transaction.
func (l *Log) Txn(ops []datastore.Op, res datastore.TxnResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, op := range ops {
		if !op.IsWrite() {
			continue
		}
		l.commits = append(l.commits, Commit{
			Revision: res.Revision, Key: op.Key, Version: res.Versions[i],
			Deleted: op.Kind == datastore.OpKindDelete, Value: bytes.Clone(op.Value),
		})
	}
}

// Add records one commit.
func (l *Log) Add(c Commit) {
	l.mu.Lock()
	l.commits = append(l.commits, c)
	l.mu.Unlock()
}

// Last returns the highest revision recorded.
func (l *Log) Last() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var last uint64
	for _, c := range l.commits {
		last = max(last, c.Revision)
	}
	return last
}

// Expected returns, in revision order, the commits a watch of pattern from
// revision from (exclusive) should deliver up to revision upto (inclusive).
// Within a revision they are in key order.
func (l *Log) Expected(pattern string, from, upto uint64) ([]Commit, error) {
	p, err := datastore.ParsePattern(pattern)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	var out []Commit
	for _, c := range l.commits {
		if c.Revision > from && c.Revision <= upto && p.Match(c.Key) {
			out = append(out, c)
		}
	}
	l.mu.Unlock()
	sortCommits(out)
	return out, nil
}

func sortCommits(cs []Commit) {
	sort.SliceStable(cs, func(i, j int) bool {
		if cs[i].Revision != cs[j].Revision {
			return cs[i].Revision < cs[j].Revision
		}
		return cs[i].Key < cs[j].Key
	})
}

// Check checks a stream on its own: every revision after from, revisions
// never going back (so a transaction's events are together), no key twice
// in one revision, and per key every version one more than the last with
// types and old values that follow from the previous event: a watch sees
// every change of a matching key, so a skipped version is a gap.
func Check(events []datastore.Event, from uint64) error {
	type last struct {
		version uint64
		live    bool
		value   []byte
	}
	keys := map[string]last{}
	inRev := map[string]bool{}
	for i, ev := range events {
		where := fmt.Sprintf("event %d (%s %s v%d rev %d)", i, ev.Type, ev.Key, ev.Version, ev.Revision)
		if ev.Revision <= from {
			return fmt.Errorf("%s: at or before the start revision %d", where, from)
		}
		if i > 0 && ev.Revision != events[i-1].Revision {
			if ev.Revision < events[i-1].Revision {
				return fmt.Errorf("%s: after revision %d", where, events[i-1].Revision)
			}
			clear(inRev)
		}
		if inRev[ev.Key] {
			return fmt.Errorf("%s: the key twice in one revision", where)
		}
		inRev[ev.Key] = true
		prev, seen := keys[ev.Key]
		switch ev.Type {
		case datastore.Created:
			if seen && prev.live {
				return fmt.Errorf("%s: created while live", where)
			}
		case datastore.Updated, datastore.Deleted:
			if seen && !prev.live {
				return fmt.Errorf("%s: %s while absent", where, ev.Type)
			}
			if seen && !bytes.Equal(ev.OldValue, prev.value) {
				return fmt.Errorf("%s: old value %q, the last event set %q", where, ev.OldValue, prev.value)
			}
		default:
			return fmt.Errorf("%s: unknown type", where)
		}
		if ev.Type == datastore.Deleted && ev.NewValue != nil {
			return fmt.Errorf("%s: a delete with a new value", where)
		}
		if seen && ev.Version != prev.version+1 {
			return fmt.Errorf("%s: version after v%d: a gap or a repeat", where, prev.version)
		}
		keys[ev.Key] = last{version: ev.Version, live: ev.Type != datastore.Deleted, value: ev.NewValue}
	}
	return nil
}

// Compare checks that a stream holds exactly the expected commits (from
// Log.Expected), in revision order; within a revision, in any order.
func Compare(events []datastore.Event, want []Commit) error {
	got := make([]Commit, len(events))
	for i, ev := range events {
		got[i] = Commit{Revision: ev.Revision, Key: ev.Key, Version: ev.Version, Deleted: ev.Type == datastore.Deleted, Value: ev.NewValue}
	}
	sortCommits(got)
	for i := 0; i < len(got) || i < len(want); i++ {
		switch {
		case i >= len(got):
			return fmt.Errorf("missing %s and %d more", describe(want[i]), len(want)-i-1)
		case i >= len(want):
			return fmt.Errorf("unexpected %s and %d more", describe(got[i]), len(got)-i-1)
		}
		g, w := got[i], want[i]
		if g.Revision != w.Revision || g.Key != w.Key || g.Version != w.Version || g.Deleted != w.Deleted || !bytes.Equal(g.Value, w.Value) {
			return fmt.Errorf("event %d is %s, want %s", i, describe(g), describe(w))
		}
	}
	return nil
}

func describe(c Commit) string {
	what := fmt.Sprintf("set %q", c.Value)
	if c.Deleted {
		what = "delete"
	}
	return fmt.Sprintf("%s %s v%d at rev %d", what, c.Key, c.Version, c.Revision)
}

// Collect reads n events from w, or fails when the watch ends or ctx ends
// first.
func Collect(ctx context.Context, w datastore.Watcher, n int) ([]datastore.Event, error) {
	evs := make([]datastore.Event, 0, n)
	for len(evs) < n {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				return evs, fmt.Errorf("watch ended after %d of %d events: %v", len(evs), n, w.Err())
			}
			evs = append(evs, ev)
		case <-ctx.Done():
			return evs, fmt.Errorf("%d of %d events: %w", len(evs), n, ctx.Err())
		}
	}
	return evs, nil
}

// Quiet fails if w delivers anything within d: a stream that has all its
// expected events must not have more.
func Quiet(w datastore.Watcher, d time.Duration) error {
	select {
	case ev, ok := <-w.Events():
		if ok {
			return fmt.Errorf("unexpected event %s %s v%d rev %d", ev.Type, ev.Key, ev.Version, ev.Revision)
		}
		if err := w.Err(); err != nil {
			return fmt.Errorf("watch ended: %w", err)
		}
	case <-time.After(d):
	}
	return nil
}

// Entry is a key's value and version in a replayed state.
type Entry struct {
	Value   string
	Version uint64
}

// State is the live keys under a prefix.
type State map[string]Entry

// ListState reads every page of prefix. The first page's revision is the
// state's: List pages each read at their own revision, so a state read
// under concurrent writes is only exact for a single page.
func ListState(ctx context.Context, s datastore.Store, prefix string) (State, uint64, error) {
	st := State{}
	var rev uint64
	opts := datastore.ListOptions{Limit: datastore.MaxListLimit}
	for first := true; ; first = false {
		p, err := s.List(ctx, prefix, opts)
		if err != nil {
			return nil, 0, err
		}
		if first {
			rev = p.Revision
		}
		for _, e := range p.Entries {
			st[e.Key] = Entry{Value: string(e.Value), Version: e.Version}
		}
		if !p.More {
			return st, rev, nil
		}
		opts.After = p.Next
	}
}

// Replay applies a stream to a listed state: each event must follow from
// the state (a List then Watch(FromRevision) that missed or repeated a
// change fails here).
func (st State) Replay(events []datastore.Event) error {
	for i, ev := range events {
		cur, live := st[ev.Key]
		where := fmt.Sprintf("event %d (%s %s v%d rev %d)", i, ev.Type, ev.Key, ev.Version, ev.Revision)
		switch ev.Type {
		case datastore.Created:
			if live {
				return fmt.Errorf("%s: the listed state has it live at v%d", where, cur.Version)
			}
		case datastore.Updated, datastore.Deleted:
			if !live {
				return fmt.Errorf("%s: absent from the listed state", where)
			}
			if ev.Version != cur.Version+1 || string(ev.OldValue) != cur.Value {
				return fmt.Errorf("%s: old value %q, listed state v%d %q", where, ev.OldValue, cur.Version, cur.Value)
			}
		}
		if ev.Type == datastore.Deleted {
			delete(st, ev.Key)
		} else {
			st[ev.Key] = Entry{Value: string(ev.NewValue), Version: ev.Version}
		}
	}
	return nil
}

// Diff describes how two states differ; "" if they are equal.
func Diff(got, want State) string {
	var out []string
	for k, w := range want {
		if g, ok := got[k]; !ok {
			out = append(out, fmt.Sprintf("%s missing (want v%d %q)", k, w.Version, w.Value))
		} else if g != w {
			out = append(out, fmt.Sprintf("%s is v%d %q, want v%d %q", k, g.Version, g.Value, w.Version, w.Value))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			out = append(out, fmt.Sprintf("%s extra (v%d %q)", k, g.Version, g.Value))
		}
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}

// errs joins the errors of several checks, each prefixed with what it was.
type errs []error

func (e *errs) add(what string, err error) {
	if err != nil {
		*e = append(*e, fmt.Errorf("%s: %w", what, err))
	}
}

func (e errs) err() error { return errors.Join(e...) }
