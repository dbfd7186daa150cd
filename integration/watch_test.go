package integration

import (
	"testing"
	"time"

	"github.com/univrs/peerstate/internal/watchcheck"
)

// TestWatch_DaemonStreams runs the watch checker against a running daemon
// through its HTTP API: live, resumed and List-then-Watch streams, over
// real sockets, under concurrent transactions.
func TestWatch_DaemonStreams(t *testing.T) {
	d := launch(t, "--data", t.TempDir(), "--listen", "/ip4/127.0.0.1/tcp/0")
	if err := watchcheck.Run(ctxT(t, 2*time.Minute), d.client(), watchcheck.Config{Writers: 4, Txns: 40}); err != nil {
		t.Fatal(err)
	}
}
