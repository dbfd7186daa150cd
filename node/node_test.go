package node_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/univrs/peerstate/node"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(peerProcEnv); mode != "" {
		os.Exit(runPeerProcess(mode)) // an honest peer of BenchmarkUnderAttack, or its spawner: not a test run
	}
	goleak.VerifyTestMain(m,
		// go-libp2p's shared resources that outlive a host by design.
		goleak.IgnoreAnyFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.Cleanup(func(code int) { stopSpawner(); os.Exit(code) }),
	)
}

func testConfig(t testing.TB, dir string) node.Config {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.DataDir = dir
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.MDNS = false
	cfg.Gossip.SyncInterval = 500 * time.Millisecond
	return cfg
}

func startNode(t testing.TB, cfg node.Config) *node.Node {
	t.Helper()
	n, err := node.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func TestNode_ReplicatesAndKeepsIdentity(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dirA, dirB := t.TempDir(), t.TempDir()
	a := startNode(t, testConfig(t, dirA))
	cfgB := testConfig(t, dirB)
	cfgB.Bootstrap = []string{a.Addrs()[0].String()}
	b := startNode(t, cfgB)
	for _, addr := range a.Addrs() {
		if !strings.HasSuffix(addr.String(), "/p2p/"+a.ID().String()) {
			t.Fatalf("address %s does not end in /p2p/ID", addr)
		}
	}
	if _, err := a.Store().Set(ctx, "/hello", []byte("world")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		e, err := b.Store().Get(ctx, "/hello")
		return err == nil && string(e.Value) == "world"
	})
	// The identity survives a restart, kept with mode 0600.
	st, err := os.Stat(filepath.Join(dirB, "identity.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("identity key: %v, mode %v", err, st.Mode().Perm())
	}
	id := b.ID()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// b misses a write while down and catches up after restart.
	if _, err := a.Store().Set(ctx, "/missed", []byte("x")); err != nil {
		t.Fatal(err)
	}
	b2 := startNode(t, cfgB)
	if b2.ID() != id {
		t.Fatalf("peer ID changed across restart: %s -> %s", id, b2.ID())
	}
	waitFor(t, func() bool {
		_, err := b2.Store().Get(ctx, "/missed")
		return err == nil
	})
}

func TestConfig_Validate(t *testing.T) {
	cfg := node.DefaultConfig()
	cfg.Backend = "nope"
	cfg.Bootstrap = []string{"/ip4/127.0.0.1/tcp/1"} // no /p2p/ID
	cfg.PSK = []byte("short")
	err := cfg.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"backend", "bootstrap", "private network key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if err := node.DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestNode_DHTDiscovery(t *testing.T) {
	cfg := func() node.Config {
		c := testConfig(t, t.TempDir())
		c.DHT, c.DHTServer, c.DHTInterval = true, true, 300*time.Millisecond
		c.PeerExchange = false // the DHT alone must introduce them
		return c
	}
	a := startNode(t, cfg())
	bc := cfg()
	bc.Bootstrap = []string{a.Addrs()[0].String()}
	b := startNode(t, bc)
	cc := cfg()
	cc.Bootstrap = bc.Bootstrap
	c := startNode(t, cc)
	// b and c only know a; the DHT rendezvous introduces them.
	waitFor(t, func() bool {
		return b.Host().Network().Connectedness(c.ID()) == network.Connected
	})
}

func TestNode_CollectsTombstones(t *testing.T) {
	ctx := context.Background()
	cfg := func() node.Config {
		c := testConfig(t, t.TempDir())
		c.Backend = node.BackendMemory
		c.TombstoneGrace, c.GCInterval = time.Nanosecond, 100*time.Millisecond
		c.Gossip.SyncInterval = 100 * time.Millisecond
		return c
	}
	a := startNode(t, cfg())
	bc := cfg()
	bc.Bootstrap = []string{a.Addrs()[0].String()}
	b := startNode(t, bc)
	if _, err := a.Store().Set(ctx, "/gone", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := a.Store().Delete(ctx, "/gone"); err != nil {
		t.Fatal(err)
	}
	// Once both have seen the delete in catch-up, both drop the tombstone.
	for _, n := range []*node.Node{a, b} {
		waitFor(t, func() bool {
			_, found, err := n.Replica().Current(ctx, "/gone")
			return err == nil && !found
		})
	}
}

func TestNode_PrivateNetwork(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	psk := func(b byte) []byte { k := make([]byte, 32); k[0] = b; return k }
	cfg := func(key []byte) node.Config {
		c := testConfig(t, t.TempDir())
		c.Backend, c.PSK = node.BackendMemory, key
		return c
	}
	a := startNode(t, cfg(psk(1)))
	same := startNode(t, cfg(psk(1)))
	other := startNode(t, cfg(psk(2)))
	if err := same.Connect(ctx, a.Addrs()[0].String()); err != nil {
		t.Fatalf("peer with the same key: %v", err)
	}
	if err := other.Connect(ctx, a.Addrs()[0].String()); err == nil {
		t.Fatal("a peer with another key connected to the private network")
	}
	bad := node.DefaultConfig()
	bad.PSK = psk(1) // the default listens on QUIC too
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "QUIC") {
		t.Fatalf("PSK with a QUIC listen address: %v", err)
	}
}
