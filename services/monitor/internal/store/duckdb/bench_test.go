//go:build unix

package duckdb_test

import (
	"context"
	"crypto/md5"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/store/duckdb"
)

// processCPU is the CPU time of the whole process, DuckDB's own threads included.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

var benchStart = time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)

// benchEvent is the n-th row of a token request, with a random (UUIDv5) id like the rows of
// batched token requests.
func benchEvent(n int) store.Event {
	return store.Event{
		EventID: uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "bench-%d", n)).String(),
		Time:    benchStart.Add(time.Duration(n) * time.Millisecond),
		Tenant:  "acme", Agent: "tenants/acme/agents/faq", Kind: "token.requested", Outcome: "issued",
		Actor: "faq", Environment: "dev", Scopes: []string{"kb.read", "ticket.search"}, RequestID: "req",
		Detail: `{"grant_type":"client_credentials","token_id":"t","audiences":["urn:agentid:api"]}`, StreamSeq: uint64(n),
		Owner: "alice@acme.example", AgentKnown: true, ClientID: "faq", Resource: "urn:agentid:api",
		SourceAddress: fmt.Sprintf("10.0.%d.%d", n/256%256, n%256), LatencyUS: int64(n % 5000),
	}
}

// runInserts inserts batches made by next and reports rows/s and the process CPU per row.
func runInserts(b *testing.B, s *duckdb.Store, batch int, next func(n int) store.Event) {
	ctx := context.Background()
	events := make([]store.Event, batch)
	n, rows := 0, 0
	cpu := processCPU(b)
	b.ResetTimer()
	for b.Loop() {
		for i := range events {
			events[i] = next(n)
			n++
		}
		if err := s.Insert(ctx, events); err != nil {
			b.Fatal(err)
		}
		rows += batch
	}
	b.StopTimer()
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64((processCPU(b)-cpu).Nanoseconds())/1e3/float64(rows), "cpu-µs/row")
}

func openBench(b *testing.B) *duckdb.Store {
	s, err := duckdb.Open(context.Background(), filepath.Join(b.TempDir(), "bench.duckdb"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// BenchmarkInsert measures inserts into an empty DuckDB file by batch size; rows/s and
// cpu-µs/row are what to compare (go test -bench Insert -run '^$' ./internal/store/duckdb/).
func BenchmarkInsert(b *testing.B) {
	for _, batch := range []int{1, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			runInserts(b, openBench(b), batch, benchEvent)
		})
	}
}

// storedEvent is the i-th row BenchmarkInsertExisting stores before it starts, with a random id
// (md5 is only a way for SQL and Go to spell the same one).
func storedEvent(i int) store.Event {
	return store.Event{EventID: fmt.Sprintf("%x", md5.Sum(fmt.Appendf(nil, "stored-%d", i))), Time: time.UnixMilli(1893456000000 + int64(i)).UTC(),
		Tenant: "acme", Kind: "token.requested", Outcome: "redelivered"}
}

// BenchmarkInsertExisting measures batches of 200 rows into a table that already holds rows
// (an hour of telemetry at 1,000 tokens/s is 3.6 million): new rows, and rows stored before the
// store was opened (a redelivery after a restart: every row is skipped).
func BenchmarkInsertExisting(b *testing.B) {
	const batch = 200
	for _, c := range []struct {
		stored int
		name   string
		next   func(int) store.Event
	}{
		{0, "new", benchEvent},
		{1_000_000, "new", benchEvent},
		{1_000_000, "redelivered", func(n int) store.Event { return storedEvent(n % 1_000_000) }},
	} {
		b.Run(fmt.Sprintf("stored=%d/%s", c.stored, c.name), func(b *testing.B) {
			s := openBench(b)
			if _, err := s.DB().Exec(`INSERT INTO telemetry_events (event_id, "time", time_ms, tenant, agent, kind,
					outcome, actor, on_behalf_of, environment, scopes, request_id, detail, stream_seq)
				SELECT md5('stored-' || i), make_timestamp_ms(1893456000000 + i), 1893456000000 + i, 'acme',
					'tenants/acme/agents/faq', 'token.requested', 'issued', 'faq', '', 'dev', ['kb.read'], 'req', '{}', i
				FROM range(?) t(i)`, c.stored); err != nil {
				b.Fatal(err)
			}
			if _, err := s.DB().Exec(`CHECKPOINT`); err != nil { // as a long-running store has
				b.Fatal(err)
			}
			runInserts(b, s, batch, c.next)
			var rows int
			if err := s.DB().QueryRow(`SELECT count(*) FROM telemetry_events WHERE outcome = 'redelivered'`).Scan(&rows); err != nil || rows != 0 {
				b.Fatalf("%d redelivered rows stored (%v)", rows, err)
			}
		})
	}
}
