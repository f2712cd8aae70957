package alerts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/observability"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// DefaultRecomputeEvery is how often baselines are recomputed in full from the telemetry store.
const DefaultRecomputeEvery = time.Hour

// DefaultCatchUpTimeout bounds how long a batch waits for the agents directory to catch up with
// AGENTS before it is judged.
const DefaultCatchUpTimeout = 2 * time.Second

// RuntimeConfig configures a Runtime. Detect, Observe and Recompute are the detection engine and
// the baseline manager (internal/detect, internal/baseline), supplied by the app.
type RuntimeConfig struct {
	// Detect runs the detectors over stored rows and returns the alerts they raise; required.
	Detect func(rows []store.Event) []*monitorv1.Alert
	// Observe updates the baselines incrementally with stored rows (after Detect has seen them).
	Observe func(rows []store.Event)
	// Recompute recomputes one tenant's baselines in full as of a time.
	Recompute func(ctx context.Context, tenant string, asOf time.Time) error
	// Tenants lists the tenants whose baselines Recompute computes (store.Analytics.Tenants);
	// required with Recompute.
	Tenants func(ctx context.Context) ([]string, error)
	// Prepare, if set, is waited for before the first recomputation (e.g. the agents directory
	// catching up with AGENTS, so that known agents are not judged as ghosts after a restart).
	Prepare func(ctx context.Context) error
	// CatchUp, if set, is called before each batch is judged and returns once the agents directory
	// has applied every AGENTS event published up to the call (agents.CatchUp), so that a suspension
	// stored before the batch's telemetry is seen whatever the projection's lag. When it fails or
	// takes longer than CatchUpTimeout the batch is judged with the directory as it is, and
	// monitor_detection_directory_stale_total counts it.
	CatchUp func(ctx context.Context) error
	// CatchUpTimeout bounds one CatchUp (default DefaultCatchUpTimeout).
	CatchUpTimeout time.Duration
	// RecomputeEvery is the period of full recomputations (default DefaultRecomputeEvery).
	RecomputeEvery time.Duration
	// Publisher publishes the alerts; required.
	Publisher *Publisher
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics; default prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
	// Now defaults to time.Now.
	Now func() time.Time
}

// Runtime runs detection on every batch the ingest consumer stores (OnStored) and keeps the
// baselines fresh (Run: a full recomputation at start and then every RecomputeEvery).
//
// Delivery guarantee: OnStored returns only once every alert of the batch is on the ALERTS stream,
// retrying a failing publication until it succeeds or the consumer stops, and the ingest consumer
// acknowledges a batch's telemetry events only after OnStored has returned. An alert is therefore
// never lost: if the monitor stops before publishing it, the events are redelivered, detected again
// and raise the same alert id, which the stream (duplicate window) and the alert store (id key) keep
// once. While ALERTS cannot be written, ingest waits (the events wait in TELEMETRY).
type Runtime struct {
	cfg RuntimeConfig

	ready     chan struct{} // closed once the first recomputation has finished
	readyOnce sync.Once

	judged    prometheus.Counter
	raised    *prometheus.CounterVec
	latency   prometheus.Histogram
	failures  prometheus.Counter
	recompute prometheus.Histogram
	stale     prometheus.Counter
}

// NewRuntime returns a Runtime; call Run to compute the baselines.
func NewRuntime(cfg RuntimeConfig) (*Runtime, error) {
	switch {
	case cfg.Detect == nil || cfg.Publisher == nil:
		return nil, errors.New("alerts: RuntimeConfig.Detect and Publisher are required")
	case cfg.Recompute != nil && cfg.Tenants == nil:
		return nil, errors.New("alerts: RuntimeConfig.Tenants is required with Recompute")
	}
	if cfg.RecomputeEvery <= 0 {
		cfg.RecomputeEvery = DefaultRecomputeEvery
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.DefaultRegisterer
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CatchUpTimeout <= 0 {
		cfg.CatchUpTimeout = DefaultCatchUpTimeout
	}
	r := &Runtime{cfg: cfg, ready: make(chan struct{})}
	if cfg.Recompute == nil && cfg.Prepare == nil {
		r.markReady()
	}
	r.judged = observability.Register(cfg.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "monitor_detection_rows_total",
		Help: "Stored telemetry rows the detectors have judged (a redelivered row counts again).",
	}))
	r.raised = observability.Register(cfg.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "monitor_alerts_raised_total",
		Help: "Alerts published on the ALERTS stream, by detector and severity (an alert raised again by redelivered telemetry counts again; the stream keeps it once).",
	}, []string{"detector", "severity"}))
	r.latency = observability.Register(cfg.Registerer, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "monitor_detection_latency_seconds",
		Help:    "Time from the last telemetry event an alert is about (its window_end) to the alert's publication on ALERTS.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
	}))
	r.failures = observability.Register(cfg.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "monitor_alerts_unpublished_total",
		Help: "Alerts that could not be published before the ingest consumer stopped, or that the stream refused as invalid; the former are raised again when their telemetry is redelivered.",
	}))
	r.recompute = observability.Register(cfg.Registerer, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "monitor_baseline_recompute_seconds",
		Help:    "Duration of a full baseline recomputation of one tenant.",
		Buckets: prometheus.ExponentialBuckets(0.01, 4, 8),
	}))
	r.stale = observability.Register(cfg.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "monitor_detection_directory_stale_total",
		Help: "Telemetry batches judged before the agents directory could be confirmed caught up with AGENTS (the catch-up failed or timed out); a state change stored just before such a batch may not have been seen.",
	}))
	return r, nil
}

