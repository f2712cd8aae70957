// Package duckdb is the telemetry store on an embedded DuckDB database: the default of
// `agentid dev`, one file on disk (or memory only).
package duckdb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/agentid/agentid/services/monitor/internal/store"
)

var _ store.Store = (*Store)(nil)

// tableDDL is the portable subset shared with the ClickHouse store (DESIGN §7): no maps, time as a
// TIMESTAMP (UTC) plus Unix milliseconds, scopes as an array of strings, detail as a JSON string.
// There is no primary key: DuckDB keeps a primary-key index wholly in memory (60 to 90 bytes per
// row with random ids, never evicted, so a memory_limit makes inserts fail instead); Insert
// deduplicates by (time_ms, event_id) instead, see there.
var tableDDL = `CREATE TABLE IF NOT EXISTS %s (
		event_id     VARCHAR   NOT NULL,
		"time"       TIMESTAMP NOT NULL,
		time_ms      BIGINT    NOT NULL,
		tenant       VARCHAR   NOT NULL,
		agent        VARCHAR   NOT NULL,
		kind         VARCHAR   NOT NULL,
		outcome      VARCHAR   NOT NULL,
		actor        VARCHAR   NOT NULL,
		on_behalf_of VARCHAR   NOT NULL,
		environment  VARCHAR   NOT NULL,
		scopes       VARCHAR[] NOT NULL,
		request_id   VARCHAR   NOT NULL,
		detail       VARCHAR   NOT NULL,
		stream_seq   BIGINT    NOT NULL` + wideColumnsDDL + `
	)`

// wideColumns are the columns of the wide row added after the first schema, with the defaults
// the rows stored before them get: Open adds them to an older file (ALTER TABLE ... ADD COLUMN IF
// NOT EXISTS), which keeps its rows. Rows stored before the ghost flag existed count as known.
var wideColumns = []struct{ name, typ, def string }{
	{"owner", "VARCHAR", "''"},
	{"agent_known", "BOOLEAN", "true"},
	{"client_id", "VARCHAR", "''"},
	{"resource", "VARCHAR", "''"},
	{"action", "VARCHAR", "''"},
	{"bytes", "BIGINT", "0"},
	{"rows", "BIGINT", "0"},
	{"source_address", "VARCHAR", "''"},
	{"source_network", "VARCHAR", "''"},
	{"latency_us", "BIGINT", "0"},
	{"trace_id", "VARCHAR", "''"},
}

// wideColumnsDDL is wideColumns as column definitions of tableDDL.
var wideColumnsDDL = func() string {
	var b strings.Builder
	for _, c := range wideColumns {
		fmt.Fprintf(&b, ",\n\t\t%q %s NOT NULL DEFAULT %s", c.name, c.typ, c.def)
	}
	return b.String()
}()

// accessLogView is the analysts' view: who or what accessed what, when, how, and why.
const accessLogView = `CREATE OR REPLACE VIEW access_log AS
	SELECT "time", tenant, actor, on_behalf_of, agent, owner, agent_known, client_id, kind, outcome,
		resource, action, scopes, environment, "bytes", "rows", source_address, source_network,
		latency_us, request_id, trace_id, detail
	FROM telemetry_events`

// columnNames are the table's columns in insert order.
var columnNames = func() []string {
	names := []string{"event_id", "time", "time_ms", "tenant", "agent", "kind", "outcome", "actor",
		"on_behalf_of", "environment", "scopes", "request_id", "detail", "stream_seq"}
	for _, c := range wideColumns {
		names = append(names, c.name)
	}
	return names
}()

// columns is columnNames as a quoted SQL column list.
var columns = `"` + strings.Join(columnNames, `", "`) + `"`

