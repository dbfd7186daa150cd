package datastore

import (
	"errors"
	"fmt"
)

// Sentinel errors; check them with errors.Is.
var (
	ErrKeyNotFound     = errors.New("datastore: key not found")
	ErrVersionConflict = errors.New("datastore: version conflict")
	ErrAlreadyExists   = errors.New("datastore: key already exists")
	ErrTxnFailed       = errors.New("datastore: transaction check failed")
	ErrConnection      = errors.New("datastore: connection failed")
	ErrStorageFull     = errors.New("datastore: storage full")
	ErrInvalidKey      = errors.New("datastore: invalid key")
	ErrValueTooLarge   = errors.New("datastore: value too large")
	ErrCompacted       = errors.New("datastore: revision compacted")
	ErrClosed          = errors.New("datastore: store closed")
	// ErrInvalidTxn reports a malformed transaction, such as two write ops
	// on one key.
	ErrInvalidTxn = errors.New("datastore: invalid transaction")
	// ErrVersionCeiling reports a write to a key whose version is already
	// MaxVersion: versions never wrap, so the key cannot change again.
	ErrVersionCeiling = errors.New("datastore: version ceiling reached")
	// ErrCorrupt reports stored data that fails an integrity check: the
	// store refuses to open rather than serve a part of it.
	ErrCorrupt = errors.New("datastore: stored data damaged")
)

// MaxVersion is the highest version a key can reach (2^62). Arithmetic on
// versions never wraps: a write that would go past it fails with
// ErrVersionCeiling. A key written a million times a second would take
// 146,000 years to get there.
const MaxVersion uint64 = 1 << 62

// TxnError is the error of a transaction whose check failed: the index of the
// first failed op, its key, and the version it expected and found. It matches
// ErrTxnFailed with errors.Is.
type TxnError struct {
	Index    int
	Key      string
	Expected uint64
	Actual   uint64
}

func (e *TxnError) Error() string {
	return fmt.Sprintf("datastore: transaction check failed: op %d: %q at version %d, expected %d",
		e.Index, e.Key, e.Actual, e.Expected)
}

// Unwrap makes errors.Is(err, ErrTxnFailed) true.
func (e *TxnError) Unwrap() error { return ErrTxnFailed }

// Retryable reports whether trying the same call again may succeed: true for
// every error but storage full, the caller's own mistakes (invalid key, value
// too large, invalid transaction), damaged data and a closed store.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	switch {
	case errors.Is(err, ErrStorageFull),
		errors.Is(err, ErrInvalidKey),
		errors.Is(err, ErrValueTooLarge),
		errors.Is(err, ErrInvalidTxn),
		errors.Is(err, ErrVersionCeiling),
		errors.Is(err, ErrCorrupt),
		errors.Is(err, ErrClosed):
		return false
	}
	return true
}
