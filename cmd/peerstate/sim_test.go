package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/univrs/peerstate/sim"
)

func TestCLI_Sim(t *testing.T) {
	dir := t.TempDir()
	plot := filepath.Join(dir, "out.svg")
	r := execute(t, env{}, "", "sim", "--quiet", "--json", "--peers", "12", "--writes", "100", "--window", "2s",
		"--settle", "5s", "--loss", "0.1", "--partition-at", "500ms", "--partition-heal", "1500ms", "--plot", plot).want(t, 0, "")
	var rep sim.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("--json: %v\n%s", err, r.stdout)
	}
	if rep.Scenario.Peers != 12 || rep.Scenario.Partition == nil || rep.Figures.Writes != 100 || !rep.Checks.Passed() {
		t.Fatalf("report: %+v", rep)
	}
	svg, err := os.ReadFile(plot)
	if err != nil || !strings.Contains(string(svg), "<svg") {
		t.Fatalf("plot: %v", err)
	}

	// A scenario file, with a flag overriding one of its fields; a table.
	file := filepath.Join(dir, "s.toml")
	if err := os.WriteFile(file, []byte("peers = 8\nwrites = 50\nwindow = \"1s\"\nsettle = \"4s\"\nseed = 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = execute(t, env{}, "", "sim", "--quiet", "--scenario", file, "--peers", "9").want(t, 0, "")
	for _, want := range []string{"model, 9 peers", "seed 3", "state fingerprints equal", "write to visible p50"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, r.stdout)
		}
	}
}

func TestCLI_SimUsage(t *testing.T) {
	execute(t, env{}, "", "sim", "--peers", "1").want(t, exitUsage, "peers 1")
	execute(t, env{}, "", "sim", "--level", "cloud").want(t, exitUsage, "level")
	execute(t, env{}, "", "sim", "--plot", "out.gif").want(t, exitUsage, "svg")
	execute(t, env{}, "", "sim", "extra").want(t, exitUsage, "unexpected argument")
	execute(t, env{}, "", "sim", "--scenario", "/nonexistent.toml").want(t, exitError, "nonexistent")
	// The network level runs in a synctest bubble of its own, which a
	// running test cannot start (package sim's tests run it in a child).
	execute(t, env{}, "", "sim", "--quiet", "--level", "network", "--peers", "4").want(t, exitError, "inside a test")
	r := execute(t, env{}, "", "help", "sim").want(t, 0, "")
	if !strings.Contains(r.stdout, "virtual time") {
		t.Errorf("help sim does not say the network level runs in virtual time:\n%s", r.stdout)
	}
	for _, knob := range []string{"-peers", "-loss", "-dup", "-reorder", "-partition-at", "-restart", "-churn-leave", "-clock-skew", "-hostile", "-skew-ahead", "-skew-behind", "-skew-offset", "-bandwidth", "-plot", "-json", "-scenario", "-level"} {
		if !strings.Contains(r.stdout, knob) {
			t.Errorf("help sim lacks %s", knob)
		}
	}
}
