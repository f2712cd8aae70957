// Package clickhouse is the telemetry store on ClickHouse (clickhouse-go v2, native protocol): the
// production store of the monitor, selected by a ClickHouse DSN. Its schema is the versioned
// migrations of migrations/ (applied by Open), a portable subset that runs on Debian's
// clickhouse-server 18.16 and on current releases.
package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

var (
	_ store.Store     = (*Store)(nil)
	_ store.Analytics = (*Store)(nil)
)

// Retention bounds, in years (the retention policy).
const (
	MinRetentionYears     = 1
	MaxRetentionYears     = 7
	DefaultRetentionYears = 1
)

// retentionInterval is how often the retention policy runs after the run at Open.
const retentionInterval = 24 * time.Hour

// Bounds of the ids a Store remembers having inserted, as the DuckDB store does.
const (
	// recentHorizon is how long an inserted id is remembered, and how long after the first insert
	// following Open every batch is checked against the stored rows (a batch stored by the
	// previous process and redelivered because it was not acknowledged). A batch the caller marks
	// store.WithRedelivered is checked whenever it comes.
	recentHorizon = store.RecentHorizon
	// maxUncertainIDs caps the ids of failed inserts remembered for a check; past it, every
	// batch is checked for recentHorizon instead.
	maxUncertainIDs = 1_000_000
	// checkChunk is the most ids one duplicate check names (an external table): a batch of the
	// ingest consumer (ingest.DefaultMaxBatch rows) is one check.
	checkChunk = 50_000
	// checkSpan is the widest time range one duplicate check reads (store.CheckRanges).
	checkSpan = 10 * time.Minute
)

// Config says how to open the store.
type Config struct {
	// DSN is a clickhouse-go DSN naming the database, e.g.
	// clickhouse://monitor:secret@clickhouse:9000/agentid; the database is created when missing.
	DSN string
	// RetentionYears is how long rows are kept (MinRetentionYears to MaxRetentionYears; 0 means
	// DefaultRetentionYears): monthly partitions wholly older are dropped at Open and daily.
	RetentionYears int
	// Logger receives the retention policy's messages (default slog.Default()).
	Logger *slog.Logger
	// QueryTimeout bounds each List and Analytics query (default store.DefaultQueryTimeout): the
	// context's deadline, and the server's max_execution_time.
	QueryTimeout time.Duration
	// Now is the store's clock (default time.Now), for the recent-id horizon and its check window.
	Now func() time.Time
}

// DefaultReadTimeout is the connection's read timeout when the DSN sets none (clickhouse-go's own
// default is 5 minutes, which a hung server would hold an insert or a shutdown for): above
// store.DefaultQueryTimeout, so a slow query fails on its own deadline first.
const DefaultReadTimeout = 60 * time.Second

// Store is the ClickHouse telemetry store. It is safe for concurrent use.
type Store struct {
	conn     driver.Conn
	database string
	years    int
	log      *slog.Logger
	timeout  time.Duration
	now      func() time.Time

	// writeMu serializes inserts, so that the duplicate checks of one see the others' rows.
	writeMu     sync.Mutex
	recent      store.RecentIDs     // guarded by writeMu
	uncertain   map[string]struct{} // ids of failed inserts (maybe stored); guarded by writeMu
	verifyUntil time.Time           // check every batch until then; guarded by writeMu
	inserted    bool                // an insert ran since Open (and set verifyUntil); guarded by writeMu

	stop    chan struct{}
	stopped sync.WaitGroup
	once    sync.Once
}

