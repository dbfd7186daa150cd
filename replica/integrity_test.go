package replica_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/badger"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/sqlite"
	"github.com/univrs/peerstate/replica"
)

// Hostile peers built from the real code: a liar signs with its own key,
// or relays another origin's change with a tampered field, or makes claims
// (vectors, snapshots) it cannot prove.

func open(t *testing.T, name string, local datastore.Store, mod ...func(*replica.Config)) *replica.Replica {
	t.Helper()
	cfg := replica.Config{Key: keyFor(name), TombstoneGrace: time.Hour}
	for _, m := range mod {
		m(&cfg)
	}
	r, err := replica.New(context.Background(), local, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// catchUp runs the catch-up exchange the gossip protocol runs, from `from`
// to `to`, and returns the changes streamed.
func catchUp(t *testing.T, from, to *replica.Replica) int {
	t.Helper()
	return pull(t, from, to)
}

func mustSet(t *testing.T, s datastore.Store, key, val string) uint64 {
	t.Helper()
	v, err := s.Set(context.Background(), key, []byte(val))
	if err != nil {
		t.Fatalf("set %s: %v", key, err)
	}
	return v
}

func value(t *testing.T, s datastore.Store, key string) string {
	t.Helper()
	e, err := s.Get(context.Background(), key)
	if errors.Is(err, datastore.ErrKeyNotFound) {
		return "<absent>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(e.Value)
}

// captured collects a replica's broadcasts.
type captured struct{ changes []replica.Change }

func (c *captured) Broadcast(_ context.Context, cs []replica.Change) error {
	c.changes = append(c.changes, cs...)
	return nil
}

// A change its origin did not sign never reaches the store, whichever path
// brought it and whoever it claims to come from — the receiver itself
// included.
func TestIntegrity_ForgedChangesRejected(t *testing.T) {
	ctx := context.Background()
	var out captured
	a := open(t, "a", memory.New(), func(c *replica.Config) { c.Broadcaster = &out })
	b := open(t, "b", memory.New())
	mustSet(t, a, "/k", "honest")
	honest := out.changes[0]
	if _, err := b.Apply(ctx, "a", []replica.Change{honest}); err != nil {
		t.Fatal(err)
	}
	mallory := keyFor("mallory")
	forge := func(c replica.Change, signer crypto.PrivKey) replica.Change {
		if signer != nil {
			if err := replica.SignWith(signer, &c); err != nil {
				t.Fatal(err)
			}
		}
		return c
	}
	newer := honest
	newer.Version, newer.HLC, newer.Seq, newer.Value = 2, honest.HLC+1, 2, []byte("forged")
	own := replica.Change{Key: "/mine", Value: []byte("forged"), Version: 1, HLC: honest.HLC, Origin: b.ID(),
		Gen: b.Generation(), Seq: 1, CreatedAt: honest.CreatedAt, UpdatedAt: honest.UpdatedAt}
	tampered := honest
	tampered.Value = []byte("tampered")
	for name, c := range map[string]replica.Change{
		"a's change signed by mallory":     forge(newer, mallory),
		"a's change unsigned":              forge(newer, nil),
		"a's signed change, value altered": tampered,
		"the receiver's own origin":        forge(own, mallory),
		"signature of another change":      func() replica.Change { c := newer; c.Sig = honest.Sig; return c }(),
	} {
		res, err := b.Apply(ctx, "mallory", []replica.Change{c})
		if !errors.Is(err, replica.ErrBadSignature) || res.Invalid != 1 || res.Applied != 0 {
			t.Errorf("%s: %+v, %v; want rejected as unsigned", name, res, err)
		}
	}
	if got := value(t, b, "/k"); got != "honest" {
		t.Fatalf("/k on b = %q", got)
	}
	if got := value(t, b, "/mine"); got != "<absent>" {
		t.Fatalf("/mine on b = %q", got)
	}
	// The watermark did not move on the forgeries either.
	if v, _ := b.Watermarks(ctx); v[honest.Source()] != 1 {
		t.Fatalf("watermark %d", v[honest.Source()])
	}
}

// A responder's vector is capped at what signed heads prove: a claim of
// 2^64-1 for an origin moves nothing past that origin's real head, and the
// origin's later writes still replicate — to the victim and on from it.
func TestIntegrity_InflatedVectorCapped(t *testing.T) {
	ctx := context.Background()
	a := open(t, "a", memory.New())
	victim := open(t, "victim", memory.New())
	third := open(t, "third", memory.New())
	mustSet(t, a, "/one", "1")
	catchUp(t, a, victim)
	src := replica.SourceOf(a.ID(), a.Generation())
	lie := replica.Vector{src: math.MaxUint64}
	// A head the liar made up is not a's signature.
	fake := replica.Change{Key: "/x", Version: 1, HLC: 1 << 20, Origin: a.ID(), Gen: a.Generation(), Seq: math.MaxUint64 - 1,
		ValueHash: make([]byte, 32)}
	if err := replica.SignWith(keyFor("liar"), &fake); err != nil {
		t.Fatal(err)
	}
	bad, err := victim.Advance(ctx, lie, []replica.Change{fake}, nil)
	if err != nil || bad != 1 {
		t.Fatalf("advance with a forged head: %d bad, %v", bad, err)
	}
	if v, _ := victim.Watermarks(ctx); v[src] != 1 {
		t.Fatalf("watermark moved to %d on a claim", v[src])
	}
	// a writes on; the victim catches up from a and a third peer catches up
	// from the victim: nothing is stale.
	for i := range 5 {
		mustSet(t, a, fmt.Sprintf("/later/%d", i), "v")
	}
	if n := catchUp(t, a, victim); n != 5 {
		t.Fatalf("victim received %d of a's 5 new changes", n)
	}
	if _, err := victim.Advance(ctx, lie, nil, nil); err != nil {
		t.Fatal(err)
	}
	catchUp(t, victim, third)
	if got := value(t, third, "/later/4"); got != "v" {
		t.Fatalf("a's later write on the third peer = %q", got)
	}
	if v, _ := third.Watermarks(ctx); v[src] != 6 {
		t.Fatalf("third's watermark for a = %d, want 6", v[src])
	}
}

// A snapshot is the responder's word: an empty one with a cover of
// everything drops neither our own writes nor anything younger than the
// grace period.
func TestIntegrity_SnapshotCannotDropOwnOrRecent(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_900_000_000, 0)
	clock := func() time.Time { return now }
	a := open(t, "a", memory.New(), func(c *replica.Config) { c.Now = clock })
	b := open(t, "b", memory.New(), func(c *replica.Config) { c.Now = clock })
	mustSet(t, a, "/from-a", "x")
	mustSet(t, b, "/own", "mine")
	catchUp(t, a, b)
	cover := replica.Vector{}
	for src := range mustWatermarks(t, b) {
		cover[src] = math.MaxUint64
	}
	// Young: nothing goes.
	if n, err := b.Reconcile(ctx, cover, nil, nil, nil, map[string]bool{}); err != nil || n != 0 {
		t.Fatalf("young state: reconcile dropped %d, %v", n, err)
	}
	// Old: a's change may go (its tombstone may be collected), ours never.
	now = now.Add(2 * time.Hour)
	if n, err := b.Reconcile(ctx, cover, nil, nil, nil, map[string]bool{}); err != nil || n != 1 {
		t.Fatalf("old state: reconcile dropped %d, %v; want 1", n, err)
	}
	if got := value(t, b, "/own"); got != "mine" {
		t.Fatalf("our own acknowledged write is %q after a snapshot", got)
	}
}

func mustWatermarks(t *testing.T, r *replica.Replica) replica.Vector {
	t.Helper()
	v, err := r.Watermarks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Versions cannot be weaponised: nothing wraps, a version above its
// timestamp (2^64-1, or a tombstone there) is refused, the highest version a
// peer may legally write leaves the key writable for everyone, and a
// collected tombstone raises the version floor of its own bucket of keys,
// not of every key.
func TestIntegrity_Versions(t *testing.T) {
	ctx := context.Background()
	var out captured
	m := open(t, "mallory", memory.New(), func(c *replica.Config) { c.Broadcaster = &out })
	b := open(t, "b", memory.New(), func(c *replica.Config) { c.TombstoneGrace = time.Nanosecond })
	mustSet(t, m, "/k", "v")
	base := out.changes[0]
	sign := func(c replica.Change) replica.Change {
		if err := replica.SignWith(keyFor("mallory"), &c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	huge := base
	huge.Version, huge.Seq = math.MaxUint64, 2
	tomb := huge
	tomb.Key, tomb.Deleted, tomb.Value, tomb.Seq = "/t", true, nil, 3
	res, err := b.Apply(ctx, "mallory", []replica.Change{sign(huge), sign(tomb)})
	if !errors.Is(err, replica.ErrInvalidChange) || res.Invalid != 2 || res.Applied != 0 {
		t.Fatalf("versions at 2^64-1: %+v, %v", res, err)
	}
	// The most a writer can do within the rules: a version equal to its
	// timestamp.
	high := base
	high.Version, high.Seq, high.HLC = uint64(base.HLC), 4, base.HLC
	if res, err := b.Apply(ctx, "mallory", []replica.Change{sign(high)}); err != nil || res.Applied != 1 {
		t.Fatalf("highest legal version: %+v, %v", res, err)
	}
	v := mustSet(t, b, "/k", "still writable")
	if v != high.Version+1 {
		t.Fatalf("next write at version %d, want %d", v, high.Version+1)
	}
	c, _, _ := b.Current(ctx, "/k")
	if c.Validate(0) != nil || uint64(c.HLC) < c.Version {
		t.Fatalf("our write breaks the version rule: %+v", c)
	}
	// ... and other peers take it.
	if res, err := m.Apply(ctx, "b", []replica.Change{c}); err != nil || res.Applied != 1 {
		t.Fatalf("peer refused the next write: %+v, %v", res, err)
	}
	// A high tombstone, collected, lifts one bucket's floor only.
	if err := b.Delete(ctx, "/k"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	if n, err := b.CollectTombstones(ctx, nil); err != nil || n != 1 {
		t.Fatalf("collected %d, %v", n, err)
	}
	if v := mustSet(t, b, "/k", "again"); v <= high.Version+2 {
		t.Fatalf("re-created key at version %d, below its collected tombstone", v)
	}
	others := 0
	for i := range 50 {
		if mustSet(t, b, fmt.Sprintf("/fresh/%d", i), "x") == 1 {
			others++
		}
	}
	if others < 45 {
		t.Fatalf("only %d of 50 new keys start at version 1: the floor is not per bucket", others)
	}
}

// A batch far past Badger's transaction limit applies: Apply splits it.
func TestIntegrity_BadgerAppliesLargeBatches(t *testing.T) {
	ctx := context.Background()
	var out captured
	a := open(t, "a", memory.New(), func(c *replica.Config) { c.Broadcaster = &out })
	const n = 10_000
	for start := 0; start < n; start += 500 {
		var ops []datastore.Op
		for i := start; i < start+500; i++ {
			ops = append(ops, datastore.OpSet(fmt.Sprintf("/burst/%05d", i), []byte("small value")))
		}
		if _, err := a.Txn(ctx, ops...); err != nil {
			t.Fatal(err)
		}
	}
	local, err := badger.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := open(t, "b", local)
	res, err := b.Apply(ctx, "a", out.changes)
	if err != nil || res.Applied != n {
		t.Fatalf("badger applied %+v, %v; want %d", res, err, n)
	}
	if b.StateFingerprint() != a.StateFingerprint() {
		t.Fatal("fingerprints differ after the batch")
	}
}

// A peer that lost its store but kept its identity — a memory store after a
// restart, or a restored old backup — writes under a new generation: its
// new writes replicate, and what it wrote before the loss comes back to it.
func TestIntegrity_RestartWithoutState(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "state.db")
	openA := func() *replica.Replica {
		local, err := sqlite.Open(db)
		if err != nil {
			t.Fatal(err)
		}
		return open(t, "a", local)
	}
	b := open(t, "b", memory.New())
	a := openA()
	mustSet(t, a, "/before-backup", "1")
	catchUp(t, a, b)
	a.Close()
	backup := copyFile(t, db)
	a = openA()
	mustSet(t, a, "/after-backup", "2")
	mustSet(t, a, "/before-backup", "1b")
	catchUp(t, a, b)
	a.Close()
	// Restore the old backup, same identity.
	restore(t, backup, db)
	a = openA()
	mustSet(t, a, "/after-restore", "3")
	if n := catchUp(t, a, b); n == 0 {
		t.Fatal("the restored peer's new write was taken for stale")
	}
	catchUp(t, b, a)
	assertConverged(t, []*replica.Replica{a, b})
	for k, want := range map[string]string{"/before-backup": "1b", "/after-backup": "2", "/after-restore": "3"} {
		if got := value(t, a, k); got != want {
			t.Fatalf("%s on the restored peer = %q, want %q", k, got, want)
		}
	}
	// And a memory peer restarted empty.
	m := open(t, "mem", memory.New())
	mustSet(t, m, "/m/1", "x")
	catchUp(t, m, b)
	m.Close()
	m = open(t, "mem", memory.New())
	v := mustSet(t, m, "/m/2", "y")
	if n := catchUp(t, m, b); n != 1 || v != 1 {
		t.Fatalf("restarted empty peer: %d changes reached b", n)
	}
	catchUp(t, b, m)
	if got := value(t, m, "/m/1"); got != "x" {
		t.Fatalf("the empty peer did not get its old write back: %q", got)
	}
}

// Widening the replicated prefixes fetches what was skipped before.
func TestIntegrity_WidenPrefixes(t *testing.T) {
	ctx := context.Background()
	a := open(t, "a", memory.New())
	for _, k := range []string{"/peers/x", "/topics/t/1", "/other"} {
		mustSet(t, a, k, "v")
	}
	dir := t.TempDir()
	openB := func(prefixes ...string) *replica.Replica {
		local, err := sqlite.Open(filepath.Join(dir, "b.db"))
		if err != nil {
			t.Fatal(err)
		}
		return open(t, "b", local, func(c *replica.Config) { c.Prefixes = prefixes })
	}
	b := openB("/peers/")
	catchUp(t, a, b)
	if value(t, b, "/topics/t/1") != "<absent>" {
		t.Fatal("a narrow replica holds a key outside its prefixes")
	}
	b.Close()
	b = openB("/peers/", "/topics/")
	catchUp(t, a, b)
	if got := value(t, b, "/topics/t/1"); got != "v" {
		t.Fatalf("after widening, /topics/t/1 = %q", got)
	}
	if value(t, b, "/other") != "<absent>" {
		t.Fatal("widened past the new prefixes")
	}
	_ = ctx
}

// Membership survives a restart, so collection after it still waits for
// the peers seen before; and it is bounded.
func TestIntegrity_MembershipPersisted(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	openR := func(maxPeers int) *replica.Replica {
		local, err := sqlite.Open(filepath.Join(dir, "r.db"))
		if err != nil {
			t.Fatal(err)
		}
		return open(t, "r", local, func(c *replica.Config) { c.MaxPeers = maxPeers })
	}
	r := openR(3)
	for i := range 5 {
		if err := r.ObservePeer(ctx, idFor(fmt.Sprint("p", i)), replica.Vector{}); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.ObservedPeers(time.Time{}); len(got) != 3 {
		t.Fatalf("%d peers remembered, want the bound of 3", len(got))
	}
	r.Close()
	r = openR(3)
	if got := r.ObservedPeers(time.Time{}); len(got) != 3 {
		t.Fatalf("after a restart %d peers remembered, want 3", len(got))
	}
	if err := r.ObservePeer(ctx, "not/a peer", replica.Vector{}); err == nil {
		t.Fatal("a bad peer ID was recorded")
	}
}

// failing wraps a store and fails the Txns for which fail returns true.
type failing struct {
	datastore.Store
	fail func(ops []datastore.Op) bool
}

func (f *failing) Txn(ctx context.Context, ops ...datastore.Op) (datastore.TxnResult, error) {
	if f.fail(ops) {
		return datastore.TxnResult{}, fmt.Errorf("injected: %w", datastore.ErrStorageFull)
	}
	return f.Store.Txn(ctx, ops...)
}

// A local write that fails leaves a hole in its generation's numbering;
// receivers step over it with the next catch-up (the responder's vector,
// bounded by the signed head), so later catch-ups do not re-send what
// follows it.
func TestIntegrity_SequenceHoleHeals(t *testing.T) {
	var failNext atomic.Bool
	local := &failing{Store: memory.New(), fail: func([]datastore.Op) bool { return failNext.CompareAndSwap(true, false) }}
	a := open(t, "a", local)
	b := open(t, "b", memory.New())
	mustSet(t, a, "/1", "v")
	failNext.Store(true)
	if _, err := a.Set(context.Background(), "/2", []byte("v")); !errors.Is(err, datastore.ErrStorageFull) {
		t.Fatalf("injected failure: %v", err)
	}
	mustSet(t, a, "/3", "v")
	if n := catchUp(t, a, b); n != 2 {
		t.Fatalf("first catch-up sent %d", n)
	}
	src := replica.SourceOf(a.ID(), a.Generation())
	if v := mustWatermarks(t, b); v[src] != 3 {
		t.Fatalf("watermark %d, want 3 (past the hole)", v[src])
	}
	if n := catchUp(t, a, b); n != 0 {
		t.Fatalf("second catch-up re-sent %d changes", n)
	}
}

// Tombstone collection that fails to commit does not move on as if it had.
func TestIntegrity_CollectionRetriesAfterFailure(t *testing.T) {
	ctx := context.Background()
	var failCollect atomic.Bool
	local := &failing{Store: memory.New(), fail: func(ops []datastore.Op) bool {
		for _, op := range ops {
			if op.Kind == datastore.OpKindDelete && failCollect.Load() {
				return true
			}
		}
		return false
	}}
	r := open(t, "r", local, func(c *replica.Config) { c.TombstoneGrace = time.Nanosecond })
	mustSet(t, r, "/k", "v")
	if err := r.Delete(ctx, "/k"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	failCollect.Store(true)
	if _, err := r.CollectTombstones(ctx, nil); err == nil {
		t.Fatal("injected failure not reported")
	}
	failCollect.Store(false)
	if n, err := r.CollectTombstones(ctx, nil); err != nil || n != 1 {
		t.Fatalf("after a failed collection: %d, %v; want the tombstone collected", n, err)
	}
}

// Closing a replica ends its watchers, read or not, and waits for them.
func TestIntegrity_CloseEndsWatchers(t *testing.T) {
	ctx := context.Background()
	r, err := replica.New(ctx, memory.New(), replica.Config{Key: keyFor("w")})
	if err != nil {
		t.Fatal(err)
	}
	w, err := r.Watch(ctx, "/", datastore.WithWatchBuffer(1))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		mustSet(t, r, fmt.Sprint("/k", i), "v")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for range w.Events() {
	}
	if _, err := r.Watch(ctx, "/"); !errors.Is(err, datastore.ErrClosed) {
		t.Fatalf("watch after close: %v", err)
	}
}

// copyFile reads a SQLite database and its WAL files, as a backup would.
func copyFile(t *testing.T, db string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		b, err := os.ReadFile(db + suffix)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out[suffix] = b
	}
	return out
}

// restore puts a backup made by copyFile back in place.
func restore(t *testing.T, backup map[string][]byte, db string) {
	t.Helper()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		b, ok := backup[suffix]
		if !ok {
			if err := os.Remove(db + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(db+suffix, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// A restarted peer serves its earlier generations in catch-up: a peer that
// never received them gets them from it.
func TestIntegrity_RestartServesEarlierGenerations(t *testing.T) {
	dir := t.TempDir()
	openA := func() *replica.Replica {
		local, err := sqlite.Open(filepath.Join(dir, "a.db"))
		if err != nil {
			t.Fatal(err)
		}
		return open(t, "a", local)
	}
	a := openA()
	mustSet(t, a, "/k/a", "1")
	a.Close()
	a = openA()
	b := open(t, "b", memory.New())
	if n := catchUp(t, a, b); n != 1 {
		t.Fatalf("catch-up from the restarted peer sent %d changes, want its earlier write", n)
	}
	if got := value(t, b, "/k/a"); got != "1" {
		t.Fatalf("/k/a on b = %q", got)
	}
	if n := catchUp(t, a, b); n != 0 {
		t.Fatalf("second catch-up sent %d", n)
	}
}

// churning is a store whose revision moves between any two List calls, as
// under a steady stream of writes.
type churning struct {
	datastore.Store
	rev atomic.Uint64
}

func (c *churning) List(ctx context.Context, prefix string, opts datastore.ListOptions) (datastore.Page, error) {
	p, err := c.Store.List(ctx, prefix, opts)
	p.Revision = c.rev.Add(1)
	return p, err
}

// A List that cannot read one consistent revision says so (a retryable
// error) instead of returning a page whose revision guarantee failed.
func TestIntegrity_ListNeverReturnsAnInconsistentPage(t *testing.T) {
	ctx := context.Background()
	local := &churning{Store: memory.New()}
	r := open(t, "l", local)
	for i := range 30 {
		mustSet(t, r, fmt.Sprintf("/l/%02d", i), "v")
	}
	// A page of 25 needs several local pages of the 30 keys behind the
	// bookkeeping; every one sees a new revision.
	_, err := r.List(ctx, "/", datastore.ListOptions{Limit: 25})
	if !errors.Is(err, datastore.ErrTxnFailed) || !datastore.Retryable(err) {
		t.Fatalf("List over a store that never holds still: %v", err)
	}
}

// A peer whose clock is behind the key's creator's still writes changes
// every receiver takes: updated is never before created.
func TestIntegrity_ClockBehindCreator(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	var out captured
	ahead := open(t, "ahead", memory.New(), func(c *replica.Config) {
		c.Now = func() time.Time { return now.Add(30 * time.Second) }
		c.Broadcaster = &out
	})
	behind := open(t, "behind", memory.New(), func(c *replica.Config) { c.Broadcaster = &out })
	mustSet(t, ahead, "/k", "created ahead")
	if _, err := behind.Apply(ctx, "ahead", out.changes); err != nil {
		t.Fatal(err)
	}
	out.changes = nil
	mustSet(t, behind, "/k", "updated behind")
	if res, err := ahead.Apply(ctx, "behind", out.changes); err != nil || res.Applied != 1 {
		t.Fatalf("the update from the peer behind: %+v, %v", res, err)
	}
}
