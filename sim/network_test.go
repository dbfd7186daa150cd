package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// netScenario is a network-level scenario sized for the suite under -race.
func netScenario(peers int) Scenario {
	sc := DefaultScenario()
	sc.Level = LevelNetwork
	sc.Peers = peers
	sc.Writes = 200
	sc.Window = Duration(4 * time.Second)
	sc.Settle = Duration(6 * time.Second)
	sc.SyncInterval = Duration(3 * time.Second)
	return sc
}

func runNet(t *testing.T, sc Scenario) *Report {
	t.Helper()
	var rep *Report
	synctest.Test(t, func(t *testing.T) {
		var err error
		rep, err = Run(context.Background(), sc, Options{})
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	if !rep.Checks.Passed() {
		t.Fatalf("checks failed: %v %v", rep.Checks.Failures, rep.Checks.WatchErrors)
	}
	t.Logf("%+v", summary(rep))
	return rep
}

// runNetTwice runs a network-level scenario twice, each in its own bubble,
// and checks that both pass and give equal checks, equal figures but for
// the traffic counters (see Figures.Outcome) and byte-equal plots.
func runNetTwice(t *testing.T, sc Scenario) *Report {
	t.Helper()
	a := runNet(t, sc)
	b := runNet(t, sc)
	if !reflect.DeepEqual(a.Figures.Outcome(), b.Figures.Outcome()) || !reflect.DeepEqual(a.Checks, b.Checks) {
		t.Fatalf("same seed, different figures:\n%+v\n%+v", summary(a), summary(b))
	}
	if !reflect.DeepEqual(a.Figures, b.Figures) {
		t.Logf("traffic counters differ between the runs (see Figures.Outcome): %+v", summary(b))
	}
	var pa, pb bytes.Buffer
	if err := WritePlot(&pa, a, FormatSVG); err != nil {
		t.Fatal(err)
	}
	if err := WritePlot(&pb, b, FormatSVG); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pa.Bytes(), pb.Bytes()) {
		t.Fatal("same seed, different plots")
	}
	return a
}

// TestNetwork_100Peers runs the real stack of 100 peers over simulated
// libp2p, with duplicated and reordered broadcasts.
func TestNetwork_100Peers(t *testing.T) {
	// Short, so both runs stay within a few minutes under -race.
	sc := netScenario(100)
	sc.Writes = 100
	sc.Window = Duration(2 * time.Second)
	sc.Settle = Duration(3 * time.Second)
	sc.Duplicate, sc.Reorder = 0.05, 0.05
	if raceEnabled {
		sc.Writes, sc.Window, sc.Settle = 30, Duration(time.Second), Duration(2*time.Second)
	}
	rep := runNetTwice(t, sc)
	f := rep.Figures
	if f.Peers != 100 || f.Acked == 0 || f.MessagesPerUpdatePerPeer == 0 {
		t.Fatalf("figures: %+v", summary(rep))
	}
	// Every write reached every other peer.
	if f.Samples < f.Acked*99*9/10 {
		t.Fatalf("%d visibility samples for %d writes", f.Samples, f.Acked)
	}
}

// TestNetwork_PartitionSQLite splits 12 peers (8 under -race) on SQLite stores in two,
// writes on both sides with lossy broadcasts, heals and checks they
// converge.
func TestNetwork_PartitionSQLite(t *testing.T) {
	sc := netScenario(12)
	if raceEnabled {
		sc.Peers = 8
	}
	sc.Store = "sqlite"
	sc.Writes = 100
	sc.Loss = 0.1
	sc.SyncInterval = Duration(time.Second)
	sc.Settle = Duration(8 * time.Second)
	sc.Window = Duration(6 * time.Second)
	sc.Partition = &Partition{At: Duration(time.Second), Heal: Duration(4 * time.Second)}
	rep := runNetTwice(t, sc)
	f := rep.Figures
	low := 1.0
	for _, p := range f.Curve {
		if p.T > 2 && p.T < 4 {
			low = min(low, p.Converged)
		}
	}
	if low > 0.95 {
		t.Fatalf("convergence stayed at %.2f during the partition", low)
	}
	if f.ConvergeAfterHeal <= 0 {
		t.Fatalf("converge after heal: %v", f.ConvergeAfterHeal)
	}
	if f.Dropped == 0 || f.CatchUpChanges == 0 {
		t.Fatalf("lost broadcasts were not repaired by catch-up: %+v", summary(rep))
	}
}

// TestRunNetwork_Bubble runs a scenario with RunNetwork, as the peerstate
// sim command does, in a child process: its report gives the outcome the
// suite's synctest run gives, so it ran in virtual time too.
func TestRunNetwork_Bubble(t *testing.T) {
	sc := netScenario(8)
	sc.Writes = 40
	sc.Window = Duration(time.Second)
	sc.Settle = Duration(3 * time.Second)
	sc.Loss = 0.1
	sc.Partition = &Partition{At: Duration(500 * time.Millisecond), Heal: Duration(1500 * time.Millisecond)}
	want := runNet(t, sc)

	js, err := json.Marshal(sc)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run", "^$")
	cmd.Env = append(os.Environ(), runNetworkEnv+"="+string(js))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("RunNetwork: %v\n%s", err, stderr.Bytes())
	}
	if bytes.Contains(out, []byte("PASS")) {
		t.Errorf("the test runner's verdict reached standard output:\n%s", out)
	}
	var got Report
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("report: %v\n%s", err, out)
	}
	if !got.Checks.Passed() || !reflect.DeepEqual(got.Checks, want.Checks) {
		t.Fatalf("checks: %+v, want %+v", got.Checks, want.Checks)
	}
	// JSON keeps float64s exactly; nil and empty slices aside.
	g, w := got.Figures.Outcome(), want.Figures.Outcome()
	gj, _ := json.Marshal(g)
	wj, _ := json.Marshal(w)
	if !bytes.Equal(gj, wj) {
		t.Fatalf("RunNetwork and the suite's bubble disagree:\n%s\n%s", gj, wj)
	}
	if got.Resources.Wall <= 0 {
		t.Fatalf("wall time %v", got.Resources.Wall)
	}

	// Inside a running test, RunNetwork says what to do instead.
	if _, err := RunNetwork(context.Background(), sc, Options{}); err == nil || !strings.Contains(err.Error(), "synctest.Test") {
		t.Fatalf("RunNetwork inside a test: %v", err)
	}
}

