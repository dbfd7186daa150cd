package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/jedib0t/go-pretty/v6/table"
	"github.com/jedib0t/go-pretty/v6/text"
	"github.com/schollz/progressbar/v3"

	"github.com/univrs/peerstate/bench"
)

// benchSuites are the bench command's suites, in help order.
var benchSuites = []string{"local", "replication", "catchup", "scale"}

// benchFlagSuites says which suites each suite-specific flag applies to.
var benchFlagSuites = map[string][]string{
	"benchtime":  {"local", "scale"},
	"backends":   {"local", "scale"},
	"peers":      {"replication"},
	"writers":    {"replication"},
	"rate":       {"replication"},
	"paced":      {"replication"},
	"sustained":  {"replication"},
	"store":      {"replication", "catchup"},
	"value-size": {"replication", "catchup"},
	"missed":     {"catchup"},
	"join":       {"catchup"},
	"sizes":      {"scale"},
}

func benchCommand() *command {
	c := &command{
		name:    "bench",
		args:    "local|replication|catchup|scale",
		summary: "run the benchmark suites side by side (the same code as go test -bench ./bench/)",
		details: `Each suite measures peerstate next to its references in one run and prints a
table (--json: one JSON document); a progress bar on stderr counts the rows
as they complete (--quiet: none; -v: a line per row instead). "peerstate
bench" without a suite is a usage error (exit status 2) naming the suites.

  local        Get, a 100-entry List page, Set by 1 and by 64 writers, CAS by
               16 writers contending for 4 keys, a transaction of 5 sets: on
               every backend and the replication layer, next to etcd
               (in-process) and raw SQLite and Badger with the same durability
               (--backends, --benchtime)
  replication  real libp2p hosts on loopback in this process, one and all
               writing: paced write-to-visible p50/p99, sustained writes/s
               visible everywhere and their lag, bytes per write per receiver;
               the same load on a plain pubsub topic of the same peers beside
               (--peers, --writers, --rate, --paced, --sustained, --store)
  catchup      a fresh peer joining 1 and 4 peers after writes it missed: time
               until it has them all, bytes received next to the data's size
               (--missed, --join, --store)
  scale        Get, Set and a List page on stores of 10k, 100k and 1M keys;
               Go heap and disk per key (--sizes, --backends, --benchtime)

Counts take k and M: --sizes 10k,100k,1M. A quick run:
  peerstate bench local --backends sqlite,replica/sqlite,etcd,raw-sqlite --benchtime 200ms
  peerstate bench replication --peers 3 --paced 1s --sustained 1s
  peerstate bench catchup --missed 1k --join 1
  peerstate bench scale --sizes 1k,10k --backends sqlite --benchtime 100ms`,
		maxArgs: 1,
	}
	c.setup = func(m *Main, fs *flag.FlagSet) runner {
		rd, cd := bench.DefaultReplicationConfig(), bench.DefaultCatchupConfig()
		asJSON := fs.Bool("json", false, "print the results as JSON")
		markdown := fs.Bool("markdown", false, "print the table as Markdown")
		quiet := fs.Bool("quiet", false, "no progress bar")
		verbose := fs.Bool("v", false, "report each row on stderr as it completes, instead of the bar")
		benchtime := fs.String("benchtime", "1s", "target of each measurement: a duration, or a count of operations like 100x")
		backends := fs.String("backends", "", "comma-separated backends to measure (default: local all, with raw-sqlite and raw-badger; scale all but etcd)")
		peers := fs.String("peers", joinInts(rd.Peers), "network sizes, comma-separated")
		writers := fs.String("writers", strings.Join(rd.Writers, ","), "who writes: one, all, or both comma-separated")
		rate := fs.Int("rate", rd.Rate, "paced writes per second, in all")
		paced := fs.Duration("paced", rd.Paced, "how long the paced writes last")
		sustained := fs.Duration("sustained", rd.Sustained, "how long the writers write as fast as they can")
		store := fs.String("store", rd.Store, "the peers' store: sqlite or memory")
		valueSize := fs.Int("value-size", rd.ValueSize, "bytes per value")
		missed := fs.String("missed", joinInts(cd.Missed), "writes the fresh peer missed, comma-separated")
		join := fs.String("join", joinInts(cd.Join), "peers the fresh peer connects to, comma-separated")
		sizes := fs.String("sizes", joinInts(bench.DefaultScaleSizes), "keys in the store, comma-separated")
		return func(ctx context.Context, args []string) error {
			if len(args) == 0 {
				return usagef(c, "want a suite: %s", strings.Join(benchSuites, ", "))
			}
			suite := args[0]
			if !slices.Contains(benchSuites, suite) {
				return usagef(c, "unknown suite %q: want %s", suite, strings.Join(benchSuites, ", "))
			}
			var misplaced error
			fs.Visit(func(f *flag.Flag) {
				if only, ok := benchFlagSuites[f.Name]; ok && !slices.Contains(only, suite) && misplaced == nil {
					misplaced = usagef(c, "--%s applies to bench %s, not %s", f.Name, strings.Join(only, " and "), suite)
				}
			})
			if misplaced != nil {
				return misplaced
			}
			if *asJSON && *markdown {
				return usagef(c, "--json and --markdown exclude each other")
			}
			if err := bench.ValidBenchtime(*benchtime); err != nil {
				return usagef(c, "--benchtime %q: want a duration like 1s or a count like 100x", *benchtime)
			}
			run := benchRun{m: m, suite: suite, json: *asJSON, markdown: *markdown, quiet: *quiet, verbose: *verbose}
			switch suite {
			case "local":
				sel, err := selectContenders(c, *backends)
				if err != nil {
					return err
				}
				return run.local(ctx, sel, *benchtime)
			case "replication":
				cfg := rd
				cfg.Writers = splitList(*writers)
				cfg.Rate, cfg.Paced, cfg.Sustained, cfg.Store, cfg.ValueSize = *rate, *paced, *sustained, *store, *valueSize
				var err error
				if cfg.Peers, err = parseCounts("peers", *peers); err != nil {
					return usagef(c, "%v", err)
				}
				if err := cfg.Validate(); err != nil {
					return usagef(c, "%s", strings.TrimPrefix(err.Error(), "bench: replication: "))
				}
				return run.replication(ctx, cfg)
			case "catchup":
				cfg := cd
				cfg.Store, cfg.ValueSize = *store, *valueSize
				var err error
				if cfg.Missed, err = parseCounts("missed", *missed); err != nil {
					return usagef(c, "%v", err)
				}
				if cfg.Join, err = parseCounts("join", *join); err != nil {
					return usagef(c, "%v", err)
				}
				if err := cfg.Validate(); err != nil {
					return usagef(c, "%s", strings.TrimPrefix(err.Error(), "bench: catchup: "))
				}
				return run.catchup(ctx, cfg)
			default:
				cfg := bench.ScaleConfig{Benchtime: *benchtime, Backends: bench.ScaleBackends()}
				if *backends != "" {
					all := bench.Backends()
					cfg.Backends = nil
					for _, name := range splitList(*backends) {
						i := slices.IndexFunc(all, func(b bench.Backend) bool { return b.Name == name })
						if i < 0 {
							return usagef(c, "unknown backend %q for scale: want %s", name, backendNames(all))
						}
						cfg.Backends = append(cfg.Backends, all[i])
					}
				}
				var err error
				if cfg.Sizes, err = parseCounts("sizes", *sizes); err != nil {
					return usagef(c, "%v", err)
				}
				if err := cfg.Validate(); err != nil {
					return usagef(c, "%s", strings.TrimPrefix(err.Error(), "bench: scale: "))
				}
				return run.scale(ctx, cfg)
			}
		}
	}
	return c
}

