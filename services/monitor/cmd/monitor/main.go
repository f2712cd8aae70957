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
	fs.BoolVar(&cfg.SIEMDisabled, "siem-disabled", false, "do not export alerts and audit events as OCSF (siem.ocsf.<tenant>, webhook)")
	fs.StringVar(&cfg.SIEMWebhookURL, "siem-webhook-url", "", "SIEM webhook receiving signed OCSF JSON POSTs (https, or http to loopback)")
	fs.StringVar(&cfg.SIEMWebhookSecretFile, "siem-webhook-secret-file", "", "file holding the SIEM webhook's HMAC-SHA256 secret (at least 16 bytes)")
	os.Exit(service.Main(app.Name, fs, &flags, func(_ context.Context, env *service.Env) (service.Component, error) {
		return app.New(cfg, app.Deps{Store: env.Store, Logger: env.Logger})
	}))
}
