package badger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	badgerdb "github.com/dgraph-io/badger/v4"

	"github.com/univrs/peerstate/datastore"
)

// trimEvery is how many revisions pass between wake-ups of the change-log
// trimmer by the writer.
const trimEvery = 256

// changeLog is the hub.Log over the 'c' keys.
type changeLog struct{ s *Store }

// Since implements hub.Log: the events of at most limit whole revisions
// after `after`, read from one Badger snapshot. Revisions at or below the
// floor — the larger of the Compact floor and head minus the retention —
// are gone: asking for them is ErrCompacted, whether or not the trimmer
// has deleted them yet.
func (l changeLog) Since(ctx context.Context, after uint64, limit int) ([]datastore.Event, error) {
	s := l.s
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if limit <= 0 {
		limit = math.MaxInt
	}
	var events []datastore.Event
	err := s.db.View(func(txn *badgerdb.Txn) error {
		head, _, err := getUint64(txn, metaRevision)
		if err != nil {
			return err
		}
		compacted, _, err := getUint64(txn, metaFloor)
		if err != nil {
			return err
		}
		if floor := s.logFloor(head, compacted); after < floor {
			return fmt.Errorf("change log keeps revisions after %d, asked after %d: %w", floor, after, datastore.ErrCompacted)
		}
		events, err = readChanges(ctx, txn, after, head, limit)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("badger: change log: %w", err)
	}
	return events, nil
}

// logFloor is the revision at and below which the change log is compacted,
// given the head revision and the Compact floor.
func (s *Store) logFloor(head, compacted uint64) uint64 {
	return max(compacted, head-min(head, uint64(s.opts.ChangeLogRetention)))
}

// readChanges reads the events of the revisions in (after, head], at most
// limit revisions of them.
func readChanges(ctx context.Context, txn *badgerdb.Txn, after, head uint64, limit int) ([]datastore.Event, error) {
	it := txn.NewIterator(badgerdb.IteratorOptions{Prefix: []byte{prefixChange}})
	defer it.Close()
	var (
		events  []datastore.Event
		lastRev uint64
		lastIdx uint32
		revs    int
		needOld bool // the last event still lacks its old value
	)
	for it.Seek(changeRevKey(after + 1)); it.Valid(); it.Next() {
		item := it.Item()
		rev, idx, part, err := parseChangeKey(item.Key())
		if err != nil {
			return nil, err
		}
		if rev > head {
			break
		}
		switch part {
		case partEvent:
			if needOld {
				return nil, fmt.Errorf("event %d of revision %d: no old value: %w", lastIdx, lastRev, errCorrupt)
			}
			if rev != lastRev {
				if revs == limit {
					return events, nil
				}
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				revs++
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return nil, err
			}
			ev, err := decodeEvent(rev, v)
			if err != nil {
				return nil, err
			}
			events = append(events, ev)
			lastRev, lastIdx, needOld = rev, idx, hasOldValue(ev.Type)
		case partOldValue:
			if !needOld || rev != lastRev || idx != lastIdx {
				return nil, fmt.Errorf("old value of event %d of revision %d without its event: %w", idx, rev, errCorrupt)
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return nil, err
			}
			if v == nil {
				v = []byte{}
			}
			events[len(events)-1].OldValue = v
			needOld = false
		default:
			return nil, fmt.Errorf("change-log part %d: %w", part, errCorrupt)
		}
	}
	if needOld {
		return nil, fmt.Errorf("event %d of revision %d: no old value: %w", lastIdx, lastRev, errCorrupt)
	}
	return events, nil
}

// wakeTrim asks the maintenance goroutine to trim the change log, without
// waiting.
func (s *Store) wakeTrim() {
	select {
	case s.trim <- struct{}{}:
	default:
	}
}

// maintain is the background goroutine that deletes compacted change-log
// entries and garbage collects the value log, until ctx ends.
func (s *Store) maintain(ctx context.Context) {
	defer s.wg.Done()
	tick := time.NewTicker(s.cfg.GCInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.trim:
			s.trimLog(ctx)
		case <-tick.C:
			s.trimLog(ctx)
			s.collectValueLog(ctx)
		}
	}
}

func (s *Store) logger() *slog.Logger {
	if s.cfg.Logger != nil {
		return s.cfg.Logger
	}
	return slog.Default()
}

// trimLog deletes the change-log entries at or below the floor, in chunks
// of one Badger transaction each. They are logically gone already (Since
// refuses them), so a crash halfway loses nothing: the next trim goes on.
func (s *Store) trimLog(ctx context.Context) {
	target := s.logFloor(s.head.Load(), s.floor.Load())
	from := s.physical.Load()
	if target <= from {
		return
	}
	end := changeRevKey(target + 1)
	chunk := int(min(4096, s.db.MaxBatchCount()/2))
	for ctx.Err() == nil {
		var keys [][]byte
		err := s.db.View(func(txn *badgerdb.Txn) error {
			it := txn.NewIterator(badgerdb.IteratorOptions{Prefix: []byte{prefixChange}})
			defer it.Close()
			for it.Seek(changeRevKey(from + 1)); it.Valid() && len(keys) < chunk; it.Next() {
				k := it.Item().Key()
				if bytes.Compare(k, end) >= 0 {
					break
				}
				keys = append(keys, bytes.Clone(k))
			}
			return nil
		})
		if err == nil && len(keys) > 0 {
			err = s.db.Update(func(txn *badgerdb.Txn) error {
				for _, k := range keys {
					if err := txn.Delete(k); err != nil {
						return err
					}
				}
				return nil
			})
		}
		if err != nil {
			s.logger().Warn("badger: trim change log", "to", target, "err", err)
			return
		}
		if len(keys) < chunk {
			s.physical.Store(target)
			return
		}
		rev, _, _, err := parseChangeKey(keys[len(keys)-1])
		if err != nil {
			s.logger().Warn("badger: trim change log", "to", target, "err", err)
			return
		}
		// Entries of rev may remain past the chunk: start from it again.
		from = rev - 1
		s.physical.Store(from)
	}
}

// collectValueLog runs value-log GC passes until one rewrites nothing.
func (s *Store) collectValueLog(ctx context.Context) {
	for ctx.Err() == nil {
		err := s.db.RunValueLogGC(s.cfg.GCDiscardRatio)
		s.gcRuns.Add(1)
		switch {
		case err == nil:
			continue
		case errors.Is(err, badgerdb.ErrNoRewrite), errors.Is(err, badgerdb.ErrRejected):
		default:
			s.logger().Warn("badger: value log GC", "err", err)
		}
		return
	}
}
