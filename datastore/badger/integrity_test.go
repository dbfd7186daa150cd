package badger

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/univrs/peerstate/datastore"
)

// writtenDir returns a closed Badger directory holding n keys.
func writtenDir(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	s, err := OpenConfig(testConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := s.Set(context.Background(), fmt.Sprintf("/k/%03d", i), []byte("value")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestOpen_RefusesDamage(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{"MANIFEST missing", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "MANIFEST")); err != nil {
				t.Fatal(err)
			}
		}},
		{"MANIFEST emptied", func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, "MANIFEST"), 0); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writtenDir(t, 25)
			tt.damage(t, dir)
			s, err := OpenConfig(testConfig(dir))
			if err == nil {
				s.Close()
				t.Fatal("a damaged directory opened")
			}
			if !errors.Is(err, datastore.ErrCorrupt) {
				t.Fatalf("open = %v, want ErrCorrupt", err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

func TestOpen_IntactDirHasEveryKey(t *testing.T) {
	dir := writtenDir(t, 25)
	s := openDir(t, dir)
	p, err := s.List(context.Background(), "/", datastore.ListOptions{KeysOnly: true})
	if err != nil || len(p.Entries) != 25 {
		t.Fatalf("list: %d keys, %v; want 25", len(p.Entries), err)
	}
}