func selectContenders(c *command, names string) ([]bench.Contender, error) {
	all := bench.Contenders()
	if names == "" {
		return all, nil
	}
	var out []bench.Contender
	for _, name := range splitList(names) {
		i := slices.IndexFunc(all, func(x bench.Contender) bool { return x.Name == name })
		if i < 0 {
			var known []string
			for _, x := range all {
				known = append(known, x.Name)
			}
			return nil, usagef(c, "unknown backend %q: want %s", name, strings.Join(known, ", "))
		}
		out = append(out, all[i])
	}
	return out, nil
}

func backendNames(bs []bench.Backend) string {
	var names []string
	for _, b := range bs {
		names = append(names, b.Name)
	}
	return strings.Join(names, ", ")
}

// parseCounts parses a comma-separated list of positive counts, each
// possibly with a k (thousand) or M (million) suffix.
func parseCounts(flagName, s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		mult, digits := 1, f
		if d, ok := strings.CutSuffix(f, "k"); ok {
			mult, digits = 1000, d
		} else if d, ok := strings.CutSuffix(f, "M"); ok {
			mult, digits = 1_000_000, d
		}
		n, err := strconv.Atoi(digits)
		if err != nil || n < 1 || n > 1<<40/mult {
			return nil, fmt.Errorf("--%s: %q is not a positive count", flagName, f)
		}
		out = append(out, n*mult)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--%s: no count given", flagName)
	}
	return out, nil
}

