package linearize

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"go.uber.org/goleak"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func op(client int, in Input, out Output, call, ret int64) porcupine.Operation {
	if out.Outcome == Unknown {
		ret = math.MaxInt64
	}
	return porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret}
}

func check(ops ...porcupine.Operation) Result {
	return Check(History{Ops: ops, KeysPerGroup: 2}, 10*time.Second)
}

func TestModelAcceptsLinearizable(t *testing.T) {
	set := Input{Kind: KindSet, Value: "a"}
	get := Input{Kind: KindGet}
	cases := map[string][]porcupine.Operation{
		"sequential": {
			op(0, set, Output{Outcome: OK, Version: 1}, 0, 1),
			op(1, get, Output{Outcome: OK, Found: true, Value: "a", Version: 1}, 2, 3),
			op(0, Input{Kind: KindDelete}, Output{Outcome: OK}, 4, 5),
			op(1, Input{Kind: KindCAS, Expected: 0, Value: "b"}, Output{Outcome: OK, Version: 3}, 6, 7),
			op(0, Input{Kind: KindCreate, Value: "c"}, Output{Outcome: Refused}, 8, 9),
			op(1, Input{Kind: KindList}, Output{Outcome: OK, Entries: []KeyState{{Value: "b", Version: 3, Exists: true}, {}}}, 10, 11),
		},
		"concurrent read sees the old value": {
			op(0, set, Output{Outcome: OK, Version: 1}, 0, 10),
			op(1, get, Output{Outcome: OK}, 1, 2),
		},
		"unknown write applied later": {
			op(0, set, Output{Outcome: Unknown}, 0, 1),
			op(1, get, Output{Outcome: OK}, 2, 3),
			op(1, get, Output{Outcome: OK, Found: true, Value: "a", Version: 1}, 4, 5),
		},
		"unknown write never applied": {
			op(0, set, Output{Outcome: Unknown}, 0, 1),
			op(1, Input{Kind: KindCreate, Value: "b"}, Output{Outcome: OK, Version: 1}, 2, 3),
		},
		"txn": {
			op(0, Input{Kind: KindTxn, Steps: []TxnStep{{Kind: KindGet, Key: 1}, {Kind: KindSet, Key: 0, Value: "x"}, {Kind: KindSet, Key: 1, Value: "y"}}},
				Output{Outcome: OK, Versions: []uint64{0, 1, 1}}, 0, 1),
			op(1, Input{Kind: KindTxn, Steps: []TxnStep{{Kind: KindSet, Key: 0, Value: "z"}, {Kind: KindGet, Key: 1, Version: 7}}},
				Output{Outcome: Refused, FailedOp: 1}, 2, 3),
			op(1, Input{Kind: KindTxn, Steps: []TxnStep{{Kind: KindDelete, Key: 0}, {Kind: KindDelete, Key: 1}}},
				Output{Outcome: OK, Versions: []uint64{2, 2}}, 4, 5),
			op(1, Input{Kind: KindTxn, Steps: []TxnStep{{Kind: KindDelete, Key: 0}}},
				Output{Outcome: Refused, FailedOp: TxnKeyNotFound}, 6, 7),
		},
	}
	for name, ops := range cases {
		if res := check(ops...); !res.Ok() {
			t.Errorf("%s: %v, want linearizable", name, res)
		}
	}
}

func TestModelRejectsViolations(t *testing.T) {
	set := Input{Kind: KindSet, Value: "a"}
	get := Input{Kind: KindGet}
	cases := map[string][]porcupine.Operation{
		"stale read after the write returned": {
			op(0, set, Output{Outcome: OK, Version: 1}, 0, 1),
			op(1, get, Output{Outcome: OK}, 2, 3),
		},
		"skipped version": {
			op(0, set, Output{Outcome: OK, Version: 2}, 0, 1),
		},
		"lost write": {
			op(0, set, Output{Outcome: OK, Version: 1}, 0, 1),
			op(1, Input{Kind: KindSet, Value: "b"}, Output{Outcome: OK, Version: 2}, 2, 3),
			op(0, get, Output{Outcome: OK, Found: true, Value: "a", Version: 1}, 4, 5),
		},
		"a refused write applied": {
			op(0, Input{Kind: KindCAS, Expected: 5, Value: "b"}, Output{Outcome: Refused}, 0, 1),
			op(1, get, Output{Outcome: OK, Found: true, Value: "b", Version: 1}, 2, 3),
		},
		"double CAS win": {
			op(0, set, Output{Outcome: OK, Version: 1}, 0, 1),
			op(1, Input{Kind: KindCAS, Expected: 1, Value: "b"}, Output{Outcome: OK, Version: 2}, 2, 5),
			op(2, Input{Kind: KindCAS, Expected: 1, Value: "c"}, Output{Outcome: OK, Version: 2}, 2, 5),
		},
		"torn txn": {
			op(0, Input{Kind: KindTxn, Steps: []TxnStep{{Kind: KindSet, Key: 0, Value: "x"}, {Kind: KindSet, Key: 1, Value: "y"}}},
				Output{Outcome: OK, Versions: []uint64{1, 1}}, 0, 10),
			op(1, Input{Kind: KindList}, Output{Outcome: OK, Entries: []KeyState{{Value: "x", Version: 1, Exists: true}, {}}}, 1, 2),
		},
		"unknown write observed then gone": {
			op(0, set, Output{Outcome: Unknown}, 0, 1),
			op(1, get, Output{Outcome: OK, Found: true, Value: "a", Version: 1}, 2, 3),
			op(1, get, Output{Outcome: OK}, 4, 5),
		},
	}
	for name, ops := range cases {
		if res := check(ops...); res.Verdict != porcupine.Illegal {
			t.Errorf("%s: %v, want illegal", name, res)
		}
	}
}

// staleStore serves every other Get from a copy taken at its start: reads
// that are not linearizable, which the check must catch.
type staleStore struct {
	*memory.Store
	mu    sync.Mutex
	n     int
	snap  map[string]datastore.Entry
	taken bool
}

func (s *staleStore) Get(ctx context.Context, key string) (datastore.Entry, error) {
	s.mu.Lock()
	s.n++
	stale := s.n%2 == 0 && s.taken
	e, ok := s.snap[key]
	s.mu.Unlock()
	if stale {
		if !ok {
			return datastore.Entry{}, datastore.ErrKeyNotFound
		}
		return e, nil
	}
	return s.Store.Get(ctx, key)
}

func (s *staleStore) freeze(t *testing.T, w Workload) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snap = map[string]datastore.Entry{}
	for g := range w.Groups {
		for k := range w.KeysPerGroup {
			if e, err := s.Store.Get(context.Background(), w.Key(g, k)); err == nil {
				s.snap[e.Key] = e
			}
		}
	}
	s.taken = true
}

func TestCheckCatchesStaleReads(t *testing.T) {
	s := &staleStore{Store: memory.New()}
	defer s.Close()
	w := Workload{Clients: 3, Ops: 150, Groups: 1, KeysPerGroup: 2, Seed: 1}
	s.freeze(t, w) // an empty snapshot: every stale Get misses
	h := Run(context.Background(), s, w)
	if res := Check(h, time.Minute); res.Verdict != porcupine.Illegal {
		t.Fatalf("stale reads: %v, want illegal", res)
	}
}
