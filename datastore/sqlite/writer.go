package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/internal/engine"
	"github.com/univrs/peerstate/internal/hub"
)

// request is one write request (or a compaction) waiting for the writer.
type request struct {
	req       engine.Request
	compact   bool   // a Compact call instead of req
	compactTo uint64 // with compact
	done      chan result
}

type result struct {
	res datastore.TxnResult
	err error
}

type committer struct{ s *Store }

// Commit implements engine.Committer: it hands the request to the writer
// goroutine and waits for its result.
func (c committer) Commit(ctx context.Context, req engine.Request) (datastore.TxnResult, error) {
	r := c.s.submit(ctx, &request{req: req})
	if r.err != nil {
		return datastore.TxnResult{}, fmt.Errorf("sqlite: %w", r.err)
	}
	return r.res, nil
}

// submit queues r for the writer. A request not yet taken when ctx ends is
// dropped; once the writer took it, submit waits for its result regardless of
// ctx, so that a caller never sees an error for a write that was applied.
func (s *Store) submit(ctx context.Context, r *request) result {
	r.done = make(chan result, 1)
	select {
	case s.reqs <- r:
		return <-r.done
	case <-ctx.Done():
		return result{err: ctx.Err()}
	case <-s.closing:
		return result{err: datastore.ErrClosed}
	}
}

