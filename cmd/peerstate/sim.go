package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/univrs/peerstate/sim"
)

// simKnobs is what the sim command's flags set: a scenario and its optional
// faults, filled in only when asked for.
type simKnobs struct {
	sc      sim.Scenario
	part    sim.Partition
	restart sim.Restart
	churn   sim.Churn
	skew    sim.Skew
	hostile sim.Hostile
}

// defineSimFlags binds every knob of k to a flag of fs.
func defineSimFlags(fs *flag.FlagSet, k *simKnobs) {
	s := &k.sc
	fs.StringVar(&s.Level, "level", s.Level, "model (real replica code, in-process messages, up to 10,000 peers) or network (real node stack on simulated libp2p)")
	fs.IntVar(&s.Peers, "peers", s.Peers, "number of peers")
	fs.Uint64Var(&s.Seed, "seed", s.Seed, "random seed: the same seed reproduces a run (at the network level all but its traffic counters)")
	fs.StringVar(&s.Store, "store", s.Store, "network level: the peers' store, memory or sqlite")
	fs.StringVar(&s.Workload, "workload", s.Workload, "mixed, peers (/peers/{id}/info and reputation), topics (log appends) or cas (hot /workloads keys)")
	fs.IntVar(&s.Writes, "writes", s.Writes, "writes in total")
	fs.TextVar(&s.Window, "window", s.Window, "virtual time the writes are spread over")
	fs.IntVar(&s.Writers, "writers", s.Writers, "peers that write (0: all)")
	fs.IntVar(&s.HotKeys, "hot-keys", s.HotKeys, "/workloads keys the CAS writers contend on")
	fs.IntVar(&s.ValueSize, "value-size", s.ValueSize, "bytes per value")
	fs.TextVar(&s.Settle, "settle", s.Settle, "virtual time after the last write and fault before the checks")
	fs.TextVar(&s.Latency, "latency", s.Latency, "one-way link latency")
	fs.TextVar(&s.Jitter, "jitter", s.Jitter, "extra latency, uniform in [0, jitter]")
	fs.IntVar(&s.Bandwidth, "bandwidth", s.Bandwidth, "link bandwidth in bytes per second (0: unlimited at the model level, 100 Mbit/s at the network level)")
	fs.Float64Var(&s.Loss, "loss", s.Loss, "probability a message is lost")
	fs.Float64Var(&s.Duplicate, "dup", s.Duplicate, "probability a message is duplicated")
	fs.Float64Var(&s.Reorder, "reorder", s.Reorder, "probability a message is held back (reordered)")
	fs.TextVar(&s.ReorderDelay, "reorder-delay", s.ReorderDelay, "model level: how long a reordered message is held back, at most")
	fs.TextVar(&s.ClockSkew, "clock-skew", s.ClockSkew, "each peer's clock is off by up to this, either way (at most 30s)")
	fs.IntVar(&s.Fanout, "fanout", s.Fanout, "mesh degree: peers each peer pushes to (network level: connections per peer)")
	fs.TextVar(&s.SyncInterval, "sync-interval", s.SyncInterval, "mean time between a peer's catch-up rounds")
	fs.IntVar(&s.SyncFanout, "sync-fanout", s.SyncFanout, "peers per catch-up round")
	fs.IntVar(&s.Watchers, "watchers", s.Watchers, "model level: peers whose watch stream is checked (the network level checks all)")
	fs.TextVar(&s.Sample, "sample", s.Sample, "interval of the convergence curve")
	fs.TextVar(&k.part.At, "partition-at", k.part.At, "split the peers in two at this time...")
	fs.TextVar(&k.part.Heal, "partition-heal", k.part.Heal, "...and heal at this time (a partition needs both)")
	fs.Float64Var(&k.part.Fraction, "partition-fraction", k.part.Fraction, "fraction of peers on one side (0: half)")
	fs.IntVar(&k.restart.Peers, "restart", k.restart.Peers, "peers that crash and restart with their store")
	fs.TextVar(&k.restart.At, "restart-at", k.restart.At, "when the first crash happens")
	fs.TextVar(&k.restart.Spread, "restart-spread", k.restart.Spread, "the other crashes follow within this")
	fs.TextVar(&k.restart.Down, "restart-down", k.restart.Down, "how long a crashed peer stays down")
	fs.BoolVar(&k.restart.FromBackup, "restart-from-backup", k.restart.FromBackup, "model level: restart from a copy of the store taken --restart-backup before the crash")
	fs.TextVar(&k.restart.Backup, "restart-backup", k.restart.Backup, "age of that backup at the crash")
	fs.IntVar(&k.skew.Ahead, "skew-ahead", k.skew.Ahead, "writers whose clock runs --skew-offset ahead (beyond the allowed skew of a minute: the others take their writes only once within reach)")
	fs.IntVar(&k.skew.Behind, "skew-behind", k.skew.Behind, "writers whose clock runs --skew-offset behind")
	fs.TextVar(&k.skew.Offset, "skew-offset", k.skew.Offset, "how far those clocks are off (the model level needs all clocks within a minute of each other)")
	fs.IntVar(&k.hostile.Peers, "hostile", k.hostile.Peers, "model level: attackers among the last peers, sending tampered, impersonated and replayed changes")
	fs.TextVar(&k.hostile.Every, "hostile-every", k.hostile.Every, "how often each attacker sends (0: 200ms)")
	fs.IntVar(&k.churn.Leave, "churn-leave", k.churn.Leave, "model level: peers that leave for good during the writes")
	fs.IntVar(&k.churn.Join, "churn-join", k.churn.Join, "model level: new, empty peers that join during the writes")
}

