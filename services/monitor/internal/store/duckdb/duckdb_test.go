package duckdb_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/store/duckdb"
	"github.com/agentid/agentid/services/monitor/internal/store/storetest"
)

func TestContractInMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := duckdb.Open(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestContractOnFile(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := duckdb.Open(context.Background(), filepath.Join(t.TempDir(), "telemetry.duckdb"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

var at = time.Date(2031, 1, 2, 3, 4, 5, 6_000_000, time.UTC)

func TestReopenKeepsRows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "telemetry.duckdb")
	ctx := context.Background()
	s, err := duckdb.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	e := store.Event{EventID: "e1", Time: at, Tenant: "acme", Kind: "token.requested", Scopes: []string{"kb.read"}, Detail: `{"a":1}`, StreamSeq: 7}
	if err := s.Insert(ctx, []store.Event{e}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = duckdb.Open(ctx, path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	// Re-inserting after the reopen is still a no-op: the key survives too.
	if err := s.Insert(ctx, []store.Event{e, {EventID: "e2", Time: at.Add(time.Second), Tenant: "acme", Kind: "policy.decided"}}); err != nil {
		t.Fatal(err)
	}
	got, _, err := s.List(ctx, store.Query{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1].EventID != "e1" || !got[1].Time.Equal(at) || !slices.Equal(got[1].Scopes, []string{"kb.read"}) || got[1].StreamSeq != 7 {
		t.Fatalf("after reopen: %+v", got)
	}
}

func TestAccessLogView(t *testing.T) {
	ctx := context.Background()
	s, err := duckdb.Open(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Insert(ctx, []store.Event{
		{EventID: "e1", Time: at, Tenant: "acme", Agent: "tenants/acme/agents/pay", Kind: "token.requested", Outcome: "issued",
			Actor: "pay", OnBehalfOf: "alice@acme.example", Environment: "prod", Scopes: []string{"payment.initiate.limited"}, RequestID: "r1",
			Detail: `{"token_id":"t1"}`},
		{EventID: "e2", Time: at.Add(time.Minute), Tenant: "globex", Kind: "token.requested", Outcome: "denied", Actor: "x"},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The analysts' question in one query: who or what accessed what, when, and why.
	row := s.DB().QueryRowContext(ctx, `
		SELECT "time", actor, on_behalf_of, agent, kind, outcome, scopes[1], environment, request_id, json_extract_string(detail, '$.token_id')
		FROM access_log WHERE tenant = 'acme' AND list_contains(scopes, 'payment.initiate.limited')`)
	var (
		tm                                                     time.Time
		actor, obo, agent, kind, outcome, scope, env, req, tok string
	)
	if err := row.Scan(&tm, &actor, &obo, &agent, &kind, &outcome, &scope, &env, &req, &tok); err != nil {
		t.Fatal(err)
	}
	if !tm.Equal(at) || actor != "pay" || obo != "alice@acme.example" || agent != "tenants/acme/agents/pay" || kind != "token.requested" ||
		outcome != "issued" || scope != "payment.initiate.limited" || env != "prod" || req != "r1" || tok != "t1" {
		t.Errorf("access_log row = %v %s %s %s %s %s %s %s %s %s", tm, actor, obo, agent, kind, outcome, scope, env, req, tok)
	}
}

func TestOpenFailsOnABadPath(t *testing.T) {
	if s, err := duckdb.Open(context.Background(), filepath.Join(t.TempDir(), "missing", "dir", "t.duckdb")); err == nil {
		_ = s.Close()
		t.Fatal("opened a database in a missing directory")
	}
}

// TestRedeliveriesAcrossCommitsAndRestarts re-inserts stored ids in later commits, mixed with
// new ones, before and after a reopen: every id is stored once, with its first copy. The rows are
// older than any the store remembers at open, so after a reopen only the stored rows tell; the
// checks after a reopen name 101 ids (a placeholder each) and 1,500 (one list parameter).
func TestRedeliveriesAcrossCommitsAndRestarts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "telemetry.duckdb")
	ctx := context.Background()
	past := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	ev := func(i int, outcome string) store.Event {
		return store.Event{EventID: fmt.Sprintf("e%04d", i), Time: past.Add(time.Duration(i) * 100 * time.Millisecond), Tenant: "acme",
			Kind: "token.requested", Outcome: outcome, StreamSeq: uint64(i)}
	}
	batch := func(from, to int, outcome string) []store.Event {
		var out []store.Event
		for i := from; i < to; i++ {
			out = append(out, ev(i, outcome))
		}
		return out
	}
	steps := []struct {
		name   string
		reopen bool
		events []store.Event
	}{
		{"first commit", false, batch(0, 100, "issued")},
		{"all stored again", false, batch(0, 100, "redelivered")},
		{"stored and new mixed", false, append(batch(50, 100, "redelivered"), batch(100, 150, "issued")...)},
		{"one stored among new, after a reopen", true, append(batch(150, 250, "issued"), ev(7, "redelivered"))},
		{"many new after a reopen", true, batch(250, 1500, "issued")},
		{"all stored again after a reopen", true, batch(0, 1500, "redelivered")},
	}
	s, err := duckdb.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	for _, step := range steps {
		if step.reopen {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if s, err = duckdb.Open(ctx, path); err != nil {
				t.Fatalf("%s: reopen: %v", step.name, err)
			}
		}
		if err := s.Insert(ctx, step.events); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
	}
	var rows, distinct, redelivered int
	if err := s.DB().QueryRowContext(ctx, `SELECT count(*), count(DISTINCT event_id), count(*) FILTER (outcome = 'redelivered') FROM telemetry_events`).
		Scan(&rows, &distinct, &redelivered); err != nil {
		t.Fatal(err)
	}
	if rows != 1500 || distinct != 1500 || redelivered != 0 {
		t.Errorf("%d rows, %d distinct ids, %d redelivered copies; want 1500, 1500, 0", rows, distinct, redelivered)
	}
}

// TestOpenDropsTheOldPrimaryKey opens a file made when event_id was the primary key: its rows are
// kept, the key and its index are gone, and stored ids are still skipped.
func TestOpenDropsTheOldPrimaryKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "telemetry.duckdb")
	ctx := context.Background()
	old, err := sql.Open("duckdb", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`CREATE TABLE telemetry_events (event_id VARCHAR NOT NULL PRIMARY KEY, "time" TIMESTAMP NOT NULL, time_ms BIGINT NOT NULL,
			tenant VARCHAR NOT NULL, agent VARCHAR NOT NULL, kind VARCHAR NOT NULL, outcome VARCHAR NOT NULL, actor VARCHAR NOT NULL,
			on_behalf_of VARCHAR NOT NULL, environment VARCHAR NOT NULL, scopes VARCHAR[] NOT NULL, request_id VARCHAR NOT NULL,
			detail VARCHAR NOT NULL, stream_seq BIGINT NOT NULL)`,
		`CREATE VIEW access_log AS SELECT "time", tenant FROM telemetry_events`,
		fmt.Sprintf(`INSERT INTO telemetry_events VALUES ('e1', TIMESTAMP '2031-01-02 03:04:05.006', %d, 'acme', '', 'token.requested',
			'issued', 'pay', '', 'prod', ['kb.read'], 'r1', '{}', 7)`, at.UnixMilli()),
	} {
		if _, err := old.ExecContext(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := duckdb.Open(ctx, path)
	if err != nil {
		t.Fatalf("open the old file: %v", err)
	}
	defer s.Close()
	var constraints, indexes int
	if err := s.DB().QueryRowContext(ctx, `SELECT (SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'telemetry_events' AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')),
		(SELECT count(*) FROM duckdb_indexes() WHERE table_name = 'telemetry_events')`).Scan(&constraints, &indexes); err != nil {
		t.Fatal(err)
	}
	if constraints != 0 || indexes != 0 {
		t.Errorf("%d key constraints and %d indexes left on telemetry_events", constraints, indexes)
	}
	if err := s.Insert(ctx, []store.Event{{EventID: "e1", Time: at, Tenant: "acme", Kind: "token.requested", Outcome: "redelivered"}}); err != nil {
		t.Fatal(err)
	}
	got, _, err := s.List(ctx, store.Query{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Outcome != "issued" || got[0].StreamSeq != 7 || !slices.Equal(got[0].Scopes, []string{"kb.read"}) {
		t.Fatalf("rows after the migration: %+v", got)
	}
	var actor string
	if err := s.DB().QueryRowContext(ctx, `SELECT actor FROM access_log WHERE tenant = 'acme'`).Scan(&actor); err != nil || actor != "pay" {
		t.Errorf("access_log after the migration: %q, %v", actor, err)
	}
}

// TestRepublishedWithANewTimeAfterAReopen stores an event again under the same id with a later
// time, as a reporter's retried access batch is, after a reopen: it is skipped.
func TestRepublishedWithANewTimeAfterAReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "telemetry.duckdb")
	ctx := context.Background()
	now := time.Now().UTC()
	s, err := duckdb.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if err := s.Insert(ctx, []store.Event{{EventID: "batch-1", Time: now, Tenant: "acme", Kind: "access.dropped", Outcome: "dropped"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = duckdb.Open(ctx, path); err != nil {
		t.Fatal(err)
	}
	if err := s.Insert(ctx, []store.Event{{EventID: "batch-1", Time: now.Add(3 * time.Minute), Tenant: "acme", Kind: "access.dropped", Outcome: "again"}}); err != nil {
		t.Fatal(err)
	}
	got, _, err := s.List(ctx, store.Query{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Outcome != "dropped" {
		t.Fatalf("rows: %+v, want the first copy only", got)
	}
}

// TestInsertsWithinASmallMemoryLimit inserts 300,000 rows with random ids into a file store whose
// buffer pool is 32 MB: inserts and queries keep working, since nothing (no index) has to stay in
// memory. With event_id as the primary key, the same inserts fail ("could not allocate block").
func TestInsertsWithinASmallMemoryLimit(t *testing.T) {
	ctx := context.Background()
	s, err := duckdb.Open(ctx, filepath.Join(t.TempDir(), "telemetry.duckdb"), duckdb.WithMemoryLimit(32<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var limit string
	if err := s.DB().QueryRowContext(ctx, `SELECT current_setting('memory_limit')`).Scan(&limit); err != nil || limit != "32.0 MiB" {
		t.Fatalf("memory_limit = %q, %v; want 32.0 MiB", limit, err)
	}
	const batches, perBatch = 150, 2000
	events := make([]store.Event, perBatch)
	for b := range batches {
		for i := range events {
			n := b*perBatch + i
			events[i] = store.Event{EventID: uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "%d", n)).String(),
				Time: at.Add(time.Duration(n) * time.Millisecond), Tenant: "acme", Kind: "token.requested", Outcome: "issued",
				Scopes: []string{"kb.read"}, Detail: `{"grant_type":"client_credentials","audiences":["urn:agentid:api"]}`}
		}
		if err := s.Insert(ctx, events); err != nil {
			t.Fatalf("batch %d under a 32 MB memory limit: %v", b, err)
		}
	}
	// The first batch again, as after a restart: still skipped.
	for i := range events {
		events[i] = store.Event{EventID: uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "%d", i)).String(),
			Time: at.Add(time.Duration(i) * time.Millisecond), Tenant: "acme", Kind: "token.requested", Outcome: "again"}
	}
	if err := s.Insert(ctx, events); err != nil {
		t.Fatal(err)
	}
	var rows, again int
	if err := s.DB().QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (outcome = 'again') FROM telemetry_events`).Scan(&rows, &again); err != nil {
		t.Fatal(err)
	}
	if rows != batches*perBatch || again != 0 {
		t.Errorf("%d rows (%d copies), want %d and none", rows, again, batches*perBatch)
	}
	// Rows not yet checkpointed stay pinned in memory (about 20 MB of the 32 here, with the wide
	// row); a running store checkpoints as its WAL grows, so a query finds them evictable.
	if _, err := s.DB().ExecContext(ctx, `CHECKPOINT`); err != nil {
		t.Fatal(err)
	}
	page, _, err := s.List(ctx, store.Query{Tenant: "acme", PageSize: store.MaxPageSize})
	if err != nil || len(page) != store.MaxPageSize {
		t.Errorf("list under the limit: %d rows, %v", len(page), err)
	}
}

// TestOpenAddsTheWideColumnsToAnOldFile opens a file written by the schema before the wide row
// (no owner, resource, bytes ... columns): its rows are kept with the columns' defaults (known,
// empty, zero), new rows store every column, and the analytics read both.
func TestOpenAddsTheWideColumnsToAnOldFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "telemetry.duckdb")
	ctx := context.Background()
	old, err := sql.Open("duckdb", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`CREATE TABLE telemetry_events (event_id VARCHAR NOT NULL, "time" TIMESTAMP NOT NULL, time_ms BIGINT NOT NULL,
			tenant VARCHAR NOT NULL, agent VARCHAR NOT NULL, kind VARCHAR NOT NULL, outcome VARCHAR NOT NULL, actor VARCHAR NOT NULL,
			on_behalf_of VARCHAR NOT NULL, environment VARCHAR NOT NULL, scopes VARCHAR[] NOT NULL, request_id VARCHAR NOT NULL,
			detail VARCHAR NOT NULL, stream_seq BIGINT NOT NULL)`,
		`CREATE VIEW access_log AS SELECT "time", tenant, actor, on_behalf_of, agent, kind, outcome, scopes, environment, request_id, detail FROM telemetry_events`,
		fmt.Sprintf(`INSERT INTO telemetry_events VALUES ('old-1', TIMESTAMP '2031-01-02 03:04:05.006', %d, 'acme', 'tenants/acme/agents/pay',
			'access', 'allowed', 'pay', 'alice', 'prod', ['kb.read'], 'r1', '{"resource":"/pay"}', 7)`, at.UnixMilli()),
	} {
		if _, err := old.ExecContext(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := duckdb.Open(ctx, path)
	if err != nil {
		t.Fatalf("open the old file: %v", err)
	}
	defer s.Close()
	fresh := store.Event{EventID: "new-1", Time: at.Add(time.Minute), Tenant: "acme", Agent: "tenants/acme/agents/pay", Kind: store.KindAccess,
		Outcome: "denied", Owner: "bob", AgentKnown: true, ClientID: "pay", Resource: "/refund", Action: "POST", Bytes: 10, Rows: 2,
		SourceAddress: "10.0.0.9", LatencyUS: 5, TraceID: "t"}
	if err := s.Insert(ctx, []store.Event{fresh, {EventID: "old-1", Time: at, Tenant: "acme", Kind: "access", Outcome: "redelivered"}}); err != nil {
		t.Fatal(err)
	}
	got, _, err := s.List(ctx, store.Query{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("rows after the migration: %+v", got)
	}
	if o := got[1]; o.EventID != "old-1" || o.Outcome != "allowed" || o.StreamSeq != 7 || !o.AgentKnown || o.Owner != "" || o.Resource != "" || o.Bytes != 0 ||
		o.Detail != `{"resource":"/pay"}` || !slices.Equal(o.Scopes, []string{"kb.read"}) {
		t.Errorf("old row after the migration: %+v", o)
	}
	if n := got[0]; n.EventID != "new-1" || n.Owner != "bob" || n.Resource != "/refund" || n.SourceNetwork != "10.0.0.0/24" || n.Rows != 2 {
		t.Errorf("new row after the migration: %+v", n)
	}
	hourly, err := s.Hourly(ctx, store.Window{Tenant: "acme", From: at.Add(-time.Hour), To: at.Add(time.Hour)})
	if err != nil || len(hourly) != 1 || hourly[0].Requests != 2 || hourly[0].Denied != 1 || hourly[0].Rows != 2 {
		t.Errorf("hourly over old and new rows: %+v, %v", hourly, err)
	}
	var resource string
	if err := s.DB().QueryRowContext(ctx, `SELECT resource FROM access_log WHERE request_id = ''`).Scan(&resource); err != nil || resource != "/refund" {
		t.Errorf("access_log after the migration: %q, %v", resource, err)
	}
	// Opening again changes nothing.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = duckdb.Open(ctx, path); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if got, _, err := s.List(ctx, store.Query{Tenant: "acme"}); err != nil || len(got) != 2 {
		t.Errorf("after a reopen: %d rows, %v", len(got), err)
	}
}

// TestDuplicateCheckReadsTheBatchsTimesOnly: a batch mixing tenants and events a week apart is
// checked per tenant and per cluster of nearby times (none wider than ten minutes), never across
// the days between; copies at both ends are still skipped.
func TestDuplicateCheckReadsTheBatchsTimesOnly(t *testing.T) {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC) // older than anything Open remembers
	mk := func(id, tenant string, tm time.Time) store.Event {
		return store.Event{EventID: id, Time: tm, Tenant: tenant, Agent: "tenants/" + tenant + "/agents/a", Kind: store.KindAccess, AgentKnown: true}
	}
	batch := []store.Event{
		mk("old-1", "acme", now.Add(-7*24*time.Hour)), mk("new-1", "acme", now), mk("old-2", "acme", now.Add(-7*24*time.Hour+time.Second)),
		mk("new-2", "acme", now.Add(time.Minute)), mk("g-1", "globex", now), mk("new-3", "acme", now.Add(11*time.Minute)),
	}
	ms := func(tm time.Time) int64 { return tm.UnixMilli() }
	want := []duckdb.CheckRange{
		{Tenant: "acme", Lo: ms(now.Add(-7 * 24 * time.Hour)), Hi: ms(now.Add(-7*24*time.Hour + time.Second)), IDs: 2},
		{Tenant: "acme", Lo: ms(now), Hi: ms(now.Add(time.Minute)), IDs: 2},
		{Tenant: "acme", Lo: ms(now.Add(11 * time.Minute)), Hi: ms(now.Add(11 * time.Minute)), IDs: 1},
		{Tenant: "globex", Lo: ms(now), Hi: ms(now), IDs: 1},
	}
	if got := duckdb.CheckClusters(batch); !slices.Equal(got, want) {
		t.Errorf("checks:\n got  %+v\n want %+v", got, want)
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "telemetry.duckdb")
	s, err := duckdb.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Insert(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// After a reopen (nothing remembered of these old times), the same batch with one new event.
	if s, err = duckdb.Open(ctx, path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Insert(store.WithRedelivered(ctx), append(slices.Clone(batch), mk("new-4", "acme", now.Add(2*time.Minute)))); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.DB().QueryRowContext(ctx, `SELECT count(*) FROM telemetry_events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(batch)+1 {
		t.Errorf("%d rows stored, want %d", n, len(batch)+1)
	}
}
