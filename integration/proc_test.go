package integration

import (
	"context"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/univrs/peerstate/api"
)

// launch runs `peerstate run` with these flags after a loopback API and
// mDNS off, and waits for its "api:" line. The daemon is killed at the end
// of the test if still running.
func launch(t *testing.T, args ...string) *daemon {
	t.Helper()
	var data string
	for i, a := range args {
		if a == "--data" && i+1 < len(args) {
			data = args[i+1]
		}
	}
	cmd := exec.Command(binary(t), append([]string{"run", "--api", "127.0.0.1:0", "--mdns=false"}, args...)...)
	return startCommand(t, data, cmd)
}

// kill sends SIGKILL and waits for the process to end.
func (d *daemon) kill() { d.stop(syscall.SIGKILL) }

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

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
