package clickhouse

import (
	"cmp"
	"context"
	"fmt"
	"maps"
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
// time_ms lies in one of the ranges [lo, hi), with the given columns and extra condition (whose
// placeholders condArgs fill).
func rowsIn(w store.Window, cols, cond string, condArgs []any, ranges ...[2]int64) (string, []any) {
	where, args := windowFilter(w, cond, condArgs, ranges...)
	return `(SELECT ` + cols + `, time_ms, event_id FROM telemetry_events WHERE ` + where +
		` LIMIT 1 BY time_ms, event_id)`, args
}

// windowFilter is the WHERE clause of rowsIn.
func windowFilter(w store.Window, cond string, condArgs []any, ranges ...[2]int64) (string, []any) {
	where := []string{"tenant = ?", "agent != ''"}
	args := []any{w.Tenant}
	if w.Agent != "" {
		where, args = append(where, "agent = ?"), append(args, w.Agent)
	}
	if cond != "" {
		where, args = append(where, cond), append(args, condArgs...)
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

// acked and unacked are the conditions of the rows of w below its BeforeStreamSeq and of those at
// or above it (the tail the ingest consumer has not acknowledged); rows without a stream sequence
// (0) are always acked. Without a BeforeStreamSeq every row is acked and none unacked ("").
func acked(w store.Window) string {
	if w.BeforeStreamSeq == 0 {
		return ""
	}
	return fmt.Sprintf("stream_seq < %d", w.BeforeStreamSeq)
}

func unacked(w store.Window) string {
	if w.BeforeStreamSeq == 0 {
		return ""
	}
	return fmt.Sprintf("stream_seq >= %d", w.BeforeStreamSeq)
}

// and joins the non-empty conditions with AND.
func and(conds ...string) string {
	return strings.Join(slices.DeleteFunc(conds, func(c string) bool { return c == "" }), " AND ")
}

// maxInListBytes bounds the values an IN list built by inList carries, so that a query stays well
// below the server's max_query_size (256 KiB by default).
const maxInListBytes = 64 << 10

// inList returns the condition "col IN (values)" and its arguments, or no condition when the
// values are too long for one query (the caller then filters the result itself).
func inList(col string, values []string) (string, []any) {
	size := 0
	for _, v := range values {
		size += len(v) + 4
	}
	if len(values) == 0 || size > maxInListBytes {
		return "", nil
	}
	args := make([]any, len(values))
	for i, v := range values {
		args[i] = v
	}
	return col + " IN (" + strings.TrimSuffix(strings.Repeat("?, ", len(values)), ", ") + ")", args
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
// at its edges from the raw rows. With w.BeforeStreamSeq, the raw rows of the whole hours at or
// above it (the unacknowledged tail: few and recent) are subtracted from agent_hourly's sums, and
// an hour left without requests is absent.
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
	addSigned := func(sign int64) func(agent string, hourSec uint32, req, denied uint64, rows, bytes int64) {
		return func(agent string, hourSec uint32, req, denied uint64, rows, bytes int64) {
			k := key{agent, int64(hourSec) * 1000}
			h := sums[k]
			if h == nil {
				h = &store.Hourly{Tenant: w.Tenant, Agent: agent, Hour: time.UnixMilli(k.hour).UTC()}
				sums[k] = h
			}
			h.Requests += sign * int64(req)
			h.Denied += sign * int64(denied)
			h.Rows += sign * rows
			h.Bytes += sign * bytes
		}
	}
	rawQuery := func(cond string, ranges ...[2]int64) (string, []any) {
		sub, args := rowsIn(w, "agent, outcome, rows, bytes", and("kind IN "+requestKinds, knownAgent, cond), nil, ranges...)
		return `SELECT agent, toUInt32(intDiv(time_ms, 3600000) * 3600) AS hour, count(), countIf(outcome NOT IN ` + allowedOutcomes + `),
			sum(rows), sum(bytes) FROM ` + sub + ` GROUP BY agent, hour`, args
	}
	if firstHour < lastHour {
		query := `SELECT agent, toUInt32(hour), sum(requests), sum(denied), sum(rows), sum(bytes) FROM agent_hourly
			WHERE tenant = ? AND hour >= toDateTime(?) AND hour < toDateTime(?)`
		args := []any{w.Tenant, seconds(firstHour), seconds(lastHour)}
		if w.Agent != "" {
			query, args = query+` AND agent = ?`, append(args, w.Agent)
		}
		if err := s.scanHourly(ctx, query+` GROUP BY agent, hour`, args, addSigned(1)); err != nil {
			return nil, err
		}
		if tail := unacked(w); tail != "" {
			query, args := rawQuery(tail, [2]int64{firstHour, lastHour})
			if err := s.scanHourly(ctx, query, args, addSigned(-1)); err != nil {
				return nil, err
			}
		}
	}
	if len(raw) > 0 {
		query, args := rawQuery(acked(w), raw...)
		if err := s.scanHourly(ctx, query, args, addSigned(1)); err != nil {
			return nil, err
		}
	}
	out := make([]store.Hourly, 0, len(sums))
	for _, h := range sums {
		if h.Requests > 0 {
			// Never below zero, should the aggregate miss rows the raw table has.
			h.Denied, h.Rows, h.Bytes = max(h.Denied, 0), max(h.Rows, 0), max(h.Bytes, 0)
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
// days at its edges from the raw rows. With w.BeforeStreamSeq, see dailyUsage.
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
	sums := usageSums{}
	from, to := w.Millis()
	firstDay, lastDay, raw := wholeUnits(from, to, dayMS)
	if firstDay < lastDay {
		if err := s.dailyUsage(ctx, w, dim, firstDay, lastDay, sums); err != nil {
			return nil, err
		}
	}
	if len(raw) > 0 {
		query, args := usageQuery(w, dim, and(knownAgent, acked(w)), nil, "", false, raw...)
		if err := s.scanUsage(ctx, what, query, args, sums.add); err != nil {
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

// usageKey identifies one value of a dimension of one agent.
type usageKey struct{ agent, value string }

// usageSums collects Usage rows by agent and value.
type usageSums map[usageKey]*store.Usage

// add counts n more rows of value, the latest at last (Unix milliseconds).
func (m usageSums) add(agent, value string, n uint64, last int64) {
	k := usageKey{agent, value}
	u := m[k]
	if u == nil {
		u = &store.Usage{Agent: agent, Value: value}
		m[k] = u
	}
	u.Count += int64(n)
	if t := time.UnixMilli(last).UTC(); t.After(u.LastSeen) {
		u.LastSeen = t
	}
}

// usageQuery returns the query of the raw rows of w in the given ranges that meet cond (filled by
// condArgs), one value of dim a row (one per scope of a row that uses its scopes, store.ScopeUseSQL,
// as agent_usage_scope_mv counts them), empty values left out, grouped by
// agent and value, and also by UTC day (Unix milliseconds, selected after the value) when byDay.
// It selects agent, value, [day,] count and latest time_ms; valueCond is an extra condition on the
// value, whose arguments follow those returned.
func usageQuery(w store.Window, dim store.Dimension, cond string, condArgs []any, valueCond string, byDay bool, ranges ...[2]int64) (string, []any) {
	col := string(dim)
	if dim == store.DimScope {
		col, cond = "scopes", and(cond, store.ScopeUseSQL)
	}
	sub, args := rowsIn(w, "agent, "+col, cond, condArgs, ranges...)
	value, from := col+" AS value", sub
	if dim == store.DimScope {
		value, from = "value", sub+" ARRAY JOIN scopes AS value"
	}
	day, group := "", "agent, value"
	if byDay {
		day, group = "intDiv(time_ms, 86400000) * 86400000 AS day, ", "agent, value, day"
	}
	return `SELECT agent, ` + value + `, ` + day + `count(), max(time_ms) FROM ` + from + ` WHERE ` + and("value != ''", valueCond) +
		` GROUP BY ` + group, args
}

// tailUse is what the unacknowledged rows of a window add to one value of an agent in its whole
// days: their count, the latest of their times and the days they fall in (Unix milliseconds).
type tailUse struct {
	n, last int64
	days    []int64
}

// dailyUsage adds the usage of dim in the whole UTC days [first, last) of w, from
// agent_usage_daily. With w.BeforeStreamSeq, the raw rows of those days at or above it (the
// unacknowledged tail: few and recent) are taken out again: their count is subtracted, a value
// left with none is absent, and a value whose latest row was in the tail gets the latest time of
// its remaining rows, exactly: from agent_usage_daily in the days without tail rows of that value,
// from the remaining raw rows (up to the tail's latest time) in the days with some. That raw read
// happens only when the tail falls in whole days (its usual place is the part of a day at the
// window's end, read raw and filtered directly) and holds a value's last use; it reads the
// affected agents' rows of the tail's days.
func (s *Store) dailyUsage(ctx context.Context, w store.Window, dim store.Dimension, first, last int64, out usageSums) error {
	what := "usage of " + string(dim)
	days := usageSums{}
	query := `SELECT agent, value, sum(n), maxMerge(last_ms) FROM agent_usage_daily
		WHERE tenant = ? AND dimension = ? AND day >= toDateTime(?) AND day < toDateTime(?)`
	args := []any{w.Tenant, string(dim), seconds(first), seconds(last)}
	if w.Agent != "" {
		query, args = query+` AND agent = ?`, append(args, w.Agent)
	}
	if err := s.scanUsage(ctx, what, query+` GROUP BY agent, value`, args, days.add); err != nil {
		return err
	}
	if w.BeforeStreamSeq > 0 && len(days) > 0 {
		if err := s.leaveOutTail(ctx, w, dim, first, last, days); err != nil {
			return err
		}
	}
	for _, u := range days {
		out.add(u.Agent, u.Value, uint64(u.Count), u.LastSeen.UnixMilli())
	}
	return nil
}

// leaveOutTail takes the rows of w at or above w.BeforeStreamSeq in the whole days [first, last)
// out of days, the usage agent_usage_daily holds for them (see dailyUsage).
func (s *Store) leaveOutTail(ctx context.Context, w store.Window, dim store.Dimension, first, last int64, days usageSums) error {
	what := "usage of " + string(dim) + " before stream sequence"
	tails := map[usageKey]*tailUse{}
	query, args := usageQuery(w, dim, and(knownAgent, unacked(w)), nil, "", true, [2]int64{first, last})
	res, err := s.conn.Query(ctx, query, args...)
	if err != nil {
		return classify(what, err)
	}
	defer res.Close()
	for res.Next() {
		var (
			agent, value string
			day, lastMS  int64
			n            uint64
		)
		if err := res.Scan(&agent, &value, &day, &n, &lastMS); err != nil {
			return classify(what, err)
		}
		k := usageKey{agent, value}
		t := tails[k]
		if t == nil {
			t = &tailUse{}
			tails[k] = t
		}
		t.n += int64(n)
		t.last = max(t.last, lastMS)
		t.days = append(t.days, day)
	}
	if err := res.Err(); err != nil {
		return classify(what, err)
	}
	// The values whose latest row in these days is in the tail: their latest remaining row is
	// older than the tail's latest.
	affected := map[usageKey]*tailUse{}
	for k, t := range tails {
		u := days[k]
		if u == nil {
			continue
		}
		u.Count -= t.n
		switch {
		case u.Count <= 0:
			delete(days, k)
		case u.LastSeen.UnixMilli() <= t.last:
			affected[k] = t
		}
	}
	if len(affected) == 0 {
		return nil
	}
	latest, err := s.latestAcked(ctx, w, dim, first, last, affected)
	if err != nil {
		return err
	}
	for k := range affected {
		if ms, ok := latest[k]; ok {
			days[k].LastSeen = time.UnixMilli(ms).UTC()
		}
	}
	return nil
}

// latestAcked returns the latest time of the acknowledged rows of each affected value in the whole
// days [first, last) of w: from agent_usage_daily in the days without tail rows of the value, from
// the raw rows in the days with some, up to the latest tail row.
func (s *Store) latestAcked(ctx context.Context, w store.Window, dim store.Dimension, first, last int64, affected map[usageKey]*tailUse) (map[usageKey]int64, error) {
	what := "usage of " + string(dim) + " before stream sequence"
	var agents, values []string
	tailDays := map[int64]bool{}
	upTo := int64(0)
	for k, t := range affected {
		agents, values = append(agents, k.agent), append(values, k.value)
		for _, d := range t.days {
			tailDays[d] = true
		}
		upTo = max(upTo, t.last)
	}
	slices.Sort(agents)
	slices.Sort(values)
	agents, values = slices.Compact(agents), slices.Compact(values)
	agentCond, agentArgs := inList("agent", agents)
	valueCond, valueArgs := inList("value", values)
	latest := map[usageKey]int64{}
	keep := func(agent, value string, lastMS int64) {
		if k := (usageKey{agent, value}); affected[k] != nil {
			latest[k] = max(latest[k], lastMS)
		}
	}

	query := `SELECT agent, value, toInt64(toUInt32(day)) * 1000, maxMerge(last_ms) FROM agent_usage_daily
		WHERE tenant = ? AND dimension = ? AND day >= toDateTime(?) AND day < toDateTime(?)`
	args := []any{w.Tenant, string(dim), seconds(first), seconds(last)}
	if w.Agent != "" {
		query, args = query+` AND agent = ?`, append(args, w.Agent)
	}
	if agentCond != "" {
		query, args = query+` AND `+agentCond, append(args, agentArgs...)
	}
	if valueCond != "" {
		query, args = query+` AND `+valueCond, append(args, valueArgs...)
	}
	res, err := s.conn.Query(ctx, query+` GROUP BY agent, value, day`, args...)
	if err != nil {
		return nil, classify(what, err)
	}
	defer res.Close()
	for res.Next() {
		var (
			agent, value string
			day, lastMS  int64
		)
		if err := res.Scan(&agent, &value, &day, &lastMS); err != nil {
			return nil, classify(what, err)
		}
		if t := affected[usageKey{agent, value}]; t != nil && !slices.Contains(t.days, day) {
			keep(agent, value, lastMS)
		}
	}
	if err := res.Err(); err != nil {
		return nil, classify(what, err)
	}

	var ranges [][2]int64
	for _, d := range slices.Sorted(maps.Keys(tailDays)) {
		if lo, hi := max(d, first), min(d+dayMS, last, upTo+1); lo < hi {
			ranges = append(ranges, [2]int64{lo, hi})
		}
	}
	if len(ranges) == 0 {
		return latest, nil
	}
	rawQuery, rawArgs := usageQuery(w, dim, and(knownAgent, acked(w), agentCond), agentArgs, valueCond, false, ranges...)
	err = s.scanUsage(ctx, what, rawQuery, append(rawArgs, valueArgs...), func(agent, value string, _ uint64, lastMS int64) {
		keep(agent, value, lastMS)
	})
	return latest, err
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
// newest store.QuantileSample access rows in w (below w.BeforeStreamSeq, if set). The sample is taken in three bounded steps: the
// newest 2 x QuantileSample rows of each agent (a sort that spills to disk past
// externalSortBytes), copies not yet merged dropped among them, then the newest QuantileSample.
func (s *Store) Quantiles(ctx context.Context, w store.Window) ([]store.Spread, error) {
	if err := store.CheckWindow(w, false); err != nil {
		return nil, err
	}
	ctx, cancel := s.queryContext(ctx)
	defer cancel()
	from, to := w.Millis()
	where, args := windowFilter(w, and("kind = '"+store.KindAccess+"'", knownAgent, acked(w)), nil, [2]int64{from, to})
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

// LastActive implements store.Analytics: the hours before w.To's come from agent_last_active (one
// row per agent and hour), the hour of w.To from the raw activity rows (store.IsActivity).
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
		{`SELECT agent, maxMerge(last_ms) FROM agent_last_active WHERE tenant = ? AND hour < toDateTime(?)`, []any{w.Tenant, seconds(hour)}},
		{`SELECT agent, max(time_ms) FROM telemetry_events WHERE tenant = ? AND agent != '' AND ` + store.ActivitySQL + ` AND time >= toDateTime(?)
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
