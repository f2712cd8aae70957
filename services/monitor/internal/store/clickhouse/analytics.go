package clickhouse

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/store"
)

// requestKinds is the SQL list of the kinds of request rows.
var requestKinds = "('" + store.KindAccess + "', '" + store.KindTokenRequested + "')"

// allowedOutcomes is the SQL list of store.AllowedOutcomes.
var allowedOutcomes = "('" + strings.Join(store.AllowedOutcomes, "', '") + "')"

const (
	hourMS = int64(time.Hour / time.Millisecond)
	dayMS  = 24 * hourMS
)

// knownAgent is the condition of the rows Hourly, Usage and Quantiles count: a known agent's.
const knownAgent = "agent_known = 1"

// rowsIn returns a subquery of the deduplicated rows of w's tenant (and agent) with an agent whose
// time_ms lies in one of the ranges [lo, hi), with the given columns and extra condition.
func rowsIn(w store.Window, cols, cond string, ranges ...[2]int64) (string, []any) {
	where, args := windowFilter(w, cond, ranges...)
	return `(SELECT ` + cols + `, time_ms, event_id FROM telemetry_events WHERE ` + where +
		` LIMIT 1 BY time_ms, event_id)`, args
}

// windowFilter is the WHERE clause of rowsIn.
func windowFilter(w store.Window, cond string, ranges ...[2]int64) (string, []any) {
	where := []string{"tenant = ?", "agent != ''"}
	args := []any{w.Tenant}
	if w.Agent != "" {
		where, args = append(where, "agent = ?"), append(args, w.Agent)
	}
	if cond != "" {
		where = append(where, cond)
	}
	lo, hi := ranges[0][0], ranges[0][1]
	var alt []string
	for _, r := range ranges {
		lo, hi = min(lo, r[0]), max(hi, r[1])
		alt = append(alt, "(time_ms >= ? AND time_ms < ?)")
		args = append(args, r[0], r[1])
	}
	where = append(where, "("+strings.Join(alt, " OR ")+")", "time >= toDateTime(?)", "time <= toDateTime(?)")
	args = append(args, seconds(lo), seconds(hi))
	return strings.Join(where, " AND "), args
}

// wholeUnits splits [from, to) into the whole units (hours, days) of size unit it covers,
// [first, last), and the parts at its edges, for the raw rows; first >= last when it covers none.
func wholeUnits(from, to, unit int64) (first, last int64, edges [][2]int64) {
	first = (from + unit - 1) / unit * unit
	last = to / unit * unit
	if first >= last {
		return first, last, [][2]int64{{from, to}}
	}
	if from < first {
		edges = append(edges, [2]int64{from, first})
	}
	if last < to {
		edges = append(edges, [2]int64{last, to})
	}
	return first, last, edges
}

// seconds converts Unix milliseconds to a DateTime argument (whole seconds, clamped to its range).
func seconds(ms int64) uint32 {
	return uint32(min(max(ms/1000, 0), 1<<32-1))
}

