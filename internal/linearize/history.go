package linearize

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/univrs/peerstate/datastore"
)

// Store is the part of datastore.Store the workload calls; api.Client and
// every backend have it.
type Store interface {
	Get(ctx context.Context, key string) (datastore.Entry, error)
	Set(ctx context.Context, key string, value []byte) (uint64, error)
	Delete(ctx context.Context, key string) error
	List(ctx context.Context, prefix string, opts datastore.ListOptions) (datastore.Page, error)
	CompareAndSet(ctx context.Context, key string, expected uint64, value []byte) (uint64, error)
	CreateIfNotExists(ctx context.Context, key string, value []byte) (uint64, error)
	Txn(ctx context.Context, ops ...datastore.Op) (datastore.TxnResult, error)
}

// Recorder keeps a concurrent history. Every method is safe for concurrent
// use.
type Recorder struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
	errs  map[string]int
}

// NewRecorder starts an empty history.
func NewRecorder() *Recorder { return &Recorder{start: time.Now(), errs: map[string]int{}} }

// Now is the history's clock, in nanoseconds since the recorder started.
func (r *Recorder) Now() int64 { return int64(time.Since(r.start)) }

// Add records one call by client that started at call and returned at ret.
// An Unknown output's interval is left open: the write may take effect at
// any later time.
func (r *Recorder) Add(client int, in Input, out Output, call, ret int64) {
	if out.Outcome == Unknown {
		ret = math.MaxInt64
	}
	r.mu.Lock()
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
	r.mu.Unlock()
}

// noteError counts an error that made an output Unknown or dropped a read.
func (r *Recorder) noteError(err error) {
	msg := err.Error()
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		msg = "deadline exceeded"
	case errors.Is(err, context.Canceled):
		msg = "canceled"
	}
	r.mu.Lock()
	r.errs[msg]++
	r.mu.Unlock()
}

// History is a recorded run.
type History struct {
	Ops          []porcupine.Operation
	KeysPerGroup int
	// Errors counts, by message, the errors that left a write's outcome
	// unknown or dropped a read.
	Errors map[string]int
}

// History returns what was recorded so far.
func (r *Recorder) History(keysPerGroup int) History {
	r.mu.Lock()
	defer r.mu.Unlock()
	errs := make(map[string]int, len(r.errs))
	for k, v := range r.errs {
		errs[k] = v
	}
	return History{Ops: append([]porcupine.Operation(nil), r.ops...), KeysPerGroup: keysPerGroup, Errors: errs}
}

// Result is the verdict on one history.
type Result struct {
	Ops     int // operations checked
	Unknown int // writes whose outcome was unknown
	Verdict porcupine.CheckResult
	Info    porcupine.LinearizationInfo
	model   porcupine.Model
}

// Ok reports whether the history is linearizable.
func (r Result) Ok() bool { return r.Verdict == porcupine.Ok }

func (r Result) String() string {
	return fmt.Sprintf("%d ops (%d unknown): %s", r.Ops, r.Unknown, r.Verdict)
}

// Visualize writes porcupine's HTML view of the history to path.
func (r Result) Visualize(path string) error { return porcupine.VisualizePath(r.model, r.Info, path) }

// Check searches for a linearization of h for at most timeout (0: no
// limit). A verdict of porcupine.Unknown means the search ran out of time.
func Check(h History, timeout time.Duration) Result {
	m := Model(h.KeysPerGroup)
	verdict, info := porcupine.CheckOperationsVerbose(m, h.Ops, timeout)
	res := Result{Ops: len(h.Ops), Verdict: verdict, Info: info, model: m}
	for _, op := range h.Ops {
		if op.Output.(Output).Outcome == Unknown {
			res.Unknown++
		}
	}
	return res
}

// Workload is a random mix of every kind of call by concurrent clients.
type Workload struct {
	Clients      int    // concurrent clients; default 4
	Ops          int    // calls per client; default 100
	Groups       int    // key groups; default 3
	KeysPerGroup int    // keys per group; default 3
	Prefix       string // key prefix; default "/lin"
	// TimeoutEvery gives one call in this many a deadline of at most a
	// millisecond, so that some writes end without a known outcome; 0
	// never does.
	TimeoutEvery int
	Seed         uint64
}

