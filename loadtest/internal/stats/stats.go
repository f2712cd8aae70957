// Package stats records latencies in an HDR histogram and summarises them as the percentiles the
// load generators report.
package stats

import (
	"encoding/json"
	"math"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Resolution and range of a Histogram: values are recorded in microseconds with three significant
// digits (a relative error below 0.1%) from 1µs to MaxTrackable; longer values are clamped to it.
const (
	unit = time.Microsecond
	// MaxTrackable is the longest duration a Histogram tells apart; longer ones count as it.
	MaxTrackable = 10 * time.Minute
	sigFigs      = 3
)

// Histogram is a latency histogram. It is not safe for concurrent use: give each worker its own and
// Merge them at the end.
type Histogram struct {
	h *hdrhistogram.Histogram
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	return &Histogram{h: hdrhistogram.New(1, int64(MaxTrackable/unit), sigFigs)}
}

// Record adds one duration. Durations below 1µs count as 1µs, above MaxTrackable as MaxTrackable.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d / unit)
	v = max(v, 1)
	v = min(v, int64(MaxTrackable/unit))
	_ = h.h.RecordValue(v) // cannot fail: v is within the trackable range
}

// Merge adds every value recorded in o.
func (h *Histogram) Merge(o *Histogram) { h.h.Merge(o.h) }

// Count is the number of recorded values.
func (h *Histogram) Count() int64 { return h.h.TotalCount() }

// Quantile returns the value below or at which the fraction q (0 to 1) of the recorded values lie,
// rounded up to the histogram's resolution; 0 when nothing was recorded.
func (h *Histogram) Quantile(q float64) time.Duration {
	return time.Duration(h.h.ValueAtQuantile(q*100)) * unit
}

// Summary returns the count, min, mean, p50, p90, p99 and max of the recorded values.
func (h *Histogram) Summary() Summary {
	if h.Count() == 0 {
		return Summary{}
	}
	return Summary{
		Count: h.Count(),
		Min:   time.Duration(h.h.Min()) * unit,
		Mean:  time.Duration(h.h.Mean() * float64(unit)).Round(unit),
		P50:   h.Quantile(0.50),
		P90:   h.Quantile(0.90),
		P99:   h.Quantile(0.99),
		Max:   time.Duration(h.h.Max()) * unit,
	}
}

// Summary is the distribution of a set of durations. Its JSON form gives the durations in
// milliseconds: {"count":N,"min_ms":..,"mean_ms":..,"p50_ms":..,"p90_ms":..,"p99_ms":..,"max_ms":..}.
type Summary struct {
	// Count is the number of values.
	Count int64
	// Min is the smallest value.
	Min time.Duration
	// Mean is the arithmetic mean.
	Mean time.Duration
	// P50 is the median.
	P50 time.Duration
	// P90 is the 90th percentile.
	P90 time.Duration
	// P99 is the 99th percentile.
	P99 time.Duration
	// Max is the largest value.
	Max time.Duration
}

type summaryJSON struct {
	Count int64   `json:"count"`
	Min   float64 `json:"min_ms"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// MarshalJSON writes the summary with durations in milliseconds (microsecond precision).
func (s Summary) MarshalJSON() ([]byte, error) {
	return json.Marshal(summaryJSON{Count: s.Count, Min: Millis(s.Min), Mean: Millis(s.Mean),
		P50: Millis(s.P50), P90: Millis(s.P90), P99: Millis(s.P99), Max: Millis(s.Max)})
}

// UnmarshalJSON reads the form MarshalJSON writes.
func (s *Summary) UnmarshalJSON(b []byte) error {
	var j summaryJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	ms := func(v float64) time.Duration { return time.Duration(math.Round(v * float64(time.Millisecond))) }
	*s = Summary{Count: j.Count, Min: ms(j.Min), Mean: ms(j.Mean), P50: ms(j.P50), P90: ms(j.P90), P99: ms(j.P99), Max: ms(j.Max)}
	return nil
}

// Millis converts d to milliseconds, rounded to the microsecond.
func Millis(d time.Duration) float64 {
	return float64(d.Round(time.Microsecond)) / float64(time.Millisecond)
}

// Format prints d for people with about three significant digits (e.g. 1.25ms, 412ms, 2.1s).
func Format(d time.Duration) string {
	var r time.Duration
	switch {
	case d >= 10*time.Second:
		r = 10 * time.Millisecond
	case d >= time.Second:
		r = time.Millisecond
	case d >= 100*time.Millisecond:
		r = 100 * time.Microsecond
	case d >= 10*time.Millisecond:
		r = 10 * time.Microsecond
	default:
		r = time.Microsecond
	}
	return d.Round(r).String()
}
