package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/univrs/peerstate/datastore"
)

// crashCopy writes n keys to a store and copies its files while it is open,
// as a crash would leave them: data still in the write-ahead log.
func crashCopy(t *testing.T, n int) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range n {
		if _, err := s.Set(context.Background(), fmt.Sprintf("/k/%03d", i), []byte("value")); err != nil {
			t.Fatal(err)
		}
	}
	dst := filepath.Join(t.TempDir(), "state.db")
	for _, suffix := range []string{"", "-wal"} {
		copyFile(t, src+suffix, dst+suffix)
	}
	return dst
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// wantDamaged opens path, expecting ErrCorrupt, and checks the files were
// left as they were.
func wantDamaged(t *testing.T, path string) {
	t.Helper()
	before := [2]string{digest(path), digest(path + "-wal")}
	s, err := Open(path)
	if err == nil {
		p, _ := s.List(context.Background(), "/", datastore.ListOptions{KeysOnly: true})
		s.Close()
		t.Fatalf("a damaged database opened, with %d keys", len(p.Entries))
	}
	if !errors.Is(err, datastore.ErrCorrupt) {
		t.Fatalf("open = %v, want ErrCorrupt", err)
	}
	if datastore.Retryable(err) {
		t.Errorf("a damaged database is reported as retryable")
	}
	if after := [2]string{digest(path), digest(path + "-wal")}; after != before {
		t.Errorf("the refused open changed the files")
	}
	t.Logf("refused: %v", err)
}

func TestOpen_IntactCrashCopyHasEveryKey(t *testing.T) {
	path := crashCopy(t, 25)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := s.List(context.Background(), "/", datastore.ListOptions{KeysOnly: true})
	if err != nil || len(p.Entries) != 25 {
		t.Fatalf("list: %d keys, %v; want 25", len(p.Entries), err)
	}
}

func TestOpen_RefusesDamage(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"database emptied beside its log", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"database missing beside its log", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{"database header overwritten", func(t *testing.T, path string) {
			overwrite(t, path, 0, []byte("not a database.."))
		}},
		{"database cut mid-page", func(t *testing.T, path string) {
			if err := os.Truncate(path, fileSize(t, path)-100); err != nil {
				t.Fatal(err)
			}
		}},
		{"log header overwritten", func(t *testing.T, path string) {
			overwrite(t, path+"-wal", 8, []byte{0, 0, 0, 3})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := crashCopy(t, 25)
			tt.damage(t, path)
			wantDamaged(t, path)
		})
	}
}

// TestOpen_QuickCheckFindsDamagedPages damages pages inside a checkpointed
// database, which only SQLite's own check can see.
func TestOpen_QuickCheckFindsDamagedPages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 3000)
	for i := range 200 {
		if _, err := s.Set(context.Background(), fmt.Sprintf("/k/%03d", i), big); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Checkpoint the log into the database file, so the damage below is in
	// pages SQLite reads from it.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	size := fileSize(t, path)
	if size < 40*4096 {
		t.Fatalf("database only %d bytes", size)
	}
	junk := make([]byte, 4096)
	for i := range junk {
		junk[i] = byte(i*7 + 3)
	}
	for _, page := range []int64{2, 5, 20} {
		overwrite(t, path, page*4096, junk)
	}
	wantDamaged(t, path)
}

// digest is a hash of the file at path, "" if there is none.
func digest(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	h := sha256.Sum256(b)
	return string(h[:])
}

func overwrite(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkOpen measures Open of a 10,000-key database: the file checks and
// quick_check at open are most of it.
func BenchmarkOpen(b *testing.B) {
	path := filepath.Join(b.TempDir(), "state.db")
	s, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := range 100 {
		ops := make([]datastore.Op, 100)
		for j := range ops {
			ops[j] = datastore.OpSet(fmt.Sprintf("/k/%03d/%03d", i, j), make([]byte, 100))
		}
		if _, err := s.Txn(ctx, ops...); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		s, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}
