package replica_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/badger"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/sqlite"
	"github.com/univrs/peerstate/replica"
)

// faultNet is four replicas, each restartable on its own store, joined by
// the lossy broadcaster: 0 on SQLite (restored from an old backup), 1 on
// Badger (fed bursts of thousands of small writes), 2 on memory (away
// longer than the membership window, and restarted empty), 3 on SQLite
// (its prefixes reconfigured).
type faultNet struct {
	t     *testing.T
	net   *lossyNet
	dirs  []string
	pfx   [][]string
	phase int
}

func (f *faultNet) open(i int) {
	t := f.t
	var local datastore.Store
	var err error
	switch i {
	case 0, 3:
		local, err = sqlite.Open(filepath.Join(f.dirs[i], "state.db"))
	case 1:
		local, err = badger.Open(f.dirs[i])
	default:
		local = memory.New()
	}
	if err != nil {
		t.Fatal(err)
	}
	r, err := replica.New(context.Background(), local, replica.Config{
		Key: keyFor(fmt.Sprint("fault", i)), Broadcaster: netBroadcaster{f.net, i},
		Prefixes: f.pfx[i], TombstoneGrace: time.Nanosecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	f.net.replicas[i] = r
}

func (f *faultNet) restart(i int) {
	f.net.replicas[i].Close()
	f.drop(i)
	f.open(i)
}

// drop loses the deliveries in flight to i: a peer that restarts loses
// its connections and what they carried.
func (f *faultNet) drop(i int) {
	f.net.mu.Lock()
	defer f.net.mu.Unlock()
	kept := f.net.queue[:0]
	for _, d := range f.net.queue {
		if d.to != i {
			kept = append(kept, d)
		}
	}
	f.net.queue = kept
}

// round syncs every pair both ways, snapshots included, and repairs the
// pairs whose fingerprints still differ, as gossip does after a catch-up.
func (f *faultNet) round(members ...int) {
	for _, a := range members {
		for _, b := range members {
			if a != b {
				from, to := f.net.replicas[a], f.net.replicas[b]
				syncFrom(f.t, from, to)
				if slices.Equal(from.Prefixes(), to.Prefixes()) && from.StateFingerprint() != to.StateFingerprint() {
					repairPair(f.t, from, to)
				}
			}
		}
	}
}

// repairPair exchanges the current changes of every key whose digests
// differ between a and b (the gossip repair protocol finds the same keys
// by descending the fingerprint tree; see gossip.TestRepair_Scales).
func repairPair(t *testing.T, a, b *replica.Replica) {
	t.Helper()
	ctx := context.Background()
	digests := func(r *replica.Replica) map[string][16]byte {
		m := map[string][16]byte{}
		for _, it := range r.Items([]replica.Node{{}}, 1<<30)[0] {
			m[it.Key] = it.Digest
		}
		return m
	}
	da, db := digests(a), digests(b)
	var diff []string
	for k, d := range da {
		if db[k] != d {
			diff = append(diff, k)
		}
	}
	for k := range db {
		if _, ok := da[k]; !ok {
			diff = append(diff, k)
		}
	}
	for _, pair := range [][2]*replica.Replica{{a, b}, {b, a}} {
		var send []replica.Change
		for _, k := range diff {
			if c, found, err := pair[0].Current(ctx, k); err != nil {
				t.Fatal(err)
			} else if found {
				send = append(send, c)
			}
		}
		if _, err := pair[1].Apply(ctx, pair[0].ID(), send); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *faultNet) churn(rng *rand.Rand, ops int, acks *[]ack, on ...int) {
	f.phase++
	for range ops {
		i := on[rng.IntN(len(on))]
		r := f.net.replicas[i]
		if a, ok := randomOp(rng, r, 16); ok && r.Replicates(a.key) {
			a.by = fmt.Sprintf("replica %d in phase %d", i, f.phase)
			*acks = append(*acks, a)
		}
		if rng.IntN(3) == 0 {
			f.net.deliverSome(f.t, rng.IntN(4))
		}
	}
}

// The randomized convergence test with the faults operators meet: a restore
// from an old backup under the same identity, prefix reconfiguration,
// Badger under bursts of 10,000 small writes, and a peer offline longer
// than the membership window while tombstones are collected. All converge,
// checked by fingerprint, and no acknowledged write is lost.
func TestReplica_ConvergesThroughFaults(t *testing.T) {
	seeds := 2 // each runs a 10,000-write burst; more seeds: go test -run ConvergesThroughFaults -count N
	if testing.Short() {
		seeds = 1
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			ctx := context.Background()
			f := &faultNet{t: t, net: &lossyNet{rng: rand.New(rand.NewPCG(seed, 3)), loss: 0.3, dup: 0.1, partitioned: map[int]bool{}},
				pfx: [][]string{nil, nil, nil, {"/k/1"}}}
			f.net.replicas = make([]*replica.Replica, 4)
			for i := range 4 {
				f.dirs = append(f.dirs, t.TempDir())
				f.open(i)
			}
			rng := rand.New(rand.NewPCG(seed, 11))
			var acks []ack
			all := []int{0, 1, 2, 3}
			f.churn(rng, 100, &acks, all...)

			// 0 is backed up, then writes on.
			f.net.replicas[0].Close()
			backup := copyFile(t, filepath.Join(f.dirs[0], "state.db"))
			f.drop(0)
			f.open(0)
			f.churn(rng, 100, &acks, all...)

			// A burst of 10,000 small writes on 0 reaches Badger in one batch.
			for start := 0; start < 10_000; start += 1000 {
				var ops []datastore.Op
				for i := start; i < start+1000; i++ {
					ops = append(ops, datastore.OpSet(fmt.Sprintf("/burst/%d/%05d", seed, i), []byte("s")))
				}
				if _, err := f.net.replicas[0].Txn(ctx, ops...); err != nil {
					t.Fatal(err)
				}
			}
			f.net.deliverSome(t, 1<<30)

			// 3 widens its prefixes to everything.
			f.pfx[3] = nil
			f.restart(3)

			// 2 goes away; the others delete keys and collect the tombstones
			// without it; 2 restarts empty meanwhile (what it acknowledged
			// is on the others first: memory is not durable).
			f.round(all...)
			f.net.partitioned[2] = true
			f.round(0, 1, 3)
			for i := range 4 {
				key := fmt.Sprintf("/k/%d", i)
				if err := f.net.replicas[0].Delete(ctx, key); err == nil {
					c, _, _ := f.net.replicas[0].Current(ctx, key)
					acks = append(acks, ack{key: key, version: c.Version, deleted: true})
				}
			}
			f.round(0, 1, 3)
			time.Sleep(2 * time.Millisecond) // past the (1ns) grace period
			for _, i := range []int{0, 1, 3} {
				var members []string
				for _, j := range []int{0, 1, 3} {
					if j != i {
						members = append(members, f.net.replicas[j].ID())
					}
				}
				if _, err := f.net.replicas[i].CollectTombstones(ctx, members); err != nil {
					t.Fatal(err)
				}
			}
			// Past the collection, the deleted keys' history is gone: a peer
			// that has not caught up yet (2 restarted empty, 0 restored) may
			// re-create them below the collected versions, and the order
			// only compares what comes after.
			collectedAt := len(acks)
			f.restart(2)
			f.net.partitioned[2] = false
			f.churn(rng, 50, &acks, all...)

			// Everything 0 acknowledged since the backup is on a peer; then
			// 0 is restored from its old backup, same identity.
			f.round(all...)
			f.net.replicas[0].Close()
			restore(t, backup, filepath.Join(f.dirs[0], "state.db"))
			f.drop(0)
			f.open(0)
			f.churn(rng, 50, &acks, all...)

			f.net.deliverSome(t, 1<<30)
			f.round(all...)
			f.round(all...)
			want := f.net.replicas[0].StateFingerprint()
			for i, r := range f.net.replicas {
				if got := r.StateFingerprint(); got != want {
					t.Fatalf("replica %d's fingerprint %v differs from replica 0's %v (%d vs %d keys)", i, got.FP, want.FP, got.Count, want.Count)
				}
			}
			assertConverged(t, f.net.replicas)
			// No acknowledged write is lost: a key ends at or past every
			// version acknowledged for it, or is gone because a delete at
			// least as new was collected.
			maxAll, maxDel := map[string]uint64{}, map[string]uint64{}
			by := map[string]string{}
			for i, a := range acks {
				if f.collected(a.key) && i < collectedAt {
					continue
				}
				if a.version >= maxAll[a.key] {
					by[a.key] = a.by
				}
				maxAll[a.key] = max(maxAll[a.key], a.version)
				if a.deleted {
					maxDel[a.key] = max(maxDel[a.key], a.version)
				}
			}
			for key, v := range maxAll {
				c, found, err := f.net.replicas[1].Current(ctx, key)
				switch {
				case err != nil:
					t.Fatal(err)
				case found && c.Version < v:
					t.Fatalf("acknowledged write of %s at version %d by %s lost: now version %d by %s", key, v, by[key], c.Version, c.Origin)
				case !found && maxDel[key] < v:
					t.Fatalf("acknowledged write of %s at version %d lost: key gone (last delete at %d)", key, v, maxDel[key])
				}
			}
		})
	}
}

// collected reports whether key is one of those deleted and collected
// while replica 2 was away.
func (f *faultNet) collected(key string) bool {
	for i := range 4 {
		if key == fmt.Sprintf("/k/%d", i) {
			return true
		}
	}
	return false
}
