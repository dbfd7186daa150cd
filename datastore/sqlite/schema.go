package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// ErrSchemaTooNew is returned by Open for a database whose schema version is
// newer than this binary knows: it was written by a newer peerstate.
var ErrSchemaTooNew = errors.New("sqlite: database schema is newer than this binary")

//go:embed migrations/*.sql
var migrationFS embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in order. Their files are named
// NNN_description.sql and numbered 1, 2, 3... without a gap.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, name := range names { // fs.Glob returns names sorted
		base := path.Base(name)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v != len(ms)+1 {
			return nil, fmt.Errorf("sqlite: migration %s: want number %03d", base, len(ms)+1)
		}
		text, err := migrationFS.ReadFile(name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: base, sql: string(text)})
	}
	return ms, nil
}

// migrate brings the schema up to date: each migration the database lacks
// runs in its own transaction, which also records the new version in PRAGMA
// user_version. A database newer than the binary is refused.
func migrate(ctx context.Context, conn *sql.Conn) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	v, err := userVersion(ctx, conn)
	if err != nil {
		return fmt.Errorf("sqlite: read schema version: %w", err)
	}
	if v > len(ms) {
		return fmt.Errorf("%w: version %d, this binary knows up to %d", ErrSchemaTooNew, v, len(ms))
	}
	for _, m := range ms[v:] {
		if err := applyMigration(ctx, conn, m); err != nil {
			return fmt.Errorf("sqlite: migration %s: %w", m.name, err)
		}
	}
	return nil
}

type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func userVersion(ctx context.Context, q rowQuerier) (int, error) {
	var v int
	err := q.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v)
	return v, err
}

func applyMigration(ctx context.Context, conn *sql.Conn, m migration) error {
	tx, err := conn.BeginTx(ctx, nil) // BEGIN IMMEDIATE: the DSN sets _txlock
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// Another process may have applied it since we looked.
	if v, err := userVersion(ctx, tx); err != nil || v >= m.version {
		return err
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", m.version)); err != nil {
		return err
	}
	return tx.Commit()
}

// dsn returns the driver name of the database file at abs (an absolute path)
// with the given query parameters.
func dsn(abs string, params ...string) string {
	u := url.URL{Scheme: "file", Path: abs}
	return u.String() + "?" + strings.Join(params, "&")
}

// writerDSN opens the writer connection: WAL, synchronous=FULL so that a
// commit is durable when it returns, and BEGIN IMMEDIATE transactions.
func writerDSN(abs string, busy time.Duration) string {
	return dsn(abs,
		fmt.Sprintf("_pragma=busy_timeout(%d)", busy.Milliseconds()),
		"_pragma=journal_mode(WAL)",
		"_pragma=synchronous(FULL)",
		"_txlock=immediate")
}

// readerDSN opens the read-only pool; the database is already in WAL mode
// (a persistent setting) by the time readers open.
func readerDSN(abs string, busy time.Duration) string {
	return dsn(abs,
		"mode=ro",
		fmt.Sprintf("_pragma=busy_timeout(%d)", busy.Milliseconds()))
}

// checkPragmas reads back the settings durability depends on: a pragma that
// did not take (a file system without WAL support, a driver ignoring the DSN)
// must not leave a store that silently loses acknowledged writes.
func checkPragmas(ctx context.Context, conn *sql.Conn) error {
	var mode string
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("sqlite: read journal_mode: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("sqlite: journal_mode is %q, want \"wal\"", mode)
	}
	var sync int
	if err := conn.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		return fmt.Errorf("sqlite: read synchronous: %w", err)
	}
	if sync != 2 {
		return fmt.Errorf("sqlite: synchronous is %d, want 2 (FULL)", sync)
	}
	return nil
}
