package alerts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/observability"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// DefaultRecomputeEvery is how often baselines are recomputed in full from the telemetry store.
const DefaultRecomputeEvery = time.Hour

// DefaultReadyTimeout bounds how long detection waits for the first baseline recomputation before
// it judges batches with the baselines it has (none at start: the detectors without a baseline,
// inactive_agent_activity and unknown_agent, still judge every row).
const DefaultReadyTimeout = time.Minute

// Retry delays of a failed recomputation: the first after DefaultRecomputeRetry, doubling up to
// recomputeRetryMax (and never past the next full recomputation).
const (
	DefaultRecomputeRetry = 5 * time.Second
	recomputeRetryMax     = 5 * time.Minute
)

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
	// Recompute recomputes one tenant's baselines in full as of a time, learning only rows whose
	// TELEMETRY sequence is below beforeStreamSeq (0: every row).
	Recompute func(ctx context.Context, tenant string, asOf time.Time, beforeStreamSeq uint64) error
	// AckFloor, if set, returns the TELEMETRY sequence up to which the ingest consumer has
	// acknowledged every event (0: none, or no consumer yet). Each recomputation learns only rows at
	// or below it, so that a batch stored but not acknowledged (the monitor stopped before its alerts
	// were published) is judged, when redelivered, against the baseline it would have met. When it
	// fails, the recomputation fails (and is retried): it never learns unacknowledged rows.
	AckFloor func(ctx context.Context) (uint64, error)
	// RecomputeRetry is the first delay before a failed recomputation is retried; it doubles up to
	// 5 minutes (default DefaultRecomputeRetry).
	RecomputeRetry time.Duration
	// RecentRowsTTL and RecentRowsMax bound the ids of judged rows remembered so that a row resent
	// in another event is not judged twice (defaults DefaultRecentRowsTTL, DefaultRecentRowsMax).
	RecentRowsTTL time.Duration
	RecentRowsMax int
	// ReadyTimeout bounds how long OnStored waits for the first recomputation (default
	// DefaultReadyTimeout); after it, batches are judged with the baselines there are.
	ReadyTimeout time.Duration
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
	gaveUp    atomic.Bool // a batch stopped waiting for ready: later ones do not wait

	ages            *ageCollector
	recent          *recentRows
	resent          prometheus.Counter
	recomputeFailed prometheus.Counter
	notReady        prometheus.Counter

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
	if cfg.RecomputeRetry <= 0 {
		cfg.RecomputeRetry = DefaultRecomputeRetry
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.RecentRowsTTL <= 0 {
		cfg.RecentRowsTTL = DefaultRecentRowsTTL
	}
	if cfg.RecentRowsMax <= 0 {
		cfg.RecentRowsMax = DefaultRecentRowsMax
	}
	r := &Runtime{cfg: cfg, ready: make(chan struct{}), ages: newAgeCollector(cfg.Now),
		recent: newRecentRows(cfg.RecentRowsTTL, cfg.RecentRowsMax, cfg.Now)}
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
	r.recomputeFailed = observability.Register(cfg.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "monitor_baseline_recompute_failures_total",
		Help: "Failed baseline recomputations: of one tenant, or of a whole round when the tenants or the ingest consumer's ack floor could not be read; each is retried with backoff.",
	}))
	r.resent = observability.Register(cfg.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "monitor_detection_rows_resent_total",
		Help: "Stored telemetry rows not judged because detection judged them already, in another TELEMETRY event, within the last 10 minutes (a reporter resending a batch); a redelivery of the same event is judged again.",
	}))
	r.notReady = observability.Register(cfg.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "monitor_detection_before_baselines_total",
		Help: "Telemetry batches judged before the first baseline recomputation had finished (it failed or took longer than the ready timeout): only inactive_agent_activity and unknown_agent, and agents whose baselines were computed, judged them.",
	}))
	r.ages = observability.Register(cfg.Registerer, r.ages)
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
// baselines), at most ReadyTimeout once: when they are not there by then, this batch and the
// following ones are judged with the baselines there are (none at start: inactive_agent_activity
// and unknown_agent still judge every row) and counted in monitor_detection_before_baselines_total
// until they are. It also waits for the agents directory to catch up with AGENTS (CatchUp,
// bounded), then returns once every alert is published, or ctx is done.
func (r *Runtime) OnStored(ctx context.Context, rows []store.Event) {
	if len(rows) == 0 {
		return
	}
	if !r.waitReady(ctx) {
		return
	}
	if r.cfg.CatchUp != nil {
		r.catchUp(ctx, len(rows))
		if ctx.Err() != nil {
			return
		}
	}
	rows, skipped := r.recent.fresh(rows)
	if skipped > 0 {
		r.resent.Add(float64(skipped))
	}
	if len(rows) == 0 {
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

// waitReady waits for the first recomputation, at most ReadyTimeout unless an earlier batch gave up
// waiting already; it reports false when ctx is done.
func (r *Runtime) waitReady(ctx context.Context) bool {
	select {
	case <-r.ready:
		return true
	default:
	}
	if !r.gaveUp.Load() {
		t := time.NewTimer(r.cfg.ReadyTimeout)
		defer t.Stop()
		select {
		case <-r.ready:
			return true
		case <-ctx.Done():
			return false
		case <-t.C:
			r.gaveUp.Store(true)
			r.cfg.Logger.WarnContext(ctx, "baselines not computed yet; judging telemetry with the baselines there are until they are",
				"waited", r.cfg.ReadyTimeout)
		}
	}
	if ctx.Err() != nil {
		return false
	}
	r.notReady.Inc()
	return true
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

// Run waits for Prepare, then recomputes every tenant's baselines at once and then every
// RecomputeEvery, until ctx is done. A tenant whose recomputation fails keeps its previous baselines
// and is retried with backoff (5 s doubling to 5 min, never past the next full round); when the
// tenants or the ack floor cannot be read, the whole round is retried so. The runtime is ready once
// a round has succeeded for every tenant; until then OnStored waits at most ReadyTimeout.
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
	for {
		roundStart := time.Now()
		next := roundStart.Add(r.cfg.RecomputeEvery)
		failed, ok := r.recomputeAll(ctx, nil)
		for delay := r.cfg.RecomputeRetry; !ok || len(failed) > 0; delay = min(2*delay, max(recomputeRetryMax, r.cfg.RecomputeRetry)) {
			wait := min(delay, time.Until(next))
			if wait <= 0 || !sleep(ctx, wait) || !time.Now().Before(next) {
				break
			}
			if !ok {
				failed = nil // the round failed as a whole: all tenants again
			}
			failed, ok = r.recomputeAll(ctx, failed)
		}
		if ctx.Err() != nil {
			return nil
		}
		if ok && len(failed) == 0 {
			r.markReady()
		}
		if !sleep(ctx, time.Until(next)) {
			return nil
		}
	}
}

// sleep waits d (nothing when d <= 0); it reports false when ctx is done first.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// recomputeAll recomputes the baselines of tenants (nil: every tenant the store lists) learning
// only acknowledged rows, and returns the tenants that failed; ok is false when the round could not
// start (tenants or ack floor unreadable) or ctx is done.
func (r *Runtime) recomputeAll(ctx context.Context, tenants []string) (failed []string, ok bool) {
	fail := func(what string, err error) ([]string, bool) {
		if ctx.Err() == nil {
			r.recomputeFailed.Inc()
			r.cfg.Logger.ErrorContext(ctx, "baseline recomputation: "+what+"; keeping the current baselines and retrying", "error", err)
		}
		return nil, false
	}
	var before uint64 // 0: every row
	if r.cfg.AckFloor != nil {
		floor, err := r.cfg.AckFloor(ctx)
		if err != nil {
			return fail("the ingest consumer's ack floor not read", err)
		}
		before = floor + 1
	}
	if tenants == nil {
		var err error
		if tenants, err = r.cfg.Tenants(ctx); err != nil {
			return fail("tenants not listed", err)
		}
	}
	for _, tenant := range tenants {
		start := time.Now()
		if err := r.cfg.Recompute(ctx, tenant, r.cfg.Now(), before); err != nil {
			if ctx.Err() != nil {
				return nil, false
			}
			r.recomputeFailed.Inc()
			r.cfg.Logger.ErrorContext(ctx, "baseline recomputation failed; keeping the tenant's current baselines and retrying", "tenant", tenant, "error", err)
			failed = append(failed, tenant)
			continue
		}
		r.ages.set(tenant)
		r.recompute.Observe(time.Since(start).Seconds())
		r.cfg.Logger.InfoContext(ctx, "baselines recomputed", "tenant", tenant, "took", time.Since(start), "before_stream_seq", before)
	}
	return failed, ctx.Err() == nil
}

// ageCollector exports monitor_baseline_age_seconds: per tenant, the time since its baselines were
// last recomputed successfully.
type ageCollector struct {
	desc *prometheus.Desc
	now  func() time.Time

	mu   sync.Mutex
	last map[string]time.Time
}

func newAgeCollector(now func() time.Time) *ageCollector {
	return &ageCollector{
		desc: prometheus.NewDesc("monitor_baseline_age_seconds",
			"Seconds since the tenant's baselines were last recomputed in full successfully (grows while recomputations fail).", []string{"tenant"}, nil),
		now: now, last: map[string]time.Time{},
	}
}

func (c *ageCollector) set(tenant string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last[tenant] = c.now()
}

// Age returns how long ago the tenant's baselines were last recomputed; ok is false when never.
func (c *ageCollector) Age(tenant string) (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.last[tenant]
	return c.now().Sub(t), ok
}

// Describe implements prometheus.Collector.
func (c *ageCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *ageCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for tenant, t := range c.last {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, now.Sub(t).Seconds(), tenant)
	}
}
