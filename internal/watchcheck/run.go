package watchcheck

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/univrs/peerstate/datastore"
)

// Config sizes the workload of Run.
type Config struct {
	Writers int    // concurrent writers; default 4
	Txns    int    // transactions per writer; default 50
	Prefix  string // every key is under it; default "/wc"
	Seed    uint64
	// Wait bounds how long a stream may take to deliver what was
	// committed; default 20s.
	Wait time.Duration
}

// Run checks every watch guarantee of s under concurrent writers: live
// watches of a prefix and two globs, watches resumed from revisions across
// the run, and List then Watch(FromRevision) replayed to the final List. The
// writers commit transactions of one to three sets and deletes on a few
// keys; the Log of their results is the reference. s must keep at least the
// run's revisions in its change log.
func Run(ctx context.Context, s datastore.Store, cfg Config) error {
	if cfg.Writers <= 0 {
		cfg.Writers = 4
	}
	if cfg.Txns <= 0 {
		cfg.Txns = 50
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "/wc"
	}
	if cfg.Wait <= 0 {
		cfg.Wait = 20 * time.Second
	}
	under := cfg.Prefix + "/"
	_, start, err := ListState(ctx, s, under)
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	patterns := []string{under, cfg.Prefix + "/*/a", cfg.Prefix + "/**"}
	var live []datastore.Watcher
	defer func() {
		for _, w := range live {
			w.Close()
		}
	}()
	for _, p := range patterns {
		w, err := s.Watch(ctx, p, datastore.WithWatchBuffer(16))
		if err != nil {
			return fmt.Errorf("watch %q: %w", p, err)
		}
		live = append(live, w)
	}

	var log Log
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	writeErr := make(chan error, cfg.Writers)
	var wg sync.WaitGroup
	for i := range cfg.Writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			writeErr <- write(wctx, s, &log, cfg, i)
		}()
	}
	// List, then Watch from the list's revision, while the writers run.
	var e errs
	lw, listed, listRev, err := listThenWatch(ctx, s, &log, under, cfg.Writers*cfg.Txns/3)
	e.add("list then watch", err)
	if lw != nil {
		defer lw.Close()
	}
	wg.Wait()
	close(writeErr)
	for err := range writeErr {
		e.add("writer", err)
	}
	if err := e.err(); err != nil {
		return err
	}
	upto := log.Last()

	for i, w := range live {
		e.add(fmt.Sprintf("watch %q", patterns[i]), checkStream(ctx, cfg.Wait, w, &log, patterns[i], start, upto))
	}
	// Resume from revisions spread over the run.
	for i := range 4 {
		from := start + (upto-start)*uint64(i)/4
		w, err := s.Watch(ctx, patterns[2], datastore.FromRevision(from))
		if err != nil {
			e.add(fmt.Sprintf("watch from %d", from), err)
			continue
		}
		e.add(fmt.Sprintf("watch %q from %d", patterns[2], from), checkStream(ctx, cfg.Wait, w, &log, patterns[2], from, upto))
		w.Close()
	}
	// The listed state plus the stream from its revision is the final state.
	want, err := log.Expected(under, listRev, upto)
	e.add("expected", err)
	cctx, ccancel := context.WithTimeout(ctx, cfg.Wait)
	defer ccancel()
	evs, err := Collect(cctx, lw, len(want))
	e.add("list then watch: collect", err)
	e.add("list then watch: replay", listed.Replay(evs))
	final, _, err := ListState(ctx, s, under)
	e.add("final list", err)
	if d := Diff(listed, final); d != "" {
		e.add("list then watch", fmt.Errorf("replayed state differs from the final list: %s", d))
	}
	return e.err()
}

// checkStream collects what w should have delivered and checks it.
func checkStream(ctx context.Context, wait time.Duration, w datastore.Watcher, log *Log, pattern string, from, upto uint64) error {
	want, err := log.Expected(pattern, from, upto)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	evs, err := Collect(cctx, w, len(want))
	if err != nil {
		return err
	}
	if err := Check(evs, from); err != nil {
		return err
	}
	if err := Compare(evs, want); err != nil {
		return err
	}
	return Quiet(w, 50*time.Millisecond)
}

// listThenWatch waits for about after commits, lists under and watches from
// the list's revision.
func listThenWatch(ctx context.Context, s datastore.Store, log *Log, under string, after int) (datastore.Watcher, State, uint64, error) {
	for {
		log.mu.Lock()
		n := len(log.commits)
		log.mu.Unlock()
		if n >= after {
			break
		}
		select {
		case <-ctx.Done():
			return nil, nil, 0, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	st, rev, err := ListState(ctx, s, under)
	if err != nil {
		return nil, nil, 0, err
	}
	w, err := s.Watch(ctx, under, datastore.FromRevision(rev))
	if err != nil {
		return nil, nil, 0, err
	}
	return w, st, rev, nil
}

// write commits cfg.Txns random transactions and logs them.
func write(ctx context.Context, s datastore.Store, log *Log, cfg Config, id int) error {
	rng := rand.New(rand.NewPCG(cfg.Seed, uint64(id)))
	keys := []string{"a", "b", "a/deep"}
	for n := range cfg.Txns {
		var ops []datastore.Op
		used := map[string]bool{}
		for range 1 + rng.IntN(3) {
			key := fmt.Sprintf("%s/%d/%s", cfg.Prefix, rng.IntN(4), keys[rng.IntN(len(keys))])
			if used[key] {
				continue
			}
			used[key] = true
			if rng.IntN(4) == 0 {
				ops = append(ops, datastore.OpDelete(key))
			} else {
				ops = append(ops, datastore.OpSet(key, fmt.Appendf(nil, "w%d-%d", id, n)))
			}
		}
		res, err := s.Txn(ctx, ops...)
		switch {
		case err == nil:
			log.Txn(ops, res)
		case errors.Is(err, datastore.ErrKeyNotFound): // deleted an absent key: nothing committed
		default:
			return fmt.Errorf("txn %d: %w", n, err)
		}
	}
	return nil
}
