package gossip_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/multiformats/go-varint"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/gossip"
	"github.com/univrs/peerstate/replica"
)

// respondWith makes m a catch-up responder that answers every request with
// frames (syncFrame's fields by number: 1 V, 2 Groups, 3 Done, 4 Vector,
// 5 Prefixes, 7 Snapshot, 8 Heads, 9 Fingerprint, 10 Count).
func respondWith(m *testPeer, frames ...map[int]any) {
	m.h.SetStreamHandler(gossip.DefaultSyncProtocol, func(s network.Stream) {
		defer s.Close()
		br := bufio.NewReader(s)
		n, err := varint.ReadUvarint(br)
		if err != nil {
			return
		}
		if _, err := br.Discard(int(n)); err != nil {
			return
		}
		for _, f := range frames {
			if _, ok := f[1]; !ok {
				f[1] = gossip.FormatVersion
			}
			body, _ := cbor.Marshal(f)
			_, _ = s.Write(append(varint.ToUvarint(uint64(len(body))), body...))
		}
	})
}

// signedBy returns a wire change of p's, at generation gen, signed by
// signer (p itself for an honest signature).
func signedBy(t *testing.T, signer, p *testPeer, key, val string, gen, seq uint64) gossip.WireChange {
	t.Helper()
	now := time.Now().UnixNano()
	c := replica.Change{Key: key, Value: []byte(val), Version: 1, HLC: replica.HLC(uint64(now/1e6) << 16),
		Origin: p.id().String(), Gen: gen, Seq: seq, CreatedAt: now, UpdatedAt: now}
	if err := replica.SignWith(signer.h.Peerstore().PrivKey(signer.id()), &c); err != nil {
		t.Fatal(err)
	}
	return gossip.WireChange{Key: c.Key, Value: c.Value, Version: c.Version, HLC: uint64(c.HLC), Gen: c.Gen,
		Seq: c.Seq, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt, Sig: c.Sig}
}

func group(origin *testPeer, ws ...gossip.WireChange) []gossip.Message {
	return []gossip.Message{{V: gossip.FormatVersion, Origin: origin.id().String(), Changes: ws}}
}

