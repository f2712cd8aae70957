package clickhouse_test

import (
	"context"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"

	"github.com/agentid/agentid/pkg/clickhousedev"
	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/store/clickhouse"
)

// TestScopeUseMigrationRecountsRowsStoredBefore stores rows under migrations 001-003 (whose scope
// view counts the scopes of every row), then opens the store, which applies 004: agent_usage_daily
// is rebuilt from the rows so that a scope counts only on an issued token or an allowed access
// (store.UsesScopes), copies once, other dimensions as before; and rows stored after it are counted
// by the same rule.
func TestScopeUseMigrationRecountsRowsStoredBefore(t *testing.T) {
	ctx := context.Background()
	db, dsn := clickhousedev.Database(t)
	srv := clickhousedev.SharedServer(t)
	all, err := fs.Sub(clickhouse.Migrations, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	migrations, err := clickhouse.LoadMigrations(all)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := ch.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := ch.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := clickhouse.Migrate(ctx, conn, slices.DeleteFunc(migrations, func(m clickhouse.Migration) bool { return m.Version > 3 })); err != nil {
		t.Fatal(err)
	}
	// 2031-01-01 01:00 UTC: 'a' twice (a copy), a policy decision carrying both scopes asked for at
	// admission, a refused token request, a denied and an allowed access.
	const agent = "tenants/acme/agents/etl"
	if _, err := srv.Query(ctx, "INSERT INTO "+db+".telemetry_events (event_id, time, time_ms, tenant, agent, kind, outcome, resource, scopes, agent_known) VALUES "+
		"('a', toDateTime(1924995600), 1924995600000, 'acme', '"+agent+"', 'token.requested', 'issued', 'urn:api', ['docs.search'], 1), "+
		"('a', toDateTime(1924995600), 1924995600000, 'acme', '"+agent+"', 'token.requested', 'issued', 'urn:api', ['docs.search'], 1), "+
		"('b', toDateTime(1924995601), 1924995601000, 'acme', '"+agent+"', 'policy.decided', 'allow', '', ['docs.search', 'docs.read'], 1), "+
		"('c', toDateTime(1924995602), 1924995602000, 'acme', '"+agent+"', 'token.requested', 'invalid_scope', 'urn:api', ['docs.read'], 1), "+
		"('d', toDateTime(1924995603), 1924995603000, 'acme', '"+agent+"', 'access', 'denied', '/docs', ['docs.admin'], 1), "+
		"('e', toDateTime(1924995604), 1924995604000, 'acme', '"+agent+"', 'access', 'allowed', '/docs', ['docs.search'], 1)"); err != nil {
		t.Fatal(err)
	}
	// Under 003 every row's scopes count: a twice (both copies pass the view), b two, c, d, e.
	if got, err := srv.Query(ctx, "SELECT sum(n) FROM "+db+".agent_usage_daily WHERE dimension = 'scope'"); err != nil || strings.TrimSpace(got) != "7" {
		t.Fatalf("scope rows under 003 = %q, %v; want 7", got, err)
	}

	s, err := clickhouse.Open(ctx, clickhouse.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	applied, err := clickhouse.AppliedMigrations(ctx, s.Conn())
	if err != nil || applied[4] != "004_scope_use.sql" {
		t.Fatalf("applied = %v, %v; want 004_scope_use.sql", applied, err)
	}
	// Stored after 004: a refused request for docs.write, then an allowed access with it.
	day := time.Unix(1924995600, 0).UTC().Truncate(24 * time.Hour)
	if err := s.Insert(ctx, []store.Event{
		{EventID: "f", Time: time.UnixMilli(1924995605000), Tenant: "acme", Agent: agent, Kind: store.KindTokenRequested, Outcome: "invalid_scope", Scopes: []string{"docs.write"}, AgentKnown: true},
		{EventID: "g", Time: time.UnixMilli(1924995606000), Tenant: "acme", Agent: agent, Kind: store.KindAccess, Outcome: "allowed", Resource: "/docs", Scopes: []string{"docs.write"}, AgentKnown: true},
	}); err != nil {
		t.Fatal(err)
	}
	w := store.Window{Tenant: "acme", From: day, To: day.Add(24 * time.Hour)} // a whole day: agent_usage_daily
	tests := []struct {
		dim  store.Dimension
		want []store.Usage
	}{
		{store.DimScope, []store.Usage{
			{Agent: agent, Value: "docs.search", Count: 2, LastSeen: time.UnixMilli(1924995604000)}, // a (once), e
			{Agent: agent, Value: "docs.write", Count: 1, LastSeen: time.UnixMilli(1924995606000)},  // g
		}},
		{store.DimResource, []store.Usage{
			{Agent: agent, Value: "/docs", Count: 3, LastSeen: time.UnixMilli(1924995606000)},   // d, e, g
			{Agent: agent, Value: "urn:api", Count: 2, LastSeen: time.UnixMilli(1924995602000)}, // a (once), c
		}},
	}
	for _, tt := range tests {
		got, err := s.Usage(ctx, w, tt.dim)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(got, tt.want, func(x, y store.Usage) bool {
			return x.Agent == y.Agent && x.Value == y.Value && x.Count == y.Count && x.LastSeen.Equal(y.LastSeen)
		}) {
			t.Errorf("usage of %s after 004:\n got  %+v\n want %+v", tt.dim, got, tt.want)
		}
	}
}
