package integration

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestDaemons_LogsAndMetrics: with --log-format json every log line is a
// JSON object and peers coming show at info; /metrics has
// the Go and process collectors, store and replication gauges, the commit
// and apply histograms, per-peer catch-up figures and per-writer lag.
func TestDaemons_LogsAndMetrics(t *testing.T) {
	aDir := t.TempDir()
	a := startCommand(t, aDir, exec.Command(binary(t), append(runArgs(aDir), "--log-format", "json")...))
	b := startDaemon(t, t.TempDir(), a.addrs[0])
	if _, code := b.cli("", "put", "/x", "1"); code != 0 {
		t.Fatal("put failed")
	}
	if _, code := a.cli("", "put", "/y", "2"); code != 0 {
		t.Fatal("put failed")
	}
	metrics := func() string {
		resp, err := http.Get("http://" + b.api + "/metrics")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	// b caught up with a when it connected, and a's write reached b.
	b.eventually("b's metrics show the catch-up with a and a's write", func() bool {
		m := metrics()
		return strings.Contains(m, `peerstate_peer_catchup_age_seconds{peer="`+a.id+`"}`) &&
			strings.Contains(m, `peerstate_peer_lag_seconds{peer="`+a.id+`"}`)
	})
	body := metrics()
	for _, want := range []string{
		"go_goroutines ", "process_resident_memory_bytes ",
		"peerstate_peers_connected 1", "peerstate_store_revision ", "peerstate_replicated_keys ",
		"peerstate_data_dir_bytes ", "peerstate_replica_generation ",
		`peerstate_store_commit_seconds_count{op="txn"} 1`, // the API writes in transactions
		`peerstate_peer_catchup_applied{peer="` + a.id + `"}`,
		`peerstate_peer_last_change_age_seconds{peer="` + a.id + `"}`,
		`peerstate_apply_seconds_bucket{path="`, // remote batches applied, by path
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	a.stop(syscall.SIGTERM)
	sawPeer := false
	sc := bufio.NewScanner(strings.NewReader(a.log.String()))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", sc.Text())
		}
		if rec["msg"] == "peer connected" && rec["peer"] == b.id && rec["level"] == "INFO" {
			sawPeer = true
		}
	}
	if !sawPeer {
		t.Errorf("no peer connected line for b in:\n%s", a.log)
	}
}