// aggregateDDL are the small tables Insert keeps in its transaction, so that LastActive and
// Tenants need not scan the rows: the tenants with rows, and each agent's latest activity row
// (store.IsActivity) per UTC day (a primary key on a table of agents x days, never of rows).
// agent_last_active replaces agent_last_seen, which kept the latest row of any kind: a file that
// has the old table gets the new one filled from its rows, and the old one dropped.
var aggregateDDL = []string{
	`CREATE TABLE IF NOT EXISTS telemetry_tenants (tenant VARCHAR PRIMARY KEY)`,
	`CREATE TABLE IF NOT EXISTS agent_last_active (
		tenant  VARCHAR NOT NULL,
		agent   VARCHAR NOT NULL,
		day_ms  BIGINT  NOT NULL,
		last_ms BIGINT  NOT NULL,
		PRIMARY KEY (tenant, agent, day_ms))`,
}

// aggregateBackfill fills the aggregate tables from the rows stored before they existed.
var aggregateBackfill = []string{
	`INSERT INTO telemetry_tenants SELECT DISTINCT tenant FROM telemetry_events ON CONFLICT DO NOTHING`,
	`INSERT INTO agent_last_active SELECT tenant, agent, CAST(floor(time_ms / 86400000.0) AS BIGINT) * 86400000 AS day_ms, max(time_ms)
		FROM telemetry_events WHERE agent <> '' AND ` + store.ActivitySQL + ` GROUP BY tenant, agent, day_ms ON CONFLICT DO NOTHING`,
	`DROP TABLE IF EXISTS agent_last_seen`,
}

const dayMS = int64(24 * time.Hour / time.Millisecond)

// Store is the DuckDB telemetry store. It is safe for concurrent use.
type Store struct {
	db      *sql.DB
	log     *slog.Logger
	timeout time.Duration
	// writeMu serializes inserts, so that the duplicate check of one sees every row of the others.
	writeMu sync.Mutex
	recent  store.RecentIDs // guarded by writeMu
	// memoryLimit is the buffer pool's bound in bytes (0: none, a store in memory).
	memoryLimit int64
}

// Option configures Open.
type Option func(*options)

type options struct {
	log         *slog.Logger
	timeout     time.Duration
	memoryLimit int64
}

// WithLogger sets the logger of schema upgrades (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithQueryTimeout bounds each List and Analytics query (default store.DefaultQueryTimeout; zero
// or less keeps the default).
func WithQueryTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.timeout = d
		}
	}
}

// WithMemoryLimit bounds the buffer pool of a database file to limit bytes (default
// DefaultMemoryLimit; zero keeps the default). A limit below MinMemoryLimit is refused by Open.
func WithMemoryLimit(limit int64) Option { return func(o *options) { o.memoryLimit = limit } }

// Bounds of DuckDB's buffer pool for a database file (DuckDB's own default is 80 % of the machine's
// memory). The pool keeps every block of the table it has written or read cached until it reaches
// its limit, so the store's memory grows with the table up to the limit and stays there. Under an
// hour at 1,000 rows a second, 64 MiB held the rows a checkpoint had not written yet (1-56 MiB) and
// nothing spilled (docs/performance.md, "Memory over an hour"). With no index to hold in memory,
// inserts work within a far smaller limit (TestInsertsWithinASmallMemoryLimit); sorts, joins and
// most aggregates spill to <path>.tmp, but quantile aggregates cannot (see Quantiles). The
// monitor's memory metrics (monitor_duckdb_memory_bytes by tag, see Collector) show how full it is.
const (
	DefaultMemoryLimit int64 = 64 << 20
	MinMemoryLimit     int64 = 32 << 20
)

// CheckpointThreshold is the size of the write-ahead log at which a commit checkpoints a database
// file (DuckDB's default is 16 MB). A checkpoint rewrites the row groups that changed since the
// last one, the table's last, partly filled row group included, so that under sustained ingest the
// 16 MB default rewrote each 122,880-row group several times: with 64 MB the ingest benchmark
// (services/monitor/app, BenchmarkIngest) spends a fifth less CPU per event. The rows a checkpoint has not written yet stay in the
// buffer pool (within its memory limit) and in the log, which Open replays after a crash.
const CheckpointThreshold = "64MB"

