package duckdb

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/store"
)

var _ store.Analytics = (*Store)(nil)

// requestKinds is the SQL list of the kinds of request rows.
var requestKinds = "('" + store.KindAccess + "', '" + store.KindTokenRequested + "')"

// allowedOutcomes is the SQL list of store.AllowedOutcomes.
var allowedOutcomes = "('" + strings.Join(store.AllowedOutcomes, "', '") + "')"

// windowWhere is the filter of the rows of w Hourly, Usage and Quantiles count: its tenant, agent
// (if set) and time range; rows without an agent, and rows of unknown (ghost) agents, left out.
func windowWhere(w store.Window) (string, []any) {
	from, to := w.Millis()
	where := `tenant = ? AND agent <> '' AND agent_known AND time_ms >= ? AND time_ms < ?`
	args := []any{w.Tenant, from, to}
	if w.Agent != "" {
		where += ` AND agent = ?`
		args = append(args, w.Agent)
	}
	if w.BeforeStreamSeq > 0 {
		where += ` AND stream_seq < ?`
		args = append(args, int64(min(w.BeforeStreamSeq, 1<<63-1)))
	}
	return where, args
}

// Hourly implements store.Analytics.
func (s *Store) Hourly(ctx context.Context, w store.Window) ([]store.Hourly, error) {
	if err := store.CheckWindow(w, false); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	where, args := windowWhere(w)
	rows, err := s.db.QueryContext(ctx, `SELECT agent, time_ms - time_ms % 3600000 AS hour_ms, count(*),
			count(*) FILTER (outcome NOT IN `+allowedOutcomes+`), sum("rows")::BIGINT, sum("bytes")::BIGINT
		FROM telemetry_events WHERE `+where+` AND kind IN `+requestKinds+`
		GROUP BY agent, hour_ms ORDER BY agent, hour_ms`, args...)
	if err != nil {
		return nil, fmt.Errorf("duckdb: hourly: %w", err)
	}
	defer rows.Close()
	var out []store.Hourly
	for rows.Next() {
		h := store.Hourly{Tenant: w.Tenant}
		var hourMS int64
		if err := rows.Scan(&h.Agent, &hourMS, &h.Requests, &h.Denied, &h.Rows, &h.Bytes); err != nil {
			return nil, fmt.Errorf("duckdb: hourly: %w", err)
		}
		h.Hour = time.UnixMilli(hourMS).UTC()
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("duckdb: hourly: %w", err)
	}
	return out, nil
}

// Usage implements store.Analytics; scopes only from the rows that use them (store.UsesScopes).
func (s *Store) Usage(ctx context.Context, w store.Window, dim store.Dimension) ([]store.Usage, error) {
	if err := store.CheckWindow(w, false); err != nil {
		return nil, err
	}
	if err := store.CheckDimension(dim); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	where, args := windowWhere(w)
	from := `(SELECT agent, time_ms, ` + string(dim) + ` AS value FROM telemetry_events WHERE ` + where + `)`
	if dim == store.DimScope {
		from = `(SELECT agent, time_ms, unnest(scopes) AS value FROM telemetry_events WHERE ` + where + ` AND ` + store.ScopeUseSQL + `)`
	}
	rows, err := s.db.QueryContext(ctx, `SELECT agent, value, count(*) AS n, max(time_ms)
		FROM `+from+` WHERE value <> ''
		GROUP BY agent, value ORDER BY agent, n DESC, value`, args...)
	if err != nil {
		return nil, fmt.Errorf("duckdb: usage of %s: %w", dim, err)
	}
	defer rows.Close()
	var out []store.Usage
	for rows.Next() {
		var (
			u    store.Usage
			last int64
		)
		if err := rows.Scan(&u.Agent, &u.Value, &u.Count, &last); err != nil {
			return nil, fmt.Errorf("duckdb: usage of %s: %w", dim, err)
		}
		u.LastSeen = time.UnixMilli(last).UTC()
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("duckdb: usage of %s: %w", dim, err)
	}
	return out, nil
}

// Quantiles implements store.Analytics over each agent's newest store.QuantileSample access rows
// in w (a window function): DuckDB's quantile_cont of the median is the mean of the two middle
// values for an even count, as the contract says.
//
// DuckDB's quantile aggregates hold every sampled value of every agent in memory at once and
// cannot spill to disk. So when the store has a memory limit, the sample's size is counted first:
// beyond a quarter of the limit (quantileRowBytes a row) the agents are taken in groups by a hash
// of the name, one query per group, and beyond an eighth a checkpoint first writes out the rows
// that would otherwise hold part of the pool. Under 32 MiB, 3,000,000 sampled rows fail in one
// query ("Out of Memory") and pass in six (TestQuantilesWithinTheMemoryLimit). A store in memory,
// unlimited, takes them all at once.
func (s *Store) Quantiles(ctx context.Context, w store.Window) ([]store.Spread, error) {
	if err := store.CheckWindow(w, false); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	where, args := windowWhere(w)
	where += ` AND kind = '` + store.KindAccess + `'`
	groups, sample := 1, int64(0)
	if s.memoryLimit > 0 {
		if err := s.db.QueryRowContext(ctx, `SELECT coalesce(sum(least(n, `+fmt.Sprint(store.QuantileSample)+`)), 0)::BIGINT
				FROM (SELECT count(*) AS n FROM telemetry_events WHERE `+where+` GROUP BY agent)`, args...).Scan(&sample); err != nil {
			return nil, fmt.Errorf("duckdb: quantiles: size of the sample: %w", err)
		}
		budget := s.memoryLimit / 4
		groups = int(max(1, (sample*quantileRowBytes+budget-1)/budget))
		if sample*quantileRowBytes > s.memoryLimit/8 {
			// The rows no checkpoint has written yet (up to CheckpointThreshold) stay in the pool
			// and would leave the query too little of it: write them out first.
			if err := s.checkpoint(ctx); err != nil {
				return nil, fmt.Errorf("duckdb: quantiles: checkpoint: %w", err)
			}
		}
	}
	var out []store.Spread
	for g := range groups {
		groupWhere, groupArgs := where, args
		if groups > 1 {
			groupWhere += ` AND hash(agent) % ? = ?`
			groupArgs = append(slices.Clip(args), uint64(groups), uint64(g))
		}
		spreads, err := s.quantiles(ctx, groupWhere, groupArgs)
		if err != nil {
			return nil, fmt.Errorf("%w (agents in %d groups, %d sampled rows)", err, groups, sample)
		}
		out = append(out, spreads...)
	}
	if groups > 1 {
		slices.SortFunc(out, func(a, b store.Spread) int { return strings.Compare(a.Agent, b.Agent) })
	}
	return out, nil
}