// Redact returns dsn with its password replaced by "xxxxx", for logs and errors.
func Redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// Open connects to the DSN's database (creating it when missing), applies the migrations it has
// not applied yet, and applies the retention policy, then again every day until Close.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	years := cfg.RetentionYears
	if years == 0 {
		years = DefaultRetentionYears
	}
	if years < MinRetentionYears || years > MaxRetentionYears {
		return nil, errs.InvalidArgument("retention_years", fmt.Sprintf("retention must be %d to %d years, not %d", MinRetentionYears, MaxRetentionYears, years))
	}
	opts, err := ch.ParseDSN(cfg.DSN)
	if err != nil {
		return nil, errs.InvalidArgument("clickhouse_dsn", "the ClickHouse DSN is invalid: "+strings.ReplaceAll(err.Error(), cfg.DSN, Redact(cfg.DSN)))
	}
	if opts.Auth.Database == "" {
		return nil, errs.InvalidArgument("clickhouse_dsn", "the ClickHouse DSN must name a database (…:9000/agentid)")
	}
	if cfg.QueryTimeout < 0 {
		return nil, errs.InvalidArgument("query_timeout", "the query timeout must not be negative")
	}
	if u, err := url.Parse(cfg.DSN); err == nil && !u.Query().Has("read_timeout") {
		opts.ReadTimeout = DefaultReadTimeout
	}
	if err := createDatabase(ctx, *opts); err != nil {
		return nil, fmt.Errorf("clickhouse: %s: %w", Redact(cfg.DSN), err)
	}
	conn, err := ch.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: open %s: %w", Redact(cfg.DSN), err)
	}
	migrations, err := embeddedMigrations()
	if err == nil {
		err = Migrate(ctx, conn, migrations)
	}
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("clickhouse: %s: %w", Redact(cfg.DSN), err)
	}
	s := &Store{
		conn: conn, database: opts.Auth.Database, years: years, log: cfg.Logger, timeout: cfg.QueryTimeout, now: cfg.Now,
		uncertain: map[string]struct{}{}, stop: make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.timeout == 0 {
		s.timeout = store.DefaultQueryTimeout
	}
	if s.now == nil {
		s.now = time.Now
	}
	if _, err := s.ApplyRetention(ctx, s.now()); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("clickhouse: %s: %w", Redact(cfg.DSN), err)
	}
	s.stopped.Add(1)
	go s.retentionLoop()
	return s, nil
}

// createDatabase creates the options' database, connecting without one.
func createDatabase(ctx context.Context, opts ch.Options) error {
	db := opts.Auth.Database
	opts.Auth.Database = ""
	conn, err := ch.Open(&opts)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+quoteIdent(db)); err != nil {
		return classify("create database "+db, err)
	}
	return nil
}

// quoteIdent quotes a ClickHouse identifier.
func quoteIdent(s string) string {
	return "`" + strings.NewReplacer("\\", "\\\\", "`", "\\`").Replace(s) + "`"
}

// queryContext bounds one read: the store's query timeout as the context's deadline and as the
// server's max_execution_time, and sorts larger than externalSortBytes spill to disk.
func (s *Store) queryContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	return ch.Context(ctx, ch.WithSettings(ch.Settings{
		"max_execution_time":             max(int(s.timeout/time.Second), 1),
		"max_bytes_before_external_sort": externalSortBytes,
	})), cancel
}

// externalSortBytes is the memory a sort of one read may take before it spills to disk.
const externalSortBytes = 256 << 20

// Conn exposes the connection for analysts' queries in tests and tools.
func (s *Store) Conn() driver.Conn { return s.conn }

// Close stops the retention policy and closes the connection.
func (s *Store) Close() error {
	s.once.Do(func() { close(s.stop) })
	s.stopped.Wait()
	return s.conn.Close()
}

