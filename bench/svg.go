package bench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
)

// Chart geometry, in SVG user units.
const (
	svgW, svgH                       = 860, 520
	padL, padR, padT, padB           = 80, 200, 50, 60
	plotW, plotH                     = svgW - padL - padR, svgH - padT - padB
	svgFont                          = "font-family=\"sans-serif\" font-size=\"12\""
	colorTarget, colorRef, colorGrid = "#c0392b", "#2471a3", "#dddddd"
)

type point struct{ x, y float64 }

type series struct {
	name, color, dash string
	pts               []point
}

// WriteSVG draws the report as a standalone SVG: for the open loop, latency
// percentiles (p50 solid, p99 dashed, p99.9 dotted) against offered rate on
// a log latency axis; for the closed loop, throughput against concurrency.
// Both targets are on the same axes.
func (r *Report) WriteSVG(w io.Writer) error {
	var ss []series
	colors := []string{colorTarget, colorRef}
	var title, xl, yl string
	var yLog bool
	for ti, t := range r.Targets {
		c := colors[ti%len(colors)]
		if r.Config.Mode == Closed {
			s := series{name: t.Name + " throughput", color: c}
			for _, st := range t.Stages {
				s.pts = append(s.pts, point{float64(st.Concurrency), st.Throughput})
			}
			ss = append(ss, s)
			continue
		}
		for _, pc := range []struct {
			name, dash string
			get        func(Latency) float64
		}{
			{"p50", "", func(l Latency) float64 { return l.P50 }},
			{"p99", "8 4", func(l Latency) float64 { return l.P99 }},
			{"p99.9", "2 3", func(l Latency) float64 { return l.P999 }},
		} {
			s := series{name: t.Name + " " + pc.name, color: c, dash: pc.dash}
			for _, st := range t.Stages {
				if st.Answered > 0 {
					s.pts = append(s.pts, point{st.Rate, pc.get(st.Latency)})
				}
			}
			ss = append(ss, s)
		}
	}
	if r.Config.Mode == Closed {
		title, xl, yl = "Throughput vs concurrency (closed loop)", "requests in flight", "answered requests / s"
	} else {
		title, xl, yl, yLog = "Latency vs offered rate (open loop, from intended send time)", "offered rate (requests / s)", "latency (ms, log scale)", true
	}
	var b bytes.Buffer
	drawChart(&b, title, xl, yl, ss, yLog, r.evaluatedLines())
	if _, err := w.Write(b.Bytes()); err != nil {
		return wrapErr(CodeReport, "svg", err)
	}
	return nil
}

// evaluatedLines lists, per target that says, the share of each step's
// decisions the policy was evaluated for, for the chart's side column.
func (r *Report) evaluatedLines() []string {
	var out []string
	for _, t := range r.Targets {
		head := false
		for _, st := range t.Stages {
			if st.Decided == nil {
				continue
			}
			if !head {
				out = append(out, t.Name+" evaluated:")
				head = true
			}
			out = append(out, fmt.Sprintf("  %s: %.1f%%", stepLabel(st), 100*st.Decided.EvaluatedShare))
		}
	}
	return out
}

