package analytics_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/clickhousedev"
	"github.com/agentid/agentid/pkg/testkit"
	"github.com/agentid/agentid/services/monitor/internal/analytics"
	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/store/duckdb"
)

func TestMain(m *testing.M) { os.Exit(clickhousedev.RunTests(m)) }

const (
	reporter = "tenants/acme/agents/reporter"
	helper   = "tenants/acme/agents/helper"
	ghost    = "tenants/acme/agents/ghost"
)

func at(s string) time.Time {
	t, err := time.Parse(time.DateTime, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

// params is the window of the expected answers: Monday 2 March to Thursday 5 March 2026, UTC.
var params = analytics.Params{Tenant: "acme", From: at("2026-03-02 00:00:00"), To: at("2026-03-05 00:00:00")}

// seed is the store's content: two registered agents, a ghost, one agent suspended and still
// active, one row of another tenant and one after the window.
func seed() []store.Event {
	n := 0
	ev := func(ts, kind, agent, owner string, f func(*store.Event)) store.Event {
		n++
		e := store.Event{EventID: fmt.Sprintf("ev-%02d", n), Time: at(ts).Add(time.Duration(n) * time.Millisecond), Tenant: "acme",
			Agent: agent, Owner: owner, Kind: kind, AgentKnown: true, StreamSeq: uint64(n)}
		if f != nil {
			f(&e)
		}
		return e
	}
	access := func(outcome, resource, action string, scopes []string, rows, bytes int64, obo, req, detail string) func(*store.Event) {
		return func(e *store.Event) {
			e.Outcome, e.Resource, e.Action, e.Scopes, e.Rows, e.Bytes, e.OnBehalfOf, e.RequestID, e.Detail =
				outcome, resource, action, scopes, rows, bytes, obo, req, detail
		}
	}
	token := func(outcome string, scopes []string, req string) func(*store.Event) {
		return func(e *store.Event) { e.Outcome, e.Scopes, e.RequestID = outcome, scopes, req }
	}
	decided := func(req, version string) func(*store.Event) {
		return func(e *store.Event) {
			e.Outcome, e.RequestID, e.Detail = "allow", req, `{"decision_point":"token","bundle_version":"`+version+`","reasons":[]}`
		}
	}
	registered := func(name string, scopes ...string) func(*store.Event) {
		return func(e *store.Event) {
			e.Detail = `{"agent":{"name":"` + name + `","owner":"` + e.Owner + `","scopes":["` + strings.Join(scopes, `","`) + `"]}}`
		}
	}
	return []store.Event{
		ev("2026-03-01 09:00:00", "agent.registered", reporter, "alice", registered(reporter, "reports.read", "reports.export", "admin.write")),
		ev("2026-03-01 09:00:00", "agent.registered", helper, "bob", registered(helper, "kb.read")),
		ev("2026-03-02 09:00:00", "token.requested", reporter, "alice", token("issued", []string{"reports.read"}, "req-1")),
		ev("2026-03-02 09:00:00", "policy.decided", reporter, "alice", decided("req-1", "v1")),
		ev("2026-03-02 09:05:00", "access", reporter, "alice", access("allowed", "/reports/q1", "GET", []string{"reports.read"}, 100, 1000, "carol", "req-2", `{"reason":"scope reports.read"}`)),
		ev("2026-03-02 10:00:00", "access", reporter, "alice", access("allowed", "/reports/q1", "GET", []string{"reports.read"}, 200, 2000, "carol", "req-3", "")),
		ev("2026-03-03 03:00:00", "access", reporter, "alice", access("allowed", "/reports/all", "GET", []string{"reports.read"}, 50000, 900000, "", "req-4", "")),
		ev("2026-03-03 03:01:00", "access", reporter, "alice", access("denied", "/admin/users", "POST", []string{"reports.read"}, 0, 0, "", "req-5", `{"reason":"missing scope admin.write"}`)),
		ev("2026-03-02 11:00:00", "token.requested", helper, "bob", token("issued", []string{"kb.read"}, "req-6")),
		ev("2026-03-02 11:00:00", "policy.decided", helper, "bob", decided("req-6", "v2")),
		ev("2026-03-04 12:00:00", "token.requested", helper, "bob", token("invalid_scope", nil, "req-7")),
		ev("2026-03-04 12:01:00", "access", helper, "bob", access("allowed", "/kb/faq", "GET", []string{"kb.read"}, 1, 10, "dave", "req-8", "")),
		ev("2026-03-04 13:00:00", "agent.suspended", helper, "bob", func(e *store.Event) { e.Detail = `{"name":"` + helper + `","cause":"alert:a1"}` }),
		ev("2026-03-04 14:00:00", "access", helper, "bob", access("allowed", "/kb/faq", "GET", []string{"kb.read"}, 2, 20, "", "req-9", "")),
		ev("2026-03-04 20:00:00", "access", ghost, "", func(e *store.Event) {
			access("allowed", "/kb/secret", "GET", nil, 0, 0, "", "req-10", "")(e)
			e.AgentKnown, e.ClientID, e.SourceAddress = false, "ghost-client", "203.0.113.7"
		}),
		ev("2026-03-02 09:00:00", "access", "tenants/globex/agents/x", "eve", func(e *store.Event) {
			e.Tenant = "globex"
			access("denied", "/reports/q1", "GET", nil, 0, 0, "carol", "req-g", "")(e)
		}),
		ev("2026-03-05 09:00:00", "token.requested", reporter, "alice", token("issued", []string{"reports.export"}, "req-11")),
	}
}

// want is each query's exact answer over seed in the window of params, one tab-separated line per
// row (times in UTC, arrays as ClickHouse writes them).
var want = map[string][]string{
	"who_accessed_what": {
		"2026-03-02 09:05:00\t" + reporter + "\talice\tcarol\t/reports/q1\tGET\t['reports.read']\tallowed\tscope reports.read\treq-2",
		"2026-03-02 10:00:00\t" + reporter + "\talice\tcarol\t/reports/q1\tGET\t['reports.read']\tallowed\t\treq-3",
		"2026-03-03 03:00:00\t" + reporter + "\talice\t\t/reports/all\tGET\t['reports.read']\tallowed\t\treq-4",
		"2026-03-03 03:01:00\t" + reporter + "\talice\t\t/admin/users\tPOST\t['reports.read']\tdenied\tmissing scope admin.write\treq-5",
		"2026-03-04 12:01:00\t" + helper + "\tbob\tdave\t/kb/faq\tGET\t['kb.read']\tallowed\t\treq-8",
		"2026-03-04 14:00:00\t" + helper + "\tbob\t\t/kb/faq\tGET\t['kb.read']\tallowed\t\treq-9",
		"2026-03-04 20:00:00\t" + ghost + "\t\t\t/kb/secret\tGET\t[]\tallowed\t\treq-10",
	},
	"delegated_actions_by_user": {
		"carol\t" + reporter + "\t/reports/q1\tGET\t2\t0\t2026-03-02 09:05:00\t2026-03-02 10:00:00",
		"dave\t" + helper + "\t/kb/faq\tGET\t1\t0\t2026-03-04 12:01:00\t2026-03-04 12:01:00",
	},
	"active_outside_hours": {
		reporter + "\talice\t2\t2026-03-03 03:00:00\t2026-03-03 03:01:00",
		ghost + "\t\t1\t2026-03-04 20:00:00\t2026-03-04 20:00:00",
	},
	"top_resources_per_agent": {
		ghost + "\t/kb/secret\t1\t0\t0",
		helper + "\t/kb/faq\t2\t3\t30",
		reporter + "\t/reports/q1\t2\t300\t3000",
		reporter + "\t/admin/users\t1\t0\t0",
		reporter + "\t/reports/all\t1\t50000\t900000",
	},
	"unused_scopes": {
		reporter + "\tadmin.write",
		reporter + "\treports.export",
	},
	"ghost_agents": {
		ghost + "\tghost-client\t1\t1\t2026-03-04 20:00:00\t2026-03-04 20:00:00",
	},
	"tokens_per_policy_version": {
		"v1\t1\t1",
		"v2\t1\t1",
	},
	"deny_rate_per_agent": {
		helper + "\t4\t1\t0.25",
		reporter + "\t5\t1\t0.2",
	},
	"data_volume_per_agent_per_day": {
		ghost + "\t2026-03-04\t1\t0\t0",
		helper + "\t2026-03-04\t2\t3\t30",
		reporter + "\t2026-03-02\t2\t300\t3000",
		reporter + "\t2026-03-03\t2\t50000\t900000",
	},
	"activity_after_suspension": {
		helper + "\tagent.suspended\t2026-03-04 13:00:00\t1\t2026-03-04 14:00:00\t2026-03-04 14:00:00",
	},
}

func queries(t *testing.T) []analytics.Query {
	t.Helper()
	qs, err := analytics.Queries()
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 10 {
		t.Fatalf("%d queries, want the ten of docs/analytics.md", len(qs))
	}
	names := make([]string, len(qs))
	for i, q := range qs {
		names[i] = q.Name
		if _, ok := want[q.Name]; !ok {
			t.Errorf("query %s has no expected answer", q.Name)
		}
	}
	if len(want) != len(qs) {
		t.Errorf("expected answers for %d queries, the package has %v", len(want), names)
	}
	return qs
}

func TestQueriesOnDuckDB(t *testing.T) {
	s, err := duckdb.Open(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Insert(t.Context(), seed()); err != nil {
		t.Fatal(err)
	}
	for _, q := range queries(t) {
		t.Run(q.Name, func(t *testing.T) {
			text, err := analytics.Bind(q.DuckDB, params, analytics.DuckDB)
			if err != nil {
				t.Fatal(err)
			}
			got, err := duckRows(t.Context(), s.DB(), text)
			if err != nil {
				t.Fatalf("%s: %v\n%s", q.File, err, text)
			}
			check(t, got, want[q.Name])
		})
	}
}

func TestQueriesOnClickHouse(t *testing.T) {
	srv := clickhousedev.SharedServer(t)
	db, _ := clickhousedev.Database(t)
	ch := func(ctx context.Context, query string) (string, error) {
		return chQuery(ctx, srv.HTTPAddr(), db, query)
	}
	schema, err := filepath.Glob(filepath.Join(testkit.RepoRoot(t), "deploy", "clickhouse", "schema", "*.sql"))
	if err != nil || len(schema) == 0 {
		t.Fatalf("no ClickHouse schema in deploy/clickhouse/schema (%v)", err)
	}
	sort.Strings(schema)
	for _, f := range schema {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, stmt := range statements(string(b)) {
			if _, err := ch(t.Context(), stmt); err != nil {
				t.Fatalf("%s: %v", filepath.Base(f), err)
			}
		}
	}
	rows, err := store.Normalize(seed())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch(t.Context(), chInsert(rows)); err != nil {
		t.Fatal(err)
	}
	for _, q := range queries(t) {
		t.Run(q.Name, func(t *testing.T) {
			text, err := analytics.Bind(q.ClickHouse, params, analytics.ClickHouse)
			if err != nil {
				t.Fatal(err)
			}
			out, err := ch(t.Context(), text)
			if err != nil {
				t.Fatalf("%s: %v\n%s", q.File, err, text)
			}
			var got []string
			for line := range strings.SplitSeq(strings.TrimSuffix(out, "\n"), "\n") {
				if line != "" {
					got = append(got, line)
				}
			}
			check(t, got, want[q.Name])
		})
	}
}

// TestDocsHoldEveryQuery: docs/analytics.md shows each query exactly as it is run, and the DuckDB
// variants that differ.
func TestDocsHoldEveryQuery(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(testkit.RepoRoot(t), "docs", "analytics.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range queries(t) {
		if !bytes.Contains(doc, []byte(q.ClickHouse)) {
			t.Errorf("docs/analytics.md lacks query %s verbatim", q.File)
		}
		if q.DuckDBFile && !bytes.Contains(doc, []byte(q.DuckDB)) {
			t.Errorf("docs/analytics.md lacks the DuckDB variant of %s verbatim", q.File)
		}
	}
}

func TestBind(t *testing.T) {
	q := "WHERE tenant = {tenant:String} AND time >= {from:DateTime} AND time < {to:DateTime}"
	tests := []struct {
		d    analytics.Dialect
		p    analytics.Params
		want string
	}{
		{analytics.ClickHouse, params, "WHERE tenant = 'acme' AND time >= toDateTime('2026-03-02 00:00:00', 'UTC') AND time < toDateTime('2026-03-05 00:00:00', 'UTC')"},
		{analytics.DuckDB, params, "WHERE tenant = 'acme' AND time >= TIMESTAMP '2026-03-02 00:00:00' AND time < TIMESTAMP '2026-03-05 00:00:00'"},
		{analytics.DuckDB, analytics.Params{Tenant: "a'b", From: params.From, To: params.To}, "WHERE tenant = 'a''b' AND time >= TIMESTAMP '2026-03-02 00:00:00' AND time < TIMESTAMP '2026-03-05 00:00:00'"},
		{analytics.ClickHouse, analytics.Params{Tenant: `a'b\`, From: params.From, To: params.To}, `WHERE tenant = 'a\'b\\' AND time >= toDateTime('2026-03-02 00:00:00', 'UTC') AND time < toDateTime('2026-03-05 00:00:00', 'UTC')`},
	}
	for _, tt := range tests {
		got, err := analytics.Bind(q, tt.p, tt.d)
		if err != nil || got != tt.want {
			t.Errorf("Bind = %q, %v\nwant %q", got, err, tt.want)
		}
	}
	if _, err := analytics.Bind("{agent:String}", params, analytics.DuckDB); err == nil {
		t.Error("Bind accepted an unknown parameter")
	}
}

func check(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got %d rows:\n%s\nwant %d rows:\n%s", len(got), strings.Join(got, "\n"), len(want), strings.Join(want, "\n"))
	}
}

// duckRows runs query and renders each row as ClickHouse's TabSeparated output would.
func duckRows(ctx context.Context, db *sql.DB, query string) ([]string, error) {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return nil, err
	}
	var out []string
	for rows.Next() {
		vals := make([]any, len(types))
		ptrs := make([]any, len(types))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		cells := make([]string, len(vals))
		for i, v := range vals {
			cells[i] = render(v, types[i].DatabaseTypeName())
		}
		out = append(out, strings.Join(cells, "\t"))
	}
	return out, rows.Err()
}

func render(v any, typ string) string {
	switch v := v.(type) {
	case nil:
		return ""
	case time.Time:
		if typ == "DATE" {
			return v.UTC().Format(time.DateOnly)
		}
		return v.UTC().Format(time.DateTime)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			parts[i] = "'" + fmt.Sprint(e) + "'"
		}
		return "[" + strings.Join(parts, ",") + "]"
	default:
		return fmt.Sprint(v)
	}
}

// statements splits a schema file into its statements (they end with a semicolon at a line end).
func statements(file string) []string {
	var out []string
	var cur strings.Builder
	for line := range strings.SplitSeq(file, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "--") {
			continue
		}
		cur.WriteString(line + "\n")
		if strings.HasSuffix(strings.TrimSpace(line), ";") {
			if s := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(cur.String()), ";")); s != "" {
				out = append(out, s)
			}
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// chInsert renders rows as one INSERT naming its columns.
func chInsert(rows []store.Event) string {
	str := func(s string) string {
		return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", `\'`) + "'"
	}
	var b strings.Builder
	b.WriteString("INSERT INTO telemetry_events (event_id, time, time_ms, tenant, agent, kind, outcome, actor, on_behalf_of, " +
		"environment, scopes, request_id, detail, stream_seq, owner, agent_known, client_id, resource, action, bytes, rows, " +
		"source_address, source_network, latency_us, trace_id) VALUES ")
	for i, e := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		scopes := make([]string, len(e.Scopes))
		for j, s := range e.Scopes {
			scopes[j] = str(s)
		}
		known := 0
		if e.AgentKnown {
			known = 1
		}
		fmt.Fprintf(&b, "(%s, %d, %d, %s, %s, %s, %s, %s, %s, %s, [%s], %s, %s, %d, %s, %d, %s, %s, %s, %d, %d, %s, %s, %d, %s)",
			str(e.EventID), e.Time.Unix(), e.Time.UnixMilli(), str(e.Tenant), str(e.Agent), str(e.Kind), str(e.Outcome), str(e.Actor),
			str(e.OnBehalfOf), str(e.Environment), strings.Join(scopes, ", "), str(e.RequestID), str(e.Detail), e.StreamSeq,
			str(e.Owner), known, str(e.ClientID), str(e.Resource), str(e.Action), e.Bytes, e.Rows, str(e.SourceAddress),
			str(e.SourceNetwork), e.LatencyUS, str(e.TraceID))
	}
	return b.String()
}

// chQuery runs one statement in database db through the HTTP interface and returns its
// TabSeparated output.
func chQuery(ctx context.Context, addr, db, query string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/?database="+url.QueryEscape(db), strings.NewReader(query))
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
	}
	return string(body), nil
}
