package memory_test

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) datastore.Store {
		s := memory.New()
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestTTL(t *testing.T) {
	storetest.RunTTL(t, func(t *testing.T, now func() time.Time) datastore.Store {
		s := memory.New(datastore.WithClock(now))
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func BenchmarkExpiry(b *testing.B) {
	s := memory.New()
	defer s.Close()
	storetest.BenchmarkExpiry(b, s, 20*time.Millisecond)
}
