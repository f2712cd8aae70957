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

// BenchmarkInsert measures insert throughput into a DuckDB file by batch size; the rows/s metric
// is what to compare (go test -bench Insert -run '^$' ./internal/store/duckdb/).
func BenchmarkInsert(b *testing.B) {
	for _, batch := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			ctx := context.Background()
			s, err := duckdb.Open(ctx, filepath.Join(b.TempDir(), "bench.duckdb"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			events := make([]store.Event, batch)
			start := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
			n := 0
			b.ResetTimer()
			for b.Loop() {
				for i := range events {
					n++
					events[i] = store.Event{
						EventID: fmt.Sprintf("01a2192e-%012d", n), Time: start.Add(time.Duration(n) * time.Millisecond),
						Tenant: "acme", Agent: "tenants/acme/agents/faq", Kind: "token.requested", Outcome: "issued",
						Actor: "faq", Environment: "dev", Scopes: []string{"kb.read", "ticket.search"}, RequestID: "req",
						Detail: `{"grant_type":"client_credentials","token_id":"t","audiences":["urn:agentid:api"]}`, StreamSeq: uint64(n),
					}
				}
				if err := s.Insert(ctx, events); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
