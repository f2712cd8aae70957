package clickhouse_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/agentid/agentid/pkg/clickhousedev"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/testkit"
	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/store/clickhouse"
	"github.com/agentid/agentid/services/monitor/internal/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(clickhousedev.RunTests(m)) }

// open opens a store on a fresh database of the shared server, closed when the test ends.
func open(t *testing.T) *clickhouse.Store {
	t.Helper()
	_, dsn := clickhousedev.Database(t)
	s, err := clickhouse.Open(context.Background(), clickhouse.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		_, dsn := clickhousedev.Database(t)
		s, err := clickhouse.Open(context.Background(), clickhouse.Config{DSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

var at = time.Date(2031, 1, 2, 3, 4, 5, 6_000_000, time.UTC)

func ev(id string, offset time.Duration) store.Event {
	return store.Event{EventID: id, Time: at.Add(offset), Tenant: "acme", Agent: "tenants/acme/agents/etl",
		Kind: store.KindAccess, Outcome: "allowed", Rows: 10, Bytes: 100, AgentKnown: true}
}

func count(t *testing.T, s *clickhouse.Store, query string) uint64 {
	t.Helper()
	var n uint64
	if err := s.Conn().QueryRow(context.Background(), query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func TestMigrationsAreRecordedAndIdempotent(t *testing.T) {
	ctx := context.Background()
	_, dsn := clickhousedev.Database(t)
	for i := range 3 {
		s, err := clickhouse.Open(ctx, clickhouse.Config{DSN: dsn})
		if err != nil {
			t.Fatalf("open %d: %v", i+1, err)
		}
		applied, err := clickhouse.AppliedMigrations(ctx, s.Conn())
		if err != nil {
			t.Fatal(err)
		}
		if want := map[int]string{1: "001_telemetry_events.sql", 2: "002_agent_hourly.sql", 3: "003_utc_aggregates.sql", 4: "004_scope_use.sql", 5: "005_agent_last_active.sql"}; !mapsEqual(applied, want) {
			t.Errorf("open %d: applied %v, want %v", i+1, applied, want)
		}
		if n := count(t, s, "SELECT count() FROM schema_migrations"); n != 5 {
			t.Errorf("open %d: %d rows in schema_migrations, want 5", i+1, n)
		}
		if err := s.Insert(ctx, []store.Event{ev(fmt.Sprint("e", i), 0)}); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func mapsEqual(a, b map[int]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestMigrateFailureNamesTheMigrationAndStopsThere(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	fsys := fstest.MapFS{
		"101_ok.sql":     {Data: []byte("-- a table\nCREATE TABLE IF NOT EXISTS m_ok (n UInt8) ENGINE = Memory;\n")},
		"102_broken.sql": {Data: []byte("CREATE TABLE m_two (n UInt8) ENGINE = Memory;\nCREATE TABEL oops;\n")},
		"103_after.sql":  {Data: []byte("CREATE TABLE m_after (n UInt8) ENGINE = Memory;\n")},
	}
	migrations, err := clickhouse.LoadMigrations(fsys)
	if err != nil {
		t.Fatal(err)
	}
	err = clickhouse.Migrate(ctx, s.Conn(), migrations)
	if err == nil || !strings.Contains(err.Error(), "migration 102_broken.sql, statement 2") {
		t.Fatalf("err = %v, want one naming 102_broken.sql, statement 2", err)
	}
	applied, err := clickhouse.AppliedMigrations(ctx, s.Conn())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := applied[101]; !ok {
		t.Error("101 is not recorded")
	}
	if _, ok := applied[102]; ok {
		t.Error("the failed 102 is recorded")
	}
	if n := count(t, s, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'm_after'"); n != 0 {
		t.Error("a migration after the failed one was applied")
	}
}

func TestLoadMigrationsRefusesBadNames(t *testing.T) {
	for _, fsys := range []fstest.MapFS{
		{"1_short.sql": {Data: []byte("SELECT 1;")}},
		{"001_a.sql": {Data: []byte("SELECT 1;")}, "001_b.sql": {Data: []byte("SELECT 1;")}},
		{"001_empty.sql": {Data: []byte("-- nothing\n")}},
	} {
		if _, err := clickhouse.LoadMigrations(fsys); err == nil {
			t.Errorf("%v: no error", fsys)
		}
	}
}

// TestDeploySchemaIsTheMigrations keeps deploy/clickhouse/schema an exact copy of the embedded
// migrations, the one source of truth.
func TestDeploySchemaIsTheMigrations(t *testing.T) {
	deploy := filepath.Join("..", "..", "..", "..", "..", "deploy", "clickhouse", "schema")
	entries, err := os.ReadDir(deploy)
	if err != nil {
		t.Fatal(err)
	}
	var deployed []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".sql") {
			deployed = append(deployed, e.Name())
		}
	}
	embedded, err := os.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range embedded {
		names = append(names, e.Name())
		want, _ := os.ReadFile(filepath.Join("migrations", e.Name()))
		got, err := os.ReadFile(filepath.Join(deploy, e.Name()))
		if err != nil || string(got) != string(want) {
			t.Errorf("deploy/clickhouse/schema/%s differs from migrations/%s (err %v): cp services/monitor/internal/store/clickhouse/migrations/*.sql deploy/clickhouse/schema/", e.Name(), e.Name(), err)
		}
	}
	if !slices.Equal(deployed, names) {
		t.Errorf("deploy/clickhouse/schema holds %v, want %v", deployed, names)
	}
}

func TestRetentionDropsOnlyPartitionsWhollyBeforeTheHorizon(t *testing.T) {
	ctx := context.Background()
	_, dsn := clickhousedev.Database(t)
	s, err := clickhouse.Open(ctx, clickhouse.Config{DSN: dsn, RetentionYears: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Date(2030, 6, 15, 12, 0, 0, 0, time.UTC) // horizon 2028-06-15 12:00
	at := func(id string, tm time.Time) store.Event {
		e := ev(id, 0)
		e.Time = tm
		e.Kind, e.Outcome = store.KindTokenRequested, store.OutcomeIssued // activity: agent_last_active too
		return e
	}
	if err := s.Insert(ctx, []store.Event{
		at("2028-04", time.Date(2028, 4, 30, 23, 59, 59, 999e6, time.UTC)),
		at("2028-05-last", time.Date(2028, 5, 31, 23, 59, 59, 999e6, time.UTC)),
		at("2028-06-first", time.Date(2028, 6, 1, 0, 0, 0, 0, time.UTC)), // its month reaches past the horizon
		at("2030-06", time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC)),
	}); err != nil {
		t.Fatal(err)
	}
	dropped, err := s.ApplyRetention(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"telemetry_events/202804", "telemetry_events/202805", "agent_hourly/202804", "agent_hourly/202805",
		"agent_last_active/202804", "agent_last_active/202805", "telemetry_tenants/202804", "telemetry_tenants/202805"}
	if !slices.Equal(dropped, want) {
		t.Errorf("dropped %v, want %v", dropped, want)
	}
	got, _, err := s.List(ctx, store.Query{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range got {
		ids = append(ids, e.EventID)
	}
	if want := []string{"2030-06", "2028-06-first"}; !slices.Equal(ids, want) {
		t.Errorf("kept %v, want %v", ids, want)
	}
	hourly, err := s.Hourly(ctx, store.Window{Tenant: "acme", From: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), To: now})
	if err != nil {
		t.Fatal(err)
	}
	if len(hourly) != 2 {
		t.Errorf("hourly after retention: %+v, want the two kept hours", hourly)
	}
	if again, err := s.ApplyRetention(ctx, now); err != nil || len(again) != 0 {
		t.Errorf("second run dropped %v, %v; want nothing", again, err)
	}
}

func TestOpenRefusesABadConfig(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		cfg       clickhouse.Config
		wantField string
	}{
		{"retention too short", clickhouse.Config{DSN: "clickhouse://u:p@127.0.0.1:9/agentid", RetentionYears: -1}, "retention_years"},
		{"retention too long", clickhouse.Config{DSN: "clickhouse://u:p@127.0.0.1:9/agentid", RetentionYears: 8}, "retention_years"},
		{"no database", clickhouse.Config{DSN: "clickhouse://u:p@127.0.0.1:9"}, "clickhouse_dsn"},
		{"not a DSN", clickhouse.Config{DSN: "clickhouse://u:s3cret@127.0.0.1:9/agentid?dial_timeout=forever"}, "clickhouse_dsn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := clickhouse.Open(ctx, tt.cfg)
			if errs.KindOf(err) != errs.KindInvalidArgument || errs.FromStatus(err).Field != tt.wantField {
				t.Fatalf("err = %v, want InvalidArgument on %s", err, tt.wantField)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

func TestRedactHidesThePassword(t *testing.T) {
	for _, dsn := range []string{
		"clickhouse://monitor:s3cret@ch:9000/agentid",
		"clickhouse://ch:9000/agentid?username=monitor&password=s3cret",
	} {
		got := clickhouse.Redact(dsn)
		if strings.Contains(got, "s3cret") || !strings.Contains(got, "ch:9000") {
			t.Errorf("Redact(%q) = %q", dsn, got)
		}
	}
}

func TestRetriedBatchIsStoredOnce(t *testing.T) {
	ctx := context.Background()
	_, dsn := clickhousedev.Database(t)
	batch := []store.Event{ev("a", 0), ev("b", time.Second), ev("c", 2*time.Second)}
	s, err := clickhouse.Open(ctx, clickhouse.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // a retry by the same process
		if err := s.Insert(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The next process gets the unacknowledged batch again, with one new event.
	s, err = clickhouse.Open(ctx, clickhouse.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Insert(ctx, append(slices.Clone(batch), ev("d", 3*time.Second))); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, "SELECT count() FROM telemetry_events"); n != 4 {
		t.Errorf("%d raw rows, want 4", n)
	}
	hourly, err := s.Hourly(ctx, store.Window{Tenant: "acme", From: at.Truncate(time.Hour), To: at.Truncate(time.Hour).Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if len(hourly) != 1 || hourly[0].Requests != 4 || hourly[0].Rows != 40 || hourly[0].Bytes != 400 {
		t.Errorf("hourly = %+v, want 4 requests, 40 rows, 400 bytes", hourly)
	}
}

func TestReadsHideCopiesStoredTwice(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	if err := s.Insert(ctx, []store.Event{ev("a", 0), ev("b", time.Second)}); err != nil {
		t.Fatal(err)
	}
	// A copy that reached the table past every check (another writer): reads show it once.
	if err := s.Conn().Exec(ctx, `INSERT INTO telemetry_events SELECT * FROM telemetry_events WHERE event_id = 'a'`); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, "SELECT count() FROM telemetry_events"); n != 3 {
		t.Fatalf("%d raw rows, want 3", n)
	}
	got, _, err := s.List(ctx, store.Query{Tenant: "acme"})
	if err != nil || len(got) != 2 {
		t.Errorf("list: %d events, %v; want 2", len(got), err)
	}
	w := store.Window{Tenant: "acme", From: at.Add(-time.Minute), To: at.Add(time.Minute)}
	usage, err := s.Usage(ctx, w, store.DimResource)
	if err != nil {
		t.Fatal(err)
	}
	if len(usage) != 0 {
		t.Errorf("usage of an empty resource: %+v", usage)
	}
	q, err := s.Quantiles(ctx, w)
	if err != nil || len(q) != 1 || q[0].Accesses != 2 {
		t.Errorf("quantiles = %+v, %v; want 2 accesses", q, err)
	}
	hourly, err := s.Hourly(ctx, w) // edges of hours: from the raw rows
	if err != nil || len(hourly) != 1 || hourly[0].Requests != 2 {
		t.Errorf("hourly = %+v, %v; want 2 requests", hourly, err)
	}
}

// TestOutageIsAnErrorAndInsertsWorkAfterRestart stops the server under a store: inserts fail
// with Unavailable (the ingest consumer then leaves the events in the stream), and once the
// server is back, the same inserts succeed and nothing is stored twice.
func TestOutageIsAnErrorAndInsertsWorkAfterRestart(t *testing.T) {
	ctx := context.Background()
	srv, err := clickhousedev.Start(ctx, clickhousedev.Config{})
	if err != nil {
		clickhousedev.Unavailable(t, err)
	}
	defer srv.Stop()
	s, err := clickhouse.Open(ctx, clickhouse.Config{DSN: srv.DSN("agentid")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Insert(ctx, []store.Event{ev("before", 0)}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Halt(); err != nil {
		t.Fatal(err)
	}
	during := []store.Event{ev("during-1", time.Second), ev("during-2", 2*time.Second)}
	err = s.Insert(ctx, during)
	if errs.KindOf(err) != errs.KindUnavailable {
		t.Fatalf("insert while the server is down: err = %v, want Unavailable", err)
	}
	if _, _, err := s.List(ctx, store.Query{Tenant: "acme"}); errs.KindOf(err) != errs.KindUnavailable {
		t.Errorf("list while the server is down: err = %v, want Unavailable", err)
	}
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// The consumer redelivers until the insert succeeds; the pool reconnects on its own.
	testkit.Eventually(t, time.Minute, "an insert after the restart", func() (bool, error) {
		err := s.Insert(ctx, during)
		if err != nil && errs.KindOf(err) != errs.KindUnavailable {
			t.Fatalf("insert after the restart: %v", err)
		}
		return err == nil, err
	})
	if err := s.Insert(ctx, during); err != nil { // a redelivery of the same batch
		t.Fatal(err)
	}
	got, _, err := s.List(ctx, store.Query{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range got {
		ids = append(ids, e.EventID)
	}
	if want := []string{"during-2", "during-1", "before"}; !slices.Equal(ids, want) {
		t.Errorf("after the outage: %v, want %v", ids, want)
	}
	if n := count(t, s, "SELECT count() FROM telemetry_events"); n != 3 {
		t.Errorf("%d raw rows, want 3", n)
	}
}

// TestAgentHourlyMigrationCountsRowsStoredBefore applies 002 to 005 to a table that already holds
// rows (a copy among them, a ghost's row): agent_hourly and the other aggregates start from them,
// each counted once, the ghost left out of agent_hourly and Usage but not of LastActive, which
// counts the tokens issued two hours later (005) and not the accesses or the policy decision.
func TestAgentHourlyMigrationCountsRowsStoredBefore(t *testing.T) {
	ctx := context.Background()
	_, dsn := clickhousedev.Database(t)
	first := open(t) // another database, whose telemetry_events gives the table its structure
	srv := clickhousedev.SharedServer(t)
	db := strings.TrimPrefix(dsn[strings.LastIndex(dsn, "/"):], "/")
	if err := first.Conn().Exec(ctx, "CREATE TABLE "+db+".telemetry_events AS telemetry_events"); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"INSERT INTO " + db + ".telemetry_events (event_id, time, time_ms, tenant, agent, kind, outcome, rows, bytes, agent_known) VALUES " +
			"('a', toDateTime(1924995600), 1924995600000, 'acme', 'tenants/acme/agents/etl', 'access', 'allowed', 3, 30, 1), " +
			"('a', toDateTime(1924995600), 1924995600000, 'acme', 'tenants/acme/agents/etl', 'access', 'allowed', 3, 30, 1), " +
			"('b', toDateTime(1924995601), 1924995601000, 'acme', 'tenants/acme/agents/etl', 'access', 'denied', 1, 10, 1), " +
			"('c', toDateTime(1924995602), 1924995602000, 'acme', 'tenants/acme/agents/etl', 'policy.decided', 'allow', 0, 0, 1), " +
			"('g', toDateTime(1924995603), 1924995603000, 'acme', 'tenants/acme/agents/ghost', 'access', 'allowed', 9, 90, 0), " +
			"('t', toDateTime(1925002804), 1925002804000, 'acme', 'tenants/acme/agents/etl', 'token.requested', 'issued', 0, 0, 1), " +
			"('u', toDateTime(1925002805), 1925002805000, 'acme', 'tenants/acme/agents/ghost', 'token.requested', 'issued', 0, 0, 0), " +
			"('v', toDateTime(1925002806), 1925002806000, 'acme', 'tenants/acme/agents/etl', 'policy.decided', 'allow', 0, 0, 1)",
	} {
		if _, err := srv.Query(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	s, err := clickhouse.Open(ctx, clickhouse.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	hour := time.Unix(1924995600, 0).UTC()
	got, err := s.Hourly(ctx, store.Window{Tenant: "acme", From: hour, To: hour.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	want := store.Hourly{Tenant: "acme", Agent: "tenants/acme/agents/etl", Hour: hour, Requests: 2, Denied: 1, Rows: 4, Bytes: 40}
	if len(got) != 1 || got[0] != want {
		t.Errorf("hourly = %+v, want %+v", got, want)
	}
	days := store.Window{Tenant: "acme", From: hour.Truncate(24 * time.Hour), To: hour.Truncate(24 * time.Hour).Add(24 * time.Hour)}
	usage, err := s.Usage(ctx, days, store.DimOnBehalfOf)
	if err != nil || len(usage) != 0 {
		t.Errorf("usage of on_behalf_of = %+v, %v; want none", usage, err)
	}
	last, err := s.LastActive(ctx, store.Window{Tenant: "acme", To: hour.Add(48 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	wantLast := map[string]time.Time{"tenants/acme/agents/etl": hour.Add(2*time.Hour + 4*time.Second), "tenants/acme/agents/ghost": hour.Add(2*time.Hour + 5*time.Second)}
	if !maps.EqualFunc(last, wantLast, time.Time.Equal) {
		t.Errorf("last active = %v, want %v", last, wantLast)
	}
	tenants, err := s.Tenants(ctx)
	if err != nil || !slices.Equal(tenants, []string{"acme"}) {
		t.Errorf("tenants = %v, %v; want [acme]", tenants, err)
	}
}

// TestRedeliveredBatchIsStoredOnceWhenever stores a batch, reopens the store and lets its clock
// pass the check window (the clock is injected, nothing sleeps): a copy of the batch marked
// redelivered is still skipped, and agent_hourly counts it once. The window starts at the first
// insert after Open, not at Open: an unmarked copy that is the first insert, however late after
// Open, is skipped too.
func TestRedeliveredBatchIsStoredOnceWhenever(t *testing.T) {
	ctx := context.Background()
	_, dsn := clickhousedev.Database(t)
	var (
		mu  sync.Mutex
		now = time.Date(2031, 1, 2, 3, 0, 0, 0, time.UTC)
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	openAt := func() *clickhouse.Store {
		s, err := clickhouse.Open(ctx, clickhouse.Config{DSN: dsn, Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	first := []store.Event{ev("a", 0), ev("b", time.Second)}
	second := []store.Event{ev("c", 2*time.Second)}
	s := openAt()
	if err := s.Insert(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := s.Insert(ctx, second); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openAt()
	defer s.Close()
	advance(time.Hour) // long after Open: the first insert still checks
	if err := s.Insert(ctx, second); err != nil {
		t.Fatal(err)
	}
	advance(time.Hour) // past the window of that first insert
	if err := s.Insert(ctx, []store.Event{ev("d", 3*time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Insert(store.WithRedelivered(ctx), first); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, "SELECT count() FROM telemetry_events"); n != 4 {
		t.Errorf("%d raw rows, want 4", n)
	}
	if n := count(t, s, "SELECT sum(requests) FROM agent_hourly"); n != 4 {
		t.Errorf("agent_hourly counts %d requests, want 4", n)
	}
	// Unmarked, past the window, the store trusts what it remembers (its own inserts only).
	if err := s.Insert(ctx, []store.Event{ev("d", 3*time.Second)}); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, "SELECT count() FROM telemetry_events"); n != 4 {
		t.Errorf("after a retry of its own insert: %d raw rows, want 4", n)
	}
}

// TestRedeliveredBatchMixingALateEventIsStoredOnce: a redelivered batch holding an event of hours
// ago and recent ones, both stored before, is checked per cluster of close times (one range each,
// not one spanning the hours between them) and stores only its new row.
func TestRedeliveredBatchMixingALateEventIsStoredOnce(t *testing.T) {
	ctx := context.Background()
	_, dsn := clickhousedev.Database(t)
	open := func() *clickhouse.Store {
		s, err := clickhouse.Open(ctx, clickhouse.Config{DSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	late, recent := ev("late", -3*time.Hour), ev("recent", 0)
	for _, batch := range [][]store.Event{{late}, {recent}} {
		if err := s.Insert(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	// A new process: it remembers no ids, only the stored rows tell.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open()
	defer s.Close()
	if err := s.Insert(store.WithRedelivered(ctx), []store.Event{recent, ev("new", time.Second), late}); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, "SELECT count() FROM telemetry_events"); n != 3 {
		t.Errorf("%d raw rows, want 3 (late, recent, new once each)", n)
	}
}

// TestPartitionEndIsTheMonthInThePartitionsZone: a month partition of a server in another
// timezone than UTC ends when that zone's month ends; retention keeps a partition holding a row
// within the horizon (a row of 31 May 23:30 in New York is 1 June 03:30 UTC).
func TestPartitionEndIsTheMonthInThePartitionsZone(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ym   int
		loc  *time.Location
		want time.Time
	}{
		{"UTC", 202805, time.UTC, time.Date(2028, 6, 1, 0, 0, 0, 0, time.UTC)},
		{"New York, behind UTC", 202805, ny, time.Date(2028, 6, 1, 4, 0, 0, 0, time.UTC)},
		{"Tokyo, ahead of UTC", 202805, tokyo, time.Date(2028, 5, 31, 15, 0, 0, 0, time.UTC)},
		{"December", 202812, time.UTC, time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := clickhouse.PartitionEnd(tt.ym, tt.loc); !got.Equal(tt.want) {
				t.Errorf("end of %d in %s = %v, want %v", tt.ym, tt.loc, got.UTC(), tt.want)
			}
		})
	}
	// At a horizon of 1 June 02:00 UTC, New York's May partition still holds rows to keep.
	horizon := time.Date(2028, 6, 1, 2, 0, 0, 0, time.UTC)
	if !clickhouse.PartitionEnd(202805, ny).After(horizon) {
		t.Error("New York's May partition would be dropped while it holds rows within the horizon")
	}
}

// TestAggregatesAreKeyedInUTC checks the aggregates' time columns are DateTime('UTC'), and that a
// row half an hour before a month ends (UTC) lands in that month's partitions.
func TestAggregatesAreKeyedInUTC(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	for _, c := range []struct{ table, column string }{
		{"agent_hourly", "hour"}, {"agent_usage_daily", "day"}, {"agent_last_active", "hour"}, {"telemetry_tenants", "day"},
	} {
		var typ string
		if err := s.Conn().QueryRow(ctx, `SELECT type FROM system.columns WHERE database = currentDatabase() AND table = ? AND name = ?`,
			c.table, c.column).Scan(&typ); err != nil {
			t.Fatalf("%s.%s: %v", c.table, c.column, err)
		}
		if typ != "DateTime('UTC')" {
			t.Errorf("%s.%s is %s, want DateTime('UTC')", c.table, c.column, typ)
		}
	}
	e := ev("edge", 0)
	e.Time = time.Date(2028, 5, 31, 23, 30, 0, 0, time.UTC)
	e.Kind, e.Outcome = store.KindTokenRequested, store.OutcomeIssued // activity: agent_last_active too
	e.Resource = "/r"
	if err := s.Insert(ctx, []store.Event{e}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Conn().Query(ctx, `SELECT table, partition FROM system.parts WHERE database = currentDatabase() AND active
		AND table IN ('agent_hourly', 'agent_usage_daily', 'agent_last_active', 'telemetry_tenants') ORDER BY table`)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	var got []string
	for res.Next() {
		var table, p string
		if err := res.Scan(&table, &p); err != nil {
			t.Fatal(err)
		}
		got = append(got, table+"/"+p)
	}
	want := []string{"agent_hourly/202805", "agent_last_active/202805", "agent_usage_daily/202805", "telemetry_tenants/202805"}
	if !slices.Equal(got, want) {
		t.Errorf("partitions %v, want %v", got, want)
	}
}

// TestQueriesHaveATimeout: a store whose query timeout has passed fails a read with
// context.DeadlineExceeded instead of waiting.
func TestQueriesHaveATimeout(t *testing.T) {
	ctx := context.Background()
	_, dsn := clickhousedev.Database(t)
	s, err := clickhouse.Open(ctx, clickhouse.Config{DSN: dsn, QueryTimeout: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w := store.Window{Tenant: "acme", From: at.Add(-time.Hour), To: at}
	if _, err := s.Hourly(ctx, w); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hourly: err = %v, want DeadlineExceeded", err)
	}
	if _, _, err := s.List(ctx, store.Query{Tenant: "acme"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("list: err = %v, want DeadlineExceeded", err)
	}
	if _, err := clickhouse.Open(ctx, clickhouse.Config{DSN: dsn, QueryTimeout: -time.Second}); errs.KindOf(err) != errs.KindInvalidArgument {
		t.Errorf("negative timeout: err = %v, want InvalidArgument", err)
	}
}

// TestUsageBeforeStreamSeqWithManyLongValues: when the values whose latest use is in the
// unacknowledged tail are too long to list in one query, their latest acknowledged use is still
// found (the store filters the rows it reads itself). Each of 40 resources of 2,000 bytes is used
// once acknowledged (sequence 1-40, at 01:00 plus i minutes) and once in the tail (sequence
// 100-139, at 20:00 plus i minutes), in one whole day.
func TestUsageBeforeStreamSeqWithManyLongValues(t *testing.T) {
	s := open(t)
	day := time.Date(2031, 5, 6, 0, 0, 0, 0, time.UTC)
	var events, want []store.Event
	for i := range 40 {
		resource := fmt.Sprintf("/r%02d/%s", i, strings.Repeat("x", 2000))
		old := store.Event{EventID: fmt.Sprintf("old-%02d", i), Time: day.Add(time.Hour + time.Duration(i)*time.Minute), Tenant: "acme",
			Agent: "tenants/acme/agents/etl", Kind: store.KindAccess, Outcome: "allowed", Resource: resource, AgentKnown: true, StreamSeq: uint64(1 + i)}
		tail := old
		tail.EventID, tail.Time, tail.StreamSeq = fmt.Sprintf("tail-%02d", i), day.Add(20*time.Hour+time.Duration(i)*time.Minute), uint64(100+i)
		events, want = append(events, old, tail), append(want, old)
	}
	if err := s.Insert(context.Background(), events); err != nil {
		t.Fatal(err)
	}
	got, err := s.Usage(context.Background(), store.Window{Tenant: "acme", From: day, To: day.Add(24 * time.Hour), BeforeStreamSeq: 100}, store.DimResource)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d values, want %d", len(got), len(want))
	}
	for i, u := range got {
		if u.Value != want[i].Resource || u.Count != 1 || !u.LastSeen.Equal(want[i].Time) {
			t.Errorf("value %d: %.8s... count %d last seen %s, want %.8s... count 1 last seen %s",
				i, u.Value, u.Count, u.LastSeen, want[i].Resource, want[i].Time)
		}
	}
}