// TestNetwork_ClockSkew runs two writers with clocks minutes off, one ahead
// and one behind, updating the hot /workloads keys the others create. The
// others leave the clock ahead's writes for later, as stamped beyond the
// allowed skew of a minute (and the clock behind the others' writes), until
// their clocks come within reach; catch-up and repair then bring them. The
// writes converge and none is updated before it was created.
func TestNetwork_ClockSkew(t *testing.T) {
	sc := netScenario(12)
	if raceEnabled {
		sc.Peers = 8
	}
	sc.Writers, sc.Writes = 6, 60
	sc.Workload, sc.HotKeys = WorkloadCAS, 4
	sc.Window = Duration(2 * time.Second)
	sc.Skew = &Skew{Ahead: 1, Behind: 1, Offset: Duration(2 * time.Minute)}
	sc.Settle = Duration(240 * time.Second)
	sc.Sample = Duration(5 * time.Second)
	rep := runNetTwice(t, sc)
	f := rep.Figures
	if f.SkewedUpdates == 0 {
		t.Fatalf("the skewed writers updated nothing: %+v", summary(rep))
	}
	if rep.Checks.BackInTime != 0 {
		t.Fatalf("%d writes updated before they were created", rep.Checks.BackInTime)
	}
	// The clock ahead's writes wait a minute past the allowed skew, and
	// the others' updates of them (stamped after them) a minute more at
	// the clock behind.
	if f.ConvergeAfterWrite < 120 {
		t.Fatalf("converged %.1fs after the last write, before the skewed stamps were in range", f.ConvergeAfterWrite)
	}
}

// TestRun_NetworkOutsideBubble: Run at the network level outside a bubble
// goes to RunNetwork, which in a running test says what to do instead.
func TestRun_NetworkOutsideBubble(t *testing.T) {
	sc := netScenario(4)
	if _, err := Run(context.Background(), sc, Options{}); err == nil || !strings.Contains(err.Error(), "synctest.Test") {
		t.Fatalf("Run outside a bubble: %v", err)
	}
}
