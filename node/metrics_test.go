package node_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/univrs/peerstate/node"
)

// scraper serves n's collector over HTTP, as the daemon does at /metrics,
// and returns a function that scrapes it into series → value.
func scraper(t *testing.T, n *node.Node) func() map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(n.Collector())
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	return func() map[string]float64 {
		t.Helper()
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		series := map[string]float64{}
		sc := bufio.NewScanner(strings.NewReader(string(body)))
		for sc.Scan() {
			line := sc.Text()
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			i := strings.LastIndexByte(line, ' ')
			v, err := strconv.ParseFloat(line[i+1:], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			series[line[:i]] = v
		}
		return series
	}
}

// applied sums the batches applied on every path.
func applied(m map[string]float64) float64 {
	var n float64
	for k, v := range m {
		if strings.HasPrefix(k, "peerstate_apply_seconds_count{") {
			n += v
		}
	}
	return n
}

// TestNode_MetricsMove scrapes a real pair: a change written before b
// started reaches b by catch-up and is measured as such, with a's lag at
// least the time b was not there; a later change comes by push, adds to
// the apply histogram and resets the age of a's last change.
func TestNode_MetricsMove(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := startNode(t, testConfig(t, t.TempDir()))
	if _, err := a.Store().Set(ctx, "/m/one", []byte("1")); err != nil {
		t.Fatal(err)
	}
	wrote := time.Now()
	time.Sleep(100 * time.Millisecond) // b is away for a while: the change is that old when it comes
	away := time.Since(wrote)
	cfgB := testConfig(t, t.TempDir())
	cfgB.Bootstrap = []string{a.Addrs()[0].String()}
	b := startNode(t, cfgB)
	scrapeA, scrapeB := scraper(t, a), scraper(t, b)

	lag := `peerstate_peer_lag_seconds{peer="` + a.ID().String() + `"}`
	age := `peerstate_peer_last_change_age_seconds{peer="` + a.ID().String() + `"}`
	var m map[string]float64
	waitFor(t, func() bool {
		m = scrapeB()
		_, ok := m[lag]
		// The key count is the fingerprint's, which may count the
		// change a moment after the catch-up that brought it is recorded.
		return ok && m["peerstate_replicated_keys"] >= 1
	})
	if got := m[`peerstate_apply_seconds_count{path="catchup"}`]; got < 1 {
		t.Errorf("catch-up batches applied = %v, want ≥ 1", got)
	}
	if got := m[lag]; got < away.Seconds() {
		t.Errorf("lag of a change b was away for %v = %vs", away, got)
	}
	for _, want := range []string{"peerstate_peers_connected", "peerstate_store_revision", "peerstate_replicated_keys", "peerstate_data_dir_bytes"} {
		if m[want] < 1 {
			t.Errorf("%s = %v, want ≥ 1", want, m[want])
		}
	}

	// While a is quiet, the age of its last change grows.
	waitFor(t, func() bool { m = scrapeB(); return m[age] >= 1 })
	scraped := time.Now()
	before := applied(m)
	if _, err := a.Store().Set(ctx, "/m/two", []byte("2")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		_, err := b.Store().Get(ctx, "/m/two")
		return err == nil
	})
	m = scrapeB()
	since := time.Since(scraped)
	if got := applied(m); got <= before {
		t.Errorf("batches applied: %v before the write, %v after", before, got)
	}
	// The change arrived after the last scrape, so its age and lag are less
	// than the time since; had the age not been reset it would exceed it.
	if m[age] >= since.Seconds() {
		t.Errorf("age of a's last change = %vs, more than the %v since the write", m[age], since)
	}
	if m[lag] > since.Seconds()+0.001 { // HLC times have millisecond resolution
		t.Errorf("lag of a change made %v ago = %vs", since, m[lag])
	}
	if got := scrapeA()[`peerstate_store_commit_seconds_count{op="set"}`]; got != 2 {
		t.Errorf("a's timed local sets = %v, want 2", got)
	}
}

// TestNode_ReadyFollowsPeers: alone a node is not ready; once a peer is
// connected and caught up with it is; when the peer leaves it is not.
func TestNode_ReadyFollowsPeers(t *testing.T) {
	a := startNode(t, testConfig(t, t.TempDir()))
	if ready, reason := a.Ready(); ready || reason != "no peers connected" {
		t.Fatalf("alone: ready %v, %q", ready, reason)
	}
	cfgB := testConfig(t, t.TempDir())
	cfgB.Bootstrap = []string{a.Addrs()[0].String()}
	b := startNode(t, cfgB)
	waitFor(t, func() bool { ready, _ := a.Ready(); return ready })
	waitFor(t, func() bool { ready, _ := b.Ready(); return ready })
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { ready, reason := a.Ready(); return !ready && reason == "no peers connected" })
}
