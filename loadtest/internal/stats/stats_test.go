package stats_test

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/agentid/agentid/loadtest/internal/stats"
)

func record(vals ...time.Duration) *stats.Histogram {
	h := stats.NewHistogram()
	for _, v := range vals {
		h.Record(v)
	}
	return h
}

func series(n int, step time.Duration) []time.Duration {
	out := make([]time.Duration, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, time.Duration(i)*step)
	}
	return out
}

func TestSummaryExactBelowResolutionLimit(t *testing.T) {
	// Values up to 2048µs are exact at three significant digits: nearest-rank percentiles.
	h := record(series(100, time.Microsecond)...)
	got := h.Summary()
	want := stats.Summary{
		Count: 100, Min: 1 * time.Microsecond, Mean: 51 * time.Microsecond, // 50.5 rounds to 51
		P50: 50 * time.Microsecond, P90: 90 * time.Microsecond, P99: 99 * time.Microsecond, Max: 100 * time.Microsecond,
	}
	if got != want {
		t.Fatalf("Summary() = %+v, want %+v", got, want)
	}
}

func TestSummaryWithinRelativeErrorOnMilliseconds(t *testing.T) {
	vals := series(1000, time.Millisecond) // 1ms..1000ms, shuffled order must not matter
	h := stats.NewHistogram()
	for i := range vals {
		h.Record(vals[(i*7919)%len(vals)])
	}
	s := h.Summary()
	for _, tc := range []struct {
		name      string
		got, want time.Duration
	}{
		{"min", s.Min, time.Millisecond},
		{"p50", s.P50, 500 * time.Millisecond},
		{"p90", s.P90, 900 * time.Millisecond},
		{"p99", s.P99, 990 * time.Millisecond},
		{"max", s.Max, 1000 * time.Millisecond},
		{"mean", s.Mean, 500500 * time.Microsecond},
	} {
		if rel := math.Abs(float64(tc.got-tc.want)) / float64(tc.want); rel > 0.001 {
			t.Errorf("%s = %v, want %v within 0.1%% (off by %.4f%%)", tc.name, tc.got, tc.want, rel*100)
		}
	}
	if s.Count != 1000 {
		t.Errorf("count = %d, want 1000", s.Count)
	}
	if !(s.Min <= s.P50 && s.P50 <= s.P90 && s.P90 <= s.P99 && s.P99 <= s.Max) {
		t.Errorf("percentiles out of order: %+v", s)
	}
}

func TestSkewedDistributionTail(t *testing.T) {
	// 990 fast requests and 10 slow ones: p99 is still fast, max is the slow tail.
	var vals []time.Duration
	for range 990 {
		vals = append(vals, 2*time.Millisecond)
	}
	for range 10 {
		vals = append(vals, 300*time.Millisecond)
	}
	s := record(vals...).Summary()
	if s.P99 > 3*time.Millisecond {
		t.Errorf("p99 = %v, want about 2ms (only 1%% of values are slow)", s.P99)
	}
	if s.Max < 299*time.Millisecond || s.Max > 301*time.Millisecond {
		t.Errorf("max = %v, want about 300ms", s.Max)
	}
}

func TestMergeAddsCounts(t *testing.T) {
	a := record(series(50, time.Microsecond)...)
	b := record(51*time.Microsecond, 100*time.Microsecond)
	a.Merge(b)
	if got := a.Count(); got != 52 {
		t.Fatalf("Count() after merge = %d, want 52", got)
	}
	if got := a.Summary().Max; got != 100*time.Microsecond {
		t.Errorf("max after merge = %v, want 100µs", got)
	}
}

func TestEmptyAndClampedValues(t *testing.T) {
	if s := stats.NewHistogram().Summary(); s != (stats.Summary{}) {
		t.Errorf("empty Summary() = %+v, want zero", s)
	}
	h := record(0, time.Hour)
	s := h.Summary()
	if s.Min != time.Microsecond {
		t.Errorf("min = %v, want 1µs (values below the resolution count as 1µs)", s.Min)
	}
	if s.Max < stats.MaxTrackable || s.Max > stats.MaxTrackable+stats.MaxTrackable/1000 {
		t.Errorf("max = %v, want about %v (clamped)", s.Max, stats.MaxTrackable)
	}
}

func TestSummaryJSONShape(t *testing.T) {
	s := stats.Summary{Count: 3, Min: 1500 * time.Microsecond, Mean: 2 * time.Millisecond, P50: 2 * time.Millisecond,
		P90: 2500 * time.Microsecond, P99: 2500 * time.Microsecond, Max: 2500 * time.Microsecond}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"count":3,"min_ms":1.5,"mean_ms":2,"p50_ms":2,"p90_ms":2.5,"p99_ms":2.5,"max_ms":2.5}`
	if string(b) != want {
		t.Fatalf("json = %s\nwant   %s", b, want)
	}
	var back stats.Summary
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back != s {
		t.Errorf("round trip = %+v, want %+v", back, s)
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want string
	}{
		{1234567 * time.Nanosecond, "1.235ms"},
		{412345678 * time.Nanosecond, "412.3ms"},
		{2345678901 * time.Nanosecond, "2.346s"},
		{750 * time.Nanosecond, "1µs"},
	} {
		if got := stats.Format(tc.in); got != tc.want {
			t.Errorf("Format(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
