package baseline_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/baseline"
	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/store/duckdb"
	"github.com/agentid/agentid/services/monitor/internal/synth"
)

// BenchmarkRecomputeDuckDB measures a full recomputation of one tenant's baselines over 10^7 events
// (RECOMPUTE_EVENTS overrides) in the DuckDB store: 28 days of a synthetic population sized to
// produce them, loaded with the store's Insert before the timer starts.
func BenchmarkRecomputeDuckDB(b *testing.B) {
	events := 10_000_000
	if s := os.Getenv("RECOMPUTE_EVENTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			b.Fatalf("RECOMPUTE_EVENTS=%q is not a positive number", s)
		}
		events = n
	}
	ctx := context.Background()
	s, err := duckdb.Open(ctx, b.TempDir()+"/telemetry.duckdb")
	if err != nil {
		b.Fatalf("duckdb.Open: %v", err)
	}
	defer s.Close()
	// About 147 requests per agent-day over 28 days; a few more agents so the window holds events.
	agents := max(1, events/(140*28))
	g := synth.New(synth.Config{Seed: 1, Agents: agents})
	from := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	to := from.Add(baseline.DefaultWindow)
	t0 := time.Now()
	var batch []store.Event
	n := 0
	stop := errStop{}
	err = g.Run(from, to, nil, func(e store.Event) error {
		batch = append(batch, e)
		if len(batch) == 20000 {
			if err := s.Insert(ctx, batch); err != nil {
				return err
			}
			n += len(batch)
			batch = batch[:0]
		}
		if n+len(batch) >= events {
			return stop
		}
		return nil
	})
	if err != nil && err != stop {
		b.Fatalf("load: %v", err)
	}
	if err := s.Insert(ctx, batch); err != nil {
		b.Fatalf("load: %v", err)
	}
	n += len(batch)
	b.Logf("loaded %d events of %d agents in %v (%.0f events/s)", n, agents, time.Since(t0).Round(time.Second), float64(n)/time.Since(t0).Seconds())
	m := baseline.NewManager(baseline.Config{})
	b.ResetTimer()
	for b.Loop() {
		if err := m.Recompute(ctx, s, g.Tenant(), to); err != nil {
			b.Fatalf("Recompute: %v", err)
		}
	}
	b.ReportMetric(float64(n), "events")
}

type errStop struct{}

func (errStop) Error() string { return "enough events" }
