package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/univrs/peerstate/bench"
)

func benchCommand() *command {
	c := &command{
		name:    "bench",
		summary: "run the store benchmarks on every backend side by side, raw SQLite as the reference",
	}
	c.setup = func(m *Main, fs *flag.FlagSet) runner {
		benchtime := fs.Duration("benchtime", time.Second, "target time of each measurement")
		names := fs.String("backends", "memory,sqlite,badger,replica/sqlite,etcd", "comma-separated backends to measure")
		verbose := fs.Bool("v", false, "report each measurement on stderr as it completes (the default when stderr is a terminal)")
		return func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef(c, "bench takes no arguments")
			}
			if *benchtime <= 0 {
				return usagef(c, "-benchtime must be positive")
			}
			var selected []bench.Backend
			all := bench.Backends()
			for _, name := range strings.Split(*names, ",") {
				i := slices.IndexFunc(all, func(b bench.Backend) bool { return b.Name == strings.TrimSpace(name) })
				if i < 0 {
					return usagef(c, "unknown backend %q", name)
				}
				selected = append(selected, all[i])
			}
			var progress func(bench.Result)
			if *verbose || isTerminal(m.Stderr) { // a run takes a minute: show it moving
				progress = func(r bench.Result) {
					fmt.Fprintf(m.Stderr, "%s/%s: %.0f ns/op\n", r.Workload, r.Backend, r.NsPerOp)
				}
			}
			results, err := bench.Table(selected, *benchtime, progress)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(m.Stdout, 0, 8, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "workload\tbackend\tns/op\tops/s\t")
			for _, r := range results {
				fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t\n", r.Workload, r.Backend, r.NsPerOp, r.OpsPerSec)
			}
			return tw.Flush()
		}
	}
	return c
}
