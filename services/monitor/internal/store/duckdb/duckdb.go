// Package duckdb is the telemetry store on an embedded DuckDB database: the default of
// `agentid dev`, one file on disk (or memory only).
package duckdb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/agentid/agentid/services/monitor/internal/store"
)

var _ store.Store = (*Store)(nil)

// schema is the portable subset shared with the ClickHouse store (DESIGN §7): no maps, time as a
// TIMESTAMP (UTC) plus Unix milliseconds, scopes as an array of strings, detail as a JSON string.
// access_log is the analysts' view: who or what accessed what, when, and why.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS telemetry_events (
		event_id     VARCHAR   NOT NULL PRIMARY KEY,
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
		stream_seq   BIGINT    NOT NULL
	)`,
	`CREATE OR REPLACE VIEW access_log AS
	SELECT "time", tenant, actor, on_behalf_of, agent, kind, outcome, scopes, environment, request_id, detail
	FROM telemetry_events`,
}

// columnNames are the table's columns in insert order.
var columnNames = []string{"event_id", "time", "time_ms", "tenant", "agent", "kind", "outcome", "actor",
	"on_behalf_of", "environment", "scopes", "request_id", "detail", "stream_seq"}

// columns is columnNames as a quoted SQL column list.
var columns = `"` + strings.Join(columnNames, `", "`) + `"`

// Store is the DuckDB telemetry store. It is safe for concurrent use.
type Store struct {
	db *sql.DB
	// writeMu serializes inserts: DuckDB's optimistic concurrency fails one of two concurrent
	// transactions that insert the same key, where ON CONFLICT DO NOTHING should skip it.
	writeMu sync.Mutex
}

// Open opens (creating if needed) the database file at path and its schema; an empty path keeps
// the database in memory.
func Open(ctx context.Context, path string) (*Store, error) {
	db, err := sql.Open("duckdb", path)
	if err != nil {
		return nil, fmt.Errorf("duckdb: open %s: %w", path, err)
	}
	for _, stmt := range schema {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("duckdb: schema of %s: %w", path, err)
		}
	}
	return &Store{db: db}, nil
}

// DB exposes the database for analysts' queries in tests and tools.
func (s *Store) DB() *sql.DB { return s.db }

// Close checkpoints and closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Insert implements store.Store: one transaction, rows streamed through a DuckDB appender.
//
// The first attempt is a plain INSERT: the primary key still refuses a stored event_id, but
// without ON CONFLICT, whose check costs several times the insert itself and grows with the
// table (BenchmarkInsertExisting). Only when that attempt fails — a redelivered or re-published
// event, or any other error — is the batch rolled back and inserted again with
// ON CONFLICT (event_id) DO NOTHING, which skips the stored ids.
func (s *Store) Insert(ctx context.Context, events []store.Event) error {
	rows, err := store.Normalize(events)
	if err != nil || len(rows) == 0 {
		return err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.insert(ctx, insertNew, rows); err == nil {
		return nil
	}
	return s.insert(ctx, insertSkippingStored, rows)
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

// Statements that move the appended rows into the table: insertNew fails on an event_id already
// stored, insertSkippingStored skips it.
var (
	insertNew            = `INSERT INTO telemetry_events (` + columns + `) SELECT * FROM appended_data`
	insertSkippingStored = insertNew + ` ON CONFLICT (event_id) DO NOTHING`
)

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
			e.Actor, e.OnBehalfOf, e.Environment, scopes, e.RequestID, e.Detail, int64(e.StreamSeq)); err != nil {
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
	query := `SELECT event_id, time_ms, tenant, agent, kind, outcome, actor, on_behalf_of, environment, scopes, request_id, detail, stream_seq
		FROM telemetry_events WHERE ` + strings.Join(where, " AND ") + `
		ORDER BY time_ms DESC, event_id DESC LIMIT ?`
	args = append(args, p.Size+1)
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, "", fmt.Errorf("duckdb: list: %w", err)
	}
	defer rows.Close()
	events := make([]store.Event, 0, min(p.Size, 64))
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, "", err
		}
		events = append(events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("duckdb: list: %w", err)
	}
	if len(events) <= p.Size {
		return events, "", nil
	}
	events = events[:p.Size]
	return events, p.NextToken(events[len(events)-1]), nil
}

func scanEvent(rows *sql.Rows) (store.Event, error) {
	var (
		e      store.Event
		timeMS int64
		seq    int64
		scopes any
	)
	if err := rows.Scan(&e.EventID, &timeMS, &e.Tenant, &e.Agent, &e.Kind, &e.Outcome, &e.Actor, &e.OnBehalfOf,
		&e.Environment, &scopes, &e.RequestID, &e.Detail, &seq); err != nil {
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
