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
	return r, nil
}

func (r *Runtime) markReady() { r.readyOnce.Do(func() { close(r.ready) }) }

// Ready is closed once the baselines have been computed at start (at once without Recompute).
func (r *Runtime) Ready() <-chan struct{} { return r.ready }

// OnStored runs detection over rows the ingest consumer has stored and publishes the alerts. It
// waits for the baselines computed at start (so a restart does not judge traffic against empty
// baselines), then returns once every alert is published, or ctx is done.
func (r *Runtime) OnStored(ctx context.Context, rows []store.Event) {
	if len(rows) == 0 {
		return
	}
	select {
	case <-r.ready:
	case <-ctx.Done():
		return
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
