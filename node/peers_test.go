package node_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/node"
)

func connected(a, b *node.Node) bool {
	return a.Host().Network().Connectedness(b.ID()) == network.Connected
}

// TestNode_SurvivesBootstrapLoss: b and c enter through a alone, learn each
// other by peer exchange, replicate directly while a is down, and both
// reconnect to a when it comes back on its address.
func TestNode_SurvivesBootstrapLoss(t *testing.T) {
	ctx := context.Background()
	dirA := t.TempDir()
	cfgA := testConfig(t, dirA)
	a := startNode(t, cfgA)
	addrA := a.Addrs()[0].String()
	cfg := func() node.Config {
		c := testConfig(t, t.TempDir())
		c.Bootstrap = []string{addrA}
		c.RedialMin, c.RedialMax = 50*time.Millisecond, 200*time.Millisecond
		return c
	}
	b, c := startNode(t, cfg()), startNode(t, cfg())
	waitFor(t, func() bool { return connected(b, c) && connected(c, b) })

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return !connected(b, a) && !connected(c, a) })
	if _, err := b.Store().Set(ctx, "/while/a/down", []byte("b")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		e, err := c.Store().Get(ctx, "/while/a/down")
		return err == nil && string(e.Value) == "b"
	})

	// a comes back on the same address; both redial it and it catches up.
	cfgA.ListenAddrs = []string{strings.TrimSuffix(addrA, "/p2p/"+a.ID().String())}
	a2 := startNode(t, cfgA)
	waitFor(t, func() bool { return connected(b, a2) && connected(c, a2) })
	waitFor(t, func() bool {
		_, err := a2.Store().Get(ctx, "/while/a/down")
		return err == nil
	})
}

func TestNode_DataDirLocked(t *testing.T) {
	for _, backend := range []string{node.BackendSQLite, node.BackendBadger, node.BackendMemory} {
		t.Run(backend, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(t, dir)
			cfg.Backend = backend
			first := startNode(t, cfg)
			_, err := node.New(context.Background(), cfg)
			if !errors.Is(err, node.ErrDataDirInUse) {
				t.Fatalf("second node on one data dir: %v, want ErrDataDirInUse", err)
			}
			if want := "PID " + strconv.Itoa(os.Getpid()); !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not name %s", err, want)
			}
			if err := first.Close(); err != nil {
				t.Fatal(err)
			}
			again := startNode(t, cfg) // released on Close
			if again.ID() != first.ID() {
				t.Fatal("identity changed")
			}
		})
	}
}

func TestNode_DamagedStoreRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	n := startNode(t, cfg)
	for i := range 10 {
		if _, err := n.Store().Set(context.Background(), fmt.Sprintf("/k/%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "state.db"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("garbage garbage!"), 0)
	f.Close()
	_, err = node.New(context.Background(), cfg)
	var de *node.DamagedError
	if !errors.As(err, &de) || !errors.Is(err, datastore.ErrCorrupt) {
		t.Fatalf("damaged store: %v, want a DamagedError", err)
	}
	for _, want := range []string{"damaged", "peerstate restore", "identity.key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// Refused before the data dir was taken for good: it is free again.
	l, err := node.LockDataDir(dir)
	if err != nil {
		t.Fatalf("data dir still locked after the refused start: %v", err)
	}
	l.Unlock()
}

func TestNode_ListenPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig(t, t.TempDir())
	cfg.ListenAddrs = []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", ln.Addr().(*net.TCPAddr).Port)}
	n, err := node.New(context.Background(), cfg)
	if err == nil {
		n.Close()
		t.Fatal("node started on a taken port")
	}
	if !errors.Is(err, node.ErrAddrInUse) {
		t.Fatalf("taken port: %v, want ErrAddrInUse", err)
	}
}

func TestNode_MDNSFailureIsAWarning(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.MDNS = true
	cfg.StartMDNS = func(func() error) error { return errors.New("no supported interface") }
	var logs logBuffer
	cfg.Gossip.Logger = logs.logger()
	n := startNode(t, cfg)
	if _, err := n.Store().Set(context.Background(), "/ok", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "mDNS discovery off") {
		t.Fatalf("no warning logged:\n%s", logs.String())
	}
}
