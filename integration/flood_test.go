package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
)

// vmHWM reads a process's peak resident set size, in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// openFDs counts a process's open file descriptors.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestFlood_BoundedMemoryAndConnections floods one daemon with writes of
// 4 KiB values from 8 clients while 50 watchers follow, most never reading
// (a slow watcher must not make the daemon buffer without bound). Its peak
// RSS stays under a bound and, once the watchers are gone, its open file
// descriptors (the watch connections) return to about where they started
// (the SQLite read pool may have grown to its bound of 4 connections, 2
// files each, in the meantime);
// goroutine leaks are goleak's, in every package's TestMain. Figures:
// writes, watchers, peak RSS.
func TestFlood_BoundedMemoryAndConnections(t *testing.T) {
	const rssBound = 768 << 20
	writesPer := envInt(t, "PEERSTATE_FLOOD_WRITES", 200)
	d := launch(t, "--data", t.TempDir(), "--listen", "/ip4/127.0.0.1/tcp/0")
	c := d.client()
	time.Sleep(500 * time.Millisecond) // let start-up goroutines settle
	base := openFDs(t, d.cmd.Process.Pid)

	ctx, cancel := context.WithCancel(context.Background())
	var watchers []datastore.Watcher
	for i := range 50 {
		w, err := c.Watch(ctx, "/flood/")
		if err != nil {
			t.Fatal(err)
		}
		watchers = append(watchers, w)
		if i%10 == 0 { // a few read everything
			go func() {
				for range w.Events() {
				}
			}()
		}
	}
	value := []byte(strings.Repeat("x", 4<<10))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed error
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range writesPer {
				if _, err := c.Set(ctx, fmt.Sprintf("/flood/%d/%d", g, i%50), value); err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if failed != nil {
		t.Fatal(failed)
	}
	peak := vmHWM(t, d.cmd.Process.Pid)
	for _, w := range watchers {
		w.Close()
	}
	cancel()
	// The client's idle keep-alive connections (one per writer) are not
	// the daemon's to release.
	c.Close()
	deadline := time.Now().Add(30 * time.Second)
	n := openFDs(t, d.cmd.Process.Pid)
	for n > base+10 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		n = openFDs(t, d.cmd.Process.Pid)
	}
	t.Logf("flood: writes=%d watchers=50 (45 never reading) peak RSS=%d MiB open fds %d before, %d after", 8*writesPer, peak>>20, base, n)
	if peak > rssBound {
		t.Errorf("peak RSS %d MiB over the bound of %d MiB", peak>>20, rssBound>>20)
	}
	if n > base+10 {
		t.Errorf("open fds: %d before the flood, %d after its watchers closed", base, n)
	}
}
