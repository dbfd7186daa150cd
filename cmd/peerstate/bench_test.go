package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/univrs/peerstate/bench"
	"github.com/univrs/peerstate/datastore/storetest"
)

// benchJSON runs a bench suite with --json and decodes its results.
func benchJSON[T any](t *testing.T, args ...string) []T {
	t.Helper()
	r := execute(t, env{}, "", append([]string{"bench", "--quiet", "--json"}, args...)...).want(t, exitOK, "")
	var out struct {
		Suite   string `json:"suite"`
		Results []T    `json:"results"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("--json: %v\n%s", err, r.stdout)
	}
	if out.Suite != args[0] {
		t.Fatalf("suite %q, want %q", out.Suite, args[0])
	}
	return out.Results
}

func TestCLI_BenchLocal(t *testing.T) {
	rows := benchJSON[bench.Result](t, "local", "--backends", "memory,raw-sqlite", "--benchtime", "20x")
	workloads := storetest.Workloads()
	if len(rows) != 2*len(workloads) {
		t.Fatalf("%d rows, want %d: %+v", len(rows), 2*len(workloads), rows)
	}
	for i, r := range rows {
		if r.Workload != workloads[i/2].Name || r.Backend != []string{"memory", "raw-sqlite"}[i%2] {
			t.Errorf("row %d is %s on %s", i, r.Workload, r.Backend)
		}
		if r.NsPerOp <= 0 || r.OpsPerSec <= 0 {
			t.Errorf("%s on %s: %v ns/op, %v ops/s", r.Workload, r.Backend, r.NsPerOp, r.OpsPerSec)
		}
	}

	// The table, with the bar on stderr.
	r := execute(t, env{}, "", "bench", "local", "--backends", "memory", "--benchtime", "5x")
	if r.code != exitOK || !strings.Contains(r.stderr, "bench local") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	for _, w := range []string{"WORKLOAD", "NS/OP", "OPS/S", "CASContended", "Txn5", "SetParallel64", "memory"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("table lacks %s:\n%s", w, r.stdout)
		}
	}
}

func TestCLI_BenchReplication(t *testing.T) {
	rows := benchJSON[bench.ReplicationResult](t, "replication", "--peers", "2", "--writers", "one,all", "--store", "memory",
		"--rate", "100", "--paced", "300ms", "--sustained", "300ms")
	if len(rows) != 8 {
		t.Fatalf("%d rows, want 8: %+v", len(rows), rows)
	}
	for i, r := range rows {
		wantSystem := []string{bench.SystemPeerstate, bench.SystemRawPubsub}[i%2]
		wantMode := []string{bench.ModePaced, bench.ModeSustained}[i/2%2]
		if r.System != wantSystem || r.Mode != wantMode || r.Peers != 2 || r.Writers != 1+i/4 {
			t.Errorf("row %d: %+v", i, r)
		}
		if r.Writes <= 0 || r.WritesPerSec <= 0 || r.P50Ms <= 0 || r.P99Ms < r.P50Ms ||
			r.BytesPerWritePerReceiver <= 0 || r.PayloadBytesPerWrite <= 0 {
			t.Errorf("row %d has a zero figure: %+v", i, r)
		}
	}
}

func TestCLI_BenchCatchup(t *testing.T) {
	rows := benchJSON[bench.CatchupResult](t, "catchup", "--missed", "300", "--join", "1,2", "--store", "memory", "--value-size", "64")
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2: %+v", len(rows), rows)
	}
	for i, r := range rows {
		if r.Missed != 300 || r.Join != i+1 || r.Syncs < 1 {
			t.Errorf("row %d: %+v", i, r)
		}
		// Every entry arrives at least once, with its key, value and more.
		if r.Millis <= 0 || r.DataBytes != 300*int64(len("/join/key-00000000")+64) || r.BytesReceived < r.DataBytes ||
			r.Ratio < 1 {
			t.Errorf("row %d: %+v", i, r)
		}
	}
}

func TestCLI_BenchScale(t *testing.T) {
	rows := benchJSON[bench.ScaleResult](t, "scale", "--sizes", "300,1k", "--backends", "memory,sqlite", "--benchtime", "20x")
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4: %+v", len(rows), rows)
	}
	for i, r := range rows {
		if r.Keys != []int{300, 1000}[i/2] || r.Backend != []string{"memory", "sqlite"}[i%2] {
			t.Errorf("row %d: %+v", i, r)
		}
		if r.GetNs <= 0 || r.SetNs <= 0 || r.ListNs <= 0 || r.LoadSeconds <= 0 {
			t.Errorf("row %d has a zero figure: %+v", i, r)
		}
		if r.Backend == "sqlite" && r.DiskBytesPerKey < 100 { // each key holds a 100-byte value
			t.Errorf("sqlite: %v disk bytes per key", r.DiskBytesPerKey)
		}
	}
	r := execute(t, env{}, "", "bench", "--quiet", "--markdown", "scale", "--sizes", "300", "--backends", "memory", "--benchtime", "5x").want(t, exitOK, "")
	if !strings.Contains(r.stdout, "| backend | keys |") || !strings.Contains(r.stdout, "| memory |") {
		t.Errorf("markdown table:\n%s", r.stdout)
	}
}

func TestCLI_BenchUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{nil, "want a suite"},
		{[]string{"everything"}, "unknown suite"},
		{[]string{"local", "scale"}, "unexpected argument"},
		{[]string{"local", "--backends", "nope"}, "unknown backend"},
		{[]string{"local", "--benchtime", "0s"}, "--benchtime"},
		{[]string{"local", "--benchtime", "0x"}, "--benchtime"},
		{[]string{"local", "--peers", "3"}, "--peers applies to bench replication"},
		{[]string{"scale", "--missed", "3"}, "--missed applies to bench catchup"},
		{[]string{"local", "--json", "--markdown"}, "exclude"},
		{[]string{"replication", "--peers", "1"}, "1 peers"},
		{[]string{"replication", "--peers", "x"}, "--peers"},
		{[]string{"replication", "--writers", "some"}, "writers"},
		{[]string{"replication", "--store", "etcd"}, "store"},
		{[]string{"replication", "--rate", "0"}, "rate"},
		{[]string{"replication", "--sustained", "0s"}, "durations"},
		{[]string{"catchup", "--missed", "0"}, "--missed"},
		{[]string{"catchup", "--join", "0"}, "--join"},
		{[]string{"scale", "--sizes", "10"}, "10 keys"},
		{[]string{"scale", "--sizes", ""}, "no count"},
		{[]string{"scale", "--backends", "raw-sqlite"}, "unknown backend"},
	} {
		execute(t, env{}, "", append([]string{"bench"}, c.args...)...).want(t, exitUsage, c.msg)
	}
	r := execute(t, env{}, "", "help", "bench").want(t, exitOK, "")
	for _, s := range append(benchSuites, "--sizes", "--peers", "--missed", "--json", "--benchtime") {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("help bench lacks %s", s)
		}
	}
}

func TestParseCounts(t *testing.T) {
	got, err := parseCounts("sizes", "10k, 100k,1M,7")
	if err != nil || len(got) != 4 || got[0] != 10_000 || got[1] != 100_000 || got[2] != 1_000_000 || got[3] != 7 {
		t.Fatalf("parseCounts = %v, %v", got, err)
	}
	for _, bad := range []string{"", ",", "k", "-1", "1.5k", "0", "1G"} {
		if _, err := parseCounts("sizes", bad); err == nil {
			t.Errorf("parseCounts(%q): no error", bad)
		}
	}
}
