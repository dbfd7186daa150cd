package datastore

import (
	"fmt"
	"time"
)

// OpKind says what an Op does.
type OpKind int

// The op kinds.
const (
	OpKindSet OpKind = iota + 1
	OpKindDelete
	OpKindCheckVersion
)

func (k OpKind) String() string {
	switch k {
	case OpKindSet:
		return "set"
	case OpKindDelete:
		return "delete"
	case OpKindCheckVersion:
		return "check"
	}
	return "unknown"
}

// Op is one step of a transaction. Build it with OpSet, OpDelete or
// OpCheckVersion.
type Op struct {
	Kind    OpKind
	Key     string
	Value   []byte // OpKindSet
	Version uint64 // OpKindCheckVersion: the version the key must have (0: absent)
	// TTL, for OpKindSet, makes the entry expire that long after the commit
	// (see OpSetTTL); 0 means never.
	TTL time.Duration
}

// OpSet writes value to key.
func OpSet(key string, value []byte) Op { return Op{Kind: OpKindSet, Key: key, Value: value} }

// OpDelete deletes key.
func OpDelete(key string) Op { return Op{Kind: OpKindDelete, Key: key} }

// OpCheckVersion requires key to be at version (0: absent) for the
// transaction to commit.
func OpCheckVersion(key string, version uint64) Op {
	return Op{Kind: OpKindCheckVersion, Key: key, Version: version}
}

// IsWrite reports whether the op changes its key.
func (o Op) IsWrite() bool { return o.Kind == OpKindSet || o.Kind == OpKindDelete }

// ValidateOps checks a transaction's ops before it runs: known kinds, valid
// keys, values within maxValue bytes (0: no limit), TTLs only on sets and never
// negative, and at most one write op per key.
func ValidateOps(ops []Op, maxValue int) error {
	writes := make(map[string]int, len(ops))
	for i, op := range ops {
		if err := ValidateKey(op.Key); err != nil {
			return fmt.Errorf("op %d: %w", i, err)
		}
		switch op.Kind {
		case OpKindSet:
			if maxValue > 0 && len(op.Value) > maxValue {
				return fmt.Errorf("op %d: %q: %d bytes > %d: %w", i, op.Key, len(op.Value), maxValue, ErrValueTooLarge)
			}
		case OpKindDelete, OpKindCheckVersion:
		default:
			return fmt.Errorf("op %d: unknown kind %d: %w", i, op.Kind, ErrInvalidTxn)
		}
		switch {
		case op.TTL < 0:
			return fmt.Errorf("op %d: %q: negative TTL %v: %w", i, op.Key, op.TTL, ErrInvalidTxn)
		case op.TTL > 0 && op.Kind != OpKindSet:
			return fmt.Errorf("op %d: %q: a TTL on a %s op: %w", i, op.Key, op.Kind, ErrInvalidTxn)
		}
		if op.IsWrite() {
			if j, dup := writes[op.Key]; dup {
				return fmt.Errorf("ops %d and %d both write %q: %w", j, i, op.Key, ErrInvalidTxn)
			}
			writes[op.Key] = i
		}
	}
	return nil
}