func (r *Runtime) markReady() { r.readyOnce.Do(func() { close(r.ready) }) }

// Ready is closed once the baselines have been computed at start (at once without Recompute).
func (r *Runtime) Ready() <-chan struct{} { return r.ready }

// OnStored runs detection over rows the ingest consumer has stored and publishes the alerts. It
// waits for the baselines computed at start (so a restart does not judge traffic against empty
// baselines) and for the agents directory to catch up with AGENTS (CatchUp, bounded), then returns
// once every alert is published, or ctx is done.
func (r *Runtime) OnStored(ctx context.Context, rows []store.Event) {
	if len(rows) == 0 {
		return
	}
	select {
	case <-r.ready:
	case <-ctx.Done():
		return
	}
	if r.cfg.CatchUp != nil {
		r.catchUp(ctx, len(rows))
		if ctx.Err() != nil {
			return
		}
	}
	alerts := r.cfg.Detect(rows)
	if r.cfg.Observe != nil {
		r.cfg.Observe(rows)
	}
	defer r.judged.Add(float64(len(rows))) // once the alerts are out
	for _, a := range alerts {
		if _, err := r.cfg.Publisher.Publish(ctx, a); err != nil {
			r.failures.Inc()
			r.cfg.Logger.ErrorContext(ctx, "alert not published", "alert_id", a.GetAlertId(), "tenant", a.GetTenant(),
				"detector", a.GetDetector(), "agent", a.GetAgent(), "error", err)
			continue
		}
		r.raised.WithLabelValues(a.GetDetector(), severityLabel(a.GetSeverity())).Inc()
		if end := a.GetWindowEnd(); end != nil && end.IsValid() {
			r.latency.Observe(r.cfg.Now().Sub(end.AsTime()).Seconds())
		}
		r.cfg.Logger.InfoContext(ctx, "alert raised", "alert_id", a.GetAlertId(), "tenant", a.GetTenant(),
			"detector", a.GetDetector(), "severity", severityLabel(a.GetSeverity()), "agent", a.GetAgent(), "summary", a.GetSummary())
	}
}

// catchUp waits, at most CatchUpTimeout, for the agents directory to apply AGENTS up to now; a
// failure is counted and logged, and detection goes on.
func (r *Runtime) catchUp(ctx context.Context, rows int) {
	cctx, cancel := context.WithTimeout(ctx, r.cfg.CatchUpTimeout)
	defer cancel()
	err := r.cfg.CatchUp(cctx)
	if err == nil || ctx.Err() != nil {
		return
	}
	r.stale.Inc()
	r.cfg.Logger.WarnContext(ctx, "agents directory not confirmed caught up with AGENTS; judging the batch with the directory as it is",
		"rows", rows, "timeout", r.cfg.CatchUpTimeout, "error", err)
}

// severityLabel is the lower-case severity ("high") of metrics and logs.
func severityLabel(s monitorv1.AlertSeverity) string {
	switch s {
	case monitorv1.AlertSeverity_ALERT_SEVERITY_LOW:
		return "low"
	case monitorv1.AlertSeverity_ALERT_SEVERITY_MEDIUM:
		return "medium"
	case monitorv1.AlertSeverity_ALERT_SEVERITY_HIGH:
		return "high"
	case monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL:
		return "critical"
	}
	return "unspecified"
}

// Run waits for Prepare, then recomputes every tenant's baselines at once and then every RecomputeEvery, until ctx is done.
// A tenant whose recomputation fails keeps its previous baselines (logged); the first round marks
// the runtime ready even when some tenants failed, so detection never waits on a broken store.
func (r *Runtime) Run(ctx context.Context) error {
	if r.cfg.Prepare != nil {
		if err := r.cfg.Prepare(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("alerts: preparing detection: %w", err)
		}
	}
	if r.cfg.Recompute == nil {
		r.markReady()
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(r.cfg.RecomputeEvery)
	defer t.Stop()
	for {
		r.recomputeAll(ctx)
		r.markReady()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// recomputeAll recomputes each tenant's baselines.
func (r *Runtime) recomputeAll(ctx context.Context) {
	tenants, err := r.cfg.Tenants(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.cfg.Logger.ErrorContext(ctx, "baseline recomputation: tenants not listed; keeping the current baselines", "error", err)
		}
		return
	}
	for _, tenant := range tenants {
		start := time.Now()
		if err := r.cfg.Recompute(ctx, tenant, r.cfg.Now()); err != nil {
			if ctx.Err() != nil {
				return
			}
			r.cfg.Logger.ErrorContext(ctx, "baseline recomputation failed; keeping the tenant's current baselines", "tenant", tenant, "error", err)
			continue
		}
		r.recompute.Observe(time.Since(start).Seconds())
		r.cfg.Logger.InfoContext(ctx, "baselines recomputed", "tenant", tenant, "took", time.Since(start))
	}
}
