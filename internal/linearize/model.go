// Package linearize checks that a datastore.Store is linearizable: concurrent
// clients run Get, Set, Delete, CompareAndSet, CreateIfNotExists, Txn and
// List against one store, a Recorder keeps every call's input, output and
// real-time interval, and porcupine searches for a sequential order that the
// KV model accepts.
//
// The model knows versions: a key's state is its value, its version and
// whether it exists (a tombstone keeps the version, the next write bumps it).
// Keys are grouped; a Txn or List touches one group only, so the history is
// checked group by group (porcupine's partitions). A write whose outcome the
// client could not learn (a timeout, a lost connection) counts as possibly
// applied: the model branches on it, and its interval never ends.
//
//	h := linearize.Run(ctx, store, linearize.Workload{Clients: 4, Ops: 200})
//	res := linearize.Check(h, time.Minute)
//	if !res.Ok() { t.Fatal(res) }
package linearize

import (
	"fmt"
	"slices"
	"strings"

	"github.com/anishathalye/porcupine"
)

// Kind is an operation of the model.
type Kind int

// The operations.
const (
	KindGet Kind = iota + 1
	KindSet
	KindDelete
	KindCAS
	KindCreate
	KindTxn
	KindList
)

func (k Kind) String() string {
	return [...]string{"?", "get", "set", "delete", "cas", "create", "txn", "list"}[min(int(k), 7)]
}

// TxnStep is one op of a Txn, on key index Key of the group.
type TxnStep struct {
	Kind    Kind   // KindSet, KindDelete or KindGet (a version check)
	Key     int    // index in the group
	Value   string // KindSet
	Version uint64 // the check's expected version
}

// Input is one call: its kind, its group and key (an index in the group),
// and its arguments.
type Input struct {
	Kind     Kind
	Group    int
	Key      int
	Value    string    // Set, CAS, Create
	Expected uint64    // CAS
	Steps    []TxnStep // Txn
}

// Outcome says what a call's result tells about the store.
type Outcome int

// The outcomes.
const (
	// OK: the call succeeded.
	OK Outcome = iota + 1
	// Refused: the call was refused for a reason the model decides (key
	// absent, version conflict, key exists, failed txn check).
	Refused
	// Unknown: the client did not learn whether a write was applied.
	Unknown
)

// TxnKeyNotFound is Output.FailedOp of a Txn refused because it deletes an
// absent key.
const TxnKeyNotFound = -1

// KeyState is one key as the model sees it.
type KeyState struct {
	Value   string
	Version uint64 // 0: never written
	Exists  bool
}

// Output is what the store answered.
type Output struct {
	Outcome  Outcome
	Version  uint64     // Set, CAS, Create: the new version; Get: the entry's
	Value    string     // Get
	Found    bool       // Get
	FailedOp int        // Txn refused: the index of the failed check, or TxnKeyNotFound
	Versions []uint64   // Txn OK: the versions after the commit
	Entries  []KeyState // List: the group's keys, absent ones with Exists false
}

// state is one group's keys, copied on every step.
type state []KeyState

// step applies in to s and returns the expected output and the new state.
func step(s state, in Input) (Output, state) {
	switch in.Kind {
	case KindGet:
		k := s[in.Key]
		if !k.Exists {
			return Output{Outcome: OK}, s
		}
		return Output{Outcome: OK, Found: true, Value: k.Value, Version: k.Version}, s
	case KindList:
		return Output{Outcome: OK, Entries: slices.Clone(s)}, s
	case KindSet:
		return write(s, in.Key, in.Value)
	case KindDelete:
		if !s[in.Key].Exists {
			return Output{Outcome: Refused}, s
		}
		n := slices.Clone(s)
		n[in.Key] = KeyState{Version: s[in.Key].Version + 1}
		return Output{Outcome: OK, Version: n[in.Key].Version}, n
	case KindCAS:
		k := s[in.Key]
		cur := k.Version
		if !k.Exists {
			cur = 0
		}
		if cur != in.Expected {
			return Output{Outcome: Refused}, s
		}
		return write(s, in.Key, in.Value)
	case KindCreate:
		if s[in.Key].Exists {
			return Output{Outcome: Refused}, s
		}
		return write(s, in.Key, in.Value)
	case KindTxn:
		return txn(s, in.Steps)
	}
	panic(fmt.Sprintf("linearize: unknown kind %d", in.Kind))
}

func write(s state, key int, value string) (Output, state) {
	n := slices.Clone(s)
	n[key] = KeyState{Value: value, Version: s[key].Version + 1, Exists: true}
	return Output{Outcome: OK, Version: n[key].Version}, n
}

