package replica_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/replica"
)

// lossyNet connects replicas through the Broadcaster seam and injects
// faults: it loses, duplicates and reorders deliveries.
type lossyNet struct {
	rng              *rand.Rand
	loss, dup        float64
	replicas         []*replica.Replica
	mu               sync.Mutex
	queue            []delivery
	partitioned      map[int]bool
	broadcastBatches int
}

type delivery struct {
	from, to int
	changes  []replica.Change
}

type netBroadcaster struct {
	n    *lossyNet
	from int
}

func (b netBroadcaster) Broadcast(_ context.Context, changes []replica.Change) error {
	n := b.n
	n.mu.Lock()
	defer n.mu.Unlock()
	n.broadcastBatches++
	for to := range n.replicas {
		if to == b.from || n.partitioned[to] != n.partitioned[b.from] || n.rng.Float64() < n.loss {
			continue
		}
		d := delivery{from: b.from, to: to, changes: slices.Clone(changes)}
		n.queue = append(n.queue, d)
		if n.rng.Float64() < n.dup {
			n.queue = append(n.queue, d)
		}
	}
	return nil
}

func newNet(t *testing.T, n int, seed uint64, loss, dup float64) *lossyNet {
	t.Helper()
	net := &lossyNet{rng: rand.New(rand.NewPCG(seed, 7)), loss: loss, dup: dup, partitioned: map[int]bool{}}
	for i := range n {
		r, err := replica.New(context.Background(), memory.New(), replica.Config{
			Key:            keyFor(fmt.Sprintf("peer%d", i)),
			Broadcaster:    netBroadcaster{net, i},
			TombstoneGrace: time.Nanosecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		net.replicas = append(net.replicas, r)
	}
	return net
}

// deliverSome delivers up to k queued messages in random order.
func (n *lossyNet) deliverSome(t *testing.T, k int) {
	t.Helper()
	for range k {
		n.mu.Lock()
		if len(n.queue) == 0 {
			n.mu.Unlock()
			return
		}
		i := n.rng.IntN(len(n.queue))
		d := n.queue[i]
		n.queue = slices.Delete(n.queue, i, i+1)
		n.mu.Unlock()
		if _, err := n.replicas[d.to].Apply(context.Background(), fmt.Sprintf("peer%d", d.from), d.changes); err != nil {
			t.Fatalf("apply: %v", err)
		}
	}
}

// pull runs one catch-up exchange: `to` fetches what it lacks from `from`.
func pull(t *testing.T, from, to *replica.Replica) int {
	t.Helper()
	ctx := context.Background()
	have, err := to.Watermarks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sent := 0
	cover, err := from.ChangesSince(ctx, have, to.Prefixes(), 64, func(cs []replica.Change) error {
		sent += len(cs)
		_, err := to.Apply(ctx, from.ID(), cs)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if bad, err := to.Advance(ctx, cover, from.Heads(cover.Sources()), from.Prefixes()); err != nil || bad > 0 {
		t.Fatalf("advance: %d bad heads, %v", bad, err)
	}
	return sent
}

// stateHash hashes every entry a replica holds: key, value, version and
// timestamps (not the revision, which is per peer).
func stateHash(t *testing.T, s datastore.Store) (string, int) {
	t.Helper()
	h := sha256.New()
	n := 0
	opts := datastore.ListOptions{Limit: 500}
	for {
		p, err := s.List(context.Background(), "/", opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range p.Entries {
			fmt.Fprintf(h, "%s\x00%x\x00%d\x00%d\x00%d\n", e.Key, e.Value, e.Version, e.CreatedAt.UnixNano(), e.UpdatedAt.UnixNano())
			n++
		}
		if !p.More {
			return fmt.Sprintf("%x", h.Sum(nil)), n
		}
		opts.After = p.Next
	}
}

func assertConverged(t *testing.T, replicas []*replica.Replica) {
	t.Helper()
	want, n := stateHash(t, replicas[0])
	for i, r := range replicas[1:] {
		if got, m := stateHash(t, r); got != want {
			t.Fatalf("replica %d differs from replica 0 (%d vs %d entries)", i+1, m, n)
		}
	}
}

// ack is a write a replica acknowledged.
type ack struct {
	key     string
	version uint64
	deleted bool
	by      string // the replica that acknowledged it, and when
}

// randomOp runs one random operation on r and returns what it acknowledged.
func randomOp(rng *rand.Rand, r *replica.Replica, keys int) (ack, bool) {
	ctx := context.Background()
	key := fmt.Sprintf("/k/%d", rng.IntN(keys))
	val := []byte(fmt.Sprintf("%s=%d", r.ID(), rng.Uint32()))
	switch rng.IntN(6) {
	case 0, 1:
		v, err := r.Set(ctx, key, val)
		return ack{key: key, version: v}, err == nil
	case 2:
		e, err := r.Get(ctx, key)
		if err != nil {
			return ack{}, false
		}
		v, err := r.CompareAndSet(ctx, key, e.Version, val)
		return ack{key: key, version: v}, err == nil
	case 3:
		if err := r.Delete(ctx, key); err != nil {
			return ack{}, false
		}
		e, _, _ := r.Current(ctx, key)
		return ack{key: key, version: e.Version, deleted: true}, true
	case 4:
		v, err := r.CreateIfNotExists(ctx, key, val)
		return ack{key: key, version: v}, err == nil
	default:
		other := fmt.Sprintf("/k/%d", rng.IntN(keys))
		if other == key {
			return ack{}, false
		}
		res, err := r.Txn(ctx, datastore.OpSet(key, val), datastore.OpSet(other, val))
		return ack{key: key, version: res.Versions[0]}, err == nil
	}
}

func TestReplica_RandomizedConvergence(t *testing.T) {
	seeds := 30
	if testing.Short() {
		seeds = 5
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			net := newNet(t, 5, seed, 0.3, 0.1)
			rng := rand.New(rand.NewPCG(seed, 99))
			var acks []ack
			for range 300 {
				r := net.replicas[rng.IntN(len(net.replicas))]
				if a, ok := randomOp(rng, r, 12); ok {
					acks = append(acks, a)
				}
				switch x := rng.IntN(10); {
				case x < 5:
					net.deliverSome(t, rng.IntN(4))
				case x == 9:
					pull(t, net.replicas[rng.IntN(5)], net.replicas[rng.IntN(5)])
				}
			}
			// Delivery resumes, then one catch-up round.
			net.deliverSome(t, 1<<30)
			for _, to := range net.replicas {
				for _, from := range net.replicas {
					if from != to {
						pull(t, from, to)
					}
				}
			}
			assertConverged(t, net.replicas)
			// No acknowledged write is lost: every key ends at or past every
			// version acknowledged for it, and a key whose last acknowledged
			// write was a delete is not resurrected by an older write.
			for _, a := range acks {
				c, found, err := net.replicas[0].Current(context.Background(), a.key)
				if err != nil || !found || c.Version < a.version {
					t.Fatalf("acknowledged %+v lost: final %+v found=%v err=%v", a, c, found, err)
				}
			}
		})
	}
}

func TestReplica_PartitionHeal(t *testing.T) {
	net := newNet(t, 4, 1, 0, 0)
	ctx := context.Background()
	net.partitioned[2], net.partitioned[3] = true, true
	for i, r := range net.replicas {
		for j := range 20 {
			if _, err := r.Set(ctx, fmt.Sprintf("/shared/%d", j), []byte(fmt.Sprint(i))); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := r.Set(ctx, fmt.Sprintf("/own/%d", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	net.deliverSome(t, 1<<30)
	if h0, _ := stateHash(t, net.replicas[0]); h0 == func() string { h, _ := stateHash(t, net.replicas[2]); return h }() {
		t.Fatal("the two sides of the partition agree before the heal")
	}
	// Heal: one catch-up round.
	for _, to := range net.replicas {
		for _, from := range net.replicas {
			if from != to {
				pull(t, from, to)
			}
		}
	}
	assertConverged(t, net.replicas)
	if _, n := stateHash(t, net.replicas[1]); n != 24 {
		t.Fatalf("%d entries after heal, want 24", n)
	}
}

func TestReplica_RemoteEvents(t *testing.T) {
	net := newNet(t, 2, 1, 0, 0)
	ctx := context.Background()
	a, b := net.replicas[0], net.replicas[1]
	w, err := b.Watch(ctx, "/x/")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := a.Set(ctx, "/x/1", []byte("one")); err != nil {
		t.Fatal(err)
	}
	net.deliverSome(t, 10)
	ev := <-w.Events()
	if ev.Type != datastore.Created || ev.Origin != net.replicas[0].ID() || string(ev.NewValue) != "one" || ev.Version != 1 {
		t.Fatalf("remote event %+v", ev)
	}
	// A CAS with the version read on the other peer succeeds.
	e, err := b.Get(ctx, "/x/1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.CompareAndSet(ctx, "/x/1", e.Version, []byte("two")); err != nil {
		t.Fatal(err)
	}
	if ev := <-w.Events(); ev.Type != datastore.Updated || ev.Origin != "" || ev.Version != 2 {
		t.Fatalf("local event %+v", ev)
	}
	net.deliverSome(t, 10)
	if e, err := a.Get(ctx, "/x/1"); err != nil || string(e.Value) != "two" || e.Version != 2 {
		t.Fatalf("a sees %q v%d, %v; want b's write", e.Value, e.Version, err)
	}
}

func TestReplica_RejectsBadChanges(t *testing.T) {
	net := newNet(t, 2, 1, 0, 0)
	ctx := context.Background()
	b := net.replicas[1]
	key, origin := keyFor("peer0"), idFor("peer0")
	signed := func(c replica.Change) replica.Change {
		t.Helper()
		if c.Gen == 0 {
			c.Gen = 1
		}
		if err := replica.SignWith(key, &c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	good := signed(replica.Change{Key: "/ok", Value: []byte("v"), Version: 1, HLC: 1 << 16, Origin: origin, Seq: 1, CreatedAt: 1, UpdatedAt: 1})
	bad := []replica.Change{
		signed(replica.Change{Key: "bad", Value: []byte("v"), Version: 1, HLC: 1 << 16, Origin: origin, Seq: 2}),
		signed(replica.Change{Key: "/.peerstate/wm/peer0", Value: []byte("99"), Version: 1, HLC: 1 << 16, Origin: origin, Seq: 3}),
		signed(replica.Change{Key: "/ok2", Version: 0, HLC: 1 << 16, Origin: origin, Seq: 4}),
		signed(replica.Change{Key: "/ok3", Version: 1, HLC: 1 << 16, Origin: "", Seq: 5}),
		signed(replica.Change{Key: "/ok4", Version: 1, HLC: 1 << 16, Origin: origin, Seq: 6, Deleted: true, Value: []byte("x")}),
	}
	res, err := b.Apply(ctx, "peer0", append([]replica.Change{good}, bad...))
	if !errors.Is(err, replica.ErrInvalidChange) || !errors.Is(err, datastore.ErrInvalidKey) {
		t.Fatalf("Apply of bad changes: %v", err)
	}
	if res.Applied != 1 || res.Invalid != len(bad) {
		t.Fatalf("applied %d, invalid %d: want only the good one applied", res.Applied, res.Invalid)
	}
	if _, n := stateHash(t, b); n != 1 {
		t.Fatalf("%d entries, want 1", n)
	}
	// A stale replay changes nothing.
	newer := good
	newer.Version, newer.Seq, newer.HLC, newer.Value = 2, 7, 2<<16, []byte("v2")
	newer = signed(newer)
	if _, err := b.Apply(ctx, "peer0", []replica.Change{newer}); err != nil {
		t.Fatal(err)
	}
	res, err = b.Apply(ctx, "peer0", []replica.Change{good})
	if err != nil || res.Stale != 1 || res.Applied != 0 {
		t.Fatalf("replay: %+v, %v", res, err)
	}
	if e, _ := b.Get(ctx, "/ok"); string(e.Value) != "v2" {
		t.Fatalf("replay overwrote the value: %q", e.Value)
	}
	// Users cannot write the bookkeeping.
	if _, err := b.Set(ctx, "/.peerstate/wm/peer0", []byte("1")); !errors.Is(err, datastore.ErrInvalidKey) {
		t.Fatalf("user write to reserved key: %v", err)
	}
}

// A replica of some prefixes still counts the changes it skips as
// incorporated, so its watermark keeps up with a writer of other keys too.
func TestReplica_PartialWatermark(t *testing.T) {
	ctx := context.Background()
	a, err := replica.New(ctx, memory.New(), replica.Config{Key: keyFor("a")})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := replica.New(ctx, memory.New(), replica.Config{Key: keyFor("b"), Prefixes: []string{"/peers/"}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var sent []replica.Change
	a.SetBroadcaster(broadcastFunc(func(cs []replica.Change) { sent = append(sent, cs...) }))
	for _, k := range []string{"/peers/x", "/local/y", "/peers/z"} {
		if _, err := a.Set(ctx, k, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	res, err := b.Apply(ctx, "a", sent)
	if err != nil || res.Applied != 2 || res.Skipped != 1 {
		t.Fatalf("apply = %+v, %v", res, err)
	}
	src := replica.SourceOf(a.ID(), a.Generation())
	if v, _ := b.Watermarks(ctx); v[src] != 3 {
		t.Fatalf("b's watermark for a is %d, want 3", v[src])
	}
	if _, err := b.Get(ctx, "/local/y"); err == nil {
		t.Fatal("b holds a key outside its prefixes")
	}
}

type broadcastFunc func([]replica.Change)

func (f broadcastFunc) Broadcast(_ context.Context, cs []replica.Change) error {
	f(cs)
	return nil
}

// Local writes, remote applies and catch-ups all run at once on every
// replica; once they stop and one catch-up round runs, all converge and no
// acknowledged write is lost.
func TestReplica_ConcurrentConvergence(t *testing.T) {
	net := newNet(t, 3, 7, 0.2, 0.1)
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var acks []ack
	errs := make(chan error, 64)
	for i, r := range net.replicas {
		for g := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(i), uint64(g)))
				for range 60 {
					if a, ok := randomOp(rng, r, 10); ok {
						mu.Lock()
						acks = append(acks, a)
						mu.Unlock()
					}
				}
			}()
		}
	}
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(1)
	go func() { // deliveries and catch-ups while the writers run
		defer bg.Done()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			net.mu.Lock()
			var d *delivery
			if len(net.queue) > 0 {
				d = &net.queue[0]
				net.queue = net.queue[1:]
			}
			net.mu.Unlock()
			if d != nil {
				if _, err := net.replicas[d.to].Apply(ctx, fmt.Sprintf("peer%d", d.from), d.changes); err != nil {
					errs <- err
					return
				}
			}
			if n%20 == 0 {
				from, to := net.replicas[n%3], net.replicas[(n/3+1)%3]
				if from != to {
					have, _ := to.Watermarks(ctx)
					cover, err := from.ChangesSince(ctx, have, nil, 32, func(cs []replica.Change) error {
						_, err := to.Apply(ctx, from.ID(), cs)
						return err
					})
					if err == nil {
						_, err = to.Advance(ctx, cover, from.Heads(cover.Sources()), nil)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}
		}
	}()
	wg.Wait()
	close(stop)
	bg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	net.deliverSome(t, 1<<30)
	for _, to := range net.replicas {
		for _, from := range net.replicas {
			if from != to {
				pull(t, from, to)
			}
		}
	}
	assertConverged(t, net.replicas)
	for _, a := range acks {
		c, found, err := net.replicas[0].Current(ctx, a.key)
		if err != nil || !found || c.Version < a.version {
			t.Fatalf("acknowledged %+v lost: final %+v", a, c)
		}
	}
}
