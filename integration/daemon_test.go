// Package integration runs peerstate as its users do: real binaries, real
// sockets, several daemons on loopback with their own data directories.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain removes the binary the tests built, so runs leave nothing in
// the temporary directory.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// binary builds cmd/peerstate once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "peerstate-bin")
		if err != nil {
			buildErr = err
			return
		}
		binDir, binPath = dir, filepath.Join(dir, "peerstate")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/peerstate").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// daemon is one running `peerstate run`.
type daemon struct {
	t     *testing.T
	cmd   *exec.Cmd
	data  string
	id    string
	addrs []string
	api   string
	log   *lockedBuffer // its stderr
	done  chan struct{}
	exit  int // once done
}

// startDaemon runs `peerstate run` on data with the given bootstrap peers
// and waits until it prints its API address.
func startDaemon(t *testing.T, data string, bootstrap ...string) *daemon {
	t.Helper()
	return startDaemonListen(t, data, "/ip4/127.0.0.1/tcp/0", bootstrap...)
}

// startDaemonListen is startDaemon on a given p2p listen address.
func startDaemonListen(t *testing.T, data, listen string, bootstrap ...string) *daemon {
	t.Helper()
	args := []string{"run", "--data", data, "--listen", listen, "--api", "127.0.0.1:0", "--mdns=false"}
	for _, b := range bootstrap {
		args = append(args, "--bootstrap", b)
	}
	return startCommand(t, data, exec.Command(binary(t), args...))
}

// startCommand starts cmd, a daemon, and waits until it prints its API
// address.
func startCommand(t *testing.T, data string, cmd *exec.Cmd) *daemon {
	t.Helper()
	d := &daemon{t: t, data: data, log: &lockedBuffer{}, done: make(chan struct{}), cmd: cmd}
	d.cmd.Stderr = d.log
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		defer close(d.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			switch k, v, _ := strings.Cut(line, ": "); k {
			case "id":
				d.id = v
			case "addr":
				d.addrs = append(d.addrs, v)
			case "api":
				d.api = v
				close(ready)
			}
		}
		io.Copy(io.Discard, stdout)
		d.cmd.Wait()
		d.exit = d.cmd.ProcessState.ExitCode()
	}()
	t.Cleanup(func() { d.stop(syscall.SIGKILL) })
	select {
	case <-ready:
	case <-d.done:
		t.Fatalf("daemon exited before it was ready:\n%s", d.log)
	case <-time.After(60 * time.Second):
		t.Fatalf("daemon not ready within 60s:\n%s", d.log)
	}
	return d
}

func (d *daemon) stop(sig syscall.Signal) {
	if d.cmd.Process != nil {
		d.cmd.Process.Signal(sig)
	}
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
}

// cli runs a client command against the daemon and returns stdout and the
// exit status.
func (d *daemon) cli(stdin string, args ...string) (string, int) {
	d.t.Helper()
	cmd := exec.Command(binary(d.t), append([]string{args[0], "--api", d.api}, args[1:]...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &exit):
		return out.String() + errb.String(), exit.ExitCode()
	}
	d.t.Fatalf("%v: %v", args, err)
	return "", -1
}

func (d *daemon) eventually(what string, cond func() bool) {
	d.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			d.t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestDaemons_ReplicateWatchAndRecover(t *testing.T) {
	a := startDaemon(t, t.TempDir())
	b := startDaemon(t, t.TempDir(), a.addrs[0])
	cDir := t.TempDir()
	c := startDaemon(t, cDir, a.addrs[0])

	// A watch on c sees a write made on a.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch := exec.CommandContext(ctx, binary(t), "watch", "--api", c.api, "/app/")
	watchOut, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer watch.Wait()
	lines := make(chan string, 1024) // the reader never blocks: it ends when the watch exits
	go func() {
		sc := bufio.NewScanner(watchOut)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	time.Sleep(300 * time.Millisecond) // let the watch start

	if out, code := a.cli("", "put", "/app/greeting", "hello"); code != 0 || strings.TrimSpace(out) != "1" {
		t.Fatalf("put = %q, exit %d", out, code)
	}
	b.eventually("b reads a's write", func() bool {
		out, code := b.cli("", "get", "/app/greeting")
		return code == 0 && out == "hello"
	})
	select {
	case line := <-lines:
		if !strings.Contains(line, `"/app/greeting"`) || !strings.Contains(line, a.id) {
			t.Fatalf("watch line %q: want the key and origin %s", line, a.id)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("c's watch saw nothing")
	}

	// Replication shows in the daemon's Prometheus metrics.
	resp, err := http.Get("http://" + b.api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(metrics, []byte(`peerstate_gossip_changes_total{event="applied"}`)) {
		t.Fatalf("/metrics lacks the replication counters:\n%.2000s", metrics)
	}

	// get of an absent key exits 3; a stale cas exits 4.
	if _, code := b.cli("", "get", "/app/absent"); code != 3 {
		t.Fatalf("get of an absent key exited %d, want 3", code)
	}
	if out, code := b.cli("", "cas", "/app/greeting", "1", "hi"); code != 0 {
		t.Fatalf("cas with the current version: %q exit %d", out, code)
	}
	if _, code := b.cli("", "cas", "/app/greeting", "1", "again"); code != 4 {
		t.Fatalf("stale cas exited %d, want 4", code)
	}

	// c is killed, misses writes, restarts on its data dir with its peer ID
	// and catches up.
	cID := c.id
	// Writes c acknowledged just before the kill survive it.
	for i := range 20 {
		if _, code := c.cli("", "put", fmt.Sprintf("/app/c/%d", i), "acked"); code != 0 {
			t.Fatalf("put on c exited %d", code)
		}
	}
	c.stop(syscall.SIGKILL)
	if _, code := a.cli("", "put", "/app/missed", "while-c-was-down"); code != 0 {
		t.Fatal("put while c is down failed")
	}
	c2 := startDaemon(t, cDir, a.addrs[0])
	if c2.id != cID {
		t.Fatalf("peer ID changed across restart: %s -> %s", cID, c2.id)
	}
	for i := range 20 {
		if out, code := c2.cli("", "get", fmt.Sprintf("/app/c/%d", i)); code != 0 || out != "acked" {
			t.Fatalf("write acknowledged before SIGKILL lost: /app/c/%d = %q, exit %d", i, out, code)
		}
	}
	c2.eventually("restarted c catches up", func() bool {
		out, code := c2.cli("", "get", "/app/missed")
		return code == 0 && out == "while-c-was-down"
	})
	c2.eventually("restarted c sees b's cas", func() bool {
		out, code := c2.cli("", "get", "/app/greeting")
		return code == 0 && out == "hi"
	})
	out, code := c2.cli("", "status", "--json")
	if code != 0 || !strings.Contains(out, `"id"`) || !strings.Contains(out, "/p2p/"+cID) {
		t.Fatalf("status --json = %q, exit %d", out, code)
	}
}