// classify wraps an error of the server or the connection: an exception the server raised is an
// internal error naming what failed; anything else (connection refused or lost, timeouts) means the
// store is unavailable, and the caller retries (the ingest consumer leaves the events in the
// stream).
func classify(what string, err error) error {
	if err == nil {
		return nil
	}
	var exc *ch.Exception
	if errors.As(err, &exc) {
		return fmt.Errorf("clickhouse: %s: %w", what, err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("clickhouse: %s: %w", what, err)
	}
	return errs.Unavailable("TELEMETRY_STORE_UNAVAILABLE", "the telemetry store is unavailable", fmt.Errorf("clickhouse: %s: %w", what, err))
}

// columns are the table's columns in insert order.
var columns = []string{"event_id", "time", "time_ms", "tenant", "agent", "kind", "outcome", "actor",
	"on_behalf_of", "environment", "scopes", "request_id", "detail", "stream_seq", "owner", "agent_known",
	"client_id", "resource", "action", "bytes", "rows", "source_address", "source_network", "latency_us", "trace_id"}

var (
	columnList = strings.Join(columns, ", ")
	insertSQL  = "INSERT INTO telemetry_events (" + columnList + ")"
)

// Insert implements store.Store: one batch (one INSERT naming its columns), serialized with the
// other inserts of this Store.
//
// Duplicates are skipped before the insert, so that the raw rows and the aggregates (which
// materialized views feed from every inserted row) count each event once: ids this Store inserted
// within recentHorizon are skipped whatever their time, and rows whose (event_id, time_ms) is
// already stored are skipped after a checked lookup, done for every batch during recentHorizon
// after the first insert since Open (a batch the previous process stored but did not acknowledge
// comes again), for a batch marked store.WithRedelivered however late it comes, and for any batch
// holding ids of an insert that failed (it may have been stored all the same). Reads deduplicate
// again (LIMIT 1 BY), and ReplacingMergeTree collapses copies when parts merge.
func (s *Store) Insert(ctx context.Context, events []store.Event) error {
	rows, err := store.PrepareInsert(ctx, events)
	if err != nil || len(rows) == 0 {
		return err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if !s.inserted {
		s.inserted, s.verifyUntil = true, s.now().Add(recentHorizon)
	}
	rows = slices.DeleteFunc(rows, func(e store.Event) bool { return s.recent.Has(e.EventID) })
	if len(rows) == 0 {
		return nil
	}
	if store.Redelivered(ctx) || s.mustCheck(rows) {
		if rows, err = s.dropStored(ctx, rows); err != nil || len(rows) == 0 {
			return err
		}
	}
	if err := s.send(ctx, rows); err != nil {
		s.markUncertain(rows)
		return err
	}
	for _, e := range rows {
		delete(s.uncertain, e.EventID)
	}
	s.recent.Add(s.now(), rows)
	return nil
}

// send inserts rows as one batch, column by column (clickhouse-go appends a whole column slice
// at once, far cheaper than row by row).
func (s *Store) send(ctx context.Context, rows []store.Event) error {
	batch, err := s.conn.PrepareBatch(ctx, insertSQL)
	if err != nil {
		return classify(fmt.Sprintf("insert %d events", len(rows)), err)
	}
	n := len(rows)
	var (
		str = func(f func(e *store.Event) string) []string {
			out := make([]string, n)
			for i := range rows {
				out[i] = f(&rows[i])
			}
			return out
		}
		i64 = func(f func(e *store.Event) int64) []int64 {
			out := make([]int64, n)
			for i := range rows {
				out[i] = f(&rows[i])
			}
			return out
		}
		times  = make([]time.Time, n)
		scopes = make([][]string, n)
		seqs   = make([]uint64, n)
		known  = make([]uint8, n)
	)
	for i := range rows {
		e := &rows[i]
		times[i] = e.Time.Truncate(time.Second)
		scopes[i] = e.Scopes
		if scopes[i] == nil {
			scopes[i] = []string{}
		}
		seqs[i] = e.StreamSeq
		if e.AgentKnown {
			known[i] = 1
		}
	}
	cols := []any{
		str(func(e *store.Event) string { return e.EventID }), times, i64(func(e *store.Event) int64 { return e.Time.UnixMilli() }),
		str(func(e *store.Event) string { return e.Tenant }), str(func(e *store.Event) string { return e.Agent }),
		str(func(e *store.Event) string { return e.Kind }), str(func(e *store.Event) string { return e.Outcome }),
		str(func(e *store.Event) string { return e.Actor }), str(func(e *store.Event) string { return e.OnBehalfOf }),
		str(func(e *store.Event) string { return e.Environment }), scopes, str(func(e *store.Event) string { return e.RequestID }),
		str(func(e *store.Event) string { return e.Detail }), seqs, str(func(e *store.Event) string { return e.Owner }), known,
		str(func(e *store.Event) string { return e.ClientID }), str(func(e *store.Event) string { return e.Resource }),
		str(func(e *store.Event) string { return e.Action }), i64(func(e *store.Event) int64 { return e.Bytes }),
		i64(func(e *store.Event) int64 { return e.Rows }), str(func(e *store.Event) string { return e.SourceAddress }),
		str(func(e *store.Event) string { return e.SourceNetwork }), i64(func(e *store.Event) int64 { return e.LatencyUS }),
		str(func(e *store.Event) string { return e.TraceID }),
	}
	for i, col := range cols {
		if err := batch.Column(i).Append(col); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("clickhouse: insert: column %s: %w", columns[i], err)
		}
	}
	if err := batch.Send(); err != nil {
		return classify(fmt.Sprintf("insert %d events", len(rows)), err)
	}
	return nil
}

// mustCheck says whether rows must be checked against the stored rows before the insert.
func (s *Store) mustCheck(rows []store.Event) bool {
	if s.now().Before(s.verifyUntil) {
		return true
	}
	for _, e := range rows {
		if _, ok := s.uncertain[e.EventID]; ok {
			return true
		}
	}
	return false
}

// markUncertain remembers the ids of a failed insert: the server may have stored them anyway.
func (s *Store) markUncertain(rows []store.Event) {
	if len(s.uncertain)+len(rows) > maxUncertainIDs {
		clear(s.uncertain)
		s.verifyUntil = s.now().Add(recentHorizon)
		return
	}
	for _, e := range rows {
		s.uncertain[e.EventID] = struct{}{}
	}
}

// dropStored returns rows without those whose (tenant, event_id, time_ms) is stored.
func (s *Store) dropStored(ctx context.Context, rows []store.Event) ([]store.Event, error) {
	type key struct {
		tenant, id string
		ms         int64
	}
	stored := map[key]bool{}
	for _, c := range store.CheckRanges(rows, checkSpan, checkChunk) {
		tenant := c.Tenant
		lo, hi := c.Lo/1000, c.Hi/1000 // the time column holds seconds
		ids, err := ext.NewTable("check_ids", ext.Column("id", column.Type("String")))
		if err != nil {
			return nil, fmt.Errorf("clickhouse: check for stored copies: %w", err)
		}
		for _, id := range c.IDs {
			if err := ids.Append(id); err != nil {
				return nil, fmt.Errorf("clickhouse: check for stored copies: %w", err)
			}
		}
		// IN a set, not has(ids, event_id), which scans the ids for every row of those seconds
		// (18.16: 2.4 s for 1000 ids among 40,000 rows of the same second; 13 ms as a set). The
		// ids go as an external table (a block of the native protocol), not in the query's text:
		// one check for a whole batch fits no query size limit, and the server reads the rows of
		// those seconds once instead of once per thousand ids (half its CPU under a backlog).
		// A batch mixing a late event with new ones is checked per cluster of close times
		// (store.CheckRanges), so no check reads the rows of the hours between them.
		res, err := s.conn.Query(ch.Context(ctx, ch.WithExternalTable(ids)), `SELECT event_id, time_ms FROM telemetry_events
			WHERE tenant = ? AND time >= toDateTime(?) AND time <= toDateTime(?) AND event_id IN check_ids`,
			tenant, uint32(max(lo, 0)), uint32(max(hi, 0)))
		if err != nil {
			return nil, classify("check for stored copies", err)
		}
		for res.Next() {
			var (
				id string
				ms int64
			)
			if err := res.Scan(&id, &ms); err != nil {
				res.Close()
				return nil, classify("check for stored copies", err)
			}
			stored[key{tenant, id, ms}] = true
		}
		err = res.Err()
		res.Close()
		if err != nil {
			return nil, classify("check for stored copies", err)
		}
	}
	return slices.DeleteFunc(rows, func(e store.Event) bool { return stored[key{e.Tenant, e.EventID, e.Time.UnixMilli()}] }), nil
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
		where, args = append(where, "time >= toDateTime(?)", "time_ms >= ?"), append(args, uint32(max(ms/1000, 0)), ms)
	}
	if p.After != nil {
		where = append(where, "time <= toDateTime(?)", "(time_ms < ? OR (time_ms = ? AND event_id < ?))")
		args = append(args, uint32(max(p.After.TimeMS/1000+1, 0)), p.After.TimeMS, p.After.TimeMS, p.After.EventID)
	}
	query := `SELECT ` + columnList + ` FROM telemetry_events WHERE ` + strings.Join(where, " AND ") + `
		ORDER BY time_ms DESC, event_id DESC LIMIT 1 BY time_ms, event_id LIMIT ?`
	args = append(args, p.Size+1)
	ctx, cancel := s.queryContext(ctx)
	defer cancel()
	res, err := s.conn.Query(ctx, query, args...)
	if err != nil {
		return nil, "", classify("list", err)
	}
	defer res.Close()
	events := make([]store.Event, 0, min(p.Size, 64))
	for res.Next() {
		var (
			e     store.Event
			t     time.Time
			ms    int64
			known uint8
		)
		if err := res.Scan(&e.EventID, &t, &ms, &e.Tenant, &e.Agent, &e.Kind, &e.Outcome, &e.Actor, &e.OnBehalfOf,
			&e.Environment, &e.Scopes, &e.RequestID, &e.Detail, &e.StreamSeq, &e.Owner, &known, &e.ClientID,
			&e.Resource, &e.Action, &e.Bytes, &e.Rows, &e.SourceAddress, &e.SourceNetwork, &e.LatencyUS, &e.TraceID); err != nil {
			return nil, "", classify("list", err)
		}
		e.Time = time.UnixMilli(ms).UTC()
		e.AgentKnown = known != 0
		if len(e.Scopes) == 0 {
			e.Scopes = nil
		}
		events = append(events, e)
	}
	if err := res.Err(); err != nil {
		return nil, "", classify("list", err)
	}
	if len(events) <= p.Size {
		return events, "", nil
	}
	events = events[:p.Size]
	return events, p.NextToken(events[len(events)-1]), nil
}
