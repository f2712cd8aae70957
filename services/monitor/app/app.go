// Package app wires the monitor service: the telemetry store (DuckDB, or ClickHouse given a
// DSN), the consumer that copies the TELEMETRY stream into it, the recorder of resource servers'
// access decisions, and agentid.monitor.v1.MonitorService. The service's own binary and the
// all-in-one `agentid dev` both build it with New.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/service"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/access"
	"github.com/agentid/agentid/services/monitor/internal/agents"
	"github.com/agentid/agentid/services/monitor/internal/ingest"
	"github.com/agentid/agentid/services/monitor/internal/server"
	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/store/duckdb"
	"github.com/agentid/agentid/services/monitor/internal/telemetry"
)

var _ service.Component = (*App)(nil)

// Name is the service's name in logs, health and the event source ("agentid/monitor").
const Name = "monitor"

// Config configures the monitor service.
type Config struct {
	// DuckDBPath is the DuckDB database file of the telemetry store, created with its directory
	// if missing; empty keeps the telemetry in memory (lost on exit).
	DuckDBPath string
	// ClickHouseDSN, if set, selects the ClickHouse telemetry store instead of DuckDB, e.g.
	// clickhouse://monitor:secret@clickhouse:9000/agentid (docs/deploy.md, "Telemetry in ClickHouse").
	ClickHouseDSN string
	// DuckDBMemoryLimit bounds the buffer pool of the DuckDB file, in bytes (0:
	// DefaultDuckDBMemoryLimit; at least MinDuckDBMemoryLimit).
	DuckDBMemoryLimit int64
	// ClickHouseRetentionYears is how long ClickHouse keeps telemetry, 1 to 7 years (0: 1).
	ClickHouseRetentionYears int
	// BaselineRecomputeEvery is how often the baselines are recomputed in full from the telemetry
	// store (besides at start); default alerts.DefaultRecomputeEvery (1h).
	BaselineRecomputeEvery time.Duration
	// MaxAlerts bounds the alerts of each tenant kept queryable in memory (default alerts.DefaultMaxAlerts).
	MaxAlerts int
	// SIEMDisabled turns the SIEM export off (by default alerts and audit-relevant events are
	// published as OCSF JSON on siem.ocsf.<tenant>).
	SIEMDisabled bool
	// SIEMWebhookURL, if set, also receives every OCSF event (signed POSTs, docs/siem.md); https,
	// or http to a loopback address.
	SIEMWebhookURL string
	// SIEMWebhookSecretFile holds the webhook's HMAC-SHA256 secret; required with SIEMWebhookURL.
	SIEMWebhookSecretFile string
}

// Bounds of Config.DuckDBMemoryLimit (duckdb.DefaultMemoryLimit, duckdb.MinMemoryLimit).
const (
	DefaultDuckDBMemoryLimit = duckdb.DefaultMemoryLimit
	MinDuckDBMemoryLimit     = duckdb.MinMemoryLimit
)

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.BaselineRecomputeEvery < 0 || c.MaxAlerts < 0 {
		return fmt.Errorf("monitor: baseline recompute period %s and max alerts %d must not be negative", c.BaselineRecomputeEvery, c.MaxAlerts)
	}
	if err := c.validateSIEM(); err != nil {
		return err
	}
	if err := c.validateClickHouse(); err != nil {
		return err
	}
	if l := c.DuckDBMemoryLimit; l != 0 {
		switch {
		case c.ClickHouseDSN != "":
			return fmt.Errorf("monitor: a DuckDB memory limit needs the DuckDB store, not ClickHouse")
		case c.DuckDBPath == "":
			return fmt.Errorf("monitor: a DuckDB memory limit needs a DuckDB file (a store in memory is not limited)")
		case l < MinDuckDBMemoryLimit:
			return fmt.Errorf("monitor: DuckDB memory limit of %d bytes is below the minimum of %d bytes (%d MiB)", l, MinDuckDBMemoryLimit, MinDuckDBMemoryLimit>>20)
		}
	}
	if c.DuckDBPath == "" {
		return nil
	}
	if info, err := os.Stat(c.DuckDBPath); err == nil && info.IsDir() {
		return fmt.Errorf("monitor: duckdb path %s is a directory", c.DuckDBPath)
	}
	return nil
}

// Deps are the monitor service's collaborators.
type Deps struct {
	// Store delivers the TELEMETRY stream; required.
	Store *eventstore.Store
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the service's metrics; default prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
}

// App is the monitor service. Close it to close the telemetry store.
type App struct {
	store    store.Store
	consumer *ingest.Consumer
	server   *server.Server
	tasks    []service.Task
}

// New opens the telemetry store and builds the service.
func New(cfg Config, deps Deps) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Store == nil {
		return nil, errors.New("monitor: Deps.Store is required")
	}
	logger := deps.Logger
	if logger == nil {
		logger = slog.Default()
	}
	st, err := openTelemetryStore(cfg, deps, logger)
	if err != nil {
		return nil, err
	}
	directory := agents.New()
	agentsRunner := deps.Store.NewRunner(directory, eventstore.StreamAgents, []string{eventstore.AggregateTypeSubject(eventstore.AggregateAgent)})
	pipeline, err := newAlertPipeline(cfg, deps.Store, st, directory, agentsRunner, logger, deps.Registerer)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	consumer, err := ingest.NewConsumer(ingest.Config{
		Source: deps.Store, Store: st, Logger: logger, Registerer: deps.Registerer,
		Directory: directory, Ready: agentsRunner.Ready, OnStored: pipeline.runtime.OnStored,
		Activity: deps.Store, // agent.active for the registry's last_active_time
	})
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	recorder, err := access.New(access.Config{Publisher: deps.Store, Retention: telemetryRetention(deps.Store)})
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	exporter, err := newSIEMExporter(cfg, deps.Store, logger, deps.Registerer)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	tasks := append([]service.Task{consumer.Run, agentsRunner.Run}, pipeline.tasks...)
	if exporter != nil {
		tasks = append(tasks, exporter.Run)
	}
	return &App{store: st, consumer: consumer, server: server.New(telemetry.New(st), recorder, pipeline.reader), tasks: tasks}, nil
}

// telemetryRetention reads the TELEMETRY stream's max age, as the operator may have set it.
func telemetryRetention(es *eventstore.Store) access.RetentionFunc {
	return func(ctx context.Context) (time.Duration, error) {
		s, err := es.JetStream().Stream(ctx, eventstore.StreamTelemetry)
		if err != nil {
			return 0, fmt.Errorf("monitor: stream %s: %w", eventstore.StreamTelemetry, err)
		}
		return s.CachedInfo().Config.MaxAge, nil
	}
}

// Name implements service.Component.
func (a *App) Name() string { return Name }

// RegisterGRPC registers MonitorService on s.
func (a *App) RegisterGRPC(s *grpc.Server) { monitorv1.RegisterMonitorServiceServer(s, a.server) }

// Tasks implements service.Component: the consumer copying the TELEMETRY stream into the store
// (and detecting on what it stored), the projection of AGENTS that enriches rows and detection, the
// projection of ALERTS that keeps alerts queryable, the baseline recomputation, and the SIEM export.
func (a *App) Tasks() []service.Task { return a.tasks }

// Close closes the telemetry store; call it after the tasks have stopped.
func (a *App) Close() error { return a.store.Close() }
