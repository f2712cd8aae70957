package detect_test

import (
	"testing"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/detect"
	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/synth"
)

// BenchmarkProcess measures the engine's throughput (rows/s) on a normal day of 200 agents with
// 28 days of baselines, in the one-minute batches the ingest consumer delivers.
func BenchmarkProcess(b *testing.B) {
	w := memWorld(synth.Config{Seed: 1, Agents: 200})
	w.load(b, start, start.Add(28*day))
	w.recompute(b, start.Add(28*day))
	var batches [][]store.Event
	var batch []store.Event
	rows := 0
	_ = w.g.Run(start.Add(28*day), start.Add(29*day), nil, func(e store.Event) error {
		if len(batch) > 0 && e.Time.Truncate(time.Minute) != batch[0].Time.Truncate(time.Minute) {
			batches = append(batches, batch)
			batch = nil
		}
		batch = append(batch, e)
		rows++
		return nil
	})
	batches = append(batches, batch)
	b.ResetTimer()
	for b.Loop() {
		eng := detect.NewEngine(detect.Config{}, w.mgr)
		for _, bt := range batches {
			eng.Process(bt, w.lookup)
		}
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
