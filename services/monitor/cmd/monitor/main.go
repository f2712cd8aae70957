// Command monitor runs the monitor service on its own: it copies the TELEMETRY stream into the
// telemetry store (DuckDB) and serves it as agentid.monitor.v1.MonitorService.
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
	fs.DurationVar(&cfg.BaselineRecomputeEvery, "baseline-every", time.Hour, "how often the detectors' baselines are recomputed in full from the telemetry store (besides at start)")
	os.Exit(service.Main(app.Name, fs, &flags, func(_ context.Context, env *service.Env) (service.Component, error) {
		return app.New(cfg, app.Deps{Store: env.Store, Logger: env.Logger})
	}))
}
