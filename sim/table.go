package sim

import (
	"fmt"
	"io"
	"strings"

	"github.com/dustin/go-humanize"
	"github.com/jedib0t/go-pretty/v6/table"
)

// WriteTable writes a report as a summary table: figures, checks and what
// the run cost.
func WriteTable(w io.Writer, rep *Report) error {
	f, c, s := rep.Figures, rep.Checks, rep.Scenario
	t := table.NewWriter()
	t.SetOutputMirror(w)
	t.SetTitle(fmt.Sprintf("peerstate sim: %s", scenarioLine(s)))
	t.AppendHeader(table.Row{"figure", "value"})
	ms := func(x float64) string { return fmt.Sprintf("%.1f ms", x) }
	secs := func(x float64) string {
		if x < 0 {
			return "never"
		}
		return fmt.Sprintf("%.2f s", x)
	}
	t.AppendRows([]table.Row{
		{"peers at the end", f.Peers},
		{"writes (acknowledged changes)", fmt.Sprintf("%d (%d)", f.Writes, f.Acked)},
		{"keys, deletes, local conflicts", fmt.Sprintf("%d, %d, %d", f.Keys, f.Deletes, f.Conflicts)},
		{"write to visible p50 / p95 / p99", ms(f.VisibleP50) + " / " + ms(f.VisibleP95) + " / " + ms(f.VisibleP99)},
		{"write to visible max, worst peer's p99", ms(f.VisibleMax) + ", " + ms(f.WorstPeerP99)},
		{"messages per update per peer", fmt.Sprintf("%.2f", f.MessagesPerUpdatePerPeer)},
		{"bytes per update per peer", fmt.Sprintf("%.0f", f.BytesPerUpdatePerPeer)},
		{"duplicates received, dropped, rejected", fmt.Sprintf("%d, %d, %d", f.Duplicates, f.Dropped, f.Rejected)},
		{"catch-ups, changes, bytes", fmt.Sprintf("%d, %d, %s", f.CatchUps, f.CatchUpChanges, humanize.IBytes(f.CatchUpBytes))},
		{"converged at (virtual)", secs(f.ConvergedAt)},
		{"converged after the last write", secs(f.ConvergeAfterWrite)},
	})
	if s.Partition != nil {
		t.AppendRow(table.Row{"converged after the heal", secs(f.ConvergeAfterHeal)})
	}
	if s.Hostile != nil {
		t.AppendRow(table.Row{"attacks sent (tampered, forged, replayed)", f.Attacks})
	}
	if s.Skew != nil {
		t.AppendRow(table.Row{"updates by the skewed clocks", f.SkewedUpdates})
	}
	for _, r := range f.Restarted {
		t.AppendRow(table.Row{"restarted " + r.Peer + ": missed, catch-up time, bytes",
			fmt.Sprintf("%d, %s, %s", r.Missed, secs(r.CatchUpS), humanize.IBytes(uint64(r.CatchUpBytes)))})
	}
	t.AppendSeparator()
	check := func(ok bool, detail string) string {
		if ok {
			return "ok " + detail
		}
		return "FAILED " + detail
	}
	t.AppendRows([]table.Row{
		{"state fingerprints equal", check(c.States == 1, fmt.Sprintf("(%d distinct, %s)", c.States, c.Fingerprint))},
		{"acknowledged writes lost", check(c.Lost == 0, fmt.Sprint(c.Lost))},
		{"deleted keys back", check(c.Resurrected == 0, fmt.Sprint(c.Resurrected))},
		{"keys not at their newest write", check(c.Diverged == 0, fmt.Sprint(c.Diverged))},
		{"writes updated before created", check(c.BackInTime == 0, fmt.Sprint(c.BackInTime))},
		{"watch streams ordered, complete", check(len(c.WatchErrors) == 0, fmt.Sprintf("(%d watchers)", c.Watchers))},
	})
	t.AppendSeparator()
	t.AppendRows([]table.Row{
		{"wall time", rep.Resources.Wall.Round(1e6).String()},
		{"peak heap in use", humanize.IBytes(rep.Resources.PeakHeap)},
	})
	t.Render()
	for _, e := range c.WatchErrors {
		if _, err := fmt.Fprintln(w, "watch:", e); err != nil {
			return err
		}
	}
	return nil
}

func scenarioLine(s Scenario) string {
	parts := []string{s.Level, fmt.Sprintf("%d peers", s.Peers), s.Workload, fmt.Sprintf("%d writes in %v", s.Writes, s.Window.D()), fmt.Sprintf("seed %d", s.Seed)}
	if s.Loss > 0 || s.Duplicate > 0 || s.Reorder > 0 {
		parts = append(parts, fmt.Sprintf("loss %g dup %g reorder %g", s.Loss, s.Duplicate, s.Reorder))
	}
	if s.Partition != nil {
		parts = append(parts, fmt.Sprintf("partition %v-%v", s.Partition.At.D(), s.Partition.Heal.D()))
	}
	if s.Restart != nil {
		parts = append(parts, fmt.Sprintf("%d restarts", s.Restart.Peers))
	}
	if h := s.Hostile; h != nil {
		parts = append(parts, fmt.Sprintf("%d hostile", h.Peers))
	}
	if k := s.Skew; k != nil {
		parts = append(parts, fmt.Sprintf("clocks of %d writers %v ahead, %d behind", k.Ahead, k.Offset.D(), k.Behind))
	}
	if s.Churn != nil {
		parts = append(parts, fmt.Sprintf("churn -%d +%d", s.Churn.Leave, s.Churn.Join))
	}
	return strings.Join(parts, ", ")
}
