// Package migrate runs an application's numbered data migrations at
// start-up and records the schema version they reached at
// /meta/schema_version.
//
// Migrations are numbered 1, 2, 3, … and run in order, each at most once per
// store: Run reads the stored version, runs every migration above it and
// advances the version after each one. A migration is either
//
//   - a Plan: it reads the store and returns the ops to apply; Run commits
//     them in one transaction together with the version bump, guarded by
//     the version key's own version, so the migration and its record land
//     together or not at all; or
//   - an Up func, for work too big for one transaction: it writes what it
//     likes and must be idempotent (safe to run again after a crash half-way),
//     and the version is advanced once it returns nil.
//
// A failing migration stops Run with an error naming it; the stored version
// stays at the last migration that succeeded, so the application stops its
// start-up with the data as that migration left it.
//
// Several processes may run Run on one store at once (a shared etcd), and
// several peers of a replicated store may each run it on their replica:
// migrations are deterministic functions of the data, so each peer computes
// the same writes, and the replicated version key and data converge under
// the replica's per-key order. On one store the guarded version bump makes
// exactly one runner commit each Plan; the others see the new version and
// move on.
package migrate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/univrs/peerstate/datastore"
)

// VersionKey is where the schema version is stored, as a decimal number.
const VersionKey = "/meta/schema_version"

// Errors; check them with errors.Is.
var (
	// ErrInvalid reports a malformed list of migrations.
	ErrInvalid = errors.New("migrate: invalid migrations")
	// ErrFailed reports a migration that returned an error; see *Error.
	ErrFailed = errors.New("migrate: migration failed")
	// ErrTooNew reports a store migrated further than this program knows.
	ErrTooNew = errors.New("migrate: store schema is newer than this program")
	// ErrBadVersion reports a /meta/schema_version that is not a number.
	ErrBadVersion = errors.New("migrate: stored schema version is not a number")
)

// Migration is one numbered step. Exactly one of Plan and Up is set.
type Migration struct {
	Version int    // 1, 2, 3, … without gaps
	Name    string // a short description, shown in errors
	// Plan returns the ops that migrate the data; Run commits them with the
	// version bump in one transaction.
	Plan func(ctx context.Context, s datastore.Store) ([]datastore.Op, error)
	// Up migrates the data itself; it must be idempotent.
	Up func(ctx context.Context, s datastore.Store) error
}

// Error reports the migration that failed. It matches ErrFailed.
type Error struct {
	Version int
	Name    string
	Err     error
}

func (e *Error) Error() string {
	return fmt.Sprintf("migrate: migration %d (%s) failed: %v; the store stays at schema version %d",
		e.Version, e.Name, e.Err, e.Version-1)
}

// Is makes errors.Is(err, ErrFailed) true.
func (e *Error) Is(target error) bool { return target == ErrFailed }
func (e *Error) Unwrap() error        { return e.Err }

// Validate checks that ms are numbered 1..N in order and each has exactly
// one of Plan and Up.
func Validate(ms []Migration) error {
	for i, m := range ms {
		if m.Version != i+1 {
			return fmt.Errorf("%w: migration %d at position %d, want %d", ErrInvalid, m.Version, i, i+1)
		}
		if (m.Plan == nil) == (m.Up == nil) {
			return fmt.Errorf("%w: migration %d (%s): set exactly one of Plan and Up", ErrInvalid, m.Version, m.Name)
		}
	}
	return nil
}

// Version reads the stored schema version: 0 for a store never migrated.
// It also returns the version key's entry version (0: absent), which the
// next bump is guarded by.
func Version(ctx context.Context, s datastore.Store) (schema int, entryVersion uint64, err error) {
	e, err := s.Get(ctx, VersionKey)
	if errors.Is(err, datastore.ErrKeyNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("migrate: read %s: %w", VersionKey, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(e.Value)))
	if err != nil || n < 0 {
		return 0, 0, fmt.Errorf("%w: %s holds %q", ErrBadVersion, VersionKey, e.Value)
	}
	return n, e.Version, nil
}

// Result says what Run did.
type Result struct {
	From, To int   // the schema version before and after
	Ran      []int // the migrations this call committed
}

// Run brings s to the newest schema in ms. See the package doc.
func Run(ctx context.Context, s datastore.Store, ms []Migration) (Result, error) {
	if err := Validate(ms); err != nil {
		return Result{}, err
	}
	cur, ev, err := Version(ctx, s)
	if err != nil {
		return Result{}, err
	}
	res := Result{From: cur, To: cur}
	if cur > len(ms) {
		return res, fmt.Errorf("%w: %s is %d, this program knows migrations up to %d", ErrTooNew, VersionKey, cur, len(ms))
	}
	for cur < len(ms) {
		m := ms[cur]
		committed, err := runOne(ctx, s, m, ev)
		if err != nil {
			return res, err
		}
		if committed {
			res.Ran = append(res.Ran, m.Version)
		}
		// Re-read: another runner may have moved the version on.
		if cur, ev, err = Version(ctx, s); err != nil {
			return res, err
		}
		res.To = cur
	}
	return res, nil
}

// runOne runs m against a store at schema m.Version-1 whose version key is at
// entry version ev. It reports false when another runner committed m first.
func runOne(ctx context.Context, s datastore.Store, m Migration, ev uint64) (bool, error) {
	fail := func(err error) (bool, error) { return false, &Error{Version: m.Version, Name: m.Name, Err: err} }
	bump := datastore.OpSet(VersionKey, []byte(strconv.Itoa(m.Version)))
	guard := datastore.OpCheckVersion(VersionKey, ev)
	if m.Up != nil {
		if err := m.Up(ctx, s); err != nil {
			return fail(err)
		}
		_, err := s.Txn(ctx, guard, bump)
		if errors.Is(err, datastore.ErrTxnFailed) {
			return false, nil
		}
		if err != nil {
			return fail(fmt.Errorf("record version: %w", err))
		}
		return true, nil
	}
	ops, err := m.Plan(ctx, s)
	if err != nil {
		return fail(err)
	}
	for _, op := range ops {
		if op.Key == VersionKey {
			return fail(fmt.Errorf("%w: the plan writes %s itself", ErrInvalid, VersionKey))
		}
	}
	_, err = s.Txn(ctx, append([]datastore.Op{guard, bump}, ops...)...)
	var te *datastore.TxnError
	if errors.As(err, &te) && te.Key == VersionKey {
		return false, nil // another runner committed this migration
	}
	if err != nil {
		return fail(err)
	}
	return true, nil
}