// Hostile catch-up responders built from hand-made frames: each lie is
// rejected or harmless, counted against the responder, the honest state
// stays intact, and new writes keep replicating afterwards.
func TestSync_HostileResponders(t *testing.T) {
	ctx := context.Background()
	cfg := quiet()
	cfg.DisableSyncOnConnect = true
	// Whatever a responder claims, nothing younger than the grace period is
	// dropped on its word (older state, a snapshot may drop: see Reconcile).
	a := newPeer(t, cfg, peerOpts{grace: time.Hour})
	b := newPeer(t, cfg, peerOpts{grace: time.Hour})
	connect(t, a, b)
	waitMesh(t, a, b)
	if _, err := a.r.Set(ctx, "/honest/1", []byte("a1")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.r.Set(ctx, "/honest/b", []byte("b1")); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, 10*time.Second, a, b)
	aSrc := replica.SourceOf(a.id().String(), a.r.Generation())
	before := replicaHash(t, b.r)

	cases := []struct {
		name   string
		frames func(m *testPeer) []map[int]any
		reason string // counted against m; "" when the lie is harmless
	}{
		{"forged change for another origin", func(m *testPeer) []map[int]any {
			return []map[int]any{{2: group(a, signedBy(t, m, a, "/honest/1", "forged", a.r.Generation(), 9))}}
		}, gossip.ReasonBadSignature},
		{"forged change for the receiver's own origin", func(m *testPeer) []map[int]any {
			return []map[int]any{{2: group(b, signedBy(t, m, b, "/honest/b", "forged", b.r.Generation(), 9))}}
		}, gossip.ReasonBadSignature},
		{"remote version 2^64-1", func(m *testPeer) []map[int]any {
			w := signedBy(t, m, m, "/honest/1", "x", 1, 1)
			w.Version = math.MaxUint64
			return []map[int]any{{2: group(m, w)}}
		}, gossip.ReasonInvalidChange},
		{"tombstone at 2^64-1", func(m *testPeer) []map[int]any {
			w := signedBy(t, m, m, "/honest/1", "", 1, 1)
			w.Version, w.Deleted, w.Value = math.MaxUint64, true, nil
			return []map[int]any{{2: group(m, w)}}
		}, gossip.ReasonInvalidChange},
		{"final vector at 2^64-1", func(m *testPeer) []map[int]any {
			return []map[int]any{{3: true, 4: map[string]uint64{aSrc: math.MaxUint64}}}
		}, ""},
		{"empty snapshot with an inflated cover", func(m *testPeer) []map[int]any {
			cover := map[string]uint64{aSrc: math.MaxUint64, replica.SourceOf(b.id().String(), b.r.Generation()): math.MaxUint64}
			return []map[int]any{{7: true}, {3: true, 4: cover}}
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newPeer(t, cfg, peerOpts{noGossip: true})
			respondWith(m, tc.frames(m)...)
			connect(t, b, m)
			_, err := b.g.SyncWith(ctx, m.id())
			if tc.reason != "" {
				if err == nil {
					t.Fatal("sync with the liar succeeded")
				}
				if got := b.g.Stats().RejectedByPeer[m.id()]; got == 0 {
					t.Fatalf("nothing counted against the liar (%v)", b.g.Stats().Rejected)
				}
				if got := b.g.Stats().Rejected[tc.reason]; got == 0 {
					t.Fatalf("no %q rejection: %v", tc.reason, b.g.Stats().Rejected)
				}
			}
			if after := replicaHash(t, b.r); after != before {
				t.Fatal("the liar changed b's state")
			}
			if wm := mustWatermark(t, b, aSrc); wm > 1 {
				t.Fatalf("b's watermark for a moved to %d on a claim", wm)
			}
		})
	}
	// New writes of a still reach b, by push and by catch-up.
	for i := range 3 {
		if _, err := a.r.Set(ctx, fmt.Sprintf("/after/%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	waitConverged(t, 10*time.Second, a, b)
	if _, err := b.g.SyncWith(ctx, a.id()); err != nil {
		t.Fatal(err)
	}
	if wm := mustWatermark(t, b, aSrc); wm != 4 {
		t.Fatalf("b's watermark for a is %d after honest catch-up, want 4", wm)
	}
	if _, err := b.r.Get(ctx, "/honest/b"); err != nil {
		t.Fatalf("b lost its own write: %v", err)
	}
}

func mustWatermark(t *testing.T, p *testPeer, src string) uint64 {
	t.Helper()
	v, err := p.r.Watermarks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return v[src]
}

// A forged value-fetch answer is rejected like any unsigned change.
func TestValueFetch_RejectsForgedAnswer(t *testing.T) {
	ctx := context.Background()
	cfg := quiet()
	cfg.InlineValueLimit = 1024
	a := newPeer(t, cfg, peerOpts{})
	b := newPeer(t, cfg, peerOpts{})
	connect(t, a, b)
	waitMesh(t, a, b)
	big := make([]byte, 4096)
	if _, err := a.r.Set(ctx, "/big", big); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, 10*time.Second, a, b)
	c, _, err := b.r.Current(ctx, "/big")
	if err != nil || len(c.Value) != len(big) {
		t.Fatalf("fetched value %d bytes, %v", len(c.Value), err)
	}
	// The same change with a different value no longer verifies.
	c.Value = append([]byte("x"), c.Value[1:]...)
	if err := b.r.VerifyChange(c); !errors.Is(err, replica.ErrBadSignature) {
		t.Fatalf("tampered value verifies: %v", err)
	}
}

// Fingerprint repair finds and exchanges exactly the differing keys: with
// n keys differing in d, its bytes and round trips grow with d, not n.
func TestRepair_Scales(t *testing.T) {
	n := 100_000
	if raceEnabled || testing.Short() {
		n = 20_000 // signing and checking every change is slow under the race detector
	}
	ctx := context.Background()
	cfg := quiet()
	cfg.DisableSyncOnConnect = true
	cfg.SyncInterval = time.Hour
	var prev gossip.RepairStats
	a := newPeer(t, cfg, peerOpts{grace: time.Hour})
	var out []replica.Change
	a.r.SetBroadcaster(collector{&out})
	for start := 0; start < n; start += 1000 {
		var ops []datastore.Op
		for i := start; i < start+1000; i++ {
			ops = append(ops, datastore.OpSet(fmt.Sprintf("/r/%06d", i), value(i, 64)))
		}
		if _, err := a.r.Txn(ctx, ops...); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []int{1, 100, 10_000} {
		t.Run(fmt.Sprint(d), func(t *testing.T) {
			b := newPeer(t, cfg, peerOpts{grace: time.Hour})
			// b holds every change but d of them, spread over the key space.
			skip := map[int]bool{}
			for i := range d {
				skip[i*(n/d)] = true
			}
			var held []replica.Change
			for i, c := range out {
				if !skip[i] {
					held = append(held, c)
				}
			}
			if _, err := b.r.Apply(ctx, "setup", held); err != nil {
				t.Fatal(err)
			}
			connect(t, a, b)
			st, err := b.g.RepairWith(ctx, a.id())
			if err != nil {
				t.Fatal(err)
			}
			if a.r.StateFingerprint() != b.r.StateFingerprint() {
				t.Fatal("fingerprints differ after repair")
			}
			bytes := st.BytesSent + st.BytesReceived
			t.Logf("n=%d d=%d: %d round trips, %d summaries, %d bytes (%.0f per difference), %d applied",
				n, d, st.Rounds, st.Nodes, bytes, float64(bytes)/float64(d), st.Applied)
			if st.Differences != d || st.Applied != d {
				t.Fatalf("repair found %d differences and applied %d, want %d", st.Differences, st.Applied, d)
			}
			// One change is ~300 bytes on the wire; finding it costs a few
			// summaries per tree level (16 children of 17 bytes each).
			if limit := int64(d)*(300+6*16*20) + 16<<10; bytes > limit {
				t.Fatalf("repair of %d differences in %d keys moved %d bytes, more than %d", d, n, bytes, limit)
			}
			if st.Rounds > 12 {
				t.Fatalf("%d round trips", st.Rounds)
			}
			if prev.Rounds > 0 && bytes < prev.BytesSent+prev.BytesReceived {
				t.Fatalf("more differences cost fewer bytes")
			}
			prev = st
		})
	}
}

// collector records a replica's broadcasts.
type collector struct{ out *[]replica.Change }

func (c collector) Broadcast(_ context.Context, cs []replica.Change) error {
	*c.out = append(*c.out, cs...)
	return nil
}

// A catch-up that ends with the two fingerprints different runs a repair,
// which heals a divergence the watermarks cannot see.
func TestSync_RepairsWhatWatermarksMiss(t *testing.T) {
	ctx := context.Background()
	cfg := quiet()
	cfg.DisableSyncOnConnect = true
	a := newPeer(t, cfg, peerOpts{grace: time.Hour})
	b := newPeer(t, cfg, peerOpts{grace: time.Hour})
	var out []replica.Change
	a.r.SetBroadcaster(collector{&out})
	for i := range 20 {
		if _, err := a.r.Set(ctx, fmt.Sprintf("/w/%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	// b incorporated all but one change, and its watermark says all: a
	// state watermarks alone would never repair.
	if _, err := b.r.Apply(ctx, "setup", out[:19]); err != nil {
		t.Fatal(err)
	}
	src := out[0].Source()
	if _, err := b.r.Advance(ctx, replica.Vector{src: 20}, []replica.Change{out[19].Elide()}, nil); err != nil {
		t.Fatal(err)
	}
	connect(t, a, b)
	st, err := b.g.SyncWith(ctx, a.id())
	if err != nil {
		t.Fatal(err)
	}
	if st.Changes != 0 || st.Matched || !st.Repaired || st.Repair.Applied != 1 {
		t.Fatalf("sync %+v", st)
	}
	if !converged(t, a, b) {
		t.Fatal("not converged after the repair")
	}
	st, err = b.g.SyncWith(ctx, a.id())
	if err != nil || !st.Matched || st.Repaired {
		t.Fatalf("second sync %+v, %v", st, err)
	}
	if m := b.g.Matches()[a.id()]; !m.Matched {
		t.Fatalf("match state %+v", m)
	}
}