// Hourly implements store.Analytics: whole hours of w come from agent_hourly, the parts of hours
// at its edges from the raw rows.
func (s *Store) Hourly(ctx context.Context, w store.Window) ([]store.Hourly, error) {
	if err := store.CheckWindow(w, false); err != nil {
		return nil, err
	}
	ctx, cancel := s.queryContext(ctx)
	defer cancel()
	from, to := w.Millis()
	firstHour, lastHour, raw := wholeUnits(from, to, hourMS)
	type key struct {
		agent string
		hour  int64
	}
	sums := map[key]*store.Hourly{}
	add := func(agent string, hour int64, req, denied uint64, rows, bytes int64) {
		k := key{agent, hour}
		h := sums[k]
		if h == nil {
			h = &store.Hourly{Tenant: w.Tenant, Agent: agent, Hour: time.UnixMilli(hour).UTC()}
			sums[k] = h
		}
		h.Requests += int64(req)
		h.Denied += int64(denied)
		h.Rows += rows
		h.Bytes += bytes
	}
	if firstHour < lastHour {
		query := `SELECT agent, toUInt32(hour), sum(requests), sum(denied), sum(rows), sum(bytes) FROM agent_hourly
			WHERE tenant = ? AND hour >= toDateTime(?) AND hour < toDateTime(?)`
		args := []any{w.Tenant, seconds(firstHour), seconds(lastHour)}
		if w.Agent != "" {
			query, args = query+` AND agent = ?`, append(args, w.Agent)
		}
		if err := s.scanHourly(ctx, query+` GROUP BY agent, hour`, args, func(agent string, hourSec uint32, req, denied uint64, rows, bytes int64) {
			add(agent, int64(hourSec)*1000, req, denied, rows, bytes)
		}); err != nil {
			return nil, err
		}
	}
	if len(raw) > 0 {
		sub, args := rowsIn(w, "agent, outcome, rows, bytes", "kind IN "+requestKinds+" AND "+knownAgent, raw...)
		query := `SELECT agent, toUInt32(intDiv(time_ms, 3600000) * 3600) AS hour, count(), countIf(outcome NOT IN ` + allowedOutcomes + `),
			sum(rows), sum(bytes) FROM ` + sub + ` GROUP BY agent, hour`
		if err := s.scanHourly(ctx, query, args, func(agent string, hourSec uint32, req, denied uint64, rows, bytes int64) {
			add(agent, int64(hourSec)*1000, req, denied, rows, bytes)
		}); err != nil {
			return nil, err
		}
	}
	out := make([]store.Hourly, 0, len(sums))
	for _, h := range sums {
		if h.Requests > 0 {
			out = append(out, *h)
		}
	}
	slices.SortFunc(out, func(a, b store.Hourly) int {
		if c := strings.Compare(a.Agent, b.Agent); c != 0 {
			return c
		}
		return a.Hour.Compare(b.Hour)
	})
	return out, nil
}

func (s *Store) scanHourly(ctx context.Context, query string, args []any, f func(agent string, hourSec uint32, req, denied uint64, rows, bytes int64)) error {
	res, err := s.conn.Query(ctx, query, args...)
	if err != nil {
		return classify("hourly", err)
	}
	defer res.Close()
	for res.Next() {
		var (
			agent       string
			hour        uint32
			req, denied uint64
			rows, bytes int64
		)
		if err := res.Scan(&agent, &hour, &req, &denied, &rows, &bytes); err != nil {
			return classify("hourly", err)
		}
		f(agent, hour, req, denied, rows, bytes)
	}
	return classify("hourly", res.Err())
}

// Usage implements store.Analytics: whole UTC days of w come from agent_usage_daily, the parts of
// days at its edges from the raw rows.
func (s *Store) Usage(ctx context.Context, w store.Window, dim store.Dimension) ([]store.Usage, error) {
	if err := store.CheckWindow(w, false); err != nil {
		return nil, err
	}
	if err := store.CheckDimension(dim); err != nil {
		return nil, err
	}
	ctx, cancel := s.queryContext(ctx)
	defer cancel()
	what := "usage of " + string(dim)
	type key struct{ agent, value string }
	sums := map[key]*store.Usage{}
	add := func(agent, value string, n uint64, last int64) {
		k := key{agent, value}
		u := sums[k]
		if u == nil {
			u = &store.Usage{Agent: agent, Value: value}
			sums[k] = u
		}
		u.Count += int64(n)
		if t := time.UnixMilli(last).UTC(); t.After(u.LastSeen) {
			u.LastSeen = t
		}
	}
	from, to := w.Millis()
	firstDay, lastDay, raw := wholeUnits(from, to, dayMS)
	if firstDay < lastDay {
		query := `SELECT agent, value, sum(n), maxMerge(last_ms) FROM agent_usage_daily
			WHERE tenant = ? AND dimension = ? AND day >= toDateTime(?) AND day < toDateTime(?)`
		args := []any{w.Tenant, string(dim), seconds(firstDay), seconds(lastDay)}
		if w.Agent != "" {
			query, args = query+` AND agent = ?`, append(args, w.Agent)
		}
		if err := s.scanUsage(ctx, what, query+` GROUP BY agent, value`, args, add); err != nil {
			return nil, err
		}
	}
	if len(raw) > 0 {
		if err := s.rawUsage(ctx, w, dim, raw, add); err != nil {
			return nil, err
		}
	}
	out := make([]store.Usage, 0, len(sums))
	for _, u := range sums {
		out = append(out, *u)
	}
	slices.SortFunc(out, func(a, b store.Usage) int {
		if c := strings.Compare(a.Agent, b.Agent); c != 0 {
			return c
		}
		if a.Count != b.Count {
			return cmp.Compare(b.Count, a.Count)
		}
		return strings.Compare(a.Value, b.Value)
	})
	return out, nil
}

