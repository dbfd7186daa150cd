package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/univrs/peerstate/api"
	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/node"
)

// freePorts reserves n loopback TCP ports (closed again: the daemons bind
// them next).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// stateHash hashes every entry under "/" as a client sees it: key, value
// and version, in key order.
// nodeLocal matches the keys every node keeps to itself under replicated
// prefixes: they differ between nodes holding the same state.
var nodeLocal = func() datastore.Pattern {
	p, err := datastore.ParsePattern(node.ReputationPattern)
	if err != nil {
		panic(err)
	}
	return p
}()

func stateHash(ctx context.Context, c interface {
	List(context.Context, string, datastore.ListOptions) (datastore.Page, error)
}) (string, int, error) {
	h := sha256.New()
	n := 0
	opts := datastore.ListOptions{Limit: 1000}
	for {
		p, err := c.List(ctx, "/", opts)
		if err != nil {
			return "", 0, err
		}
		for _, e := range p.Entries {
			if nodeLocal.Match(e.Key) {
				continue // each node's own opinion of its peers
			}
			fmt.Fprintf(h, "%q=%q@%d\n", e.Key, e.Value, e.Version)
			n++
		}
		if !p.More {
			return hex.EncodeToString(h.Sum(nil)), n, nil
		}
		opts.After = p.Next
	}
}

// converged waits until every lister holds the same state and it has every
// acknowledged write; it returns how long that took.
func converged[L interface {
	List(context.Context, string, datastore.ListOptions) (datastore.Page, error)
	Get(context.Context, string) (datastore.Entry, error)
}](t *testing.T, a *acks, nodes []L, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx := ctxT(t, within+time.Minute)
	var last string
	for {
		hashes := map[string]bool{}
		for i, n := range nodes {
			h, count, err := stateHash(ctx, n)
			if err != nil {
				last = fmt.Sprintf("node %d: %v", i, err)
				hashes = nil
				break
			}
			hashes[h] = true
			last = fmt.Sprintf("%d distinct states; node %d has %d keys", len(hashes), i, count)
		}
		if len(hashes) == 1 {
			lost, err := a.lost(ctx, nodes[0].Get)
			if err == nil && len(lost) == 0 {
				return time.Since(start)
			}
			last = fmt.Sprintf("identical states, but %d acknowledged writes missing (%v): %v", len(lost), err, firstN(lost, 3))
		}
		if time.Since(start) > within {
			t.Fatalf("not converged within %v: %s", within, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestCluster_RollingRestartsUnderLoad runs 5 daemons on loopback, writes
// through all of them all along, and restarts each in turn (SIGTERM, and a
// SIGKILL for the last); afterwards every daemon holds every acknowledged
// write and all hold the same state. Figure: convergence time after the
// last restart.
func TestCluster_RollingRestartsUnderLoad(t *testing.T) {
	const n = 5
	rounds := envInt(t, "PEERSTATE_ROLLING_ROUNDS", 1)
	ports := freePorts(t, n)
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = t.TempDir()
	}
	ds := make([]*daemon, n)
	var mu sync.Mutex // guards ds and clients while the load runs
	clients := make([]*api.Client, n)
	start := func(i int) {
		args := []string{"--data", dirs[i], "--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", ports[i])}
		for j, d := range ds {
			if j != i && d != nil && d.id != "" {
				args = append(args, "--bootstrap", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", ports[j], d.id))
			}
		}
		d := launch(t, args...)
		c := d.client()
		mu.Lock()
		ds[i], clients[i] = d, c
		mu.Unlock()
	}
	for i := range n {
		start(i)
	}
	a := &acks{keys: map[string]string{}, counters: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { // one writer per daemon; its client is swapped on restart
			defer wg.Done()
			for k := 0; ctx.Err() == nil; k++ {
				mu.Lock()
				c := clients[i]
				mu.Unlock()
				key, val := fmt.Sprintf("/roll/d%d/%d", i, k), fmt.Sprintf("v%d", k)
				rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
				if _, err := c.Set(rctx, key, []byte(val)); err == nil {
					a.key(key, val)
				} else {
					time.Sleep(20 * time.Millisecond)
				}
				rcancel()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	for r := range rounds {
		for i := range n {
			time.Sleep(500 * time.Millisecond)
			sig := syscall.SIGTERM
			if i == n-1 && r == rounds-1 {
				sig = syscall.SIGKILL
			}
			ds[i].stop(sig)
			start(i)
		}
	}
	time.Sleep(500 * time.Millisecond)
	cancel()
	wg.Wait()
	took := converged(t, a, clients, 2*time.Minute)
	t.Logf("rolling restarts: daemons=%d restarts=%d acknowledged=%d lost=0 converged in %v", n, n*rounds, a.count(), took.Round(time.Millisecond))
}
