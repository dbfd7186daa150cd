package modeltest

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"pgregory.net/rapid"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/badger"
	"github.com/univrs/peerstate/datastore/etcd"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/sqlite"
	"github.com/univrs/peerstate/internal/etcdtest"
)

// ciChecks is the number of rapid runs per test unless -rapid.checks says
// otherwise: enough for CI's budget; `make soak` runs many more.
const ciChecks = "30"

func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "rapid.checks" })
	if !set {
		if err := flag.Set("rapid.checks", ciChecks); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	goleak.VerifyTestMain(m)
}

// backend opens the store under test; reopen, if set, closes it and opens
// it again on the same data.
type backend struct {
	open   func(t *testing.T) datastore.Store
	reopen func(t *testing.T, s datastore.Store) datastore.Store
}

// prefixes gives every rapid run its own key space in a shared store.
var prefixes atomic.Int64

// storeMachine runs one random sequence against the store and the oracle.
type storeMachine struct {
	ctx    context.Context
	tt     *testing.T
	b      backend
	s      datastore.Store // under test
	oracle *memory.Store
	prefix string
	keys   []string
	// watches of the prefix on both, compared at the end; nil after a
	// reopen ends the store's.
	sw, ow  datastore.Watcher
	lastRev uint64
	events  int // events the oracle's watch owes: its successful writes under the prefix
}

func (m *storeMachine) key(t *rapid.T) string {
	if rapid.IntRange(0, 30).Draw(t, "invalid?") == 0 {
		return rapid.SampledFrom([]string{"", "a", m.prefix + "//b", m.prefix + "/a/", m.prefix + "/*", m.prefix + "/\x00", m.prefix}).Draw(t, "bad key")
	}
	return m.prefix + rapid.SampledFrom(m.keys).Draw(t, "key")
}

func value(t *rapid.T) []byte {
	return rapid.SliceOfN(rapid.Byte(), 0, 6).Draw(t, "value")
}

// class reduces an error to what the contract says about it.
func class(err error) string {
	var te *datastore.TxnError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &te):
		return fmt.Sprintf("txn failed at op %d (%q want %d have %d)", te.Index, te.Key, te.Expected, te.Actual)
	}
	for _, e := range []error{datastore.ErrKeyNotFound, datastore.ErrVersionConflict, datastore.ErrAlreadyExists,
		datastore.ErrInvalidKey, datastore.ErrInvalidTxn, datastore.ErrValueTooLarge} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return "other: " + err.Error()
}

func (m *storeMachine) same(t *rapid.T, what string, gotErr, wantErr error) bool {
	if g, w := class(gotErr), class(wantErr); g != w {
		t.Fatalf("%s: store says %s, oracle %s", what, g, w)
	}
	return gotErr == nil
}

// wrote counts the watch events a successful write of keys owes.
func (m *storeMachine) wrote(err error, keys ...string) {
	if err != nil {
		return
	}
	for _, k := range keys {
		if strings.HasPrefix(k, m.prefix+"/") {
			m.events++
		}
	}
}

func (m *storeMachine) Set(t *rapid.T) {
	k, v := m.key(t), value(t)
	gv, gerr := m.s.Set(m.ctx, k, v)
	wv, werr := m.oracle.Set(m.ctx, k, v)
	m.wrote(werr, k)
	if m.same(t, "Set "+k, gerr, werr) && gv != wv {
		t.Fatalf("Set %s: version %d, oracle %d", k, gv, wv)
	}
}

func (m *storeMachine) Delete(t *rapid.T) {
	k := m.key(t)
	werr := m.oracle.Delete(m.ctx, k)
	m.wrote(werr, k)
	m.same(t, "Delete "+k, m.s.Delete(m.ctx, k), werr)
}

func (m *storeMachine) CompareAndSet(t *rapid.T) {
	k, v := m.key(t), value(t)
	exp := uint64(rapid.IntRange(0, 4).Draw(t, "expected"))
	if e, err := m.oracle.Get(m.ctx, k); err == nil && rapid.Bool().Draw(t, "current?") {
		exp = e.Version
	}
	gv, gerr := m.s.CompareAndSet(m.ctx, k, exp, v)
	wv, werr := m.oracle.CompareAndSet(m.ctx, k, exp, v)
	m.wrote(werr, k)
	if m.same(t, fmt.Sprintf("CAS %s@%d", k, exp), gerr, werr) && gv != wv {
		t.Fatalf("CAS %s: version %d, oracle %d", k, gv, wv)
	}
}

