package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// put writes key=value over the HTTP API and reports whether it was
// acknowledged.
func (d *daemon) put(key, value string) bool {
	req, err := http.NewRequest(http.MethodPut, "http://"+d.api+"/v1/kv"+key, strings.NewReader(value))
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// TestDaemon_BackupUnderLoadRestores backs up a daemon while writers keep
// it busy and restores the backup into a new data directory with the same
// identity: every write acknowledged before the backup began is there.
func TestDaemon_BackupUnderLoadRestores(t *testing.T) {
	for _, backend := range []string{"sqlite", "badger"} {
		t.Run(backend, func(t *testing.T) {
			dir := t.TempDir()
			a := startCommand(t, dir, binaryCmd(t, append(runArgs(dir), "--backend", backend)...))
			stop := make(chan struct{})
			var (
				mu    sync.Mutex
				acked []string
				wg    sync.WaitGroup
			)
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						key := fmt.Sprintf("/load/%d/%05d", w, i)
						if a.put(key, "v") {
							mu.Lock()
							acked = append(acked, key)
							mu.Unlock()
						}
					}
				}()
			}
			a.eventually("writes under way", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(acked) >= 200
			})
			mu.Lock()
			before := append([]string(nil), acked...)
			mu.Unlock()
			file := filepath.Join(t.TempDir(), "a.backup")
			out, code := a.cli("", "backup", file)
			close(stop)
			wg.Wait()
			if code != 0 {
				t.Fatalf("backup under load: %q exit %d", out, code)
			}
			a.stop(syscall.SIGTERM)

			dir2 := t.TempDir()
			key, err := os.ReadFile(filepath.Join(dir, "identity.key"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir2, "identity.key"), key, 0o600); err != nil {
				t.Fatal(err)
			}
			if stderr, code := runToExit(t, "restore", "--data", dir2, file); code != 0 {
				t.Fatalf("restore: exit %d: %s", code, stderr)
			}
			b := startCommand(t, dir2, binaryCmd(t, append(runArgs(dir2), "--backend", backend)...))
			if b.id != a.id {
				t.Fatalf("restored node's ID %s, want %s", b.id, a.id)
			}
			keys, code := b.cli("", "ls", "--all", "/load/")
			if code != 0 {
				t.Fatalf("ls exit %d", code)
			}
			have := map[string]bool{}
			for _, k := range strings.Fields(keys) {
				have[k] = true
			}
			for _, k := range before {
				if !have[k] {
					t.Fatalf("%s, acknowledged before the backup began, is not in it (%d of %d keys restored)", k, len(have), len(acked))
				}
			}
			t.Logf("%d writes acknowledged before the backup, %d in it, %d in all", len(before), len(have), len(acked))
		})
	}
}

// TestDaemon_ReadyzFollowsPeers: /healthz is always ok; /readyz is 503
// while the node has no peers, 200 once a peer is connected and caught up
// with, and 503 again when it leaves.
func TestDaemon_ReadyzFollowsPeers(t *testing.T) {
	a := startDaemon(t, t.TempDir())
	status := func(path string) int {
		resp, err := http.Get("http://" + a.api + path)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status("/healthz"); got != http.StatusOK {
		t.Fatalf("/healthz = %d", got)
	}
	if got := status("/readyz"); got != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with no peers = %d, want 503", got)
	}
	b := startDaemon(t, t.TempDir(), a.addrs[0])
	a.eventually("ready with a peer", func() bool { return status("/readyz") == http.StatusOK })
	b.stop(syscall.SIGTERM)
	a.eventually("not ready once the peer left", func() bool { return status("/readyz") == http.StatusServiceUnavailable })
	if got := status("/healthz"); got != http.StatusOK {
		t.Fatalf("/healthz without peers = %d", got)
	}
}

// TestDaemons_RestoredNodeCatchesUp follows the README's restore: a's
// backup is restored into its own directory (the old store moved aside,
// identity.key kept); the restored a keeps its peer ID, gets back from b
// what it wrote after the backup, and its new writes reach b, so the two
// end with one state.
func TestDaemons_RestoredNodeCatchesUp(t *testing.T) {
	dirA := t.TempDir()
	a := startDaemon(t, dirA)
	b := startDaemon(t, t.TempDir(), a.addrs[0])
	get := func(d *daemon, key string) string {
		out, code := d.cli("", "get", key)
		if code != 0 {
			return ""
		}
		return out
	}
	put := func(d *daemon, key, value string) {
		t.Helper()
		if out, code := d.cli("", "put", key, value); code != 0 {
			t.Fatalf("put %s: exit %d: %s", key, code, out)
		}
	}
	put(a, "/r/greeting", "hello")
	file := filepath.Join(t.TempDir(), "a.backup")
	if out, code := a.cli("", "backup", file); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, out)
	}
	put(a, "/r/after", "backup")
	put(a, "/r/greeting", "again")
	b.eventually("b has a's writes after the backup", func() bool {
		return get(b, "/r/after") == "backup" && get(b, "/r/greeting") == "again"
	})
	a.stop(syscall.SIGTERM)

	aside := t.TempDir()
	olds, _ := filepath.Glob(filepath.Join(dirA, "state.db*"))
	for _, f := range olds {
		if err := os.Rename(f, filepath.Join(aside, filepath.Base(f))); err != nil {
			t.Fatal(err)
		}
	}
	if stderr, code := runToExit(t, "restore", "--data", dirA, file); code != 0 {
		t.Fatalf("restore: exit %d: %s", code, stderr)
	}
	a2 := startDaemon(t, dirA, b.addrs[0])
	if a2.id != a.id {
		t.Fatalf("restored node's ID %s, want %s", a2.id, a.id)
	}
	a2.eventually("the restored node gets back what came after its backup", func() bool {
		return get(a2, "/r/after") == "backup" && get(a2, "/r/greeting") == "again"
	})
	put(a2, "/r/new", "from the restored node")
	b.eventually("b has the restored node's new write", func() bool { return get(b, "/r/new") == "from the restored node" })
	fingerprint := func(d *daemon) string {
		out, _ := d.cli("", "status", "--json")
		i := strings.Index(out, `"fingerprint"`)
		if i < 0 {
			return ""
		}
		line, _, _ := strings.Cut(out[i:], "\n")
		return line
	}
	a2.eventually("one state on both", func() bool { f := fingerprint(a2); return f != "" && f == fingerprint(b) })
}