func (w Workload) withDefaults() Workload {
	if w.Clients <= 0 {
		w.Clients = 4
	}
	if w.Ops <= 0 {
		w.Ops = 100
	}
	if w.Groups <= 0 {
		w.Groups = 3
	}
	if w.KeysPerGroup <= 0 {
		w.KeysPerGroup = 3
	}
	w.KeysPerGroup = min(w.KeysPerGroup, 9) // one digit: byte order is index order
	if w.Prefix == "" {
		w.Prefix = "/lin"
	}
	return w
}

// Key is the store key of key k in group g.
func (w Workload) Key(g, k int) string { return fmt.Sprintf("%s/g%02d/k%d", w.Prefix, g, k) }

func (w Workload) groupPrefix(g int) string { return fmt.Sprintf("%s/g%02d/", w.Prefix, g) }

// Run runs the workload against s and returns its history. It stops early
// when ctx ends.
func Run(ctx context.Context, s Store, w Workload) History {
	w = w.withDefaults()
	rec := NewRecorder()
	var wg sync.WaitGroup
	for c := range w.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &client{id: c, s: s, w: w, rec: rec, rng: rand.New(rand.NewPCG(w.Seed, uint64(c))), seen: map[string]uint64{}}
			for n := 0; n < w.Ops && ctx.Err() == nil; n++ {
				cl.one(ctx, n)
			}
		}()
	}
	wg.Wait()
	return rec.History(w.KeysPerGroup)
}

type client struct {
	id   int
	s    Store
	w    Workload
	rec  *Recorder
	rng  *rand.Rand
	seen map[string]uint64 // last version this client saw per key
}

// one makes one random call and records it.
func (c *client) one(ctx context.Context, n int) {
	in := c.input(n)
	cctx := ctx
	if c.w.TimeoutEvery > 0 && c.rng.IntN(c.w.TimeoutEvery) == 0 {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(ctx, time.Duration(c.rng.IntN(1000))*time.Microsecond)
		defer cancel()
	}
	call := c.rec.Now()
	out, err := c.do(cctx, in)
	ret := c.rec.Now()
	if err != nil {
		if ctx.Err() != nil {
			return // the run is over: the call may not have been made
		}
		c.rec.noteError(err)
		if in.Kind == KindGet || in.Kind == KindList {
			return // a failed read tells nothing
		}
		out = Output{Outcome: Unknown}
	}
	c.rec.Add(c.id, in, out, call, ret)
}

func (c *client) input(n int) Input {
	g, k := c.rng.IntN(c.w.Groups), c.rng.IntN(c.w.KeysPerGroup)
	in := Input{Group: g, Key: k, Value: fmt.Sprintf("c%d-%d", c.id, n)}
	switch r := c.rng.IntN(100); {
	case r < 20:
		in.Kind = KindGet
	case r < 38:
		in.Kind = KindSet
	case r < 46:
		in.Kind = KindDelete
	case r < 62:
		in.Kind = KindCAS
		in.Expected = c.guess(c.w.Key(g, k))
	case r < 70:
		in.Kind = KindCreate
	case r < 88:
		in.Kind = KindTxn
		keys := c.rng.Perm(c.w.KeysPerGroup)[:1+c.rng.IntN(c.w.KeysPerGroup)]
		for i, key := range keys {
			st := TxnStep{Key: key}
			switch c.rng.IntN(3) {
			case 0:
				st.Kind, st.Value = KindSet, fmt.Sprintf("%s.%d", in.Value, i)
			case 1:
				st.Kind = KindDelete
			default:
				st.Kind, st.Version = KindGet, c.guess(c.w.Key(g, key))
			}
			in.Steps = append(in.Steps, st)
		}
	default:
		in.Kind = KindList
	}
	return in
}

// guess picks a CAS or check version: usually the last one seen.
func (c *client) guess(key string) uint64 {
	if v, ok := c.seen[key]; ok && c.rng.IntN(4) != 0 {
		return v
	}
	return uint64(c.rng.IntN(3))
}

