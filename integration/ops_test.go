package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer is a daemon's stderr: the process writes it while the test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runToExit runs the binary with args and returns its stderr and exit
// status; it must exit by itself within a minute.
func runToExit(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		return errb.String(), cmd.ProcessState.ExitCode()
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not exit within a minute:\n%s", args, errb.String())
		return "", -1
	}
}

func runArgs(data string) []string {
	return []string{"run", "--data", data, "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0", "--mdns=false"}
}

func TestDaemon_SecondOnOneDataDirRefused(t *testing.T) {
	for _, backend := range []string{"sqlite", "badger"} {
		t.Run(backend, func(t *testing.T) {
			dir := t.TempDir()
			first := startCommand(t, dir, exec.Command(binary(t), append(runArgs(dir), "--backend", backend)...))
			stderr, code := runToExit(t, append(runArgs(dir), "--backend", backend)...)
			want := fmt.Sprintf("data dir in use: %s is used by PID %d", dir, first.cmd.Process.Pid)
			if code != 1 || !strings.Contains(stderr, want) {
				t.Fatalf("second daemon: exit %d, stderr %q; want exit 1 and %q", code, stderr, want)
			}
			// The first is unharmed.
			if out, code := first.cli("", "put", "/still", "here"); code != 0 {
				t.Fatalf("put on the first daemon: %q exit %d", out, code)
			}
		})
	}
}

func TestDaemon_DamagedStoreRefused(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, db string)
	}{
		{"state.db emptied", func(t *testing.T, db string) {
			if err := os.Truncate(db, 0); err != nil {
				t.Fatal(err)
			}
		}},
		// A log cut inside a frame is what a crash leaves, so it opens (up
		// to its last whole commit); a log whose header is overwritten does
		// not.
		{"WAL header overwritten", func(t *testing.T, db string) {
			f, err := os.OpenFile(db+"-wal", os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte{0, 0, 0, 3}, 8); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			d := startDaemon(t, dir)
			for i := range 25 {
				if _, code := d.cli("", "put", fmt.Sprintf("/k/%02d", i), "v"); code != 0 {
					t.Fatal("put failed")
				}
			}
			d.stop(syscall.SIGKILL) // the writes are in the WAL
			db := filepath.Join(dir, "state.db")
			tt.damage(t, db)
			before, _ := os.ReadFile(db + "-wal")
			stderr, code := runToExit(t, runArgs(dir)...)
			if code != 1 || !strings.Contains(stderr, "is damaged, refusing to start") || !strings.Contains(stderr, "peerstate restore") {
				t.Fatalf("damaged store: exit %d, stderr:\n%s", code, stderr)
			}
			if after, _ := os.ReadFile(db + "-wal"); !bytes.Equal(before, after) {
				t.Fatal("the refused start changed the WAL")
			}
			if n := strings.Count(strings.TrimSpace(stderr), "\n"); n > 2 {
				t.Errorf("the refusal takes %d lines:\n%s", n+1, stderr)
			}
		})
	}
}

// TestDaemons_SurviveBootstrapRestart: b and c bootstrap from a; while a is
// down they replicate through each other; when a comes back on its address
// all three reconnect and a catches up.
func TestDaemons_SurviveBootstrapRestart(t *testing.T) {
	aDir := t.TempDir()
	a := startDaemon(t, aDir)
	aAddr := a.addrs[0]
	b := startDaemon(t, t.TempDir(), aAddr)
	c := startDaemon(t, t.TempDir(), aAddr)
	peersOf := func(d *daemon) string {
		out, _ := d.cli("", "peers")
		return out
	}
	b.eventually("b learns c from a", func() bool { return strings.Contains(peersOf(b), c.id) })

	a.stop(syscall.SIGTERM)
	if _, code := b.cli("", "put", "/while/a/down", "from-b"); code != 0 {
		t.Fatal("put on b failed")
	}
	c.eventually("c gets b's write with a down", func() bool {
		out, code := c.cli("", "get", "/while/a/down")
		return code == 0 && out == "from-b"
	})

	listen := strings.TrimSuffix(aAddr, "/p2p/"+a.id)
	a2 := startDaemonListen(t, aDir, listen)
	a2.eventually("b and c reconnect to a", func() bool {
		p := peersOf(a2)
		return strings.Contains(p, b.id) && strings.Contains(p, c.id)
	})
	a2.eventually("a catches up", func() bool {
		out, code := a2.cli("", "get", "/while/a/down")
		return code == 0 && out == "from-b"
	})
}

func TestDaemon_P2PPortInUseRefused(t *testing.T) {
	a := startDaemon(t, t.TempDir())
	listen := strings.TrimSuffix(a.addrs[0], "/p2p/"+a.id)
	dir := t.TempDir()
	stderr, code := runToExit(t, "run", "--data", dir, "--listen", listen, "--api", "127.0.0.1:0", "--mdns=false")
	if code != 1 || !strings.Contains(stderr, "listen address in use") {
		t.Fatalf("taken p2p port: exit %d, stderr %q", code, stderr)
	}
}

func TestDaemon_APIPortInUseStopsBeforeJoining(t *testing.T) {
	a := startDaemon(t, t.TempDir())
	dir := t.TempDir()
	stderr, code := runToExit(t, "run", "--data", dir, "--listen", "/ip4/127.0.0.1/tcp/0", "--api", a.api, "--mdns=false", "--bootstrap", a.addrs[0])
	if code != 1 || !strings.Contains(stderr, "API address "+a.api+": ") || !strings.Contains(stderr, "address already in use") {
		t.Fatalf("taken API port: exit %d, stderr %q", code, stderr)
	}
	if strings.Contains(stderr, "node started") {
		t.Fatalf("the node started before the API port was checked:\n%s", stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "identity.key")); err == nil {
		t.Fatal("the data dir was set up before the API port was checked")
	}
}

// TestDaemon_MDNSUnavailable runs the default "run" (mDNS on) in a network
// namespace with only a loopback interface, where mDNS cannot start: the
// daemon warns and serves. Where the machine allows no user namespaces, it
// runs the default "run" on the host's network instead, where mDNS may or
// may not start, and checks the daemon serves either way.
func TestDaemon_MDNSUnavailable(t *testing.T) {
	dir := t.TempDir()
	var d *daemon
	if out, err := exec.Command("unshare", "-rn", "true").CombinedOutput(); err == nil {
		script := `ip link set lo up && exec "$0" run --data "$1" --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 --log-format json`
		d = startCommand(t, dir, exec.Command("unshare", "-rn", "sh", "-c", script, binary(t), dir))
		// stderr arrives through its own pipe, maybe after the API line.
		d.eventually("the mDNS warning is logged", func() bool {
			return strings.Contains(d.log.String(), "mDNS discovery off")
		})
		// The mDNS library's own complaints come through the daemon's
		// logger: every line is JSON.
		for _, line := range strings.Split(strings.TrimSpace(d.log.String()), "\n") {
			if !json.Valid([]byte(line)) {
				t.Errorf("log line is not JSON: %q", line)
			}
		}
	} else {
		t.Logf("no network namespace (unshare -rn: %v %s): mDNS on the host network", err, out)
		d = startCommand(t, dir, exec.Command(binary(t), "run", "--data", dir, "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"))
		if out, code := d.cli("", "put", "/up", "1"); code != 0 {
			t.Fatalf("put: %q exit %d", out, code)
		}
	}
	d.stop(syscall.SIGTERM)
	if d.exit != 0 {
		t.Fatalf("daemon exited %d:\n%s", d.exit, d.log)
	}
}

func binaryCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	return exec.Command(binary(t), args...)
}
