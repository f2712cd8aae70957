package app

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/service"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/agents"
	"github.com/agentid/agentid/services/monitor/internal/alerts"
	"github.com/agentid/agentid/services/monitor/internal/baseline"
	"github.com/agentid/agentid/services/monitor/internal/detect"
	"github.com/agentid/agentid/services/monitor/internal/ingest"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// tenantsTTL is how long the list of tenants with telemetry is reused to answer "does this tenant
// exist" for cross-tenant callers.
const tenantsTTL = 30 * time.Second

// alertPipeline is detection and everything after it: the baselines, the engine, the publisher of
// ALERTS, the queryable alert store and the reads of MonitorService.
type alertPipeline struct {
	runtime *alerts.Runtime
	reader  *alerts.Reader
	tasks   []service.Task
}

// newAlertPipeline builds the pipeline over the telemetry store's analytics and the agents
// directory, which dirRunner follows on AGENTS.
// Detection waits for the directory to catch up with AGENTS at start before it judges any row, and
// before each batch for it to apply AGENTS up to then; it judges each row by the agent's state at the
// row's time.
func newAlertPipeline(cfg Config, es *eventstore.Store, an telemetryStore, dir agents.HistoryDirectory, dirRunner *eventstore.Runner,
	logger *slog.Logger, reg prometheus.Registerer,
) (*alertPipeline, error) {
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	lag, err := ingest.NewLagWatcher(ingest.LagConfig{JetStream: es.JetStream(), Logger: logger, Registerer: reg})
	if err != nil {
		return nil, err
	}
	lookup := func(tenant, agentOrClientID string, at time.Time) (detect.AgentInfo, bool) {
		info, ok := dir.LookupAt(tenant, agentOrClientID, at)
		if !ok {
			return detect.AgentInfo{Tenant: tenant, Name: agentOrClientID}, false
		}
		return detect.AgentInfo{
			Tenant: info.Tenant, Name: info.Name, Owner: info.Owner, Sponsor: info.Sponsor, Environment: info.Environment,
			RiskTier: info.RiskTier, State: info.StateName(), StateSince: info.StateSince, Known: true, Scopes: info.Scopes,
		}, true
	}
	classOf := func(tenant, agent string) (baseline.AgentClass, bool) {
		info, ok := dir.Lookup(tenant, agent)
		if !ok {
			return baseline.AgentClass{}, false
		}
		return baseline.AgentClass{Owner: info.Owner, Environment: info.Environment, Scopes: info.Scopes}, true
	}
	baselines := baseline.NewManager(baseline.Config{Classify: classOf})
	engine := detect.NewEngine(detect.Config{Registerer: reg, Corroborate: true}, baselines)
	pub, err := alerts.NewPublisher(es, logger)
	if err != nil {
		return nil, err
	}
	rt, err := alerts.NewRuntime(alerts.RuntimeConfig{
		Detect:  func(rows []store.Event) []*monitorv1.Alert { return engine.Process(rows, lookup) },
		Observe: func(rows []store.Event) { baselines.Observe(engine.Learnable(rows)) },
		Recompute: func(ctx context.Context, tenant string, asOf time.Time, beforeStreamSeq uint64) error {
			return baselines.RecomputeAcked(ctx, an, tenant, asOf, beforeStreamSeq)
		},
		AckFloor: lag.AckFloor,
		Tenants:  an.Tenants,
		Prepare: func(ctx context.Context) error {
			if err := dirRunner.Ready(ctx); err != nil {
				return err
			}
			warmTokens(ctx, an, engine, logger)
			return nil
		},
		CatchUp:        agents.CatchUp(es, dirRunner),
		RecomputeEvery: cfg.BaselineRecomputeEvery,
		Publisher:      pub, Logger: logger, Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	alertStore := alerts.NewStore(cfg.MaxAlerts)
	runner := es.NewRunner(alerts.NewProjection(alertStore), eventstore.StreamAlerts, []string{alerts.FilterSubject})
	known := &tenantCache{list: an.Tenants}
	reader, err := alerts.NewReader(alerts.ReaderConfig{
		Alerts: alertStore, Analytics: an, TenantKnown: known.has,
		Baselines: baselinesOf(func(tenant, agent string) (*monitorv1.Baseline, bool) {
			class, _ := classOf(tenant, agent)
			b, fromClass := baselines.Get(tenant, agent, class)
			if b == nil {
				return nil, false
			}
			return baseline.ToProto(agent, b, fromClass), true
		}),
	})
	if err != nil {
		return nil, err
	}
	return &alertPipeline{runtime: rt, reader: reader, tasks: []service.Task{runner.Run, rt.Run, lag.Run}}, nil
}

// tokenWarmUp bounds how long the start of detection waits to relearn the tokens issued before it.
const tokenWarmUp = 30 * time.Second

// warmTokens relearns, newest first, the tokens issued in the last authn.MaxTokenLifetime from the
// telemetry store (at most the engine's MaxTokens, at most tokenWarmUp), so that access with tokens
// issued before a restart stays corroborated. A failure is logged: such access is then
// uncorroborated (alerts capped at MEDIUM) until the tokens expire.
func warmTokens(ctx context.Context, st telemetryStore, engine *detect.Engine, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, tokenWarmUp)
	defer cancel()
	start := time.Now()
	tenants, err := st.Tenants(ctx)
	learned := 0
	for _, tenant := range tenants {
		q := store.Query{Tenant: tenant, Kind: store.KindTokenRequested, Start: start.Add(-authn.MaxTokenLifetime), PageSize: store.MaxPageSize}
		for err == nil && learned < engine.MaxTokens() {
			var rows []store.Event
			rows, q.PageToken, err = st.List(ctx, q)
			learned += engine.LearnTokens(rows)
			if q.PageToken == "" {
				break
			}
		}
	}
	if err != nil && ctx.Err() == nil {
		logger.WarnContext(ctx, "issued tokens not relearned from the telemetry store; access with tokens issued before the start is uncorroborated until they expire",
			"learned", learned, "error", err)
		return
	}
	logger.InfoContext(ctx, "issued tokens relearned for corroboration", "tokens", learned, "took", time.Since(start), "complete", err == nil)
}

// baselinesOf adapts a function to alerts.Baselines.
type baselinesOf func(tenant, agent string) (*monitorv1.Baseline, bool)

// BaselineOf implements alerts.Baselines.
func (f baselinesOf) BaselineOf(tenant, agent string) (*monitorv1.Baseline, bool) {
	return f(tenant, agent)
}

// tenantCache answers whether a tenant has telemetry, listing the tenants at most every tenantsTTL.
type tenantCache struct {
	list func(ctx context.Context) ([]string, error)

	mu      sync.Mutex
	tenants []string
	at      time.Time
}

func (c *tenantCache) has(ctx context.Context, tenant string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if slices.Contains(c.tenants, tenant) && time.Since(c.at) < tenantsTTL {
		return true, nil
	}
	if time.Since(c.at) < time.Second { // a recent answer did not have it: do not ask again at once
		return false, nil
	}
	tenants, err := c.list(ctx)
	if err != nil {
		return false, err
	}
	c.tenants, c.at = tenants, time.Now()
	return slices.Contains(tenants, tenant), nil
}
