package node

import (
	"fmt"
	"testing"
	"time"

	"github.com/univrs/peerstate/gossip"
	"github.com/univrs/peerstate/replica"
)

// However many writers come and go, at most maxWriterSeries keep series of
// their own, the ones heard from most recently.
func TestMetrics_WriterSeriesBounded(t *testing.T) {
	m := newNodeMetrics()
	hlc := replica.HLC(uint64(time.Now().UnixMilli()) << 16)
	for i := range maxWriterSeries + 50 {
		origin := fmt.Sprintf("writer-%03d", i)
		m.sawApply("self", gossip.Applied{Path: gossip.PathPubsub, Changes: []replica.Change{{Key: "/k", Origin: origin, HLC: hlc}}})
		time.Sleep(time.Microsecond) // distinct arrival times
	}
	if len(m.origins) != maxWriterSeries {
		t.Fatalf("%d writers with series, want %d", len(m.origins), maxWriterSeries)
	}
	for _, gone := range []string{"writer-000", "writer-049"} {
		if _, ok := m.origins[gone]; ok {
			t.Fatalf("%s, heard from longest ago, still has series", gone)
		}
	}
	if _, ok := m.origins[fmt.Sprintf("writer-%03d", maxWriterSeries+49)]; !ok {
		t.Fatal("the latest writer has no series")
	}
}