func drawChart(b *bytes.Buffer, title, xLabel, yLabel string, ss []series, yLog bool, side []string) {
	var xs []float64
	ymin, ymax := math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for _, p := range s.pts {
			xs = append(xs, p.x)
			if p.y > 0 || !yLog {
				ymin, ymax = math.Min(ymin, p.y), math.Max(ymax, p.y)
			}
		}
	}
	xs = uniq(xs)
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" %s>`+"\n", svgW, svgH, svgW, svgH, svgFont)
	fmt.Fprintf(b, `<rect width="%d" height="%d" fill="white"/>`+"\n", svgW, svgH)
	fmt.Fprintf(b, `<text x="%d" y="28" font-size="15" font-weight="bold">%s</text>`+"\n", padL, esc(title))
	if len(xs) == 0 {
		fmt.Fprintf(b, `<text x="%d" y="%d">no answered requests</text>`+"\n</svg>\n", padL, padT+plotH/2)
		return
	}
	// x: log when the steps span a wide range (doubling rates), else linear.
	xmin, xmax := xs[0], xs[len(xs)-1]
	xLog := xmin > 0 && xmax/xmin >= 4
	if xmin == xmax {
		xmin, xmax = xmin*0.5, xmax*1.5
		if xmin == 0 {
			xmax = 1
		}
	}
	if !xLog && !yLog {
		xmin = math.Min(xmin, 0)
	}
	xf := scaler(xmin, xmax, xLog, padL, padL+plotW, xLog)
	var yTicks []float64
	if yLog {
		ymin, ymax = math.Max(ymin, 0.001), math.Max(ymax, 0.002)
		lo, hi := math.Floor(math.Log10(ymin)), math.Ceil(math.Log10(ymax))
		if hi == lo {
			hi++
		}
		ymin, ymax = math.Pow(10, lo), math.Pow(10, hi)
		for e := lo; e <= hi; e++ {
			for _, m := range []float64{1, 2, 5} {
				if v := m * math.Pow(10, e); v <= ymax*1.0001 {
					yTicks = append(yTicks, v)
				}
			}
		}
	} else {
		ymin = 0
		step := niceStep(ymax / 5)
		ymax = math.Max(step, math.Ceil(ymax*1.05/step)*step)
		for v := 0.0; v <= ymax*1.0001; v += step {
			yTicks = append(yTicks, v)
		}
	}
	yf := scaler(ymin, ymax, yLog, padT+plotH, padT, false)

	// Grid and axes.
	for _, v := range yTicks {
		y := yf(v)
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", padL, y, padL+plotW, y, colorGrid)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", padL-6, y+4, num(v))
	}
	for _, v := range xs {
		x := xf(v)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"/>`+"\n", x, padT, x, padT+plotH, colorGrid)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, padT+plotH+18, num(v))
	}
	fmt.Fprintf(b, `<path d="M%d %d V%d H%d" fill="none" stroke="black"/>`+"\n", padL, padT, padT+plotH, padL+plotW)
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", padL+plotW/2, svgH-15, esc(xLabel))
	fmt.Fprintf(b, `<text transform="translate(18 %d) rotate(-90)" text-anchor="middle">%s</text>`+"\n", padT+plotH/2, esc(yLabel))

	// Series and legend.
	for i, s := range ss {
		if len(s.pts) == 0 {
			continue
		}
		dash := ""
		if s.dash != "" {
			dash = ` stroke-dasharray="` + s.dash + `"`
		}
		var pts bytes.Buffer
		for _, p := range s.pts {
			if yLog && p.y <= 0 {
				continue
			}
			fmt.Fprintf(&pts, "%.1f,%.1f ", xf(p.x), yf(p.y))
		}
		fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", bytes.TrimSpace(pts.Bytes()), s.color, dash)
		for _, p := range s.pts {
			if yLog && p.y <= 0 {
				continue
			}
			fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", xf(p.x), yf(p.y), s.color)
		}
		ly := padT + 10 + i*20
		lx := padL + plotW + 20
		fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", lx, ly, lx+30, ly, s.color, dash)
		fmt.Fprintf(b, `<text x="%d" y="%d">%s</text>`+"\n", lx+38, ly+4, esc(s.name))
	}
	for i, line := range side {
		fmt.Fprintf(b, `<text x="%d" y="%d" xml:space="preserve">%s</text>`+"\n", padL+plotW+20, padT+10+(len(ss)+1+i)*18, esc(line))
	}
	b.WriteString("</svg>\n")
}

// scaler maps [lo,hi] to [a,b] linearly or logarithmically. With pad, 5%
// is left at each end so that points on the extremes stay visible.
func scaler(lo, hi float64, log bool, a, b int, pad bool) func(float64) float64 {
	f := func(v float64) float64 { return v }
	if log {
		f = math.Log10
	}
	l, h := f(lo), f(hi)
	if pad {
		d := (h - l) * 0.05
		l, h = l-d, h+d
	}
	return func(v float64) float64 {
		if h == l {
			return float64(a+b) / 2
		}
		return float64(a) + (f(v)-l)/(h-l)*float64(b-a)
	}
}

func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*e >= raw {
			return m * e
		}
	}
	return 10 * e
}

func num(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', 4, 64) + "M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'g', 4, 64) + "k"
	default:
		return strconv.FormatFloat(v, 'g', 4, 64)
	}
}

func uniq(xs []float64) []float64 {
	sort.Float64s(xs)
	out := xs[:0]
	for i, x := range xs {
		if i == 0 || x != xs[i-1] {
			out = append(out, x)
		}
	}
	return out
}

func esc(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
