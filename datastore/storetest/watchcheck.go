package storetest

import (
	"testing"

	"github.com/univrs/peerstate/internal/watchcheck"
)

// testWatchChecker runs the shared watch checker: live, resumed and
// List-then-Watch streams under concurrent transactions.
func testWatchChecker(t *testing.T, newStore Factory) {
	s := newStore(t)
	if err := watchcheck.Run(ctxT(t), s, watchcheck.Config{Writers: 4, Txns: 40}); err != nil {
		t.Fatal(err)
	}
}
