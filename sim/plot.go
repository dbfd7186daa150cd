package sim

import (
	"fmt"
	"io"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Plot formats.
const (
	FormatSVG = "svg"
	FormatPNG = "png"
)

// PlotFormat returns the plot format a file name asks for, by extension.
func PlotFormat(name string) (string, error) {
	switch {
	case strings.HasSuffix(strings.ToLower(name), ".svg"):
		return FormatSVG, nil
	case strings.HasSuffix(strings.ToLower(name), ".png"):
		return FormatPNG, nil
	}
	return "", fmt.Errorf("sim: plot %q: want a .svg or .png file", name)
}

// WritePlot draws a report's figures side by side — the write-to-visible
// latency distribution and convergence over time — and writes them to w
// as SVG or PNG.
func WritePlot(w io.Writer, rep *Report, format string) error {
	lat, err := latencyPlot(rep)
	if err != nil {
		return err
	}
	conv, err := convergencePlot(rep)
	if err != nil {
		return err
	}
	width, height := 24*vg.Centimeter, 9*vg.Centimeter
	var c interface {
		vg.CanvasSizer
		io.WriterTo
	}
	switch format {
	case FormatSVG:
		c = vgsvg.New(width, height)
	case FormatPNG:
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(120))}
	default:
		return fmt.Errorf("sim: plot format %q: want svg or png", format)
	}
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Centimeter, PadTop: vg.Millimeter * 3,
		PadBottom: vg.Millimeter * 3, PadLeft: vg.Millimeter * 3, PadRight: vg.Millimeter * 3}
	plots := [][]*plot.Plot{{lat, conv}}
	canvases := plot.Align(plots, tiles, dc)
	lat.Draw(canvases[0][0])
	conv.Draw(canvases[0][1])
	if _, err := c.WriteTo(w); err != nil {
		return fmt.Errorf("sim: write plot: %w", err)
	}
	return nil
}

func title(rep *Report) string {
	s := rep.Scenario
	return fmt.Sprintf("%s, %d peers, seed %d", s.Level, s.Peers, s.Seed)
}

func latencyPlot(rep *Report) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "write to visible (" + title(rep) + ")"
	p.X.Label.Text = "latency (ms)"
	p.Y.Label.Text = "fraction of (write, peer) pairs"
	p.Y.Min, p.Y.Max = 0, 1
	q := rep.Figures.Quantiles
	pts := make(plotter.XYs, len(q))
	for i, x := range q {
		pts[i] = plotter.XY{X: x, Y: float64(i) / 100}
	}
	if len(pts) == 0 {
		pts = plotter.XYs{{X: 0, Y: 0}}
	}
	l, err := plotter.NewLine(pts)
	if err != nil {
		return nil, fmt.Errorf("sim: plot: %w", err)
	}
	l.Width = vg.Points(1.5)
	p.Add(l, plotter.NewGrid())
	return p, nil
}

func convergencePlot(rep *Report) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "convergence over time"
	p.X.Label.Text = "virtual time (s)"
	p.Y.Label.Text = "peers holding the newest writes"
	p.Y.Min, p.Y.Max = 0, 1.02
	pts := make(plotter.XYs, len(rep.Figures.Curve))
	for i, c := range rep.Figures.Curve {
		pts[i] = plotter.XY{X: c.T, Y: c.Converged}
	}
	if len(pts) == 0 {
		pts = plotter.XYs{{X: 0, Y: 1}}
	}
	l, err := plotter.NewLine(pts)
	if err != nil {
		return nil, fmt.Errorf("sim: plot: %w", err)
	}
	l.Width = vg.Points(1.5)
	p.Add(l, plotter.NewGrid())
	if s := rep.Scenario.Partition; s != nil {
		for _, at := range []float64{s.At.D().Seconds(), s.Heal.D().Seconds()} {
			m, err := plotter.NewLine(plotter.XYs{{X: at, Y: 0}, {X: at, Y: 1.02}})
			if err != nil {
				return nil, fmt.Errorf("sim: plot: %w", err)
			}
			m.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
			p.Add(m)
		}
	}
	return p, nil
}
