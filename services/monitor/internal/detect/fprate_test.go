package detect_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/detect"
	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/synth"
)

// maxAlertsPer100AgentDays is the documented bound on false positives over a normal month
// (docs/detection.md, "False-positive rate").
const maxAlertsPer100AgentDays = 1.0

// fpRun learns a normal month of agents, then replays the next normal month (days days) through
// the engine, recomputing the baselines weekly (the monitor does it hourly), and counts the alerts:
// every one is a false positive.
func fpRun(tb testing.TB, seed uint64, agents, days int) (counts map[string]int, rows int, examples []string) {
	mem := synth.NewMemory()
	w := newWorld(synth.Config{Seed: seed, Agents: agents}, mem, func(rows []store.Event) { mem.Add(rows...) })
	w.load(tb, start, start.Add(28*day))
	w.recompute(tb, start.Add(28*day))
	counts = map[string]int{}
	for d := 28; d < 28+days; d++ {
		if d > 28 && (d-28)%7 == 0 {
			asOf := start.Add(time.Duration(d) * day)
			mem.Prune(asOf.Add(-28 * day))
			w.recompute(tb, asOf)
		}
		alerts, n := w.replay(tb, start.Add(time.Duration(d)*day), start.Add(time.Duration(d+1)*day))
		rows += n
		for _, a := range alerts {
			counts[a.GetDetector()]++
			if len(examples) < 5 {
				examples = append(examples, a.GetDetector()+" "+a.GetAgent()+": "+a.GetEvidence()[0].GetExplanation())
			}
		}
	}
	return counts, rows, examples
}

func fpTable(counts map[string]int, agentDays float64) (string, float64) {
	var b strings.Builder
	total := 0
	for _, det := range detect.Detectors {
		total += counts[det]
		fmt.Fprintf(&b, "\n  %-28s %5d alerts  %.3f per 100 agent-days", det, counts[det], 100*float64(counts[det])/agentDays)
	}
	rate := 100 * float64(total) / agentDays
	fmt.Fprintf(&b, "\n  %-28s %5d alerts  %.3f per 100 agent-days", "overall", total, rate)
	return b.String(), rate
}

// TestFalsePositiveRate replays a normal month (after a month learned) for two seeds and fails when
// the alerts exceed maxAlertsPer100AgentDays. It runs 200 agents by default (FP_AGENTS=1000 for the
// full population; BenchmarkFalsePositiveRate reports the 1,000-agent figures).
func TestFalsePositiveRate(t *testing.T) {
	agents := 200
	if s := os.Getenv("FP_AGENTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("FP_AGENTS=%q is not a positive number", s)
		}
		agents = n
	}
	if testing.Short() {
		agents = 50
	}
	const days = 28
	for _, seed := range []uint64{1, 2} {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			t0 := time.Now()
			counts, rows, examples := fpRun(t, seed, agents, days)
			table, rate := fpTable(counts, float64(agents*days))
			t.Logf("seed %d: %d agents, %d rows replayed over %d days in %v; false positives:%s", seed, agents, rows, days, time.Since(t0).Round(time.Second), table)
			for _, e := range examples {
				t.Log("example: " + e)
			}
			if rate >= maxAlertsPer100AgentDays {
				t.Errorf("false-positive rate %.3f alerts per 100 agent-days, want < %.1f", rate, maxAlertsPer100AgentDays)
			}
		})
	}
}

// BenchmarkFalsePositiveRate measures the false positives of a normal month of 1,000 agents (after
// a month learned), per seed; it reports alerts per 100 agent-days overall and per detector that
// fired.
func BenchmarkFalsePositiveRate(b *testing.B) {
	const agents, days = 1000, 28
	for _, seed := range []uint64{1, 2} {
		b.Run(fmt.Sprintf("seed=%d", seed), func(b *testing.B) {
			for b.Loop() {
				counts, rows, _ := fpRun(b, seed, agents, days)
				table, rate := fpTable(counts, agents*days)
				b.Logf("seed %d, %d agents, %d rows over %d days:%s", seed, agents, rows, days, table)
				b.ReportMetric(rate, "alerts/100agent-days")
				for det, n := range counts {
					b.ReportMetric(100*float64(n)/(agents*days), det+"/100agent-days")
				}
			}
		})
	}
}
