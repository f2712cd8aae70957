package clickhouse

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// retentionTables are the tables partitioned by month whose old partitions the retention policy
// drops.
var retentionTables = []string{"telemetry_events", "agent_hourly"}

// ApplyRetention drops the monthly partitions (toYYYYMM) of the telemetry tables that lie wholly
// before the retention horizon (now minus the retention years) and returns the dropped ones as
// "table/YYYYMM". A partition holding any row within the horizon is kept.
func (s *Store) ApplyRetention(ctx context.Context, now time.Time) ([]string, error) {
	horizon := now.UTC().AddDate(-s.years, 0, 0)
	var dropped []string
	for _, table := range retentionTables {
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
				end := time.Date(ym/100, time.Month(ym%100)+1, 1, 0, 0, 0, 0, time.UTC) // first instant after the month
				if !end.After(horizon) {
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
