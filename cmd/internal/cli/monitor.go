package cli

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/fsutil"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
)

func newMonitorCmd(g *globals) *cobra.Command {
	cmd := group("monitor", "Inspect what the monitor learned about agents")
	cmd.AddCommand(newMonitorBaselineCmd(g))
	return cmd
}

func newMonitorBaselineCmd(g *globals) *cobra.Command {
	var since, chart string
	cmd := &cobra.Command{
		Use:   "baseline <agent>",
		Short: "Print an agent's behavioural baseline and optionally chart its hourly activity against it (SVG)",
		Long: "Prints the baseline the monitor's detectors compare the agent with (its own, or its class's when it has\n" +
			"too little history). With --chart FILE it also writes an SVG chart of the agent's requests per hour since\n" +
			"--since against the baseline's band for the same hour of the week (median ± 3 MAD).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			now := time.Now().UTC()
			from, err := parseWindowStart(since, now)
			if err != nil {
				return fmt.Errorf("--since %q: %w", since, err)
			}
			if !from.Before(now) {
				return fmt.Errorf("--since %q: the window must start in the past", since)
			}
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				resp, err := monitorv1.NewMonitorServiceClient(conn).GetBaseline(cmd.Context(), &monitorv1.GetBaselineRequest{
					Agent: name, ActivityStart: timestamppb.New(from), ActivityEnd: timestamppb.New(now),
				})
				if err != nil {
					return err
				}
				if chart != "" {
					var buf bytes.Buffer
					if err := writeBaselineChart(&buf, resp.GetBaseline(), resp.GetActivity(), from, now); err != nil {
						return err
					}
					if err := fsutil.WriteFileAtomic(chart, buf.Bytes(), 0o644); err != nil {
						return fmt.Errorf("--chart: %w", err)
					}
					fmt.Fprintf(g.stderr, "chart written to %s\n", chart)
				}
				return g.printResult([]proto.Message{resp}, false, func() table { return baselineTable(resp.GetBaseline(), resp.GetActivity()) })
			})
		},
	}
	cmd.Flags().StringVar(&since, "since", "7d", "chart and sum the activity since this time (RFC 3339) or this long ago (e.g. 7d, 36h)")
	cmd.Flags().StringVar(&chart, "chart", "", "write an SVG chart of the hourly activity against the baseline band to this file")
	return cmd
}

// baselineTable summarises a baseline for -o table.
func baselineTable(b *monitorv1.Baseline, activity []*monitorv1.HourlyActivity) table {
	t := table{header: []string{"FIELD", "VALUE"}}
	add := func(k, v string) { t.rows = append(t.rows, []string{k, v}) }
	add("agent", b.GetAgent())
	add("class", b.GetClassKey())
	add("from class", strconv.FormatBool(b.GetFromClass()))
	add("learned from", fmt.Sprintf("%d events, %s .. %s", b.GetEvents(),
		b.GetWindowStart().AsTime().Format(time.RFC3339), b.GetWindowEnd().AsTime().Format(time.RFC3339)))
	add("computed", b.GetComputeTime().AsTime().Format(time.RFC3339))
	hours := make([]string, len(b.GetActiveHours()))
	for i, h := range b.GetActiveHours() {
		hours[i] = strconv.Itoa(int(h))
	}
	add("active hours (UTC)", strings.Join(hours, ","))
	add("rows per request", fmt.Sprintf("median %g, MAD %g", b.GetRowsMedian(), b.GetRowsMad()))
	add("bytes per request", fmt.Sprintf("median %g, MAD %g", b.GetBytesMedian(), b.GetBytesMad()))
	add("deny rate", fmt.Sprintf("%.2f%%", 100*b.GetDenyRate()))
	top := func(us []*monitorv1.UsageCount) string {
		var parts []string
		for i, u := range us {
			if i == 5 {
				parts = append(parts, fmt.Sprintf("... (%d in all)", len(us)))
				break
			}
			parts = append(parts, fmt.Sprintf("%s (%d)", u.GetValue(), u.GetCount()))
		}
		return strings.Join(parts, ", ")
	}
	add("resources", top(b.GetResources()))
	add("scopes", top(b.GetScopes()))
	add("source networks", top(b.GetSourceNetworks()))
	add("on behalf of", top(b.GetOnBehalfOf()))
	var requests, denied int64
	for _, a := range activity {
		requests += a.GetRequests()
		denied += a.GetDenied()
	}
	add("activity in window", fmt.Sprintf("%d requests (%d denied) in %d active hours", requests, denied, len(activity)))
	return t
}

// hourOfWeek is the baseline's hour of the week of t: 0 = Monday 00:00 UTC .. 167 = Sunday 23:00.
func hourOfWeek(t time.Time) int {
	t = t.UTC()
	return (int(t.Weekday())+6)%7*24 + t.Hour()
}

// Chart geometry, in SVG user units.
const (
	chartW, chartH           = 960.0, 360.0
	padLeft, padRight        = 64.0, 16.0
	padTop, padBottom        = 36.0, 48.0
	plotW, plotH             = chartW - padLeft - padRight, chartH - padTop - padBottom
	bandMADs                 = 3.0
	chartMaxHours            = 24 * 92
	colorActivity, colorBand = "#1f5fbf", "#f2b134"
)

