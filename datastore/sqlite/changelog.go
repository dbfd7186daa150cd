package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/univrs/peerstate/datastore"
)

// changeLog serves the hub's catch-up reads from the changelog table.
type changeLog struct{ s *Store }

// Since implements hub.Log: the events of the revisions after `after`, at
// most limit of them, read in one read transaction. The window is exactly
// Options.ChangeLogRetention revisions behind the head (rows past it are
// deleted lazily by the writer) and never reaches below a Compact.
func (l changeLog) Since(ctx context.Context, after uint64, limit int) ([]datastore.Event, error) {
	s := l.s
	if s.closed.Load() {
		return nil, datastore.ErrClosed
	}
	events, err := s.since(ctx, after, max(limit, 1))
	if err != nil {
		return nil, s.readErr(fmt.Errorf("sqlite: change log after %d: %w", after, err))
	}
	return events, nil
}

func (s *Store) since(ctx context.Context, after uint64, limit int) ([]datastore.Event, error) {
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	var head, compacted int64
	if err := tx.StmtContext(ctx, s.meta).QueryRowContext(ctx).Scan(&head, &compacted); err != nil {
		return nil, err
	}
	floor := uint64(compacted)
	if retention := uint64(s.cfg.Options.ChangeLogRetention); uint64(head) > retention {
		floor = max(floor, uint64(head)-retention)
	}
	if after < floor {
		return nil, fmt.Errorf("kept from revision %d: %w", floor, datastore.ErrCompacted)
	}
	rows, err := tx.StmtContext(ctx, s.log).QueryContext(ctx, int64(after), int64(after)+int64(limit))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var events []datastore.Event
	for rows.Next() {
		var (
			ev                datastore.Event
			rev, typ, version int64
			key               []byte
		)
		if err := rows.Scan(&rev, &typ, &key, &ev.OldValue, &ev.NewValue, &version); err != nil {
			return nil, err
		}
		ev.Type, ev.Key, ev.Version, ev.Revision = datastore.EventType(typ), string(key), uint64(version), uint64(rev)
		// NULL and empty read back alike; the type says which values exist.
		switch ev.Type {
		case datastore.Created:
			ev.OldValue, ev.NewValue = nil, nonNil(ev.NewValue)
		case datastore.Updated:
			ev.OldValue, ev.NewValue = nonNil(ev.OldValue), nonNil(ev.NewValue)
		case datastore.Deleted:
			ev.OldValue, ev.NewValue = nonNil(ev.OldValue), nil
		}
		events = append(events, ev)
	}
	return events, rows.Err()
}