// Open opens (creating if needed) the database file at path and its schema, its buffer pool
// limited to DefaultMemoryLimit (or WithMemoryLimit) and checkpointed at every CheckpointThreshold of log; an empty path keeps
// the database in memory, unlimited. A file of an older schema is upgraded first (logged with its
// row count and duration, see migrate).
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	o := options{log: slog.Default(), timeout: store.DefaultQueryTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.Default()
	}
	if o.memoryLimit == 0 {
		o.memoryLimit = DefaultMemoryLimit
	}
	if o.memoryLimit < MinMemoryLimit {
		return nil, fmt.Errorf("duckdb: memory limit of %d bytes is below the minimum of %d (%d MiB)", o.memoryLimit, MinMemoryLimit, MinMemoryLimit>>20)
	}
	db, err := sql.Open("duckdb", path)
	if err != nil {
		return nil, fmt.Errorf("duckdb: open %s: %w", path, err)
	}
	if path != "" {
		if _, err := db.ExecContext(ctx, fmt.Sprintf("SET GLOBAL memory_limit = '%d bytes'", o.memoryLimit)); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("duckdb: memory limit of %d bytes for %s: %w", o.memoryLimit, path, err)
		}
		if _, err := db.ExecContext(ctx, "SET GLOBAL checkpoint_threshold = '"+CheckpointThreshold+"'"); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("duckdb: checkpoint threshold of %s: %w", path, err)
		}
	}
	if err := migrate(ctx, db, o.log.With("path", path)); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("duckdb: schema of %s: %w", path, err)
	}
	s := &Store{db: db, log: o.log, timeout: o.timeout}
	if path != "" {
		s.memoryLimit = o.memoryLimit
	}
	if err := s.rememberRecent(ctx, time.Now()); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("duckdb: open %s: %w", path, err)
	}
	return s, nil
}

// rememberRecent loads the ids of the rows stored with a time within store.RecentHorizon of now, as if
// inserted now: a copy published again with a new time soon after a restart is still skipped.
func (s *Store) rememberRecent(ctx context.Context, now time.Time) error {
	rows, err := s.db.QueryContext(ctx, `SELECT event_id FROM telemetry_events WHERE time_ms >= ? ORDER BY time_ms DESC LIMIT ?`,
		now.Add(-store.RecentHorizon).UnixMilli(), store.MaxRecentIDs)
	if err != nil {
		return fmt.Errorf("recent ids: %w", err)
	}
	defer rows.Close()
	var recent []store.Event
	for rows.Next() {
		var e store.Event
		if err := rows.Scan(&e.EventID); err != nil {
			return fmt.Errorf("recent ids: %w", err)
		}
		recent = append(recent, e)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("recent ids: %w", err)
	}
	s.recent.Add(now, recent)
	return nil
}