// checkpoint writes the rows no checkpoint has written yet to the database file, between inserts.
func (s *Store) checkpoint(ctx context.Context) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	_, err := s.db.ExecContext(ctx, `CHECKPOINT`)
	return err
}

// quantileRowBytes is what one sampled row takes in a query of Quantiles: its rows and bytes as
// doubles in the aggregates' states. A group gets a quarter of the memory limit: the rest is for
// the window function, the hash's uneven groups and the ingest's own blocks.
const quantileRowBytes = 16

// quantiles is one query of Quantiles, over the access rows where selects.
func (s *Store) quantiles(ctx context.Context, where string, args []any) ([]store.Spread, error) {
	rows, err := s.db.QueryContext(ctx, `WITH a AS (
			SELECT agent, "rows"::DOUBLE AS r, "bytes"::DOUBLE AS b FROM telemetry_events
			WHERE `+where+`
			QUALIFY row_number() OVER (PARTITION BY agent ORDER BY time_ms DESC, event_id DESC) <= `+fmt.Sprint(store.QuantileSample)+`),
		m AS (SELECT agent, count(*) AS n, quantile_cont(r, 0.5) AS rm, quantile_cont(b, 0.5) AS bm FROM a GROUP BY agent)
		SELECT m.agent, m.n, m.rm, quantile_cont(abs(a.r - m.rm), 0.5), m.bm, quantile_cont(abs(a.b - m.bm), 0.5)
		FROM a JOIN m USING (agent)
		GROUP BY m.agent, m.n, m.rm, m.bm ORDER BY m.agent`, args...)
	if err != nil {
		return nil, fmt.Errorf("duckdb: quantiles: %w", err)
	}
	defer rows.Close()
	var out []store.Spread
	for rows.Next() {
		var sp store.Spread
		if err := rows.Scan(&sp.Agent, &sp.Accesses, &sp.RowsMedian, &sp.RowsMAD, &sp.BytesMedian, &sp.BytesMAD); err != nil {
			return nil, fmt.Errorf("duckdb: quantiles: %w", err)
		}
		out = append(out, sp)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("duckdb: quantiles: %w", err)
	}
	return out, nil
}

// LastActive implements store.Analytics: the days before w.To's come from agent_last_active (one
// row per agent and UTC day), the day of w.To from the activity rows.
func (s *Store) LastActive(ctx context.Context, w store.Window) (map[string]time.Time, error) {
	if err := store.CheckWindow(w, true); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	// "at or before To": the last millisecond at or before it.
	to := w.To.UnixMilli()
	day := floorTo(to, dayMS)
	query := `SELECT agent, max(last) FROM (
			SELECT agent, last_ms AS last FROM agent_last_active WHERE tenant = ? AND day_ms < ?
			UNION ALL
			SELECT agent, time_ms AS last FROM telemetry_events WHERE tenant = ? AND agent <> '' AND ` + store.ActivitySQL + `
				AND time_ms >= ? AND time_ms <= ?)`
	args := []any{w.Tenant, day, w.Tenant, day, to}
	if w.Agent != "" {
		query += ` WHERE agent = ?`
		args = append(args, w.Agent)
	}
	rows, err := s.db.QueryContext(ctx, query+` GROUP BY agent`, args...)
	if err != nil {
		return nil, fmt.Errorf("duckdb: last active: %w", err)
	}
	defer rows.Close()
	out := map[string]time.Time{}
	for rows.Next() {
		var (
			agent string
			last  int64
		)
		if err := rows.Scan(&agent, &last); err != nil {
			return nil, fmt.Errorf("duckdb: last active: %w", err)
		}
		out[agent] = time.UnixMilli(last).UTC()
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("duckdb: last active: %w", err)
	}
	return out, nil
}

// Tenants implements store.Analytics, from telemetry_tenants.
func (s *Store) Tenants(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	rows, err := s.db.QueryContext(ctx, `SELECT tenant FROM telemetry_tenants ORDER BY tenant`)
	if err != nil {
		return nil, fmt.Errorf("duckdb: tenants: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, fmt.Errorf("duckdb: tenants: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("duckdb: tenants: %w", err)
	}
	return out, nil
}