func joinInts(ns []int) string {
	var s []string
	for _, n := range ns {
		s = append(s, strconv.Itoa(n))
	}
	return strings.Join(s, ",")
}

// benchRun prints one suite's progress and results.
type benchRun struct {
	m              *Main
	suite          string
	json, markdown bool
	quiet, verbose bool
	bar            *progressbar.ProgressBar
}

// progress starts the bar over rows and returns what reports each row
// (line: its summary for -v).
func (r *benchRun) progress(rows int) func(line string) {
	switch {
	case r.verbose:
		return func(line string) { fmt.Fprintf(r.m.Stderr, "bench %s: %s\n", r.suite, line) }
	case r.quiet:
		return func(string) {}
	}
	r.bar = progressbar.NewOptions(rows,
		progressbar.OptionSetWriter(r.m.Stderr),
		progressbar.OptionSetDescription("bench "+r.suite),
		progressbar.OptionShowCount(),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionClearOnFinish())
	_ = r.bar.RenderBlank()
	return func(string) { _ = r.bar.Add(1) }
}

func (r *benchRun) done() {
	if r.bar != nil {
		_ = r.bar.Finish()
		_ = r.bar.Exit()
	}
}

// benchOutput is what --json prints.
type benchOutput struct {
	Suite   string `json:"suite"`
	Results any    `json:"results"`
}