func (m *storeMachine) CreateIfNotExists(t *rapid.T) {
	k, v := m.key(t), value(t)
	gv, gerr := m.s.CreateIfNotExists(m.ctx, k, v)
	wv, werr := m.oracle.CreateIfNotExists(m.ctx, k, v)
	m.wrote(werr, k)
	if m.same(t, "Create "+k, gerr, werr) && gv != wv {
		t.Fatalf("Create %s: version %d, oracle %d", k, gv, wv)
	}
}

func (m *storeMachine) Txn(t *rapid.T) {
	n := rapid.IntRange(1, 4).Draw(t, "ops")
	ops := make([]datastore.Op, n)
	for i := range ops {
		k := m.key(t)
		switch rapid.IntRange(0, 2).Draw(t, "kind") {
		case 0:
			ops[i] = datastore.OpSet(k, value(t))
		case 1:
			ops[i] = datastore.OpDelete(k)
		default:
			ver := uint64(rapid.IntRange(0, 3).Draw(t, "check version"))
			if e, err := m.oracle.Get(m.ctx, k); err == nil && rapid.Bool().Draw(t, "current?") {
				ver = e.Version
			}
			ops[i] = datastore.OpCheckVersion(k, ver)
		}
	}
	gr, gerr := m.s.Txn(m.ctx, ops...)
	wr, werr := m.oracle.Txn(m.ctx, ops...)
	for _, op := range ops {
		if op.IsWrite() {
			m.wrote(werr, op.Key)
		}
	}
	if m.same(t, fmt.Sprintf("Txn %v", ops), gerr, werr) {
		if !slices.Equal(gr.Versions, wr.Versions) {
			t.Fatalf("Txn %v: versions %v, oracle %v", ops, gr.Versions, wr.Versions)
		}
		if gr.Revision < m.lastRev {
			t.Fatalf("Txn revision %d after %d", gr.Revision, m.lastRev)
		}
		m.lastRev = gr.Revision
	}
}

func (m *storeMachine) Get(t *rapid.T) {
	k := m.key(t)
	g, gerr := m.s.Get(m.ctx, k)
	w, werr := m.oracle.Get(m.ctx, k)
	if m.same(t, "Get "+k, gerr, werr) && (g.Key != w.Key || g.Version != w.Version || !bytes.Equal(g.Value, w.Value)) {
		t.Fatalf("Get %s: %q v%d, oracle %q v%d", k, g.Value, g.Version, w.Value, w.Version)
	}
}

func (m *storeMachine) List(t *rapid.T) {
	prefix := m.prefix + rapid.SampledFrom([]string{"/", "/a", "/a/", "/b/", "/a/b"}).Draw(t, "list prefix")
	opts := datastore.ListOptions{
		Limit:    rapid.IntRange(0, 4).Draw(t, "limit"),
		KeysOnly: rapid.Bool().Draw(t, "keys only"),
	}
	if rapid.Bool().Draw(t, "after?") {
		opts.After = m.prefix + rapid.SampledFrom(m.keys).Draw(t, "after")
	}
	g, gerr := m.s.List(m.ctx, prefix, opts)
	w, werr := m.oracle.List(m.ctx, prefix, opts)
	if !m.same(t, "List "+prefix, gerr, werr) {
		return
	}
	if g.More != w.More || g.Next != w.Next || len(g.Entries) != len(w.Entries) {
		t.Fatalf("List %s %+v: %d entries more=%v next=%q, oracle %d more=%v next=%q",
			prefix, opts, len(g.Entries), g.More, g.Next, len(w.Entries), w.More, w.Next)
	}
	for i := range g.Entries {
		ge, we := g.Entries[i], w.Entries[i]
		if ge.Key != we.Key || ge.Version != we.Version || !bytes.Equal(ge.Value, we.Value) {
			t.Fatalf("List %s entry %d: %s %q v%d, oracle %s %q v%d", prefix, i, ge.Key, ge.Value, ge.Version, we.Key, we.Value, we.Version)
		}
	}
	if g.Revision < m.lastRev {
		t.Fatalf("List at revision %d after a commit at %d", g.Revision, m.lastRev)
	}
}

// Reopen closes the store and opens it on the same data: nothing committed
// is lost (the next calls compare with the oracle).
func (m *storeMachine) Reopen(t *rapid.T) {
	if m.b.reopen == nil {
		t.Skip("not durable")
	}
	m.compareWatches(t)
	m.s = m.b.reopen(m.tt, m.s)
}

