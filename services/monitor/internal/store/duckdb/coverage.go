package duckdb

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// CoverageStart returns from when the store holds tenant's telemetry completely: the start of the
// UTC hour after the tenant's oldest stored row (that hour itself may have been recorded only in
// part). ok is false when the store holds no row of the tenant. It reads the rows themselves, not
// an aggregate table, so that rows deleted from the store move it forward.
func (s *Store) CoverageStart(ctx context.Context, tenant string) (time.Time, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var oldest sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT min(time_ms) FROM telemetry_events WHERE tenant = ?`, tenant).Scan(&oldest); err != nil {
		return time.Time{}, false, fmt.Errorf("duckdb: coverage of tenant %s: %w", tenant, err)
	}
	if !oldest.Valid {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(oldest.Int64).UTC().Truncate(time.Hour).Add(time.Hour), true, nil
}