// print writes the results: JSON, or the table t (columns header).
func (r *benchRun) print(results any, title string, header table.Row, rows []table.Row) error {
	if r.json {
		enc := json.NewEncoder(r.m.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(benchOutput{Suite: r.suite, Results: results})
	}
	t := table.NewWriter()
	t.SetTitle(title)
	t.AppendHeader(header)
	t.AppendRows(rows)
	right := make([]table.ColumnConfig, len(header))
	for i := range header {
		right[i] = table.ColumnConfig{Number: i + 1, Align: alignOf(rows, i)}
	}
	t.SetColumnConfigs(right)
	var out string
	if r.markdown {
		out = t.RenderMarkdown()
	} else {
		out = t.Render()
	}
	_, err := io.WriteString(r.m.Stdout, out+"\n")
	return err
}

// alignOf right-aligns a column of numbers.
func alignOf(rows []table.Row, col int) text.Align {
	for _, row := range rows {
		if s, ok := row[col].(string); ok {
			if _, err := strconv.ParseFloat(strings.TrimSuffix(strings.ReplaceAll(s, ",", ""), "%"), 64); err != nil {
				return text.AlignLeft
			}
		}
	}
	return text.AlignRight
}

func (r *benchRun) local(ctx context.Context, sel []bench.Contender, benchtime string) error {
	report := r.progress(bench.TableRows(sel))
	results, err := bench.Table(ctx, sel, benchtime, func(x bench.Result) {
		report(fmt.Sprintf("%s on %s: %.0f ns/op", x.Workload, x.Backend, x.NsPerOp))
	})
	r.done()
	if err != nil {
		return err
	}
	var rows []table.Row
	for _, x := range results {
		conflicts := ""
		if x.Workload == "CASContended" {
			conflicts = fmt.Sprintf("%.2f", x.ConflictsPerOp)
		}
		rows = append(rows, table.Row{x.Workload, x.Backend, num(x.NsPerOp), num(x.OpsPerSec), conflicts})
	}
	return r.print(results, "peerstate bench local (benchtime "+benchtime+")",
		table.Row{"workload", "backend", "ns/op", "ops/s", "conflicts/op"}, rows)
}

func (r *benchRun) replication(ctx context.Context, cfg bench.ReplicationConfig) error {
	report := r.progress(bench.ReplicationRows(cfg))
	results, err := bench.Replication(ctx, cfg, func(x bench.ReplicationResult) {
		report(fmt.Sprintf("%s, %d peers, %d writing, %s: %.0f writes/s, p99 %.1f ms", x.System, x.Peers, x.Writers, x.Mode, x.WritesPerSec, x.P99Ms))
	})
	r.done()
	if err != nil {
		return err
	}
	var rows []table.Row
	for _, x := range results {
		rows = append(rows, table.Row{x.Peers, x.Writers, x.Mode, x.System, x.Writes, num(x.WritesPerSec),
			fmt.Sprintf("%.1f", x.P50Ms), fmt.Sprintf("%.1f", x.P99Ms), x.Lost,
			num(x.BytesPerWritePerReceiver), num(x.PayloadBytesPerWrite)})
	}
	title := fmt.Sprintf("peerstate bench replication (%s stores, %d B values, paced %d writes/s for %v, sustained %v)",
		cfg.Store, cfg.ValueSize, cfg.Rate, cfg.Paced, cfg.Sustained)
	return r.print(results, title, table.Row{"peers", "writers", "mode", "system", "writes", "writes/s visible",
		"p50 ms", "p99 ms", "lost", "B/write/receiver", "payload B/write"}, rows)
}

func (r *benchRun) catchup(ctx context.Context, cfg bench.CatchupConfig) error {
	report := r.progress(bench.CatchupRows(cfg))
	results, err := bench.Catchup(ctx, cfg, func(x bench.CatchupResult) {
		report(fmt.Sprintf("%d missed, joining %d: %.0f ms, %.2f× the data", x.Missed, x.Join, x.Millis, x.Ratio))
	})
	r.done()
	if err != nil {
		return err
	}
	var rows []table.Row
	for _, x := range results {
		rows = append(rows, table.Row{x.Missed, x.Join, num(x.Millis), num(float64(x.DataBytes)), num(float64(x.BytesReceived)),
			fmt.Sprintf("%.2f", x.Ratio), x.Syncs})
	}
	title := fmt.Sprintf("peerstate bench catchup (%s stores, %d B values)", cfg.Store, cfg.ValueSize)
	return r.print(results, title, table.Row{"missed", "joining", "ms", "data B", "received B", "received/data", "catch-ups"}, rows)
}

func (r *benchRun) scale(ctx context.Context, cfg bench.ScaleConfig) error {
	report := r.progress(bench.ScaleRows(cfg))
	results, err := bench.Scale(ctx, cfg, func(x bench.ScaleResult) {
		report(fmt.Sprintf("%s at %d keys: get %.0f ns, set %.0f ns", x.Backend, x.Keys, x.GetNs, x.SetNs))
	})
	r.done()
	if err != nil {
		return err
	}
	var rows []table.Row
	for _, x := range results {
		rows = append(rows, table.Row{x.Backend, x.Keys, num(x.GetNs), num(x.SetNs), num(x.ListNs),
			num(x.HeapBytesPerKey), num(x.DiskBytesPerKey), fmt.Sprintf("%.1f", x.LoadSeconds)})
	}
	return r.print(results, "peerstate bench scale (benchtime "+cfg.Benchtime+")",
		table.Row{"backend", "keys", "get ns", "set ns", "list page ns", "heap B/key", "disk B/key", "load s"}, rows)
}

// num formats a figure with three significant digits at most after the
// point, thousands unseparated (so that a table cell parses back).
func num(x float64) string {
	switch {
	case x >= 100:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case x >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64)
	}
	return strconv.FormatFloat(x, 'f', 2, 64)
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
