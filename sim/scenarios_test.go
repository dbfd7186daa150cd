package sim

import (
	"bytes"
	"context"
	"reflect"
	"testing"
	"time"
)

// suiteScenario is the base of the suite's model scenarios: 50 peers, a
// mixed workload, 20 ms links.
func suiteScenario() Scenario {
	sc := DefaultScenario()
	sc.Writes = 300
	sc.Window = Duration(4 * time.Second)
	sc.Settle = Duration(6 * time.Second)
	if raceEnabled {
		sc.Writes = 120
		sc.Window = Duration(2 * time.Second)
		sc.Settle = Duration(5 * time.Second)
	}
	return sc
}

// runTwice runs sc twice and checks that both runs pass every check and
// give equal figures and equal plots.
func runTwice(t *testing.T, sc Scenario) *Report {
	t.Helper()
	ctx := context.Background()
	a, err := Run(ctx, sc, Options{})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if !a.Checks.Passed() {
		t.Fatalf("checks failed: %v %v", a.Checks.Failures, a.Checks.WatchErrors)
	}
	b, err := Run(ctx, sc, Options{})
	if err != nil {
		t.Fatalf("second run: %v", err)
	}
	if !reflect.DeepEqual(a.Figures, b.Figures) || !reflect.DeepEqual(a.Checks, b.Checks) {
		t.Fatalf("same seed, different figures:\n%+v\n%+v", summary(a), summary(b))
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
	t.Logf("%+v wall %v", summary(a), a.Resources.Wall)
	return a
}

func summary(r *Report) Figures {
	f := r.Figures
	f.Curve, f.Quantiles = nil, nil
	return f
}

func TestModel_SteadyState(t *testing.T) {
	rep := runTwice(t, suiteScenario())
	f := rep.Figures
	if f.Peers != 50 || f.Acked < f.Writes-f.Conflicts || f.Samples == 0 {
		t.Fatalf("figures: %+v", summary(rep))
	}
	// Without faults every write reaches every other peer by push.
	if want := (f.Acked) * 49; f.Samples < want*9/10 {
		t.Fatalf("%d visibility samples, want about %d", f.Samples, want)
	}
	if f.VisibleP50 <= 0 || f.VisibleP99 < f.VisibleP50 || f.ConvergeAfterWrite < 0 {
		t.Fatalf("latency figures: %+v", summary(rep))
	}
}

func TestModel_LossDuplicationReorder(t *testing.T) {
	sc := suiteScenario()
	sc.Loss, sc.Duplicate, sc.Reorder = 0.10, 0.05, 0.05
	rep := runTwice(t, sc)
	f := rep.Figures
	if f.Dropped == 0 || f.Duplicates == 0 || f.CatchUpChanges == 0 {
		t.Fatalf("faults left no trace: %+v", summary(rep))
	}
}

func TestModel_PartitionHeal(t *testing.T) {
	sc := suiteScenario()
	sc.Window = Duration(6 * time.Second)
	sc.Settle = Duration(6 * time.Second)
	sc.Partition = &Partition{At: Duration(1500 * time.Millisecond), Heal: Duration(4500 * time.Millisecond)}
	rep := runTwice(t, sc)
	f := rep.Figures
	// While split, each side misses the other's writes.
	low := 1.0
	for _, p := range f.Curve {
		if p.T > 2.5 && p.T < 4.5 {
			low = min(low, p.Converged)
		}
	}
	if low > 0.9 {
		t.Fatalf("convergence stayed at %.2f during the partition", low)
	}
	if f.ConvergeAfterHeal <= 0 {
		t.Fatalf("converge after heal: %v", f.ConvergeAfterHeal)
	}
}

func TestModel_RestartAfterMissingThousands(t *testing.T) {
	sc := suiteScenario()
	// Fewer peers keep thousands of writes affordable under -race.
	sc.Peers = 20
	if raceEnabled {
		sc.Peers = 8
	}
	sc.Writes = 2400
	sc.Window = Duration(6 * time.Second)
	sc.Settle = Duration(6 * time.Second)
	sc.Restart = &Restart{Peers: 1, At: Duration(300 * time.Millisecond), Down: Duration(5600 * time.Millisecond)}
	rep := runTwice(t, sc)
	f := rep.Figures
	if len(f.Restarted) != 1 {
		t.Fatalf("restarted: %+v", f.Restarted)
	}
	r := f.Restarted[0]
	if r.CatchUpS < 0 || r.CatchUpBytes == 0 {
		t.Fatalf("restarted peer: %+v", r)
	}
	if r.Missed < 2000 {
		t.Fatalf("the restarted peer missed %d writes, want thousands", r.Missed)
	}
}

func TestModel_CASContention(t *testing.T) {
	sc := suiteScenario()
	sc.Workload = WorkloadCAS
	sc.HotKeys = 4
	sc.Writes = 300
	sc.Window = Duration(2 * time.Second)
	if raceEnabled {
		sc.Writes = 150
	}
	rep := runTwice(t, sc)
	f := rep.Figures
	if f.ConcurrentWins == 0 || f.Deletes == 0 {
		t.Fatalf("no contention: %+v", summary(rep))
	}
}

func TestModel_Churn(t *testing.T) {
	sc := suiteScenario()
	sc.Churn = &Churn{Leave: 5, Join: 5}
	rep := runTwice(t, sc)
	if rep.Figures.Peers != 50 {
		t.Fatalf("%d peers at the end, want 50 - 5 + 5", rep.Figures.Peers)
	}
}

// TestModel_RestartFromBackup restarts peers from a copy of their store a
// second old: their new generation keeps their later writes from being
// taken for stale ones, and peers hand back what the backup lacked.
func TestModel_RestartFromBackup(t *testing.T) {
	sc := suiteScenario()
	sc.Peers, sc.Writes = 20, 200
	sc.Restart = &Restart{Peers: 2, At: Duration(time.Second), Down: Duration(2 * time.Second), FromBackup: true, Backup: Duration(time.Second)}
	rep := runTwice(t, sc)
	for _, r := range rep.Figures.Restarted {
		if r.CatchUpS < 0 || r.CatchUpBytes == 0 {
			t.Fatalf("restarted peer: %+v", r)
		}
	}
	if len(rep.Figures.Restarted) != 2 {
		t.Fatalf("restarted: %+v", rep.Figures.Restarted)
	}
}

func TestModel_SeedsDiffer(t *testing.T) {
	sc := suiteScenario()
	sc.Peers, sc.Writes = 10, 100
	a, err := Run(context.Background(), sc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sc.Seed++
	b, err := Run(context.Background(), sc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if reflect.DeepEqual(a.Figures, b.Figures) {
		t.Fatal("two seeds gave the same figures: the seed is not used")
	}
}

// TestModel_ClockSkew runs two writers with clocks off, one 25 s ahead and
// one 25 s behind, updating the hot /workloads keys the others create: the
// writes converge and none is updated before it was created (a write on a
// clock behind the key's creator once was). The model level keeps clocks
// within the allowed skew of each other; TestNetwork_ClockSkew puts them
// minutes apart.
func TestModel_ClockSkew(t *testing.T) {
	sc := suiteScenario()
	sc.Peers, sc.Writers, sc.Writes = 20, 6, 150
	sc.Workload, sc.HotKeys = WorkloadCAS, 4
	sc.Window = Duration(3 * time.Second)
	sc.Skew = &Skew{Ahead: 1, Behind: 1, Offset: Duration(25 * time.Second)}
	rep := runTwice(t, sc)
	f := rep.Figures
	if f.SkewedUpdates == 0 {
		t.Fatalf("the skewed writers updated nothing: %+v", summary(rep))
	}
	if rep.Checks.BackInTime != 0 {
		t.Fatalf("%d writes updated before they were created", rep.Checks.BackInTime)
	}
	sc.Skew.Offset = Duration(time.Minute)
	if err := sc.Validate(); err == nil {
		t.Fatal("the model level took clocks two minutes apart")
	}
}

// TestModel_Hostile runs two attackers among 20 peers, sending tampered,
// impersonated and replayed changes all through the writes: every
// receiver rejects the first two, ignores the replays, and the honest
// state wins everywhere.
func TestModel_Hostile(t *testing.T) {
	sc := suiteScenario()
	sc.Peers, sc.Writers, sc.Writes = 20, 10, 150
	sc.Hostile = &Hostile{Peers: 2, Every: Duration(100 * time.Millisecond)}
	rep := runTwice(t, sc)
	f := rep.Figures
	if f.Attacks == 0 || f.Rejected == 0 {
		t.Fatalf("attacks %d, rejected %d", f.Attacks, f.Rejected)
	}
	// Each attack's tampered and impersonated changes are rejected by
	// every mesh neighbour that receives it.
	if f.Rejected < f.Attacks/3 {
		t.Fatalf("%d attacks, only %d rejected batches", f.Attacks, f.Rejected)
	}
}
