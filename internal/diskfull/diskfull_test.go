package diskfull

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/badger"
	"github.com/univrs/peerstate/datastore/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// smallDisk mounts a tmpfs of size bytes on a new directory and returns
// it, unmounted again with the test; ok is false (and dir a plain
// directory) when this process may not mount.
func smallDisk(t *testing.T, size int64) (dir string, ok bool) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("PEERSTATE_DISKFULL_NO_MOUNT") != "" { // to run the fallback where mounting works
		t.Log("PEERSTATE_DISKFULL_NO_MOUNT set: using the backend's injected limit")
		return dir, false
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Logf("cannot mount a tmpfs (%v): using the backend's injected limit", err)
		return dir, false
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir, true
}

// reserve fills n bytes of the disk with a file, to free them later.
func reserve(t *testing.T, dir string, n int) string {
	t.Helper()
	path := filepath.Join(dir, "reserve")
	if err := os.WriteFile(path, make([]byte, n), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const valueSize = 16 << 10

// fill writes fresh keys until the store reports storage full, and returns
// what it acknowledged. Any other error fails the test.
func fill(t *testing.T, s datastore.Store, from int) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	acked := map[string][]byte{}
	for i := from; i < from+5000; i++ {
		v := make([]byte, valueSize)
		rand.Read(v)
		key := fmt.Sprintf("/full/%06d", i)
		_, err := s.Set(ctx, key, v)
		if errors.Is(err, datastore.ErrStorageFull) {
			if datastore.Retryable(err) {
				t.Fatalf("storage full is retryable: %v", err)
			}
			if _, err := s.Get(ctx, key); !errors.Is(err, datastore.ErrKeyNotFound) {
				t.Fatalf("the write that failed is visible: %v", err)
			}
			return acked
		}
		if err != nil {
			t.Fatalf("write %d: %v, want success or ErrStorageFull", i, err)
		}
		acked[key] = v
	}
	t.Fatalf("5000 writes of %d bytes and the disk is not full", valueSize)
	return nil
}

// present fails the test unless s holds every acknowledged write.
func present(t *testing.T, s datastore.Store, acked map[string][]byte, when string) {
	t.Helper()
	for k, v := range acked {
		e, err := s.Get(context.Background(), k)
		if err != nil || string(e.Value) != string(v) {
			t.Fatalf("%s: acknowledged %s lost: %v", when, k, err)
		}
	}
}

// writes checks that the store takes writes again.
func writes(t *testing.T, s datastore.Store, acked map[string][]byte) {
	t.Helper()
	for i := range 20 {
		key := fmt.Sprintf("/after/%d", i)
		v := fmt.Appendf(nil, "v%d", i)
		if _, err := s.Set(context.Background(), key, v); err != nil {
			t.Fatalf("write %d after space returned: %v", i, err)
		}
		acked[key] = v
	}
}

func TestDiskFull_SQLite(t *testing.T) {
	dir, mounted := smallDisk(t, 8<<20)
	path := filepath.Join(dir, "state.db")
	cfg := sqlite.DefaultConfig(path)
	var spare string
	if mounted {
		spare = reserve(t, dir, 2<<20)
	} else {
		cfg.MaxPages = 1024 // 4 MiB of 4 KiB pages
	}
	s, err := sqlite.OpenConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	acked := fill(t, s, 0)
	present(t, s, acked, "disk full")
	if mounted { // space returns
		if err := os.Remove(spare); err != nil {
			t.Fatal(err)
		}
	} else {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		cfg.MaxPages = 0
		if s, err = sqlite.OpenConfig(cfg); err != nil {
			t.Fatal(err)
		}
	}
	writes(t, s, acked)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = sqlite.Open(path); err != nil {
		t.Fatal(err)
	}
	present(t, s, acked, "reopened")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil || res != "ok" {
		t.Fatalf("integrity_check: %q %v", res, err)
	}
	t.Logf("disk full: sqlite tmpfs=%v acknowledged=%d lost=0", mounted, len(acked))
}

func TestDiskFull_Badger(t *testing.T) {
	dir, mounted := smallDisk(t, 48<<20)
	cfg := badger.DefaultConfig(filepath.Join(dir, "badger"))
	cfg.MemTableSize = 1 << 20
	cfg.ValueThreshold = 1 << 10
	cfg.BlockCacheSize = 1 << 20
	cfg.MinFreeSpace = 4 << 20
	var spare string
	open := func() *badger.Store {
		t.Helper()
		s, err := badger.OpenConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	var s *badger.Store
	var acked map[string][]byte
	if mounted {
		spare = reserve(t, dir, 16<<20)
		s = open()
		acked = fill(t, s, 0)
	} else {
		// Half the writes with room, then a floor above the free space.
		s = open()
		acked = map[string][]byte{}
		for i := range 50 {
			key := fmt.Sprintf("/full/%06d", i)
			v := fmt.Appendf(nil, "v%d", i)
			if _, err := s.Set(context.Background(), key, v); err != nil {
				t.Fatal(err)
			}
			acked[key] = v
		}
		s.Close()
		cfg.MinFreeSpace = 1 << 62
		s = open()
		for k, v := range fill(t, s, 50) {
			acked[k] = v
		}
	}
	defer func() { s.Close() }()
	present(t, s, acked, "disk full")
	if mounted {
		if err := os.Remove(spare); err != nil {
			t.Fatal(err)
		}
	} else {
		s.Close()
		cfg.MinFreeSpace = 4 << 20
		s = open()
	}
	deadline := time.Now().Add(10 * time.Second)
	for { // the free-space check sees the returned space
		if _, err := s.Set(context.Background(), "/probe", []byte("x")); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	writes(t, s, acked)
	s.Close()
	s = open()
	present(t, s, acked, "reopened")
	t.Logf("disk full: badger tmpfs=%v acknowledged=%d lost=0", mounted, len(acked))
}
