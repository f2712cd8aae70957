// Package duckdb is the telemetry store on an embedded DuckDB database: the default of
// `agentid dev`, one file on disk (or memory only).
package duckdb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
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

// Store is the DuckDB telemetry store. It is safe for concurrent use.
type Store struct {
	db *sql.DB
	// writeMu serializes inserts, so that the duplicate check of one sees every row of the others.
	writeMu sync.Mutex
	recent  recentIDs // guarded by writeMu
}

// Bounds of the ids a Store remembers having inserted (recentIDs).
const (
	// recentHorizon is how long an inserted id is remembered: well beyond the TELEMETRY stream's
	// duplicate window (2 minutes), its consumer's ack wait (30 s) and an access reporter's
	// retries of one batch (under a minute by default).
	recentHorizon = 5 * time.Minute
	// maxRecentIDs caps the remembered ids (about 100 bytes each); the oldest go first.
	maxRecentIDs = 300_000
)

// recentIDs are the ids this Store inserted within recentHorizon, at most maxRecentIDs.
type recentIDs struct {
	ids   map[string]struct{}
	order []recentBatch
}

type recentBatch struct {
	at  time.Time
	ids []string
}

func (r *recentIDs) has(id string) bool {
	_, ok := r.ids[id]
	return ok
}

func (r *recentIDs) add(now time.Time, rows []store.Event) {
	if r.ids == nil {
		r.ids = make(map[string]struct{})
	}
	b := recentBatch{at: now, ids: make([]string, len(rows))}
	for i, e := range rows {
		b.ids[i] = e.EventID
		r.ids[e.EventID] = struct{}{}
	}
	r.order = append(r.order, b)
	for len(r.order) > 0 && (now.Sub(r.order[0].at) > recentHorizon || len(r.ids) > maxRecentIDs) {
		for _, id := range r.order[0].ids {
			delete(r.ids, id)
		}
		r.order[0] = recentBatch{}
		r.order = r.order[1:]
	}
}

// MemoryLimit bounds DuckDB's buffer pool for a database file (its default is 80 % of the
// machine's memory): the blocks of the table it keeps cached otherwise grow with the table. With no
// index to hold in memory, inserts work within it; larger queries spill to <path>.tmp.
const MemoryLimit = "256MB"

// Open opens (creating if needed) the database file at path and its schema, its buffer pool
// limited to MemoryLimit; an empty path keeps the database in memory, unlimited.
func Open(ctx context.Context, path string) (*Store, error) {
	db, err := sql.Open("duckdb", path)
	if err != nil {
		return nil, fmt.Errorf("duckdb: open %s: %w", path, err)
	}
	if path != "" {
		if _, err := db.ExecContext(ctx, "SET GLOBAL memory_limit = '"+MemoryLimit+"'"); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("duckdb: memory limit of %s: %w", path, err)
		}
	}
	if err := migrate(ctx, db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("duckdb: schema of %s: %w", path, err)
	}
	s := &Store{db: db}
	if err := s.rememberRecent(ctx, time.Now()); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("duckdb: open %s: %w", path, err)
	}
	return s, nil
}

// rememberRecent loads the ids of the rows stored with a time within recentHorizon of now, as if
// inserted now: a copy published again with a new time soon after a restart is still skipped.
func (s *Store) rememberRecent(ctx context.Context, now time.Time) error {
	rows, err := s.db.QueryContext(ctx, `SELECT event_id FROM telemetry_events WHERE time_ms >= ? ORDER BY time_ms DESC LIMIT ?`,
		now.Add(-recentHorizon).UnixMilli(), maxRecentIDs)
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
	s.recent.add(now, recent)
	return nil
}

