package badger

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	badgerdb "github.com/dgraph-io/badger/v4"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/internal/engine"
)

// ErrTxnTooBig reports a transaction too big for one Badger commit. It also
// matches datastore.ErrInvalidTxn: retrying the same transaction cannot
// succeed; split it, or raise Config.MemTableSize.
var ErrTxnTooBig = errors.New("badger: transaction too big for one commit")

// maxBatchRequests caps how many queued requests the writer takes into one
// group commit.
const maxBatchRequests = 1024

// pending is one request waiting in the writer's queue.
type pending struct {
	ctx  context.Context
	req  engine.Request
	res  datastore.TxnResult
	err  error
	done chan struct{}
}

type committer struct{ s *Store }

// Commit hands req to the writer goroutine and waits for its result. Once
// queued, a request is answered even if ctx ends meanwhile, so the caller
// never mistakes a durable write for a failed one; the writer skips a
// request whose ctx ended before it was planned.
func (c committer) Commit(ctx context.Context, req engine.Request) (datastore.TxnResult, error) {
	s := c.s
	if err := s.enter(); err != nil {
		return datastore.TxnResult{}, err
	}
	defer s.leave()
	p := &pending{ctx: ctx, req: req, done: make(chan struct{})}
	select {
	case s.queue <- p:
	case <-ctx.Done():
		return datastore.TxnResult{}, ctx.Err()
	}
	<-p.done
	return p.res, p.err
}

// writer is the single goroutine that commits. It takes every request
// queued so far into one group commit: one Badger transaction and one sync
// for many requests, each with its own revision and result. Revisions are
// therefore assigned in commit order, and events are published in revision
// order right after the commit is durable.
func (s *Store) writer(ctx context.Context) {
	defer s.wg.Done()
	batch := make([]*pending, 0, maxBatchRequests)
	for {
		select {
		case p := <-s.queue:
			batch = append(batch[:0], p)
		case <-ctx.Done():
			return
		}
	gather:
		for len(batch) < maxBatchRequests {
			select {
			case p := <-s.queue:
				batch = append(batch, p)
			default:
				break gather
			}
		}
		s.commitBatch(batch)
		clear(batch)
	}
}

// commitBatch commits the batch in as few segments (Badger transactions) as
// Badger's batch limits allow, answering each request after its segment is
// durable and published.
func (s *Store) commitBatch(batch []*pending) {
	limit := len(batch)
	for attempt := 0; len(batch) > 0; attempt++ {
		n, err := s.commitSegment(batch[:limit], attempt)
		switch {
		case err == nil:
		case errors.Is(err, badgerdb.ErrConflict):
			// Another transaction wrote a key this one read. Only this
			// goroutine writes records, so this is not expected; plan the
			// segment again from fresh reads.
			time.Sleep(time.Millisecond)
			continue
		case errors.Is(err, badgerdb.ErrTxnTooBig):
			// The size estimate missed; retry with fewer requests, or fail
			// the one that is too big on its own.
			if limit > 1 {
				limit /= 2
				continue
			}
			batch[0].res, batch[0].err = datastore.TxnResult{}, tooBig(err)
			n = 1
		default:
			err = fmt.Errorf("badger: commit: %w", storageErr(err))
			for _, p := range batch[:n] {
				p.res, p.err = datastore.TxnResult{}, err
			}
		}
		for _, p := range batch[:n] {
			close(p.done)
		}
		batch = batch[n:]
		limit = len(batch)
		attempt = -1
	}
}

// segment is one Badger transaction of a group commit.
type segment struct {
	writes bool
	count  int64 // entries, as Badger counts them against MaxBatchCount
	size   int64 // bytes, as Badger counts them against MaxBatchSize
	bytes  int64 // bytes written to the value log at most
}

