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

const hourMS = int64(time.Hour / time.Millisecond)

// rowsIn returns a subquery of the deduplicated rows of w's tenant (and agent) with an agent whose
// time_ms lies in one of the ranges [lo, hi), with the given columns and extra condition.
func rowsIn(w store.Window, cols, cond string, ranges ...[2]int64) (string, []any) {
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
	return `(SELECT ` + cols + `, time_ms, event_id FROM telemetry_events WHERE ` + strings.Join(where, " AND ") +
		` LIMIT 1 BY time_ms, event_id)`, args
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
	from, to := w.Millis()
	firstHour := (from + hourMS - 1) / hourMS * hourMS
	lastHour := to / hourMS * hourMS
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
	var raw [][2]int64
	if firstHour >= lastHour {
		raw = append(raw, [2]int64{from, to})
	} else {
		if from < firstHour {
			raw = append(raw, [2]int64{from, firstHour})
		}
		if lastHour < to {
			raw = append(raw, [2]int64{lastHour, to})
		}
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
		sub, args := rowsIn(w, "agent, outcome, rows, bytes", "kind IN "+requestKinds, raw...)
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

// Usage implements store.Analytics.
func (s *Store) Usage(ctx context.Context, w store.Window, dim store.Dimension) ([]store.Usage, error) {
	if err := store.CheckWindow(w, false); err != nil {
		return nil, err
	}
	if err := store.CheckDimension(dim); err != nil {
		return nil, err
	}
	from, to := w.Millis()
	col := string(dim)
	if dim == store.DimScope {
		col = "scopes"
	}
	sub, args := rowsIn(w, "agent, "+col, "", [2]int64{from, to})
	query := `SELECT agent, ` + col + ` AS value, count() AS n, max(time_ms) FROM ` + sub + ` WHERE value != '' GROUP BY agent, value`
	if dim == store.DimScope {
		query = `SELECT agent, value, count() AS n, max(time_ms) FROM ` + sub + ` ARRAY JOIN scopes AS value WHERE value != '' GROUP BY agent, value`
	}
	res, err := s.conn.Query(ctx, query, args...)
	if err != nil {
		return nil, classify("usage of "+string(dim), err)
	}
	defer res.Close()
	var out []store.Usage
	for res.Next() {
		var (
			u    store.Usage
			n    uint64
			last int64
		)
		if err := res.Scan(&u.Agent, &u.Value, &n, &last); err != nil {
			return nil, classify("usage of "+string(dim), err)
		}
		u.Count, u.LastSeen = int64(n), time.UnixMilli(last).UTC()
		out = append(out, u)
	}
	if err := res.Err(); err != nil {
		return nil, classify("usage of "+string(dim), err)
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

// median is the SQL median of a sorted non-empty Array(Float64) expression: the middle value, or
// the mean of the two middle values of an even count.
func median(a string) string {
	return fmt.Sprintf("if(length(%[1]s) %% 2 = 1, %[1]s[intDiv(length(%[1]s), 2) + 1], (%[1]s[intDiv(length(%[1]s), 2)] + %[1]s[intDiv(length(%[1]s), 2) + 1]) / 2)", a)
}

// Quantiles implements store.Analytics: medians and MADs computed exactly over the sorted values.
func (s *Store) Quantiles(ctx context.Context, w store.Window) ([]store.Spread, error) {
	if err := store.CheckWindow(w, false); err != nil {
		return nil, err
	}
	from, to := w.Millis()
	sub, args := rowsIn(w, "agent, rows, bytes", "kind = '"+store.KindAccess+"'", [2]int64{from, to})
	query := `SELECT agent, n, rm, ` + median("arraySort(arrayMap(v -> abs(v - rm), r))") + `, bm, ` +
		median("arraySort(arrayMap(v -> abs(v - bm), b))") + `
		FROM (SELECT agent, n, r, b, ` + median("r") + ` AS rm, ` + median("b") + ` AS bm
			FROM (SELECT agent, count() AS n, arraySort(groupArray(toFloat64(rows))) AS r, arraySort(groupArray(toFloat64(bytes))) AS b
				FROM ` + sub + ` GROUP BY agent))
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

// LastActive implements store.Analytics.
func (s *Store) LastActive(ctx context.Context, w store.Window) (map[string]time.Time, error) {
	if err := store.CheckWindow(w, true); err != nil {
		return nil, err
	}
	to := w.To.UnixMilli() // "at or before To": the last millisecond at or before it
	query := `SELECT agent, max(time_ms) FROM telemetry_events WHERE tenant = ? AND agent != '' AND time <= toDateTime(?) AND time_ms <= ?`
	args := []any{w.Tenant, seconds(to), to}
	if w.Agent != "" {
		query, args = query+` AND agent = ?`, append(args, w.Agent)
	}
	res, err := s.conn.Query(ctx, query+` GROUP BY agent`, args...)
	if err != nil {
		return nil, classify("last active", err)
	}
	defer res.Close()
	out := map[string]time.Time{}
	for res.Next() {
		var (
			agent string
			last  int64
		)
		if err := res.Scan(&agent, &last); err != nil {
			return nil, classify("last active", err)
		}
		out[agent] = time.UnixMilli(last).UTC()
	}
	if err := res.Err(); err != nil {
		return nil, classify("last active", err)
	}
	return out, nil
}

// Tenants implements store.Analytics.
func (s *Store) Tenants(ctx context.Context) ([]string, error) {
	res, err := s.conn.Query(ctx, `SELECT DISTINCT tenant FROM telemetry_events ORDER BY tenant`)
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