func knobsOf(sc sim.Scenario) simKnobs {
	k := simKnobs{sc: sc}
	if sc.Partition != nil {
		k.part = *sc.Partition
	}
	if sc.Restart != nil {
		k.restart = *sc.Restart
	}
	if sc.Churn != nil {
		k.churn = *sc.Churn
	}
	if sc.Skew != nil {
		k.skew = *sc.Skew
	}
	if sc.Hostile != nil {
		k.hostile = *sc.Hostile
	}
	return k
}

// scenario returns k's scenario with the faults that are set.
func (k simKnobs) scenario() sim.Scenario {
	sc := k.sc
	sc.Partition, sc.Restart, sc.Churn, sc.Skew, sc.Hostile = nil, nil, nil, nil, nil
	if k.part.Heal > 0 {
		p := k.part
		sc.Partition = &p
	}
	if k.restart.Peers > 0 {
		r := k.restart
		if r.Down == 0 {
			r.Down = sim.Duration(5 * time.Second)
		}
		sc.Restart = &r
	}
	if k.hostile.Peers > 0 {
		h := k.hostile
		sc.Hostile = &h
	}
	if k.skew.Ahead > 0 || k.skew.Behind > 0 {
		s := k.skew
		sc.Skew = &s
	}
	if k.churn.Leave > 0 || k.churn.Join > 0 {
		c := k.churn
		sc.Churn = &c
	}
	return sc
}

func simCommand() *command {
	c := &command{
		name:    "sim",
		summary: "run a many-peer simulation with faults, check the state and report figures",
		details: `A scenario comes from the flags, or from a TOML or JSON file (--scenario);
flags given with a file override its fields. Time is virtual. The model level
runs the real replica code of every peer over an in-process message layer and
is exactly reproducible from --seed; the network level runs every peer's
replica and gossip over libp2p on a simulated network, in a testing/synctest
bubble (virtual time, as in the test suite). Either level gives the same
outcome figures for the same --seed (at the network level the traffic counters
can differ a little: see sim.Figures.Outcome).

After the run the checks compare every peer's state fingerprint, look for lost
acknowledged writes and deleted keys come back, and verify watch streams; the
exit status is 1 if a check failed. The report is a table, or JSON with --json;
--plot FILE.svg or FILE.png draws the latency distribution and convergence.

Example:
  peerstate sim --peers 200 --loss 0.1 --dup 0.05 --reorder 0.05 \
      --partition-at 4s --partition-heal 8s --plot sim.svg`,
	}
	c.setup = func(m *Main, fs *flag.FlagSet) runner {
		k := knobsOf(sim.DefaultScenario())
		defineSimFlags(fs, &k)
		file := fs.String("scenario", "", "read the scenario from this .toml or .json file")
		asJSON := fs.Bool("json", false, "print the report as JSON")
		plotFile := fs.String("plot", "", "write the figures to this .svg or .png file")
		quiet := fs.Bool("quiet", false, "no progress bar")
		return func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef(c, "sim takes no arguments")
			}
			if *file != "" {
				sc, err := sim.LoadScenario(*file)
				if err != nil {
					return err
				}
				fk := knobsOf(sc)
				ffs := flag.NewFlagSet("", flag.ContinueOnError)
				defineSimFlags(ffs, &fk)
				var setErr error
				fs.Visit(func(f *flag.Flag) {
					if ffs.Lookup(f.Name) != nil {
						setErr = errors.Join(setErr, ffs.Set(f.Name, f.Value.String()))
					}
				})
				if setErr != nil {
					return setErr
				}
				k = fk
			}
			var format string
			if *plotFile != "" {
				var err error
				if format, err = sim.PlotFormat(*plotFile); err != nil {
					return usagef(c, "%v", err)
				}
			}
			sc := k.scenario()
			if err := sc.Validate(); err != nil {
				return usagef(c, "%v", err)
			}
			var opts sim.Options
			var bar *progressbar.ProgressBar
			stopBar := func() {}
			if !*quiet {
				bar = progressbar.NewOptions(1000,
					progressbar.OptionSetWriter(m.Stderr),
					progressbar.OptionSetDescription(fmt.Sprintf("%s, %d peers", sc.Level, sc.Peers)),
					progressbar.OptionClearOnFinish())
				// The run reports its virtual time, from inside a synctest
				// bubble at the network level; the bar follows in real time.
				var permille atomic.Int64
				opts.Progress = func(done, total time.Duration) {
					if total > 0 {
						permille.Store(int64(1000 * done / total))
					}
				}
				stop := make(chan struct{})
				var wg sync.WaitGroup
				wg.Go(func() {
					tick := time.NewTicker(200 * time.Millisecond)
					defer tick.Stop()
					for {
						select {
						case <-stop:
							_ = bar.Finish()
							return
						case <-tick.C:
							_ = bar.Set(int(permille.Load()))
						}
					}
				})
				stopBar = func() { close(stop); wg.Wait() }
			}
			var rep *sim.Report
			var err error
			if sc.Level == sim.LevelNetwork {
				rep, err = sim.RunNetwork(ctx, sc, opts)
			} else {
				rep, err = sim.Run(ctx, sc, opts)
			}
			stopBar()
			if err != nil {
				return err
			}
			if *plotFile != "" {
				if err := writePlotFile(*plotFile, rep, format); err != nil {
					return err
				}
			}
			if *asJSON {
				enc := json.NewEncoder(m.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else if err := sim.WriteTable(m.Stdout, rep); err != nil {
				return err
			}
			if !rep.Checks.Passed() {
				return fmt.Errorf("sim: checks failed: %s", strings.Join(rep.Checks.Failures, "; "))
			}
			return nil
		}
	}
	return c
}

func writePlotFile(name string, rep *sim.Report, format string) error {
	f, err := os.Create(name)
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	if err := sim.WritePlot(f, rep, format); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