// rawUsage adds the usage of dim in the raw rows of w in the given ranges.
func (s *Store) rawUsage(ctx context.Context, w store.Window, dim store.Dimension, raw [][2]int64, add func(agent, value string, n uint64, last int64)) error {
	col := string(dim)
	if dim == store.DimScope {
		col = "scopes"
	}
	sub, args := rowsIn(w, "agent, "+col, knownAgent, raw...)
	query := `SELECT agent, ` + col + ` AS value, count() AS n, max(time_ms) FROM ` + sub + ` WHERE value != '' GROUP BY agent, value`
	if dim == store.DimScope {
		query = `SELECT agent, value, count() AS n, max(time_ms) FROM ` + sub + ` ARRAY JOIN scopes AS value WHERE value != '' GROUP BY agent, value`
	}
	return s.scanUsage(ctx, "usage of "+string(dim), query, args, add)
}

// scanUsage runs a query of (agent, value, count, last time_ms) rows.
func (s *Store) scanUsage(ctx context.Context, what, query string, args []any, f func(agent, value string, n uint64, last int64)) error {
	res, err := s.conn.Query(ctx, query, args...)
	if err != nil {
		return classify(what, err)
	}
	defer res.Close()
	for res.Next() {
		var (
			agent, value string
			n            uint64
			last         int64
		)
		if err := res.Scan(&agent, &value, &n, &last); err != nil {
			return classify(what, err)
		}
		f(agent, value, n, last)
	}
	return classify(what, res.Err())
}

// median is the SQL median of a sorted non-empty Array(Float64) expression: the middle value, or
// the mean of the two middle values of an even count.
func median(a string) string {
	return fmt.Sprintf("if(length(%[1]s) %% 2 = 1, %[1]s[intDiv(length(%[1]s), 2) + 1], (%[1]s[intDiv(length(%[1]s), 2)] + %[1]s[intDiv(length(%[1]s), 2) + 1]) / 2)", a)
}

// Quantiles implements store.Analytics: medians and MADs computed exactly over each agent's
// newest store.QuantileSample access rows in w. The sample is taken in three bounded steps: the
// newest 2 x QuantileSample rows of each agent (a sort that spills to disk past
// externalSortBytes), copies not yet merged dropped among them, then the newest QuantileSample.
func (s *Store) Quantiles(ctx context.Context, w store.Window) ([]store.Spread, error) {
	if err := store.CheckWindow(w, false); err != nil {
		return nil, err
	}
	ctx, cancel := s.queryContext(ctx)
	defer cancel()
	from, to := w.Millis()
	where, args := windowFilter(w, "kind = '"+store.KindAccess+"' AND "+knownAgent, [2]int64{from, to})
	n := store.QuantileSample
	sample := fmt.Sprintf(`(SELECT agent, rows, bytes FROM
			(SELECT agent, time_ms, event_id, rows, bytes FROM
				(SELECT agent, time_ms, event_id, rows, bytes FROM telemetry_events WHERE %s
					ORDER BY agent, time_ms DESC, event_id DESC LIMIT %d BY agent)
				LIMIT 1 BY agent, time_ms, event_id)
			ORDER BY agent, time_ms DESC, event_id DESC LIMIT %d BY agent)`, where, 2*n, n)
	query := `SELECT agent, n, rm, ` + median("arraySort(arrayMap(v -> abs(v - rm), r))") + `, bm, ` +
		median("arraySort(arrayMap(v -> abs(v - bm), b))") + `
		FROM (SELECT agent, n, r, b, ` + median("r") + ` AS rm, ` + median("b") + ` AS bm
			FROM (SELECT agent, count() AS n, arraySort(groupArray(toFloat64(rows))) AS r, arraySort(groupArray(toFloat64(bytes))) AS b
				FROM ` + sample + ` GROUP BY agent))
		ORDER BY agent`
	res, err := s.conn.Query(ctx, query, args...)
	if err != nil {
		return nil, classify("quantiles", err)
	}
	defer res.Close()
	var out []store.Spread
	for res.Next() {
		var (
			sp store.Spread
			n  uint64
		)
		if err := res.Scan(&sp.Agent, &n, &sp.RowsMedian, &sp.RowsMAD, &sp.BytesMedian, &sp.BytesMAD); err != nil {
			return nil, classify("quantiles", err)
		}
		sp.Accesses = int64(n)
		out = append(out, sp)
	}
	if err := res.Err(); err != nil {
		return nil, classify("quantiles", err)
	}
	return out, nil
}