// compareWatches checks that both watches saw the same changes and stops
// them.
func (m *storeMachine) compareWatches(t *rapid.T) {
	if m.sw == nil {
		return
	}
	defer func() {
		m.sw.Close()
		m.ow.Close()
		m.sw, m.ow = nil, nil
	}()
	ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
	defer cancel()
	want := make([]datastore.Event, 0, m.events)
	for len(want) < m.events {
		select {
		case ev := <-m.ow.Events():
			want = append(want, ev)
		case <-ctx.Done():
			t.Fatalf("oracle watch: %d of %d events", len(want), m.events)
		}
	}
	m.events = 0
	for i, w := range want {
		var g datastore.Event
		select {
		case g = <-m.sw.Events():
		case <-ctx.Done():
			t.Fatalf("watch: %d of %d events, then nothing", i, len(want))
		}
		if g.Type != w.Type || g.Key != w.Key || g.Version != w.Version || !bytes.Equal(g.NewValue, w.NewValue) || !bytes.Equal(g.OldValue, w.OldValue) {
			t.Fatalf("watch event %d: %s %s v%d, oracle %s %s v%d", i, g.Type, g.Key, g.Version, w.Type, w.Key, w.Version)
		}
	}
	select {
	case g := <-m.sw.Events():
		t.Fatalf("watch: extra event %s %s v%d", g.Type, g.Key, g.Version)
	case <-time.After(20 * time.Millisecond):
	}
}

// runStore runs rapid state machines against b's store, one shared store,
// each run in its own key space.
func runStore(t *testing.T, b backend) {
	s := b.open(t)
	defer func() { s.Close() }()
	rapid.Check(t, func(rt *rapid.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		m := &storeMachine{ctx: ctx, tt: t, b: b, s: s, oracle: memory.New(),
			prefix: fmt.Sprintf("/m%d", prefixes.Add(1)),
			keys:   []string{"/a", "/a/b", "/a/b/c", "/ab", "/b", "/b/x"}}
		defer m.oracle.Close()
		var err error
		if m.sw, err = s.Watch(ctx, m.prefix+"/"); err != nil {
			rt.Fatal(err)
		}
		if m.ow, err = m.oracle.Watch(ctx, m.prefix+"/"); err != nil {
			rt.Fatal(err)
		}
		defer func() {
			if m.sw != nil {
				m.sw.Close()
				m.ow.Close()
			}
			s = m.s // a reopened store is the one to close
		}()
		rt.Repeat(rapid.StateMachineActions(m))
		m.compareWatches(rt)
	})
}

func TestModel_Memory(t *testing.T) {
	runStore(t, backend{open: func(t *testing.T) datastore.Store { return memory.New() }})
}

func TestModel_SQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.sqlite")
	open := func(t *testing.T) datastore.Store {
		s, err := sqlite.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	runStore(t, backend{open: open, reopen: func(t *testing.T, s datastore.Store) datastore.Store {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		return open(t)
	}})
}

func TestModel_Badger(t *testing.T) {
	dir := t.TempDir()
	open := func(t *testing.T) datastore.Store {
		s, err := badger.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	runStore(t, backend{open: open, reopen: func(t *testing.T, s datastore.Store) datastore.Store {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		return open(t)
	}})
}

func TestModel_Etcd(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.WithoutFsync())
	open := func(t *testing.T) datastore.Store {
		s, err := etcd.Open(context.Background(), etcd.Config{Endpoints: srv.Endpoints, Root: "/model"})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	runStore(t, backend{open: open, reopen: func(t *testing.T, s datastore.Store) datastore.Store {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		return open(t)
	}})
}

// Check holds after every action: the whole key space lists the same on
// the store as on the oracle.
func (m *storeMachine) Check(t *rapid.T) {
	opts := datastore.ListOptions{Limit: datastore.MaxListLimit}
	g, err := m.s.List(m.ctx, m.prefix+"/", opts)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	w, err := m.oracle.List(m.ctx, m.prefix+"/", opts)
	if err != nil {
		t.Fatalf("oracle List: %v", err)
	}
	if !slices.EqualFunc(g.Entries, w.Entries, func(a, b datastore.Entry) bool {
		return a.Key == b.Key && a.Version == b.Version && bytes.Equal(a.Value, b.Value)
	}) {
		t.Fatalf("state differs from the oracle:\n store  %v\n oracle %v", brief(g.Entries), brief(w.Entries))
	}
}

func brief(es []datastore.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = fmt.Sprintf("%s=%q@%d", e.Key, e.Value, e.Version)
	}
	return out
}