// commitSegment plans requests from the front of reqs into one Badger
// transaction while they fit, commits it, publishes the events and sets each
// planned request's result. It returns how many requests it consumed. On an
// error nothing was committed: ErrConflict and ErrTxnTooBig are the
// caller's to retry; any other error fails the consumed requests.
func (s *Store) commitSegment(reqs []*pending, attempt int) (int, error) {
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	seg := &segment{}
	seg.add([]*badgerdb.Entry{badgerdb.NewEntry(metaRevision, encodeUint64(0))}, s.cfg.ValueThreshold)
	rev := s.rev
	var events []datastore.Event
	var writes []engine.Record
	read := func(key string) (engine.Record, bool, error) { return readRecord(txn, key) }
	n := 0
	for ; n < len(reqs); n++ {
		p := reqs[n]
		p.res, p.err = datastore.TxnResult{}, nil
		if err := p.ctx.Err(); err != nil {
			p.err = err
			continue
		}
		plan, err := engine.Build(p.req, rev+1, s.opts.Now(), s.opts.DeleteMissingOK, read)
		if err != nil {
			p.err = fmt.Errorf("badger: %w", err)
			continue
		}
		if len(plan.Writes) == 0 {
			p.res = plan.Result
			continue
		}
		entries := planEntries(plan, rev+1)
		if !seg.fits(entries, s.cfg.ValueThreshold, s.db) {
			if seg.writes {
				break // commit what we have; this request starts the next segment
			}
			count, size, bytes := cost(entries, s.cfg.ValueThreshold)
			p.err = tooBig(fmt.Errorf("%d entries, %d bytes (%d in the value log)", count, size, bytes))
			continue
		}
		for _, e := range entries {
			if err := txn.SetEntry(e); err != nil {
				return n + 1, err
			}
		}
		seg.add(entries, s.cfg.ValueThreshold)
		seg.writes = true
		rev++
		p.res = plan.Result
		events = append(events, plan.Events...)
		writes = append(writes, plan.Writes...)
	}
	if seg.writes {
		if err := txn.Set(metaRevision, encodeUint64(rev)); err != nil {
			return n, err
		}
		if err := s.checkFreeSpace(seg.bytes); err != nil {
			return n, err
		}
		if s.beforeCommit != nil {
			s.beforeCommit(attempt)
		}
		if err := txn.Commit(); err != nil {
			return n, err
		}
		crossed := rev/trimEvery != s.rev/trimEvery
		s.rev = rev
		s.head.Store(rev)
		s.ttl.Note(writes)
		s.hub.Publish(events)
		if crossed {
			s.wakeTrim()
		}
	}
	return n, nil
}

// planEntries returns the Badger entries of a planned commit at revision
// rev: the records and the change-log events.
func planEntries(plan engine.Plan, rev uint64) []*badgerdb.Entry {
	entries := make([]*badgerdb.Entry, 0, len(plan.Writes)+2*len(plan.Events))
	for _, r := range plan.Writes {
		e := badgerdb.NewEntry(recordKey(r.Key), encodeRecord(r))
		if !r.ExpiresAt.IsZero() {
			e = e.WithMeta(userMetaExpires)
		}
		entries = append(entries, e)
	}
	for i, ev := range plan.Events {
		entries = append(entries, badgerdb.NewEntry(changeKey(rev, uint32(i), partEvent), encodeEvent(ev)))
		if hasOldValue(ev.Type) {
			entries = append(entries, badgerdb.NewEntry(changeKey(rev, uint32(i), partOldValue), ev.OldValue))
		}
	}
	return entries
}

// cost mirrors how Badger counts an entry against its batch limits
// (Txn.checkSize), and bounds its value-log bytes.
func cost(entries []*badgerdb.Entry, threshold int64) (count, size, bytes int64) {
	for _, e := range entries {
		k, v := int64(len(e.Key)), int64(len(e.Value))
		count++
		if v < threshold {
			size += k + v + 2 + 10
		} else {
			size += k + 12 + 2 + 10
		}
		bytes += k + v + 64
	}
	return count, size, bytes
}

func (g *segment) fits(entries []*badgerdb.Entry, threshold int64, db *badgerdb.DB) bool {
	count, size, bytes := cost(entries, threshold)
	// Badger fails a transaction at count >= MaxBatchCount or size >=
	// MaxBatchSize; keep one entry and a little room for the revision.
	return g.count+count < db.MaxBatchCount()-1 &&
		g.size+size < db.MaxBatchSize()-64 &&
		g.bytes+bytes <= maxCommitBytes
}

func (g *segment) add(entries []*badgerdb.Entry, threshold int64) {
	count, size, bytes := cost(entries, threshold)
	g.count += count
	g.size += size
	g.bytes += bytes
}

func tooBig(cause error) error {
	return fmt.Errorf("%w: %w: %w", ErrTxnTooBig, datastore.ErrInvalidTxn, cause)
}

// checkFreeSpace fails with ErrStorageFull when the disk has less than
// Config.MinFreeSpace free beyond the bytes a commit is about to write.
func (s *Store) checkFreeSpace(need int64) error {
	if s.cfg.MinFreeSpace == 0 {
		return nil
	}
	free, ok := diskFree(s.cfg.Dir)
	if !ok || free >= uint64(need)+uint64(s.cfg.MinFreeSpace) {
		return nil
	}
	return fmt.Errorf("%w: %d bytes free in %s, a commit of up to %d bytes needs %d more in reserve",
		datastore.ErrStorageFull, free, s.cfg.Dir, need, s.cfg.MinFreeSpace)
}

// storageErr marks a full disk as datastore.ErrStorageFull, where Badger's
// error still carries the cause.
func storageErr(err error) error {
	if errors.Is(err, datastore.ErrStorageFull) {
		return err
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", datastore.ErrStorageFull, err)
	}
	return err
}