// migrate creates the table, brings a table of an older schema to the current one (the wide
// row's columns added, the old primary key dropped) keeping its rows, creates and fills the
// aggregate tables, and (re)creates the view.
func migrate(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	var aggregates, events int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FILTER (table_name IN ('telemetry_tenants', 'agent_last_active')),
		count(*) FILTER (table_name = 'telemetry_events') FROM duckdb_tables()`).Scan(&aggregates, &events); err != nil {
		return err
	}
	if events == 0 {
		log = slog.New(slog.DiscardHandler) // a new file: nothing to tell
	}
	stmts := []string{fmt.Sprintf(tableDDL, "telemetry_events"), `DROP VIEW IF EXISTS access_log`}
	for _, c := range wideColumns {
		stmts = append(stmts, fmt.Sprintf(`ALTER TABLE telemetry_events ADD COLUMN IF NOT EXISTS %q %s DEFAULT %s`, c.name, c.typ, c.def))
	}
	for _, stmt := range stmts {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	if err := dropPrimaryKey(ctx, db, log); err != nil {
		return fmt.Errorf("drop the primary key: %w", err)
	}
	if aggregates < len(aggregateDDL) {
		if err := createAggregates(ctx, db, log); err != nil {
			return fmt.Errorf("aggregate tables: %w", err)
		}
	}
	_, err := db.ExecContext(ctx, accessLogView)
	return err
}

// createAggregates creates the aggregate tables and fills them from the stored rows, in one
// transaction: a scan of the table, once, logged with its duration.
func createAggregates(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	start := time.Now()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	for _, stmt := range append(slices.Clone(aggregateDDL), aggregateBackfill...) {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	log.Info("telemetry store: aggregate tables created from the stored rows", "duration", time.Since(start))
	return nil
}

// dropPrimaryKey rebuilds a table created with a primary key on event_id (before the key was
// dropped) without it, in one transaction: DuckDB cannot drop a primary key in place. It copies
// every row (about a million rows a second, docs/deploy.md), so it logs when it starts, with the
// row count, and when it ends, with the duration.
func dropPrimaryKey(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	var keys int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM duckdb_constraints()
		WHERE table_name = 'telemetry_events' AND constraint_type = 'PRIMARY KEY'`).Scan(&keys); err != nil {
		return err
	}
	if keys == 0 {
		return nil
	}
	var rows int64
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM telemetry_events`).Scan(&rows); err != nil {
		return err
	}
	start := time.Now()
	log.Warn("telemetry store: rewriting the table of an older schema without its primary key; the monitor starts when it is done",
		"rows", rows)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	for _, stmt := range []string{
		fmt.Sprintf(tableDDL, "telemetry_events_rebuilt"),
		`INSERT INTO telemetry_events_rebuilt (` + columns + `) SELECT ` + columns + ` FROM telemetry_events`,
		`DROP TABLE telemetry_events`,
		`ALTER TABLE telemetry_events_rebuilt RENAME TO telemetry_events`,
	} {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	log.Info("telemetry store: table rewritten without its primary key", "rows", rows, "duration", time.Since(start))
	return nil
}

// DB exposes the database for analysts' queries in tests and tools.
func (s *Store) DB() *sql.DB { return s.db }

// Close checkpoints and closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Insert implements store.Store: one transaction that checks the batch against the stored rows,
// appends the rows not stored yet through a DuckDB appender and updates the aggregate tables.
//
// Every copy of an event has the same id and the same time: a redelivery or a re-publish carries
// the event itself, and ingest derives a row's id and time from it. So checking the stored rows at
// the batch's times finds every earlier copy, however long ago it was stored (a batch marked
// store.WithRedelivered needs nothing more: every batch is checked). The check runs per tenant and
// per cluster of nearby times (store.CheckRanges: at most clusterSpan wide, at most checkChunk ids),
// so that DuckDB skips every other row group by its min/max time and a batch mixing old and new
// events scans the row groups of its times only, never the days between (the cost does not grow
// with the table; BenchmarkInsertExisting). A row whose id was inserted in the last store.RecentHorizon
// (or, at open, was stored with a time that recent) is skipped too, whatever its time: an access
// batch its reporter sends again is stored again under the same id with a new envelope time.
// Without a primary key the memory of the store no longer grows with its rows.
func (s *Store) Insert(ctx context.Context, events []store.Event) error {
	rows, err := store.PrepareInsert(ctx, events)
	if err != nil || len(rows) == 0 {
		return err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	rows = slices.DeleteFunc(rows, func(e store.Event) bool { return s.recent.Has(e.EventID) })
	if len(rows) == 0 {
		return nil
	}
	rows, err = s.insert(ctx, rows)
	if err != nil {
		return err
	}
	s.recent.Add(time.Now(), rows)
	return nil
}

// Bounds of the duplicate check of one batch.
const (
	// clusterSpan is the widest time range one check reads.
	clusterSpan = 10 * time.Minute
	// checkChunk is the most ids one check names (see queryStored): an ingest batch of close times
	// (ingest.DefaultMaxBatch rows) is one check.
	checkChunk = 50_000
)

// insert runs one transaction that stores the rows not stored yet and returns them.
func (s *Store) insert(ctx context.Context, rows []store.Event) ([]store.Event, error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("duckdb: insert: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN TRANSACTION"); err != nil {
		return nil, fmt.Errorf("duckdb: insert: begin: %w", err)
	}
	err = func() error {
		if rows, err = dropStored(ctx, conn, rows); err != nil || len(rows) == 0 {
			return err
		}
		if err := conn.Raw(func(dc any) error { return appendRows(dc, insertAppended, rows) }); err != nil {
			return err
		}
		return updateAggregates(ctx, conn, rows)
	}()
	if err == nil {
		_, err = conn.ExecContext(ctx, "COMMIT")
	}
	if err != nil {
		if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); rerr != nil {
			// Leave no half-open transaction on a pooled connection: make the pool drop it.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		return nil, fmt.Errorf("duckdb: insert %d events: %w", len(rows), err)
	}
	return rows, nil
}

// dropStored returns rows without those whose (tenant, time_ms, event_id) is stored.
func dropStored(ctx context.Context, conn *sql.Conn, rows []store.Event) ([]store.Event, error) {
	type key struct {
		tenant, id string
		ms         int64
	}
	stored := map[key]bool{}
	for _, c := range store.CheckRanges(rows, clusterSpan, checkChunk) {
		res, err := queryStored(ctx, conn, c)
		if err != nil {
			return nil, fmt.Errorf("check for stored copies: %w", err)
		}
		for res.Next() {
			k := key{tenant: c.Tenant}
			if err := res.Scan(&k.ms, &k.id); err != nil {
				res.Close()
				return nil, fmt.Errorf("check for stored copies: %w", err)
			}
			stored[k] = true
		}
		err = res.Err()
		res.Close()
		if err != nil {
			return nil, fmt.Errorf("check for stored copies: %w", err)
		}
	}
	return slices.DeleteFunc(rows, func(e store.Event) bool { return stored[key{e.Tenant, e.EventID, e.Time.UnixMilli()}] }), nil
}

// listedIDs is the most ids a check names with a placeholder each; more go as one list parameter.
const listedIDs = 1000

// queryStored runs the check c: the stored rows of its tenant within its times with its ids. Up to
// listedIDs ids have a placeholder each, as before there were lists (a redelivery of 200 rows after
// a restart costs 19-22 µs of CPU per row so, 29-38 µs as a list; BenchmarkInsertExisting); more
// go as one list parameter in one statement: planning a statement of thousands of parameters cost
// more than running it, and statements of 1,000 each read the cluster's row groups again.
func queryStored(ctx context.Context, conn *sql.Conn, c store.CheckRange) (*sql.Rows, error) {
	const stored = `SELECT time_ms, event_id FROM telemetry_events WHERE tenant = ? AND time_ms BETWEEN ? AND ? AND event_id IN `
	if len(c.IDs) > listedIDs {
		return conn.QueryContext(ctx, stored+`(SELECT unnest(?::VARCHAR[]))`, c.Tenant, c.Lo, c.Hi, c.IDs)
	}
	args := make([]any, 0, 3+len(c.IDs))
	args = append(args, c.Tenant, c.Lo, c.Hi)
	for _, id := range c.IDs {
		args = append(args, id)
	}
	return conn.QueryContext(ctx, stored+"("+strings.TrimSuffix(strings.Repeat("?, ", len(c.IDs)), ", ")+")", args...)
}

// aggregateChunk is the most rows of one aggregate-table upsert (four parameters each).
const aggregateChunk = 1000

// updateAggregates adds the tenants and each agent's latest time per day of rows to the
// aggregate tables: one statement per table for a batch (per aggregateChunk of its tenants or
// agent-days), not one per agent-day. Each (tenant, agent, day) appears once in a statement, as
// DuckDB's ON CONFLICT DO UPDATE requires.
func updateAggregates(ctx context.Context, conn *sql.Conn, rows []store.Event) error {
	type day struct {
		tenant, agent string
		ms            int64
	}
	var tenants []any
	seenTenant := map[string]bool{}
	last := map[day]int64{}
	var days []day // in first-seen order
	for _, e := range rows {
		if !seenTenant[e.Tenant] {
			seenTenant[e.Tenant] = true
			tenants = append(tenants, e.Tenant)
		}
		if e.Agent == "" || !store.IsActivity(e.Kind, e.Outcome) {
			continue
		}
		ms := e.Time.UnixMilli()
		d := day{e.Tenant, e.Agent, floorTo(ms, dayMS)}
		l, ok := last[d]
		if !ok {
			days = append(days, d)
		}
		if !ok || ms > l {
			last[d] = ms
		}
	}
	for chunk := range slices.Chunk(tenants, aggregateChunk) {
		if _, err := conn.ExecContext(ctx, `INSERT INTO telemetry_tenants VALUES `+tuples(len(chunk), "(?)")+
			` ON CONFLICT DO NOTHING`, chunk...); err != nil {
			return fmt.Errorf("tenants: %w", err)
		}
	}
	args := make([]any, 0, 4*min(len(days), aggregateChunk))
	for chunk := range slices.Chunk(days, aggregateChunk) {
		args = args[:0]
		for _, d := range chunk {
			args = append(args, d.tenant, d.agent, d.ms, last[d])
		}
		if _, err := conn.ExecContext(ctx, `INSERT INTO agent_last_active VALUES `+tuples(len(chunk), "(?, ?, ?, ?)")+`
			ON CONFLICT (tenant, agent, day_ms) DO UPDATE SET last_ms = greatest(agent_last_active.last_ms, excluded.last_ms)`,
			args...); err != nil {
			return fmt.Errorf("agent_last_active: %w", err)
		}
	}
	return nil
}

// tuples returns n copies of tuple separated by commas, the VALUES of a multi-row insert.
func tuples(n int, tuple string) string {
	var b strings.Builder
	b.Grow(n * (len(tuple) + 2))
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(tuple)
	}
	return b.String()
}

// floorTo rounds ms down to a multiple of unit (also before 1970).
func floorTo(ms, unit int64) int64 {
	return ms - ((ms%unit)+unit)%unit
}

// insertAppended moves the appended rows into the table.
var insertAppended = `INSERT INTO telemetry_events (` + columns + `)
	SELECT * FROM appended_data AS a(` + columns + `)`

func appendRows(dc any, stmt string, rows []store.Event) error {
	conn, ok := dc.(driver.Conn)
	if !ok {
		return fmt.Errorf("unexpected driver connection %T", dc)
	}
	a, err := duckdb.NewTableAppender(conn, stmt, "", "", "telemetry_events", columnNames)
	if err != nil {
		return err
	}
	for _, e := range rows {
		scopes := e.Scopes
		if scopes == nil {
			scopes = []string{}
		}
		if err := a.AppendRow(e.EventID, e.Time, e.Time.UnixMilli(), e.Tenant, e.Agent, e.Kind, e.Outcome,
			e.Actor, e.OnBehalfOf, e.Environment, scopes, e.RequestID, e.Detail, int64(e.StreamSeq),
			e.Owner, e.AgentKnown, e.ClientID, e.Resource, e.Action, e.Bytes, e.Rows, e.SourceAddress,
			e.SourceNetwork, e.LatencyUS, e.TraceID); err != nil {
			_ = a.Close()
			return err
		}
	}
	return a.Close()
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, q store.Query) ([]store.Event, string, error) {
	p, err := store.Prepare(q)
	if err != nil {
		return nil, "", err
	}
	var (
		where = []string{"tenant = ?"}
		args  = []any{p.Tenant}
	)
	if p.Agent != "" {
		where, args = append(where, "agent = ?"), append(args, p.Agent)
	}
	if p.Kind != "" {
		where, args = append(where, "kind = ?"), append(args, p.Kind)
	}
	if ms, ok := p.StartMS(); ok {
		where, args = append(where, "time_ms >= ?"), append(args, ms)
	}
	if p.After != nil {
		where = append(where, "(time_ms < ? OR (time_ms = ? AND event_id < ?))")
		args = append(args, p.After.TimeMS, p.After.TimeMS, p.After.EventID)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	// Two steps keep a page's memory small whatever the width of the row: the keys of the page
	// (few columns to sort), then its rows, found by the keys within the page's time range (DuckDB
	// skips every other row group by its min/max time).
	keys, err := s.pageKeys(ctx, `SELECT time_ms, event_id FROM telemetry_events WHERE `+strings.Join(where, " AND ")+`
		ORDER BY time_ms DESC, event_id DESC LIMIT ?`, append(args, p.Size+1))
	if err != nil || len(keys) == 0 {
		return nil, "", err
	}
	events, err := s.pageRows(ctx, p.Tenant, keys)
	if err != nil {
		return nil, "", err
	}
	if len(events) <= p.Size {
		return events, "", nil
	}
	events = events[:p.Size]
	return events, p.NextToken(events[len(events)-1]), nil
}

// pageKeys runs a query of (time_ms, event_id) keys.
func (s *Store) pageKeys(ctx context.Context, query string, args []any) ([]store.Cursor, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("duckdb: list: %w", err)
	}
	defer rows.Close()
	var keys []store.Cursor
	for rows.Next() {
		var k store.Cursor
		if err := rows.Scan(&k.TimeMS, &k.EventID); err != nil {
			return nil, fmt.Errorf("duckdb: list: %w", err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("duckdb: list: %w", err)
	}
	return keys, nil
}

// pageRows reads the rows of tenant with the given keys (ordered by time then event id, both
// descending), in their order.
func (s *Store) pageRows(ctx context.Context, tenant string, keys []store.Cursor) ([]store.Event, error) {
	lo, hi := keys[len(keys)-1].TimeMS, keys[0].TimeMS
	args := []any{tenant, lo, hi}
	marks := make([]string, len(keys))
	pos := make(map[store.Cursor]int, len(keys))
	for i, k := range keys {
		marks[i] = "?"
		args = append(args, k.EventID)
		pos[k] = i
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+selectColumns+` FROM telemetry_events
		WHERE tenant = ? AND time_ms BETWEEN ? AND ? AND event_id IN (`+strings.Join(marks, ", ")+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("duckdb: list: %w", err)
	}
	defer rows.Close()
	events := make([]store.Event, len(keys))
	found := 0
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		// The same id may be stored at another time of the range (a copy past the recent-id
		// horizon): only the page's own key counts.
		if i, ok := pos[store.Cursor{TimeMS: e.Time.UnixMilli(), EventID: e.EventID}]; ok && events[i].EventID == "" {
			events[i] = e
			found++
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("duckdb: list: %w", err)
	}
	if found != len(keys) {
		return nil, fmt.Errorf("duckdb: list: %d of the page's %d rows found", found, len(keys))
	}
	return events, nil
}

// selectColumns are the columns scanEvent reads.
const selectColumns = `event_id, time_ms, tenant, agent, kind, outcome, actor, on_behalf_of, environment, scopes,
	request_id, detail, stream_seq, owner, agent_known, client_id, resource, action, "bytes", "rows",
	source_address, source_network, latency_us, trace_id`

func scanEvent(rows *sql.Rows) (store.Event, error) {
	var (
		e      store.Event
		timeMS int64
		seq    int64
		scopes any
	)
	if err := rows.Scan(&e.EventID, &timeMS, &e.Tenant, &e.Agent, &e.Kind, &e.Outcome, &e.Actor, &e.OnBehalfOf,
		&e.Environment, &scopes, &e.RequestID, &e.Detail, &seq, &e.Owner, &e.AgentKnown, &e.ClientID, &e.Resource,
		&e.Action, &e.Bytes, &e.Rows, &e.SourceAddress, &e.SourceNetwork, &e.LatencyUS, &e.TraceID); err != nil {
		return store.Event{}, fmt.Errorf("duckdb: list: scan: %w", err)
	}
	e.Time = time.UnixMilli(timeMS).UTC()
	e.StreamSeq = uint64(seq)
	list, ok := scopes.([]any)
	if !ok && scopes != nil {
		return store.Event{}, fmt.Errorf("duckdb: list: scopes of %s is a %T", e.EventID, scopes)
	}
	for _, v := range list {
		s, ok := v.(string)
		if !ok {
			return store.Event{}, errors.New("duckdb: list: scopes of " + e.EventID + " holds a non-string")
		}
		e.Scopes = append(e.Scopes, s)
	}
	return e, nil
}