// do makes the call; a refusal is an Output, any other failure an error.
func (c *client) do(ctx context.Context, in Input) (Output, error) {
	key := c.w.Key(in.Group, in.Key)
	switch in.Kind {
	case KindGet:
		e, err := c.s.Get(ctx, key)
		if errors.Is(err, datastore.ErrKeyNotFound) {
			delete(c.seen, key)
			return Output{Outcome: OK}, nil
		}
		if err != nil {
			return Output{}, err
		}
		c.seen[key] = e.Version
		return Output{Outcome: OK, Found: true, Value: string(e.Value), Version: e.Version}, nil
	case KindSet:
		v, err := c.s.Set(ctx, key, []byte(in.Value))
		return c.wrote(key, v, err, nil)
	case KindDelete:
		err := c.s.Delete(ctx, key)
		return c.wrote(key, 0, err, datastore.ErrKeyNotFound)
	case KindCAS:
		v, err := c.s.CompareAndSet(ctx, key, in.Expected, []byte(in.Value))
		return c.wrote(key, v, err, datastore.ErrVersionConflict)
	case KindCreate:
		v, err := c.s.CreateIfNotExists(ctx, key, []byte(in.Value))
		return c.wrote(key, v, err, datastore.ErrAlreadyExists)
	case KindTxn:
		return c.txn(ctx, in)
	case KindList:
		return c.list(ctx, in.Group)
	}
	return Output{}, fmt.Errorf("unknown kind %d", in.Kind)
}

func (c *client) wrote(key string, v uint64, err, refusal error) (Output, error) {
	switch {
	case err == nil:
		if v > 0 {
			c.seen[key] = v
		}
		return Output{Outcome: OK, Version: v}, nil
	case refusal != nil && errors.Is(err, refusal):
		return Output{Outcome: Refused}, nil
	}
	return Output{}, err
}

func (c *client) txn(ctx context.Context, in Input) (Output, error) {
	ops := make([]datastore.Op, len(in.Steps))
	for i, st := range in.Steps {
		key := c.w.Key(in.Group, st.Key)
		switch st.Kind {
		case KindSet:
			ops[i] = datastore.OpSet(key, []byte(st.Value))
		case KindDelete:
			ops[i] = datastore.OpDelete(key)
		default:
			ops[i] = datastore.OpCheckVersion(key, st.Version)
		}
	}
	res, err := c.s.Txn(ctx, ops...)
	var te *datastore.TxnError
	switch {
	case err == nil:
		return Output{Outcome: OK, Versions: res.Versions}, nil
	case errors.As(err, &te):
		return Output{Outcome: Refused, FailedOp: te.Index}, nil
	case errors.Is(err, datastore.ErrKeyNotFound):
		return Output{Outcome: Refused, FailedOp: TxnKeyNotFound}, nil
	}
	return Output{}, err
}

func (c *client) list(ctx context.Context, g int) (Output, error) {
	p, err := c.s.List(ctx, c.w.groupPrefix(g), datastore.ListOptions{})
	if err != nil {
		return Output{}, err
	}
	entries := make([]KeyState, c.w.KeysPerGroup)
	for _, e := range p.Entries {
		i := sort.Search(c.w.KeysPerGroup, func(k int) bool { return c.w.Key(g, k) >= e.Key })
		if i == c.w.KeysPerGroup || c.w.Key(g, i) != e.Key {
			// A key from outside the group: an answer no state explains.
			return Output{Outcome: OK}, nil
		}
		entries[i] = KeyState{Value: string(e.Value), Version: e.Version, Exists: true}
	}
	return Output{Outcome: OK, Entries: entries}, nil
}

// Summary sums up several results for a log line.
func Summary(rs []Result) string {
	var ops, unknown, bad int
	for _, r := range rs {
		ops, unknown = ops+r.Ops, unknown+r.Unknown
		if !r.Ok() {
			bad++
		}
	}
	return strings.TrimSpace(fmt.Sprintf("histories=%d ops=%d unknown=%d violations=%d", len(rs), ops, unknown, bad))
}
