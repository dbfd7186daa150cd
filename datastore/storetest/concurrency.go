package storetest

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/univrs/peerstate/datastore"
)

func testConcurrentCASCounter(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	const workers, increments = 8, 25
	mustSet(t, s, "/counter", "0")
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < increments; {
				e, err := s.Get(ctx, "/counter")
				if err != nil {
					errs <- err
					return
				}
				n, _ := strconv.Atoi(string(e.Value))
				_, err = s.CompareAndSet(ctx, "/counter", e.Version, []byte(strconv.Itoa(n+1)))
				switch {
				case err == nil:
					done++
				case errors.Is(err, datastore.ErrVersionConflict):
				default:
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	e := mustGet(t, s, "/counter")
	if string(e.Value) != strconv.Itoa(workers*increments) || e.Version != workers*increments+1 {
		t.Fatalf("counter = %s at version %d, want %d at %d: an update was lost", e.Value, e.Version, workers*increments, workers*increments+1)
	}
}

func testConcurrentWritersAndWatchers(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	const writers, writes = 8, 40
	w1 := watch(t, s, "/cw/")
	w2 := watch(t, s, "/cw/**")
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range writes {
				key := fmt.Sprintf("/cw/%d/%d", g, i%5)
				var err error
				switch i % 3 {
				case 0, 1:
					_, err = s.Set(ctx, key, []byte(fmt.Sprint(i)))
				case 2:
					_, err = s.Txn(ctx, datastore.OpSet(key, []byte("t")), datastore.OpSet(key+"/sub", []byte("t")))
				}
				if err != nil {
					errs <- err
					return
				}
				if _, err := s.Get(ctx, key); err != nil {
					errs <- err
					return
				}
				if _, err := s.List(ctx, "/cw/", datastore.ListOptions{Limit: 10}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := 0 // every third write is a txn of two
	for i := range writes {
		if i%3 == 2 {
			total += 2
		} else {
			total++
		}
	}
	total *= writers
	for _, w := range []datastore.Watcher{w1, w2} {
		evs := collect(t, w, total)
		checkOrdered(t, evs)
		versions := map[string]uint64{}
		for _, ev := range evs {
			if ev.Version != versions[ev.Key]+1 {
				t.Fatalf("%s went from version %d to %d", ev.Key, versions[ev.Key], ev.Version)
			}
			versions[ev.Key] = ev.Version
		}
		quiet(t, w)
	}
}

func testClosed(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	mustSet(t, s, "/k", "v")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	_, err := s.Get(ctx, "/k")
	wantErr(t, "Get after Close", err, datastore.ErrClosed)
	_, err = s.Set(ctx, "/k", nil)
	wantErr(t, "Set after Close", err, datastore.ErrClosed)
	_, err = s.List(ctx, "/", datastore.ListOptions{})
	wantErr(t, "List after Close", err, datastore.ErrClosed)
	_, err = s.Watch(ctx, "/")
	wantErr(t, "Watch after Close", err, datastore.ErrClosed)
}