// writeBaselineChart writes an SVG line chart of activity's requests per hour in [from, to) (hours
// without a row count zero) over the band median ± 3 MAD of the baseline's same hour of the week,
// with the median dashed, labelled axes and a legend.
func writeBaselineChart(w io.Writer, b *monitorv1.Baseline, activity []*monitorv1.HourlyActivity, from, to time.Time) error {
	from, to = from.UTC().Truncate(time.Hour), to.UTC()
	n := int(math.Ceil(to.Sub(from).Hours()))
	if n <= 0 || n > chartMaxHours {
		return fmt.Errorf("chart window of %d hours: want 1 to %d", n, chartMaxHours)
	}
	counts := make([]float64, n)
	for _, a := range activity {
		i := int(a.GetHour().AsTime().Sub(from) / time.Hour)
		if i >= 0 && i < n {
			counts[i] += float64(a.GetRequests())
		}
	}
	stats := map[int]*monitorv1.HourOfWeekStats{}
	for _, h := range b.GetHourly() {
		stats[int(h.GetHourOfWeek())] = h
	}
	med, lo, hi := make([]float64, n), make([]float64, n), make([]float64, n)
	maxY := 1.0
	for i := range n {
		if s := stats[hourOfWeek(from.Add(time.Duration(i)*time.Hour))]; s != nil {
			med[i], lo[i], hi[i] = s.GetMedian(), max(0, s.GetMedian()-bandMADs*s.GetMad()), s.GetMedian()+bandMADs*s.GetMad()
		}
		maxY = max(maxY, counts[i], hi[i])
	}
	maxY = niceCeil(maxY)
	x := func(i int) float64 {
		if n == 1 {
			return padLeft + plotW/2
		}
		return padLeft + plotW*float64(i)/float64(n-1)
	}
	y := func(v float64) float64 { return padTop + plotH*(1-v/maxY) }
	pts := func(vals []float64, order func(yield func(int) bool)) string {
		var sb strings.Builder
		for i := range order {
			fmt.Fprintf(&sb, "%.1f,%.1f ", x(i), y(vals[i]))
		}
		return strings.TrimSpace(sb.String())
	}
	forward := func(yield func(int) bool) {
		for i := 0; i < n; i++ {
			if !yield(i) {
				return
			}
		}
	}
	backward := func(yield func(int) bool) {
		for i := n - 1; i >= 0; i-- {
			if !yield(i) {
				return
			}
		}
	}
	var out bytes.Buffer
	text := func(x, y float64, anchor, size, s string) {
		fmt.Fprintf(&out, `<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%s">`, x, y, anchor, size)
		_ = xml.EscapeText(&out, []byte(s))
		out.WriteString("</text>\n")
	}
	fmt.Fprintf(&out, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
		`<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif">`+"\n",
		chartW, chartH, chartW, chartH)
	out.WriteString(`<rect x="0" y="0" width="100%" height="100%" fill="white"/>` + "\n")
	title := "Requests per hour of " + b.GetAgent()
	if b.GetFromClass() {
		title += " (baseline of its class)"
	}
	text(chartW/2, 20, "middle", "14", title)
	// Band, median, activity.
	fmt.Fprintf(&out, `<polygon points="%s %s" fill="%s" fill-opacity="0.3" stroke="none"><title>baseline median ± 3 MAD</title></polygon>`+"\n",
		pts(hi, forward), pts(lo, backward), colorBand)
	fmt.Fprintf(&out, `<polyline points="%s" fill="none" stroke="%s" stroke-width="1" stroke-dasharray="4 3"/>`+"\n", pts(med, forward), colorBand)
	fmt.Fprintf(&out, `<polyline points="%s" fill="none" stroke="%s" stroke-width="1.5"/>`+"\n", pts(counts, forward), colorActivity)
	// Axes with ticks and labels.
	fmt.Fprintf(&out, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", padLeft, padTop, padLeft, padTop+plotH)
	fmt.Fprintf(&out, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", padLeft, padTop+plotH, padLeft+plotW, padTop+plotH)
	for k := 0; k <= 4; k++ {
		v := maxY * float64(k) / 4
		fmt.Fprintf(&out, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", padLeft, y(v), padLeft+plotW, y(v))
		text(padLeft-6, y(v)+4, "end", "11", strconv.FormatFloat(v, 'f', -1, 64))
	}
	step := max(1, n/8) // at most about 8 time labels, on whole hours
	if n > 48 {
		step = max(24, (n/8+23)/24*24)
	}
	for i := 0; i < n; i += step {
		t := from.Add(time.Duration(i) * time.Hour)
		fmt.Fprintf(&out, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", x(i), padTop+plotH, x(i), padTop+plotH+4)
		text(x(i), padTop+plotH+18, "middle", "11", t.Format("Mon 01-02 15:04"))
	}
	text(padLeft+plotW/2, chartH-8, "middle", "12", "time (UTC)")
	fmt.Fprintf(&out, `<text x="14" y="%.1f" text-anchor="middle" font-size="12" transform="rotate(-90 14 %.1f)">requests per hour</text>`+"\n",
		padTop+plotH/2, padTop+plotH/2)
	// Legend.
	fmt.Fprintf(&out, `<rect x="%.1f" y="%.1f" width="14" height="8" fill="%s" fill-opacity="0.3"/>`+"\n", padLeft+8, padTop+4, colorBand)
	text(padLeft+28, padTop+12, "start", "11", "baseline median ± 3 MAD (same hour of week)")
	fmt.Fprintf(&out, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5"/>`+"\n", padLeft+8, padTop+22, padLeft+22, padTop+22, colorActivity)
	text(padLeft+28, padTop+26, "start", "11", "observed requests")
	out.WriteString("</svg>\n")
	_, err := w.Write(out.Bytes())
	return err
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}
