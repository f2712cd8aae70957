// Command monitor runs the monitor service on its own: it copies the TELEMETRY stream into the
// telemetry store (DuckDB, or ClickHouse with --clickhouse-dsn) and serves it as agentid.monitor.v1.MonitorService.
package main

import (
	"context"
	"flag"
	"os"
	"time"

	"github.com/agentid/agentid/pkg/service"
	"github.com/agentid/agentid/services/monitor/app"
)

func main() {
	fs := flag.NewFlagSet("monitor", flag.ContinueOnError)
	flags := service.DefaultFlags("127.0.0.1:7074", "127.0.0.1:8074")
	flags.Register(fs)
	cfg := app.Config{DuckDBPath: "data/telemetry.duckdb"}
	fs.StringVar(&cfg.DuckDBPath, "duckdb-path", cfg.DuckDBPath, "DuckDB file of the telemetry store (empty: in memory)")
	fs.Int64Var(&cfg.DuckDBMemoryLimit, "duckdb-memory-limit", 0, "bytes the DuckDB store's buffer pool may hold (at least 32 MiB; default 64 MiB); larger queries spill to <duckdb-path>.tmp")
	fs.StringVar(&cfg.ClickHouseDSN, "clickhouse-dsn", "", "store telemetry in ClickHouse instead of DuckDB, e.g. clickhouse://monitor:secret@clickhouse:9000/agentid (default $"+ClickHouseDSNEnv+"; the environment keeps the password out of the process list)")
	fs.IntVar(&cfg.ClickHouseRetentionYears, "clickhouse-retention-years", 0, "years ClickHouse keeps telemetry, 1 to 7 (older monthly partitions are dropped daily; default 1)")
	fs.DurationVar(&cfg.BaselineRecomputeEvery, "baseline-every", time.Hour, "how often the detectors' baselines are recomputed in full from the telemetry store (besides at start)")
	fs.BoolVar(&cfg.SIEMDisabled, "siem-disabled", false, "do not export alerts and audit events as OCSF (siem.ocsf.<tenant>, webhook)")
	fs.StringVar(&cfg.SIEMWebhookURL, "siem-webhook-url", "", "SIEM webhook receiving signed OCSF JSON POSTs (https, or http to loopback)")
	fs.StringVar(&cfg.SIEMWebhookSecretFile, "siem-webhook-secret-file", "", "file holding the SIEM webhook's HMAC-SHA256 secret (at least 16 bytes)")
	os.Exit(service.Main(app.Name, fs, &flags, func(_ context.Context, env *service.Env) (service.Component, error) {
		selectStore(fs, &cfg)
		return app.New(cfg, app.Deps{Store: env.Store, Logger: env.Logger})
	}))
}

// ClickHouseDSNEnv names the environment variable read when --clickhouse-dsn is not given.
const ClickHouseDSNEnv = "AGENTID_CLICKHOUSE_DSN"

// selectStore takes the ClickHouse DSN from the environment when the flag is not given; with a
// DSN, the DuckDB default path is dropped (an explicit --duckdb-path as well is a config error).
func selectStore(fs *flag.FlagSet, cfg *app.Config) {
	if cfg.ClickHouseDSN == "" {
		cfg.ClickHouseDSN = os.Getenv(ClickHouseDSNEnv)
	}
	duckdbSet := false
	fs.Visit(func(f *flag.Flag) { duckdbSet = duckdbSet || f.Name == "duckdb-path" })
	if cfg.ClickHouseDSN != "" && !duckdbSet {
		cfg.DuckDBPath = ""
	}
}
