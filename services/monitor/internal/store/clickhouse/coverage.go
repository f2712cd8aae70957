package clickhouse

import (
	"context"
	"time"
)

// CoverageStart returns from when the store holds tenant's telemetry completely: the start of the
// UTC hour after the tenant's oldest stored row (that hour itself may have been recorded only in
// part). ok is false when the store holds no row of the tenant. It reads the rows themselves (in
// the order of the table's key, tenant then hour), so that partitions dropped by retention move
// it forward.
func (s *Store) CoverageStart(ctx context.Context, tenant string) (time.Time, bool, error) {
	ctx, cancel := s.queryContext(ctx)
	defer cancel()
	res, err := s.conn.Query(ctx, `SELECT time_ms FROM telemetry_events WHERE tenant = ?
		ORDER BY toStartOfHour(time), time_ms LIMIT 1`, tenant)
	if err != nil {
		return time.Time{}, false, classify("coverage", err)
	}
	defer res.Close()
	if !res.Next() {
		return time.Time{}, false, classify("coverage", res.Err())
	}
	var oldest int64
	if err := res.Scan(&oldest); err != nil {
		return time.Time{}, false, classify("coverage", err)
	}
	return time.UnixMilli(oldest).UTC().Truncate(time.Hour).Add(time.Hour), true, nil
}