// LastActive implements store.Analytics: the hours before w.To's come from agent_last_seen (one
// row per agent and hour), the hour of w.To from the raw rows.
func (s *Store) LastActive(ctx context.Context, w store.Window) (map[string]time.Time, error) {
	if err := store.CheckWindow(w, true); err != nil {
		return nil, err
	}
	ctx, cancel := s.queryContext(ctx)
	defer cancel()
	to := w.To.UnixMilli() // "at or before To": the last millisecond at or before it
	hour := to - ((to%hourMS)+hourMS)%hourMS
	out := map[string]time.Time{}
	add := func(agent string, last int64) {
		if t := time.UnixMilli(last).UTC(); t.After(out[agent]) {
			out[agent] = t
		}
	}
	queries := []struct {
		sql  string
		args []any
	}{
		{`SELECT agent, maxMerge(last_ms) FROM agent_last_seen WHERE tenant = ? AND hour < toDateTime(?)`, []any{w.Tenant, seconds(hour)}},
		{`SELECT agent, max(time_ms) FROM telemetry_events WHERE tenant = ? AND agent != '' AND time >= toDateTime(?)
			AND time <= toDateTime(?) AND time_ms >= ? AND time_ms <= ?`, []any{w.Tenant, seconds(hour), seconds(to), hour, to}},
	}
	for _, q := range queries {
		sql, args := q.sql, q.args
		if w.Agent != "" {
			sql, args = sql+` AND agent = ?`, append(args, w.Agent)
		}
		if err := s.scanLast(ctx, sql+` GROUP BY agent`, args, add); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// scanLast runs a query of (agent, last time_ms) rows.
func (s *Store) scanLast(ctx context.Context, query string, args []any, f func(agent string, last int64)) error {
	res, err := s.conn.Query(ctx, query, args...)
	if err != nil {
		return classify("last active", err)
	}
	defer res.Close()
	for res.Next() {
		var (
			agent string
			last  int64
		)
		if err := res.Scan(&agent, &last); err != nil {
			return classify("last active", err)
		}
		f(agent, last)
	}
	return classify("last active", res.Err())
}

// Tenants implements store.Analytics, from telemetry_tenants (a row per tenant and UTC day).
func (s *Store) Tenants(ctx context.Context) ([]string, error) {
	ctx, cancel := s.queryContext(ctx)
	defer cancel()
	res, err := s.conn.Query(ctx, `SELECT DISTINCT tenant FROM telemetry_tenants ORDER BY tenant`)
	if err != nil {
		return nil, classify("tenants", err)
	}
	defer res.Close()
	var out []string
	for res.Next() {
		var t string
		if err := res.Scan(&t); err != nil {
			return nil, classify("tenants", err)
		}
		out = append(out, t)
	}
	if err := res.Err(); err != nil {
		return nil, classify("tenants", err)
	}
	return out, nil
}
