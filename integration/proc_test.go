package integration

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/univrs/peerstate/api"
)

// launch runs `peerstate run` with exactly these flags (loopback API, no
// mDNS unless they say otherwise) and waits for its "api:" line. The daemon
// is killed at the end of the test if still running.
func launch(t *testing.T, args ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, log: &bytes.Buffer{}, done: make(chan struct{})}
	for i, a := range args {
		if a == "--data" && i+1 < len(args) {
			d.data = args[i+1]
		}
	}
	d.cmd = exec.Command(binary(t), append([]string{"run", "--api", "127.0.0.1:0", "--mdns=false"}, args...)...)
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
			k, v, _ := strings.Cut(sc.Text(), ": ")
			switch k {
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
	}()
	t.Cleanup(func() { d.kill() })
	select {
	case <-ready:
	case <-d.done:
		t.Fatalf("daemon exited before it was ready:\n%s", d.log)
	case <-time.After(60 * time.Second):
		t.Fatalf("daemon not ready within 60s:\n%s", d.log)
	}
	return d
}

// kill sends SIGKILL and waits for the process to end.
func (d *daemon) kill() {
	if d.cmd.Process != nil {
		d.cmd.Process.Kill()
	}
	<-d.done
}

// client returns an API client of the daemon, closed with the test.
func (d *daemon) client() *api.Client {
	d.t.Helper()
	c, err := api.New(d.api, "")
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { c.Close() })
	return c
}

// tcpAddr returns the daemon's loopback TCP multiaddr.
func (d *daemon) tcpAddr() string {
	for _, a := range d.addrs {
		if strings.Contains(a, "/tcp/") && strings.HasPrefix(a, "/ip4/127.0.0.1/") {
			return a
		}
	}
	d.t.Fatalf("no loopback TCP address in %v", d.addrs)
	return ""
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
