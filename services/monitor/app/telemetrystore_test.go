package app_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/clickhousedev"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/monitor/app"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

func TestClickHouseConfigIsValidated(t *testing.T) {
	tests := []struct {
		name    string
		cfg     app.Config
		wantErr string
	}{
		{"duckdb default", app.Config{}, ""},
		{"clickhouse", app.Config{ClickHouseDSN: "clickhouse://u:p@ch:9000/agentid", ClickHouseRetentionYears: 7}, ""},
		{"both stores", app.Config{ClickHouseDSN: "clickhouse://ch:9000/agentid", DuckDBPath: "/tmp/t.duckdb"}, "not both"},
		{"retention too long", app.Config{ClickHouseDSN: "clickhouse://ch:9000/agentid", ClickHouseRetentionYears: 8}, "1 to 7 years"},
		{"retention without clickhouse", app.Config{ClickHouseRetentionYears: 2}, "needs a ClickHouse DSN"},
		{"duckdb memory limit", app.Config{DuckDBPath: "/tmp/t.duckdb", DuckDBMemoryLimit: 128 << 20}, ""},
		{"duckdb memory limit at the minimum", app.Config{DuckDBPath: "/tmp/t.duckdb", DuckDBMemoryLimit: app.MinDuckDBMemoryLimit}, ""},
		{"duckdb memory limit below the minimum", app.Config{DuckDBPath: "/tmp/t.duckdb", DuckDBMemoryLimit: app.MinDuckDBMemoryLimit - 1}, "below the minimum of 33554432 bytes (32 MiB)"},
		{"negative duckdb memory limit", app.Config{DuckDBPath: "/tmp/t.duckdb", DuckDBMemoryLimit: -1}, "memory limit of -1 bytes is below the minimum"},
		{"duckdb memory limit in memory", app.Config{DuckDBMemoryLimit: 128 << 20}, "needs a DuckDB file"},
		{"duckdb memory limit with clickhouse", app.Config{ClickHouseDSN: "clickhouse://ch:9000/agentid", DuckDBMemoryLimit: 128 << 20}, "needs the DuckDB store"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// TestMonitorOnClickHouse runs the monitor with a ClickHouse DSN: access telemetry published on
// TELEMETRY is stored in ClickHouse and read back through MonitorService.
func TestMonitorOnClickHouse(t *testing.T) {
	ctx := context.Background()
	srv, err := clickhousedev.Start(ctx, clickhousedev.Config{})
	if err != nil {
		clickhousedev.Unavailable(t, err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	n := testkit.StartNATS(t)
	es := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/monitor"), eventstore.WithLogger(quiet), eventstore.WithRegisterer(nil))
	if err := es.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	var rows []store.Event
	for i := range 30 {
		rows = append(rows, store.Event{EventID: fmt.Sprintf("etl-%02d", i), Time: now.Add(time.Duration(-i) * time.Minute), Tenant: "acme", Agent: "tenants/acme/agents/etl",
			Kind: store.KindAccess, Outcome: "allowed", Resource: "/reports", Action: "GET", Rows: 5, Bytes: 500, SourceAddress: "10.1.2.3"})
	}
	// The agent is registered (analytics leave out ghost agents' rows).
	md := eventstore.Metadata{Actor: eventstore.Actor{ID: "registry", Kind: eventstore.ActorService}}
	if _, err := es.Append(ctx, eventstore.Append{Tenant: "acme", AggregateType: eventstore.AggregateAgent, AggregateID: "etl",
		Subject: "tenants/acme/agents/etl", Metadata: md, IdempotencyKey: "etl-registered", Type: "agent.registered",
		Data: &registryv1.AgentRegistered{Agent: &registryv1.Agent{Name: "tenants/acme/agents/etl", Owner: "olga@acme.example",
			Environment: registryv1.Environment_ENVIRONMENT_PROD, RiskTier: registryv1.RiskTier_RISK_TIER_LOW}}}); err != nil {
		t.Fatal(err)
	}
	counts := publishAccess(t, es, "acme", "clickhouse", rows)
	m := runMonitor(t, es, app.Config{ClickHouseDSN: srv.DSN("agentid")})
	defer m.stop()
	admin := testkit.WithBearer(t.Context(), "platform-admin")
	testkit.Eventually(t, 0, "the telemetry stored in ClickHouse", func() (bool, error) {
		resp, err := m.client.GetAgentUsage(admin, &monitorv1.GetAgentUsageRequest{
			Agent: "tenants/acme/agents/etl", StartTime: timestamppb.New(now.Add(-time.Hour)),
		})
		return err == nil && resp.GetEvents() == counts["tenants/acme/agents/etl"], err
	})
	out, err := srv.Query(ctx, "SELECT count() FROM agentid.telemetry_events WHERE kind = 'access'")
	if err != nil || strings.TrimSpace(out) != "30" {
		t.Errorf("rows in ClickHouse: %q, %v; want 30", out, err)
	}
}

// TestDuckDBMemoryMetrics checks that the DuckDB store's memory is reported on the service's
// registry with the configured limit, and that closing the service unregisters it, once: a second
// service on the same registry reports its own store, and closing the first one again does not
// take the second one's metrics away.
func TestDuckDBMemoryMetrics(t *testing.T) {
	es := eventstore.New(testkit.StartNATS(t).JetStream(t), eventstore.WithLogger(quiet), eventstore.WithRegisterer(nil))
	if err := es.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	var previous *app.App
	for i, limit := range []int64{0, 32 << 20} {
		a, err := app.New(app.Config{DuckDBPath: filepath.Join(t.TempDir(), "telemetry.duckdb"), DuckDBMemoryLimit: limit},
			app.Deps{Store: es, Logger: quiet, Registerer: reg})
		if err != nil {
			t.Fatal(err)
		}
		want := limit
		if want == 0 {
			want = app.DefaultDuckDBMemoryLimit
		}
		if previous != nil {
			if err := previous.Close(); err != nil { // closed twice
				t.Fatal(err)
			}
		}
		got, tags := gatherDuckDB(t, reg)
		if got != float64(want) || tags == 0 {
			t.Errorf("service %d: monitor_duckdb_memory_limit_bytes = %v with %d tags, want %d and the tags of duckdb_memory()", i, got, tags, want)
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		if got, tags := gatherDuckDB(t, reg); got != -1 || tags != 0 {
			t.Errorf("service %d closed: limit %v and %d tags still reported", i, got, tags)
		}
		// Unregistered, not merely silent: a collector of the same metric registers again.
		probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: "monitor_duckdb_memory_limit_bytes", Help: "The DuckDB telemetry store's memory limit (its buffer pool's bound)."})
		if err := reg.Register(probe); err != nil {
			t.Fatalf("service %d closed: its collector is still registered: %v", i, err)
		}
		reg.Unregister(probe)
		previous = a
	}
}

// gatherDuckDB returns the reported memory limit (-1 if none) and the number of memory tags.
func gatherDuckDB(t *testing.T, reg *prometheus.Registry) (limit float64, tags int) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	limit = -1
	for _, mf := range mfs {
		switch mf.GetName() {
		case "monitor_duckdb_memory_limit_bytes":
			limit = mf.GetMetric()[0].GetGauge().GetValue()
		case "monitor_duckdb_memory_bytes":
			tags = len(mf.GetMetric())
		}
	}
	return limit, tags
}
