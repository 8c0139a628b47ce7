package main

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"strconv"
)

// xy is one point of a series.
type xy struct{ x, y float64 }

// series is one line of a chart.
type series struct {
	name   string
	points []xy
	dashed bool
	noDots bool
	color  string // default: the palette's next colour
}

// chart is a line chart drawn as plain SVG.
type chart struct {
	title, xLabel, yLabel string
	xLog                  bool
	yMax                  float64 // 0: from the data
	yFormat               func(float64) string
	series                []series
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"}

const (
	svgW, svgH                     = 760, 420
	padL, padR, padT, padB float64 = 80, 230, 40, 55
)

// lineChart renders c. Linear axes start at zero; a log x axis spans the
// data's decades.
func lineChart(c chart) []byte {
	xmin, xmax, ymax := math.Inf(1), math.Inf(-1), c.yMax
	for _, s := range c.series {
		for _, p := range s.points {
			xmin, xmax = math.Min(xmin, p.x), math.Max(xmax, p.x)
			if c.yMax == 0 {
				ymax = math.Max(ymax, p.y)
			}
		}
	}
	if math.IsInf(xmin, 0) { // no data
		xmin, xmax = 0, 1
	}
	if ymax <= 0 {
		ymax = 1
	}
	if c.yMax == 0 {
		ymax = niceCeil(ymax * 1.05)
	}
	fx := func(v float64) float64 { return v }
	if c.xLog {
		xmin = math.Pow(10, math.Floor(math.Log10(math.Max(xmin, 1e-9))))
		xmax = math.Pow(10, math.Ceil(math.Log10(math.Max(xmax, xmin*10))))
		fx = math.Log10
	} else {
		xmin, xmax = 0, niceCeil(xmax)
	}
	plotW, plotH := svgW-padL-padR, svgH-padT-padB
	px := func(v float64) float64 {
		return padL + (fx(v)-fx(xmin))/(fx(xmax)-fx(xmin))*plotW
	}
	py := func(v float64) float64 { return padT + plotH - v/ymax*plotH }
	yfmt := c.yFormat
	if yfmt == nil {
		yfmt = shortNumber
	}

	var b bytes.Buffer
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`, svgW, svgH, svgW, svgH)
	w(`<rect width="100%%" height="100%%" fill="white"/>`)
	w(`<text x="%g" y="22" font-size="15" font-weight="bold">%s</text>`, padL, html.EscapeString(c.title))
	// Grid and y ticks.
	for i := 0; i <= 5; i++ {
		v := ymax * float64(i) / 5
		y := py(v)
		w(`<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#e5e5e5"/>`, padL, y, padL+plotW, y)
		w(`<text x="%g" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`, padL-6, y, yfmt(v))
	}
	// x ticks.
	for _, v := range xTicks(xmin, xmax, c.xLog) {
		x := px(v)
		w(`<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" stroke="#e5e5e5"/>`, x, padT, x, padT+plotH)
		w(`<text x="%.1f" y="%g" text-anchor="middle">%s</text>`, x, padT+plotH+16, shortNumber(v))
	}
	w(`<rect x="%g" y="%g" width="%g" height="%g" fill="none" stroke="#333"/>`, padL, padT, plotW, plotH)
	w(`<text x="%g" y="%g" text-anchor="middle">%s</text>`, padL+plotW/2, float64(svgH)-12, html.EscapeString(c.xLabel))
	w(`<text transform="translate(18 %g) rotate(-90)" text-anchor="middle">%s</text>`, padT+plotH/2, html.EscapeString(c.yLabel))
	for i, s := range c.series {
		color := s.color
		if color == "" {
			color = palette[i%len(palette)]
		}
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		var pts bytes.Buffer
		for _, p := range s.points {
			fmt.Fprintf(&pts, "%.1f,%.1f ", px(math.Max(p.x, xmin)), py(p.y))
		}
		w(`<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`, color, dash, bytes.TrimSpace(pts.Bytes()))
		if !s.noDots {
			for _, p := range s.points {
				w(`<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>`, px(math.Max(p.x, xmin)), py(p.y), color)
			}
		}
		ly := padT + 10 + float64(i)*20
		lx := padL + plotW + 16
		w(`<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s" stroke-width="2"%s/>`, lx, ly, lx+28, ly, color, dash)
		w(`<text x="%g" y="%g" dominant-baseline="middle">%s</text>`, lx+34, ly, html.EscapeString(s.name))
	}
	w(`</svg>`)
	return b.Bytes()
}

// xTicks are decades (and 2, 5 multiples when few) on a log axis, or six
// even steps on a linear one.
func xTicks(lo, hi float64, log bool) []float64 {
	var out []float64
	if !log {
		for i := 0; i <= 5; i++ {
			out = append(out, lo+(hi-lo)*float64(i)/5)
		}
		return out
	}
	decades := math.Log10(hi / lo)
	for d := lo; d <= hi*1.0001; d *= 10 {
		out = append(out, d)
		if decades <= 3 {
			for _, m := range []float64{2, 5} {
				if d*m < hi {
					out = append(out, d*m)
				}
			}
		}
	}
	return out
}

// niceCeil rounds up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func shortNumber(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', 3, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'g', 3, 64) + "k"
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}