func txn(s state, steps []TxnStep) (Output, state) {
	for i, st := range steps {
		if st.Kind != KindGet {
			continue
		}
		k := s[st.Key]
		cur := k.Version
		if !k.Exists {
			cur = 0
		}
		if cur != st.Version {
			return Output{Outcome: Refused, FailedOp: i}, s
		}
	}
	n := slices.Clone(s)
	versions := make([]uint64, len(steps))
	for i, st := range steps {
		switch st.Kind {
		case KindSet:
			n[st.Key] = KeyState{Value: st.Value, Version: s[st.Key].Version + 1, Exists: true}
			versions[i] = n[st.Key].Version
		case KindDelete:
			// Deleting an absent key fails the whole txn (ErrKeyNotFound).
			if !s[st.Key].Exists {
				return Output{Outcome: Refused, FailedOp: TxnKeyNotFound}, s
			}
			n[st.Key] = KeyState{Version: s[st.Key].Version + 1}
			versions[i] = n[st.Key].Version
		case KindGet:
			versions[i] = st.Version
		}
	}
	return Output{Outcome: OK, Versions: versions}, n
}

// matches reports whether a real output agrees with the model's.
func matches(in Input, got, want Output) bool {
	if got.Outcome != want.Outcome {
		return false
	}
	switch in.Kind {
	case KindGet:
		return got.Found == want.Found && (!got.Found || got.Value == want.Value && got.Version == want.Version)
	case KindList:
		return slices.EqualFunc(got.Entries, want.Entries, func(g, w KeyState) bool {
			return g.Exists == w.Exists && (!g.Exists || g.Value == w.Value && g.Version == w.Version)
		})
	case KindSet, KindCAS, KindCreate:
		return got.Outcome != OK || got.Version == want.Version
	case KindDelete:
		return true
	case KindTxn:
		if got.Outcome == Refused {
			return got.FailedOp == want.FailedOp
		}
		return slices.Equal(got.Versions, want.Versions)
	}
	return false
}

// Model is the porcupine model of a store whose groups have keysPerGroup
// keys, partitioned by group.
func Model(keysPerGroup int) porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Partition: partition,
		Init:      func() []any { return []any{make(state, keysPerGroup)} },
		Step: func(st, input, output any) []any {
			s, in, out := st.(state), input.(Input), output.(Output)
			want, next := step(s, in)
			if out.Outcome == Unknown { // applied or not
				if want.Outcome == OK && in.Kind != KindGet && in.Kind != KindList {
					return []any{s, next}
				}
				return []any{s}
			}
			if !matches(in, out, want) {
				return nil
			}
			return []any{next}
		},
		Equal: func(a, b any) bool { return slices.Equal(a.(state), b.(state)) },
		DescribeOperation: func(input, output any) string {
			return describe(input.(Input), output.(Output))
		},
		DescribeState: func(st any) string {
			var b strings.Builder
			for i, k := range st.(state) {
				fmt.Fprintf(&b, "k%d=%s@%d/%v ", i, k.Value, k.Version, k.Exists)
			}
			return b.String()
		},
	}
	return nm.ToModel()
}

func partition(history []porcupine.Operation) [][]porcupine.Operation {
	byGroup := map[int][]porcupine.Operation{}
	var groups []int
	for _, op := range history {
		g := op.Input.(Input).Group
		if _, ok := byGroup[g]; !ok {
			groups = append(groups, g)
		}
		byGroup[g] = append(byGroup[g], op)
	}
	slices.Sort(groups)
	out := make([][]porcupine.Operation, 0, len(groups))
	for _, g := range groups {
		out = append(out, byGroup[g])
	}
	return out
}

func describe(in Input, out Output) string {
	res := map[Outcome]string{OK: "ok", Refused: "refused", Unknown: "unknown"}[out.Outcome]
	switch in.Kind {
	case KindGet:
		return fmt.Sprintf("get(g%d/k%d) -> %s %q@%d found=%v", in.Group, in.Key, res, out.Value, out.Version, out.Found)
	case KindList:
		return fmt.Sprintf("list(g%d) -> %s %v", in.Group, res, out.Entries)
	case KindTxn:
		return fmt.Sprintf("txn(g%d %v) -> %s %v failed=%d", in.Group, in.Steps, res, out.Versions, out.FailedOp)
	}
	return fmt.Sprintf("%s(g%d/k%d %q exp=%d) -> %s v%d", in.Kind, in.Group, in.Key, in.Value, in.Expected, res, out.Version)
}
