package clickhouse

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// retentionTables are the tables partitioned by month (toYYYYMM of their time column) whose old
// partitions the retention policy drops, with that column.
var retentionTables = []struct{ name, column string }{
	{"telemetry_events", "time"},
	{"agent_hourly", "hour"},
	{"agent_usage_daily", "day"},
	{"agent_last_active", "hour"},
	{"telemetry_tenants", "day"},
}

// partitionEnd is the first instant after the month YYYYMM in loc: a toYYYYMM partition holds
// the rows before it.
func partitionEnd(ym int, loc *time.Location) time.Time {
	return time.Date(ym/100, time.Month(ym%100)+1, 1, 0, 0, 0, 0, loc)
}

// partitionZone returns the timezone toYYYYMM of a table's column uses: the column's own
// (DateTime('UTC')), else the server's (telemetry_events' time, created before the aggregates
// keyed their times in UTC).
func (s *Store) partitionZone(ctx context.Context, table, column string) (*time.Location, error) {
	var typ, server string
	err := s.conn.QueryRow(ctx, `SELECT type, timezone() FROM system.columns WHERE database = ? AND table = ? AND name = ?`,
		s.database, table, column).Scan(&typ, &server)
	if err != nil {
		return nil, classify("retention: timezone of "+table, err)
	}
	zone := server
	if rest, ok := strings.CutPrefix(typ, "DateTime('"); ok {
		zone = strings.TrimSuffix(rest, "')")
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: retention: timezone %q of %s.%s: %w", zone, table, column, err)
	}
	return loc, nil
}

// ApplyRetention drops the monthly partitions (toYYYYMM) of the telemetry tables that lie wholly
// before the retention horizon (now minus the retention years) and returns the dropped ones as
// "table/YYYYMM". A partition holding any row within the horizon is kept. A month is taken in the
// timezone its partition was computed in (UTC for every aggregate; the server's for
// telemetry_events), so that no row within the horizon is dropped whatever the server's timezone.
func (s *Store) ApplyRetention(ctx context.Context, now time.Time) ([]string, error) {
	horizon := now.UTC().AddDate(-s.years, 0, 0)
	var dropped []string
	for _, t := range retentionTables {
		table := t.name
		loc, err := s.partitionZone(ctx, table, t.column)
		if err != nil {
			return dropped, err
		}
		res, err := s.conn.Query(ctx, `SELECT DISTINCT partition FROM system.parts
			WHERE database = ? AND table = ? AND active ORDER BY partition`, s.database, table)
		if err != nil {
			return dropped, classify("retention: list partitions of "+table, err)
		}
		var old []string
		for res.Next() {
			var p string
			if err := res.Scan(&p); err != nil {
				res.Close()
				return dropped, classify("retention: list partitions of "+table, err)
			}
			if ym, err := strconv.Atoi(p); err == nil && ym >= 100001 {
				if !partitionEnd(ym, loc).After(horizon) {
					old = append(old, p)
				}
			}
		}
		err = res.Err()
		res.Close()
		if err != nil {
			return dropped, classify("retention: list partitions of "+table, err)
		}
		for _, p := range old {
			if err := s.conn.Exec(ctx, "ALTER TABLE "+table+" DROP PARTITION "+p); err != nil {
				return dropped, classify(fmt.Sprintf("retention: drop partition %s of %s", p, table), err)
			}
			dropped = append(dropped, table+"/"+p)
		}
	}
	if len(dropped) > 0 {
		s.log.Info("telemetry retention dropped old partitions", "retention_years", s.years, "horizon", horizon, "partitions", dropped)
	}
	return dropped, nil
}

// retentionLoop applies the retention policy every retentionInterval until Close.
func (s *Store) retentionLoop() {
	defer s.stopped.Done()
	tick := time.NewTicker(retentionInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-tick.C:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			if _, err := s.ApplyRetention(ctx, now); err != nil {
				s.log.Warn("telemetry retention failed; it runs again tomorrow", "err", err)
			}
			cancel()
		}
	}
}
