package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/store/clickhouse"
	"github.com/agentid/agentid/services/monitor/internal/store/duckdb"
)

// telemetryStore is what the monitor needs of its telemetry store: rows and their analytics.
type telemetryStore interface {
	store.Store
	store.Analytics
}

// validateClickHouse checks the ClickHouse settings: a DSN naming a database, a retention of
// clickhouse.MinRetentionYears to clickhouse.MaxRetentionYears years, and not both stores.
func (c Config) validateClickHouse() error {
	if c.ClickHouseDSN == "" {
		if c.ClickHouseRetentionYears != 0 {
			return fmt.Errorf("monitor: a ClickHouse retention needs a ClickHouse DSN")
		}
		return nil
	}
	if c.DuckDBPath != "" {
		return fmt.Errorf("monitor: set either a ClickHouse DSN or a DuckDB path, not both")
	}
	if y := c.ClickHouseRetentionYears; y != 0 && (y < clickhouse.MinRetentionYears || y > clickhouse.MaxRetentionYears) {
		return fmt.Errorf("monitor: ClickHouse retention must be %d to %d years, not %d", clickhouse.MinRetentionYears, clickhouse.MaxRetentionYears, y)
	}
	return nil
}

// openTelemetryStore opens ClickHouse when a DSN is set, else DuckDB (the embedded default).
// The DSN's password is never logged.
func openTelemetryStore(cfg Config, deps Deps, logger *slog.Logger) (telemetryStore, error) {
	ctx := context.Background()
	if cfg.ClickHouseDSN != "" {
		st, err := clickhouse.Open(ctx, clickhouse.Config{DSN: cfg.ClickHouseDSN, RetentionYears: cfg.ClickHouseRetentionYears, Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("monitor: telemetry store: %w", err)
		}
		logger.Info("telemetry store opened", "engine", "clickhouse", "dsn", clickhouse.Redact(cfg.ClickHouseDSN))
		return st, nil
	}
	if cfg.DuckDBPath != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.DuckDBPath), 0o700); err != nil {
			return nil, fmt.Errorf("monitor: %w", err)
		}
	}
	st, err := duckdb.Open(ctx, cfg.DuckDBPath, duckdb.WithLogger(logger), duckdb.WithMemoryLimit(cfg.DuckDBMemoryLimit))
	if err != nil {
		return nil, fmt.Errorf("monitor: telemetry store: %w", err)
	}
	logger.Info("telemetry store opened", "engine", "duckdb", "path", cfg.DuckDBPath, "memory_limit_bytes", st.MemoryLimit())
	reg := deps.Registerer
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	// Registered for the store's life: Close unregisters it, so that a later store of the same
	// process (tests, a restart in place) reports its own memory rather than a closed store's.
	collector := st.Collector()
	if err := reg.Register(collector); err != nil {
		logger.Warn("monitor: DuckDB memory metrics not registered (another DuckDB store of this process reports them)", "err", err)
		return st, nil
	}
	return &registeredDuckDB{Store: st, unregister: func() { reg.Unregister(collector) }}, nil
}

// registeredDuckDB is a DuckDB store whose memory collector is registered until it closes.
// Unregistering goes by the metrics' descriptions, so it happens once: a second Close must not
// remove the collector a later store registered.
type registeredDuckDB struct {
	*duckdb.Store
	once       sync.Once
	unregister func()
}

func (s *registeredDuckDB) Close() error {
	s.once.Do(s.unregister)
	return s.Store.Close()
}

// RedactDSN returns a ClickHouse DSN with its password replaced, for logs and banners.
func RedactDSN(dsn string) string { return clickhouse.Redact(dsn) }