// migrate creates the table, brings a table of an older schema to the current one (the wide
// row's columns added, the old primary key dropped) keeping its rows, and (re)creates the view.
func migrate(ctx context.Context, db *sql.DB) error {
	stmts := []string{fmt.Sprintf(tableDDL, "telemetry_events"), `DROP VIEW IF EXISTS access_log`}
	for _, c := range wideColumns {
		stmts = append(stmts, fmt.Sprintf(`ALTER TABLE telemetry_events ADD COLUMN IF NOT EXISTS %q %s DEFAULT %s`, c.name, c.typ, c.def))
	}
	for _, stmt := range stmts {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	if err := dropPrimaryKey(ctx, db); err != nil {
		return fmt.Errorf("drop the primary key: %w", err)
	}
	_, err := db.ExecContext(ctx, accessLogView)
	return err
}

// dropPrimaryKey rebuilds a table created with a primary key on event_id (before the key was
// dropped) without it, in one transaction: DuckDB cannot drop a primary key in place.
func dropPrimaryKey(ctx context.Context, db *sql.DB) error {
	var keys int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM duckdb_constraints()
		WHERE table_name = 'telemetry_events' AND constraint_type = 'PRIMARY KEY'`).Scan(&keys); err != nil {
		return err
	}
	if keys == 0 {
		return nil
	}
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
	return tx.Commit()
}

// DB exposes the database for analysts' queries in tests and tools.
func (s *Store) DB() *sql.DB { return s.db }

// Close checkpoints and closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Insert implements store.Store: one transaction, rows streamed through a DuckDB appender into
// an INSERT that skips every row whose (time_ms, event_id) is already stored.
//
// Every copy of an event has the same id and the same time: a redelivery or a re-publish carries
// the event itself, and ingest derives a row's id and time from it. So checking the stored rows of
// the batch's time range finds every earlier copy, however long ago it was stored, and restricting
// the check to that range lets DuckDB skip every other row group by its min/max time (the cost
// does not grow with the table; BenchmarkInsertExisting). A row whose id was inserted in the last
// recentHorizon (or, at open, was stored with a time that recent) is skipped too, whatever its
// time: an access batch its reporter sends again is stored again under the same id with a new
// envelope time. Without a primary key the memory of the store no longer grows with its rows.
func (s *Store) Insert(ctx context.Context, events []store.Event) error {
	rows, err := store.Normalize(events)
	if err != nil || len(rows) == 0 {
		return err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	rows = slices.DeleteFunc(rows, func(e store.Event) bool { return s.recent.has(e.EventID) })
	if len(rows) == 0 {
		return nil
	}
	lo, hi := rows[0].Time.UnixMilli(), rows[0].Time.UnixMilli()
	for _, e := range rows[1:] {
		lo, hi = min(lo, e.Time.UnixMilli()), max(hi, e.Time.UnixMilli())
	}
	if err := s.insert(ctx, fmt.Sprintf(insertSkippingStored, lo, hi), rows); err != nil {
		return err
	}
	s.recent.add(time.Now(), rows)
	return nil
}

// insert runs one transaction that appends rows through stmt.
func (s *Store) insert(ctx context.Context, stmt string, rows []store.Event) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("duckdb: insert: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN TRANSACTION"); err != nil {
		return fmt.Errorf("duckdb: insert: begin: %w", err)
	}
	err = conn.Raw(func(dc any) error { return appendRows(dc, stmt, rows) })
	if err == nil {
		_, err = conn.ExecContext(ctx, "COMMIT")
	}
	if err != nil {
		if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); rerr != nil {
			// Leave no half-open transaction on a pooled connection: make the pool drop it.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		return fmt.Errorf("duckdb: insert %d events: %w", len(rows), err)
	}
	return nil
}

// insertSkippingStored moves the appended rows into the table, skipping those whose time_ms and
// event_id are stored; its two verbs are the batch's lowest and highest time_ms.
var insertSkippingStored = `INSERT INTO telemetry_events (` + columns + `)
	SELECT * FROM appended_data AS a(` + columns + `)
	WHERE NOT EXISTS (SELECT 1 FROM telemetry_events t
		WHERE t.time_ms BETWEEN %d AND %d AND t.time_ms = a.time_ms AND t.event_id = a.event_id)`

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