// run is the writer goroutine: it takes the first request, then whatever
// else is already queued, and commits them together.
func (s *Store) run() {
	defer close(s.writerDone)
	batch := make([]*request, 0, s.cfg.MaxBatch)
	for {
		select {
		case r := <-s.reqs:
			batch = append(batch[:0], r)
		case <-s.closing:
			return
		}
	drain:
		for len(batch) < s.cfg.MaxBatch {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		s.w.commit(batch)
		clear(batch)
	}
}

// writer owns the write connection; only the writer goroutine uses it.
type writer struct {
	conn *sql.Conn
	hub  *hub.Hub
	ttl  *engine.ExpiryIndex
	opts datastore.Options

	begin, commitTx, rollback, savepoint, release, rollbackTo *sql.Stmt
	read, upsert, logEvent, setRevision, getRevision          *sql.Stmt
	trimLog, setCompacted                                     *sql.Stmt

	rev       uint64 // last committed revision
	lastTrim  uint64 // revision of the last change-log trim
	trimEvery uint64

	commits atomic.Uint64 // committed transactions, for tests
	// failCommit, when set by a test, makes COMMIT fail with its error
	// (the transaction is rolled back instead).
	failCommit func() error
}

func newWriter(ctx context.Context, conn *sql.Conn, opts datastore.Options) (*writer, error) {
	w := &writer{conn: conn, opts: opts}
	retention := uint64(opts.ChangeLogRetention)
	w.trimEvery = min(max(retention/10, 1), 1024)
	prep := func(dst **sql.Stmt, query string) error {
		st, err := conn.PrepareContext(ctx, query)
		*dst = st
		return err
	}
	err := errors.Join(
		prep(&w.begin, `BEGIN IMMEDIATE`),
		prep(&w.commitTx, `COMMIT`),
		prep(&w.rollback, `ROLLBACK`),
		prep(&w.savepoint, `SAVEPOINT req`),
		prep(&w.release, `RELEASE req`),
		prep(&w.rollbackTo, `ROLLBACK TO req`),
		prep(&w.read, `SELECT `+recordCols+` FROM kv WHERE key = ?`),
		prep(&w.upsert, `INSERT INTO kv (key, value, version, created_at, updated_at, revision, deleted, expires_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version,
				created_at = excluded.created_at, updated_at = excluded.updated_at,
				revision = excluded.revision, deleted = excluded.deleted, expires_at = excluded.expires_at`),
		prep(&w.logEvent, `INSERT INTO changelog (revision, idx, type, key, old_value, new_value, version)
			VALUES (?, ?, ?, ?, ?, ?, ?)`),
		prep(&w.setRevision, `UPDATE meta SET revision = ?`),
		prep(&w.getRevision, headRevisionSQL),
		prep(&w.trimLog, `DELETE FROM changelog WHERE revision <= ?`),
		prep(&w.setCompacted, `UPDATE meta SET compacted = max(compacted, ?)`),
	)
	if err == nil {
		w.rev, err = w.dbRevision()
		w.lastTrim = w.rev
	}
	if err != nil {
		return nil, errors.Join(err, w.close())
	}
	return w, nil
}

func (w *writer) close() error {
	// Move the log into the database file before the writer goes: the
	// read-only connections close last and cannot, so without this a
	// cleanly stopped store would keep all its recent data in state.db-wal
	// alone. A checkpoint that fails (a reader still busy, a full disk)
	// leaves the log as it was, which is as safe; it is not an error.
	_, _ = w.conn.ExecContext(context.Background(), "PRAGMA wal_checkpoint(TRUNCATE)")
	errs := []error{}
	for _, st := range []*sql.Stmt{w.begin, w.commitTx, w.rollback, w.savepoint, w.release, w.rollbackTo,
		w.read, w.upsert, w.logEvent, w.setRevision, w.getRevision, w.trimLog, w.setCompacted} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(append(errs, w.conn.Close())...)
}

func (w *writer) dbRevision() (uint64, error) {
	var rev int64
	err := w.getRevision.QueryRow().Scan(&rev)
	return uint64(rev), err
}

func execStmt(st *sql.Stmt, args ...any) error {
	_, err := st.Exec(args...)
	return err
}

// commit runs a batch of requests as one transaction and answers each. The
// requests are applied in order, each at its own revision, each seeing the
// ones before it. A request whose checks fail, or whose writes fail, changes
// nothing and fails alone; a failure outside a request (BEGIN, COMMIT, the
// meta row) fails the whole batch.
func (w *writer) commit(batch []*request) {
	results := make([]result, len(batch))
	start := w.rev
	var events []datastore.Event
	var writes []engine.Record
	compacted := uint64(0)

	// A request alone in its batch needs no savepoint: when its writes fail
	// the whole transaction is rolled back.
	alone := len(batch) == 1 && !batch[0].compact
	var failed error // the lone request's write error, after which nothing commits
	err := execStmt(w.begin)
	if err == nil {
		for i, r := range batch {
			if r.compact {
				to := min(r.compactTo, w.rev)
				if err = w.compactLog(to); err != nil {
					break
				}
				compacted = max(compacted, to)
				continue
			}
			plan, rerr := w.apply(r.req, !alone)
			if errors.Is(rerr, errBatch) {
				err = rerr
				break
			}
			var we writeError
			if errors.As(rerr, &we) && alone {
				failed = rerr
				break
			}
			results[i] = result{plan.Result, rerr}
			if rerr == nil && len(plan.Writes) > 0 {
				events = append(events, plan.Events...)
				writes = append(writes, plan.Writes...)
			}
		}
	}
	// The head revision is the change log's last one, so a commit writes no
	// meta page; only when log rows go (trim, compaction) does meta record
	// the head, in case none is left.
	trim := w.rev > start && w.rev >= w.lastTrim+w.trimEvery
	if err == nil && failed == nil && (trim || compacted > 0) {
		err = execStmt(w.setRevision, int64(w.rev))
		if err == nil && trim {
			err = w.trim()
		}
	}
	if err == nil && failed == nil {
		if w.failCommit != nil {
			err = w.failCommit()
		}
		if err == nil {
			err = execStmt(w.commitTx)
		}
	}
	switch {
	case err != nil:
		w.abort(start)
		err = mapErr(err)
		for i := range results {
			results[i] = result{err: err}
		}
	case failed != nil:
		w.abort(start)
		results[0] = result{err: failed}
	default:
		w.commits.Add(1)
		w.ttl.Note(writes)
		w.hub.Publish(events)
		if compacted > 0 {
			w.hub.Compact(compacted)
		}
	}
	for i, r := range batch {
		r.done <- results[i]
	}
}

// errBatch marks an error that broke the whole transaction.
var errBatch = errors.New("sqlite: transaction aborted")

// apply plans req at the next revision and writes it, inside a savepoint
// when sp is set, so that a write failing midway leaves nothing behind
// (without one, the caller rolls the transaction back on a writeError).
func (w *writer) apply(req engine.Request, sp bool) (engine.Plan, error) {
	plan, err := engine.Build(req, w.rev+1, w.opts.Now(), w.opts.DeleteMissingOK, w.readRecord)
	if err != nil || len(plan.Writes) == 0 {
		return plan, err
	}
	if !sp {
		if err := w.write(plan); err != nil {
			return plan, writeError{mapErr(err)}
		}
		w.rev++
		return plan, nil
	}
	if err := execStmt(w.savepoint); err != nil {
		return plan, fmt.Errorf("%w: %w", errBatch, err)
	}
	if err := w.write(plan); err != nil {
		if rerr := errors.Join(execStmt(w.rollbackTo), execStmt(w.release)); rerr != nil {
			return plan, fmt.Errorf("%w: %w", errBatch, errors.Join(err, rerr))
		}
		return plan, writeError{mapErr(err)}
	}
	if err := execStmt(w.release); err != nil {
		return plan, fmt.Errorf("%w: %w", errBatch, err)
	}
	w.rev++
	return plan, nil
}

// writeError is a request's own write failing: it fails alone.
type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

func (w *writer) readRecord(key string) (engine.Record, bool, error) {
	return readRecord(context.Background(), w.read, key)
}

func (w *writer) write(plan engine.Plan) error {
	rev := int64(w.rev + 1)
	for _, r := range plan.Writes {
		var value []byte
		if !r.Deleted {
			value = nonNil(r.Value)
		}
		var expires int64
		if !r.ExpiresAt.IsZero() {
			expires = r.ExpiresAt.UnixNano()
		}
		if err := execStmt(w.upsert, []byte(r.Key), value, int64(r.Version),
			r.CreatedAt.UnixNano(), r.UpdatedAt.UnixNano(), rev, r.Deleted, expires); err != nil {
			return fmt.Errorf("write %q: %w", r.Key, err)
		}
	}
	for i, ev := range plan.Events {
		if err := execStmt(w.logEvent, rev, i, int(ev.Type), []byte(ev.Key),
			ev.OldValue, ev.NewValue, int64(ev.Version)); err != nil {
			return fmt.Errorf("log %q: %w", ev.Key, err)
		}
	}
	return nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// trim drops change-log revisions older than the retention window. Since
// enforces the window exactly; trimming only now and then keeps the deletes
// off most commits.
func (w *writer) trim() error {
	retention := uint64(w.opts.ChangeLogRetention)
	if w.rev <= retention {
		w.lastTrim = w.rev
		return nil
	}
	if err := w.compactLog(w.rev - retention); err != nil {
		return err
	}
	w.lastTrim = w.rev
	return nil
}

func (w *writer) compactLog(to uint64) error {
	if err := execStmt(w.trimLog, int64(to)); err != nil {
		return err
	}
	return execStmt(w.setCompacted, int64(to))
}

// abort rolls back a failed batch and reloads the revision from the database.
func (w *writer) abort(start uint64) {
	execStmt(w.rollback) // fails harmlessly when SQLite already rolled back
	rev, err := w.dbRevision()
	if err != nil {
		rev = start
	}
	w.rev = rev
}
