package sqlite

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/univrs/peerstate/datastore"
)

// TestClose_LeavesEverythingInTheDatabaseFile: a cleanly closed store has
// moved its write-ahead log into state.db, so the database file alone
// holds every key (and a log cut short afterwards loses nothing).
func TestClose_LeavesEverythingInTheDatabaseFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 25 {
		if _, err := s.Set(ctx, fmt.Sprintf("/k/%03d", i), []byte("value")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path + "-wal"); err == nil && st.Size() != 0 {
		t.Fatalf("the log holds %d bytes after a clean close", st.Size())
	}
	only := filepath.Join(t.TempDir(), "state.db")
	copyFile(t, path, only)
	s, err = Open(only)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := s.List(ctx, "/", datastore.ListOptions{KeysOnly: true})
	if err != nil || len(p.Entries) != 25 {
		t.Fatalf("the database file alone: %d keys, %v; want 25", len(p.Entries), err)
	}
}
