//go:build unix

package clickhouse_test

import (
	"context"
	"crypto/sha1"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/clickhousedev"
	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/store/clickhouse"
)

// processCPU is the CPU time of this process (the server's is not included).
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

var benchStart = time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)

// benchEvent is the n-th access row of one of 50 agents, with a random-looking id.
func benchEvent(n int) store.Event {
	agent := fmt.Sprintf("tenants/acme/agents/a%02d", n%50)
	return store.Event{
		EventID: fmt.Sprintf("%x", sha1.Sum(fmt.Appendf(nil, "bench-%d", n))),
		Time:    benchStart.Add(time.Duration(n) * time.Millisecond),
		Tenant:  "acme", Agent: agent, Kind: store.KindAccess, Outcome: "allowed",
		Actor: "reports-api", Environment: "prod", Scopes: []string{"reports.read"}, RequestID: "req",
		Detail: `{"reason":""}`, StreamSeq: uint64(n), Owner: "alice@acme.example", AgentKnown: true,
		ClientID: agent, Resource: fmt.Sprintf("/reports/%d", n%20), Action: "GET", Bytes: int64(1000 + n%5000),
		Rows: int64(n % 100), SourceAddress: fmt.Sprintf("10.0.%d.%d", n/256%256, n%256), LatencyUS: int64(n % 5000),
		TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
	}
}

// BenchmarkInsert measures sustained ingest into ClickHouse on this machine, the server beside
// the benchmark, by batch size (5000 is the ingest consumer's default): events/s is what to
// compare (go test -bench Insert -run '^$' ./internal/store/clickhouse/). "checked" is the first recentHorizon after Open, when every
// batch is also checked against the stored rows; "steady" is afterwards.
func BenchmarkInsert(b *testing.B) {
	for _, mode := range []string{"steady", "checked"} {
		for _, batch := range []int{1000, 5000, 10000} {
			b.Run(fmt.Sprintf("%s/batch=%d", mode, batch), func(b *testing.B) {
				_, dsn := clickhousedev.Database(b)
				s, err := clickhouse.Open(context.Background(), clickhouse.Config{DSN: dsn})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				if mode == "steady" {
					clickhouse.EndOpenCheck(s)
				}
				ctx := context.Background()
				events := make([]store.Event, batch)
				n, rows := 0, 0
				cpu := processCPU(b)
				b.ResetTimer()
				for b.Loop() {
					for i := range events {
						events[i] = benchEvent(n)
						n++
					}
					if err := s.Insert(ctx, events); err != nil {
						b.Fatal(err)
					}
					rows += batch
				}
				b.StopTimer()
				b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "events/s")
				b.ReportMetric(float64((processCPU(b)-cpu).Nanoseconds())/1e3/float64(rows), "cpu-µs/event")
			})
		}
	}
}
