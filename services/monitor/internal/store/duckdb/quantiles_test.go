//go:build unix

package duckdb_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/store/duckdb"
)

// TestQuantilesWithinTheMemoryLimit computes the spreads of 300 agents of 10,000 accesses each
// (3,000,000 sampled rows) in a store limited to duckdb.MinMemoryLimit (32 MiB): DuckDB's quantile
// aggregates cannot spill, and in one query these fail ("Out of Memory"). Quantiles takes the
// agents in groups and must answer exactly what the rows say.
func TestQuantilesWithinTheMemoryLimit(t *testing.T) {
	const agents, per = 300, 10_000
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "telemetry.duckdb")
	// The rows are made by DuckDB itself, in a store with room for them: row i belongs to agent
	// i % agents, with rows i % 97 and bytes i % 10007 (the seed row is removed afterwards).
	fill, err := duckdb.Open(ctx, path, duckdb.WithMemoryLimit(512<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer fill.Close()
	seed := benchEvent(0)
	seed.Kind, seed.Outcome = store.KindAccess, "allowed"
	if err := fill.Insert(ctx, []store.Event{seed}); err != nil {
		t.Fatal(err)
	}
	if _, err := fill.DB().ExecContext(ctx, `INSERT INTO telemetry_events BY NAME
		SELECT t.* EXCLUDE (event_id, agent, time_ms, "rows", "bytes"),
			'q-' || r.range AS event_id, 'tenants/acme/agents/q' || (r.range % ?) AS agent, ? + r.range AS time_ms,
			r.range % 97 AS "rows", r.range % 10007 AS "bytes"
		FROM telemetry_events t, range(?) r`, agents, benchStart.UnixMilli(), agents*per); err != nil {
		t.Fatal(err)
	}
	if _, err := fill.DB().ExecContext(ctx, `DELETE FROM telemetry_events WHERE event_id = ?`, seed.EventID); err != nil {
		t.Fatal(err)
	}
	if err := fill.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := duckdb.Open(ctx, path, duckdb.WithMemoryLimit(duckdb.MinMemoryLimit), duckdb.WithQueryTimeout(3*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Quantiles(ctx, store.Window{Tenant: "acme", From: benchStart, To: benchStart.Add(time.Duration(agents*per) * time.Millisecond)})
	if err != nil {
		t.Fatalf("Quantiles under %d MiB: %v", duckdb.MinMemoryLimit>>20, err)
	}
	if len(got) != agents {
		t.Fatalf("%d spreads, want %d", len(got), agents)
	}
	want := map[string]store.Spread{}
	for a := range agents {
		var rs, bs []float64
		for i := a; i < agents*per; i += agents {
			rs, bs = append(rs, float64(i%97)), append(bs, float64(i%10007))
		}
		sp := store.Spread{Agent: fmt.Sprintf("tenants/acme/agents/q%d", a), Accesses: per}
		sp.RowsMedian, sp.RowsMAD = store.MedianMAD(rs)
		sp.BytesMedian, sp.BytesMAD = store.MedianMAD(bs)
		want[sp.Agent] = sp
	}
	for i, sp := range got {
		if i > 0 && got[i-1].Agent >= sp.Agent {
			t.Fatalf("spreads not ordered by agent: %q before %q", got[i-1].Agent, sp.Agent)
		}
		if sp != want[sp.Agent] {
			t.Fatalf("spread %+v, want %+v", sp, want[sp.Agent])
		}
	}
}
