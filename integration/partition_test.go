package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/node"
)

// startNode opens an in-process node on dir, listening on loopback TCP.
func startNode(t *testing.T, dir string, bootstrap ...string) *node.Node {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.DataDir = dir
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.MDNS = false
	cfg.Bootstrap = bootstrap
	cfg.Gossip.SyncInterval = 2 * time.Second
	n, err := node.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func fullAddr(n *node.Node) string {
	for _, a := range n.Addrs() {
		return fmt.Sprintf("%s/p2p/%s", a, n.ID())
	}
	return ""
}

// TestCluster_PartitionHeal splits 5 nodes into {0,1} and {2,3,4} by
// blocking peers, writes on both sides (the same keys too), heals, and
// waits until all 5 hold the same state with every acknowledged write on
// the winning side of each key. Figure: convergence time after the heal.
//
// The gater of node.BlockPeer has no unblock, so the heal restarts the two
// nodes of the small side on their data (fresh gaters) and connects them.
func TestCluster_PartitionHeal(t *testing.T) {
	const n = 5
	dirs := make([]string, n)
	nodes := make([]*node.Node, n)
	for i := range n {
		dirs[i] = filepath.Join(t.TempDir(), fmt.Sprint(i))
		var boot []string
		if i > 0 {
			boot = []string{fullAddr(nodes[0])}
		}
		nodes[i] = startNode(t, dirs[i], boot...)
	}
	for i := range n { // a full mesh: no discovery runs in the test
		for j := range i {
			if err := nodes[i].Connect(context.Background(), fullAddr(nodes[j])); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer func() {
		for _, nd := range nodes {
			nd.Close()
		}
	}()
	ctx := ctxT(t, 3*time.Minute)
	stores := func() []datastore.Store {
		out := make([]datastore.Store, n)
		for i, nd := range nodes {
			out[i] = nd.Store()
		}
		return out
	}
	a := &acks{keys: map[string]string{}, counters: map[string]int{}}
	bigAcks := &acks{keys: map[string]string{}, counters: map[string]int{}}
	for i := range n { // a first write everyone sees
		key := fmt.Sprintf("/before/%d", i)
		if _, err := nodes[i].Store().Set(ctx, key, []byte("x")); err != nil {
			t.Fatal(err)
		}
		a.key(key, "x")
	}
	converged(t, a, stores(), time.Minute)

	small, big := []int{0, 1}, []int{2, 3, 4}
	for _, i := range small {
		for _, j := range big {
			if err := nodes[i].BlockPeer(nodes[j].ID()); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, i := range small {
		for _, j := range big {
			if nodes[i].Host().Network().Connectedness(nodes[j].ID()) == 1 {
				t.Fatalf("node %d still connected to %d after the block", i, j)
			}
		}
	}
	// Writes on both sides: own keys, and one key both sides write.
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range 30 {
				key, val := fmt.Sprintf("/split/%d/%d", i, k), fmt.Sprintf("v%d", k)
				if _, err := nodes[i].Store().Set(ctx, key, []byte(val)); err != nil {
					t.Error(err)
					return
				}
				a.key(key, val)
				if i >= 2 {
					bigAcks.key(key, val)
				}
				if _, err := nodes[i].Store().Set(ctx, "/split/shared", []byte(fmt.Sprintf("n%d-%d", i, k))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// The sides really were apart: the small side lacks the big side's writes.
	if _, err := nodes[0].Store().Get(ctx, "/split/3/29"); err == nil {
		t.Fatal("a write of the big side crossed the partition")
	}

	// The big side agrees within itself.
	converged(t, bigAcks, stores()[2:], time.Minute)

	// Heal.
	for _, i := range small {
		if err := nodes[i].Close(); err != nil {
			t.Fatal(err)
		}
		var boot []string
		for _, j := range big {
			boot = append(boot, fullAddr(nodes[j]))
		}
		nodes[i] = startNode(t, dirs[i], boot...)
	}
	if err := nodes[0].Connect(ctx, fullAddr(nodes[1])); err != nil {
		t.Fatal(err)
	}
	took := converged(t, a, stores(), 2*time.Minute)
	fp := nodes[0].Replica().StateFingerprint()
	for i, nd := range nodes[1:] {
		if got := nd.Replica().StateFingerprint(); got != fp {
			t.Fatalf("node %d: state fingerprint %x (%d keys), node 0 %x (%d keys)", i+1, got.FP, got.Count, fp.FP, fp.Count)
		}
	}
	h, keys, _ := stateHash(ctx, nodes[0].Store())
	t.Logf("partition/heal: nodes=%d sides=%d+%d acknowledged=%d keys=%d converged %v after the heal (state %s…, fingerprint %x…)",
		n, len(small), len(big), a.count(), keys, took.Round(time.Millisecond), h[:12], fp.FP[:6])
}
