package duckdb_test

import (
	"context"
	"database/sql"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/store/duckdb"
)

// TestOpenRebuildsLastActiveFromActivityRows opens a file of the schema before agent_last_active,
// whose agent_last_seen kept the latest row of any kind (here a policy decision after the agent's
// last token): the new table is filled from the activity rows alone, the old one dropped, and
// LastActive answers the token's time, for a day before To's (the aggregate) as for To's own.
func TestOpenRebuildsLastActiveFromActivityRows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "telemetry.duckdb")
	ctx := context.Background()
	const agent = "tenants/acme/agents/idle"
	issued := time.Date(2031, 1, 2, 3, 0, 0, 0, time.UTC)
	decided := issued.Add(5 * time.Hour)
	s, err := duckdb.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Insert(ctx, []store.Event{
		{EventID: "tok", Time: issued, Tenant: "acme", Agent: agent, Kind: store.KindTokenRequested, Outcome: store.OutcomeIssued, AgentKnown: true},
		{EventID: "dec", Time: decided, Tenant: "acme", Agent: agent, Kind: "policy.decided", Outcome: "allow", AgentKnown: true},
		{EventID: "acc", Time: decided.Add(time.Minute), Tenant: "acme", Agent: agent, Kind: store.KindAccess, Outcome: store.OutcomeAllowed, AgentKnown: true},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The file as the previous release left it.
	old, err := sql.Open("duckdb", path)
	if err != nil {
		t.Fatal(err)
	}
	day := issued.Truncate(24 * time.Hour).UnixMilli()
	for _, stmt := range []string{
		`DROP TABLE agent_last_active`,
		`CREATE TABLE agent_last_seen (tenant VARCHAR NOT NULL, agent VARCHAR NOT NULL, day_ms BIGINT NOT NULL, last_ms BIGINT NOT NULL, PRIMARY KEY (tenant, agent, day_ms))`,
	} {
		if _, err := old.ExecContext(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := old.ExecContext(ctx, `INSERT INTO agent_last_seen VALUES ('acme', ?, ?, ?)`, agent, day, decided.Add(time.Minute).UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = duckdb.Open(ctx, path)
	if err != nil {
		t.Fatalf("open the old file: %v", err)
	}
	defer s.Close()
	var left int
	if err := s.DB().QueryRowContext(ctx, `SELECT count(*) FROM duckdb_tables() WHERE table_name = 'agent_last_seen'`).Scan(&left); err != nil || left != 0 {
		t.Errorf("agent_last_seen left: %d tables, %v", left, err)
	}
	for _, to := range []time.Time{decided.Add(time.Hour), issued.Add(48 * time.Hour)} {
		got, err := s.LastActive(ctx, store.Window{Tenant: "acme", To: to})
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]time.Time{agent: issued}; !maps.EqualFunc(got, want, time.Time.Equal) {
			t.Errorf("last active to %s: %v, want %v (the token, not the decision or the access)", to, got, want)
		}
	}
}
