package node_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/univrs/peerstate/node"
)

// TestNode_BackupUnderWritesRestores takes a backup while writers run and
// restores it into a new data directory with the node's identity: every
// write acknowledged before the backup began is there, and the restored
// node writes under a new generation.
func TestNode_BackupUnderWritesRestores(t *testing.T) {
	for _, backend := range []string{node.BackendSQLite, node.BackendBadger} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			cfg := testConfig(t, dir)
			cfg.Backend = backend
			n := startNode(t, cfg)
			for i := range 100 {
				if _, err := n.Store().Set(ctx, fmt.Sprintf("/before/%03d", i), []byte("v")); err != nil {
					t.Fatal(err)
				}
			}
			gen := n.Replica().Generation()
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // writes during the backup
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := n.Store().Set(ctx, fmt.Sprintf("/during/%d", i), []byte("v")); err != nil {
						t.Error(err)
						return
					}
				}
			}()
			var buf bytes.Buffer
			size, err := n.Backup(ctx, &buf)
			close(stop)
			wg.Wait()
			if err != nil || size != int64(buf.Len()) {
				t.Fatalf("backup: %d bytes (buffer %d), %v", size, buf.Len(), err)
			}
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}

			// A directory with a store is refused; an empty one with the
			// old identity key is restored.
			if _, err := node.Restore(cfg, bytes.NewReader(buf.Bytes())); err == nil || !strings.Contains(err.Error(), "aside") {
				t.Fatalf("restore over a store: %v", err)
			}
			other := cfg
			other.Backend = map[string]string{node.BackendSQLite: node.BackendBadger, node.BackendBadger: node.BackendSQLite}[backend]
			if _, err := node.Restore(other, bytes.NewReader(buf.Bytes())); err == nil || !strings.Contains(err.Error(), "export") {
				t.Fatalf("restore into another backend: %v", err)
			}
			dir2 := t.TempDir()
			copyFile(t, filepath.Join(dir, "identity.key"), filepath.Join(dir2, "identity.key"))
			cfg2 := testConfig(t, dir2)
			cfg2.Backend = ""
			got, err := node.Restore(cfg2, bytes.NewReader(buf.Bytes()))
			if err != nil || got != backend {
				t.Fatalf("restore: %q, %v", got, err)
			}
			cfg2.Backend = backend
			r := startNode(t, cfg2)
			if r.ID() != n.ID() {
				t.Fatalf("identity changed: %s -> %s", n.ID(), r.ID())
			}
			for i := range 100 {
				if _, err := r.Store().Get(ctx, fmt.Sprintf("/before/%03d", i)); err != nil {
					t.Fatalf("/before/%03d: %v", i, err)
				}
			}
			if r.Replica().Generation() <= gen {
				t.Fatalf("restored node's generation %d, not above %d", r.Replica().Generation(), gen)
			}
		})
	}
}

func TestRestore_RefusesGarbage(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	if _, err := node.Restore(cfg, strings.NewReader("hello\n")); err == nil || !strings.Contains(err.Error(), "not a peerstate backup") {
		t.Fatalf("restore of garbage: %v", err)
	}
	if _, err := node.Restore(cfg, strings.NewReader("peerstate-backup 1 sqlite\nnot a database at all, not at all")); err == nil {
		t.Fatal("restore of a damaged snapshot succeeded")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
