package watchcheck_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/internal/watchcheck"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ev(typ datastore.EventType, key string, version, rev uint64, old, new string) datastore.Event {
	e := datastore.Event{Type: typ, Key: key, Version: version, Revision: rev}
	if old != "" {
		e.OldValue = []byte(old)
	}
	if new != "" {
		e.NewValue = []byte(new)
	}
	return e
}

func TestCheck(t *testing.T) {
	good := []datastore.Event{
		ev(datastore.Created, "/a", 1, 5, "", "1"),
		ev(datastore.Created, "/b", 1, 6, "", "x"),
		ev(datastore.Updated, "/a", 2, 6, "1", "2"),
		ev(datastore.Deleted, "/a", 3, 7, "2", ""),
		ev(datastore.Created, "/a", 4, 9, "", "3"),
	}
	if err := watchcheck.Check(good, 4); err != nil {
		t.Fatalf("good stream: %v", err)
	}
	bad := map[string][]datastore.Event{
		"before start":    {ev(datastore.Created, "/a", 1, 4, "", "1")},
		"out of order":    {good[0], good[3], good[1]},
		"duplicate":       {good[0], good[1], good[1]},
		"gap":             {good[0], good[3]},
		"split txn":       {good[1], good[0], good[2]},
		"wrong old value": {good[0], ev(datastore.Updated, "/a", 2, 6, "0", "2")},
		"created twice":   {good[0], ev(datastore.Created, "/a", 2, 6, "", "2")},
		"update absent":   {good[0], good[1], good[2], good[3], ev(datastore.Updated, "/a", 4, 8, "", "2")},
	}
	for name, evs := range bad {
		if err := watchcheck.Check(evs, 4); err == nil {
			t.Errorf("%s: Check passed", name)
		}
	}
}

func TestCompareAndReplay(t *testing.T) {
	var log watchcheck.Log
	log.Txn([]datastore.Op{datastore.OpSet("/a", []byte("1")), datastore.OpCheckVersion("/z", 0), datastore.OpSet("/b", []byte("x"))},
		datastore.TxnResult{Revision: 5, Versions: []uint64{1, 0, 1}})
	log.Txn([]datastore.Op{datastore.OpDelete("/a")}, datastore.TxnResult{Revision: 6, Versions: []uint64{2}})
	want, err := log.Expected("/", 0, 6)
	if err != nil {
		t.Fatal(err)
	}
	evs := []datastore.Event{
		ev(datastore.Created, "/b", 1, 5, "", "x"), // within a revision, any order
		ev(datastore.Created, "/a", 1, 5, "", "1"),
		ev(datastore.Deleted, "/a", 2, 6, "1", ""),
	}
	if err := watchcheck.Compare(evs, want); err != nil {
		t.Fatalf("Compare: %v", err)
	}
	if err := watchcheck.Compare(evs[:2], want); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Compare of a stream missing an event: %v", err)
	}
	if err := watchcheck.Compare(append(evs, evs[2]), want); err == nil {
		t.Fatal("Compare of a stream with an extra event passed")
	}
	if w, _ := log.Expected("/b", 0, 6); len(w) != 1 || w[0].Key != "/b" {
		t.Fatalf("Expected(/b) = %+v", w)
	}

	st := watchcheck.State{}
	if err := st.Replay(evs); err != nil {
		t.Fatal(err)
	}
	if d := watchcheck.Diff(st, watchcheck.State{"/b": {Value: "x", Version: 1}}); d != "" {
		t.Fatal(d)
	}
	// A stream that repeats what the list already had fails the replay.
	st = watchcheck.State{"/b": {Value: "x", Version: 1}}
	if err := st.Replay(evs); err == nil {
		t.Fatal("replay of a repeated create passed")
	}
}

func TestRunMemory(t *testing.T) {
	s := memory.New()
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := watchcheck.Run(ctx, s, watchcheck.Config{}); err != nil {
		t.Fatal(err)
	}
}

// dropStore loses one event of every watch: Run must notice.
type dropStore struct{ *memory.Store }

type dropWatcher struct {
	datastore.Watcher
	out  chan datastore.Event
	wg   sync.WaitGroup
	once sync.Once
}

func (s dropStore) Watch(ctx context.Context, pattern string, opts ...datastore.WatchOption) (datastore.Watcher, error) {
	w, err := s.Store.Watch(ctx, pattern, opts...)
	if err != nil {
		return nil, err
	}
	d := &dropWatcher{Watcher: w, out: make(chan datastore.Event)}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer close(d.out)
		n := 0
		for e := range w.Events() {
			if n++; n == 3 {
				continue
			}
			d.out <- e
		}
	}()
	return d, nil
}

func (d *dropWatcher) Events() <-chan datastore.Event { return d.out }

func (d *dropWatcher) Close() error {
	err := d.Watcher.Close()
	d.once.Do(func() {
		go func() {
			for range d.out {
			}
		}()
	})
	d.wg.Wait()
	return err
}

func TestRunCatchesALostEvent(t *testing.T) {
	s := dropStore{memory.New()}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := watchcheck.Run(ctx, s, watchcheck.Config{Writers: 2, Txns: 20, Wait: 300 * time.Millisecond}); err == nil {
		t.Fatal("Run passed a store whose watches drop an event")
	}
}
