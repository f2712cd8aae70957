package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/observability"
)

// DefaultLagInterval is how often a LagWatcher reads the stream and the consumer.
const DefaultLagInterval = 15 * time.Second

// LowHeadroom is the share of TELEMETRY's retained events already acknowledged below which, with
// the stream near its byte or age limit, the watcher warns: the stream discards its oldest events
// (DiscardOld) and soon ones the monitor has not stored.
const LowHeadroom = 0.10

// LagConfig configures a LagWatcher.
type LagConfig struct {
	// JetStream reads the TELEMETRY stream and the ingest consumer; required.
	JetStream jetstream.JetStream
	// Interval is the period of Run (default DefaultLagInterval).
	Interval time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the gauges; default prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
	// Now defaults to time.Now.
	Now func() time.Time
}

// LagWatcher reports how far the ingest consumer is behind TELEMETRY (monitor_telemetry_lag_events,
// monitor_telemetry_ack_headroom_ratio) and warns before the stream's limits discard events it has
// not stored. It also answers the consumer's ack floor for baseline recomputations.
type LagWatcher struct {
	cfg      LagConfig
	lag      prometheus.Gauge
	headroom prometheus.Gauge
	lost     prometheus.Gauge
}

// NewLagWatcher returns a LagWatcher; run it with Run.
func NewLagWatcher(cfg LagConfig) (*LagWatcher, error) {
	if cfg.JetStream == nil {
		return nil, errors.New("ingest: LagConfig.JetStream is required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultLagInterval
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
	return &LagWatcher{
		cfg: cfg,
		lag: observability.Register(cfg.Registerer, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "monitor_telemetry_lag_events",
			Help: "TELEMETRY events after the ingest consumer's ack floor: the stream's last sequence minus the floor.",
		})),
		headroom: observability.Register(cfg.Registerer, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "monitor_telemetry_ack_headroom_ratio",
			Help: "Share of the events TELEMETRY retains that the ingest consumer has acknowledged (1: no backlog). Near 0 with the stream at its byte or age limit, the stream is about to discard events the monitor has not stored.",
		})),
		lost: observability.Register(cfg.Registerer, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "monitor_telemetry_discarded_unstored_events",
			Help: "TELEMETRY events the stream discarded (limits, DiscardOld) before the ingest consumer acknowledged them, as of the last check: the stream's first sequence minus the ack floor minus one, when positive.",
		})),
	}, nil
}

// AckFloor returns the TELEMETRY sequence up to which the ingest consumer has acknowledged every
// event; 0 when the consumer does not exist yet.
func (w *LagWatcher) AckFloor(ctx context.Context) (uint64, error) {
	info, err := w.consumerInfo(ctx)
	if err != nil || info == nil {
		return 0, err
	}
	return info.AckFloor.Stream, nil
}

func (w *LagWatcher) consumerInfo(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	c, err := w.cfg.JetStream.Consumer(ctx, eventstore.StreamTelemetry, ConsumerName)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ingest: consumer %s on %s: %w", ConsumerName, eventstore.StreamTelemetry, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("ingest: info of consumer %s: %w", ConsumerName, err)
	}
	return info, nil
}

// Lag is one reading of the consumer's position on TELEMETRY.
type Lag struct {
	// First and Last are the stream's first and last sequences; AckFloor the consumer's.
	First, Last, AckFloor uint64
	// Behind is Last - AckFloor: the events not acknowledged yet.
	Behind uint64
	// Headroom is the share of the retained events acknowledged (1 without a backlog).
	Headroom float64
	// Discarded counts events the stream dropped before they were acknowledged.
	Discarded uint64
	// NearLimit is true when the stream holds at least 90% of its MaxBytes or MaxMsgs, or its oldest
	// event is older than 90% of its MaxAge: the next events it takes push out the oldest.
	NearLimit bool
}

// Check reads the stream and the consumer once, sets the gauges and logs a warning when the
// headroom is below LowHeadroom with the stream near its limit, an error when events were lost.
func (w *LagWatcher) Check(ctx context.Context) (Lag, error) {
	s, err := w.cfg.JetStream.Stream(ctx, eventstore.StreamTelemetry)
	if err != nil {
		return Lag{}, fmt.Errorf("ingest: stream %s: %w", eventstore.StreamTelemetry, err)
	}
	si, err := s.Info(ctx)
	if err != nil {
		return Lag{}, fmt.Errorf("ingest: info of stream %s: %w", eventstore.StreamTelemetry, err)
	}
	ci, err := w.consumerInfo(ctx)
	if err != nil {
		return Lag{}, err
	}
	var l Lag
	l.First, l.Last = si.State.FirstSeq, si.State.LastSeq
	if ci != nil {
		l.AckFloor = ci.AckFloor.Stream
	}
	if l.Last > l.AckFloor {
		l.Behind = l.Last - l.AckFloor
	}
	l.Headroom = 1
	if retained := int64(l.Last) - int64(l.First) + 1; retained > 0 && l.Behind > 0 {
		acked := max(int64(l.AckFloor)-int64(l.First)+1, 0)
		l.Headroom = float64(acked) / float64(retained)
	}
	if l.First > l.AckFloor+1 && si.State.Msgs > 0 {
		l.Discarded = l.First - l.AckFloor - 1
	}
	cfg := si.Config
	l.NearLimit = (cfg.MaxBytes > 0 && float64(si.State.Bytes) >= 0.9*float64(cfg.MaxBytes)) ||
		(cfg.MaxMsgs > 0 && float64(si.State.Msgs) >= 0.9*float64(cfg.MaxMsgs)) ||
		(cfg.MaxAge > 0 && !si.State.FirstTime.IsZero() && w.cfg.Now().Sub(si.State.FirstTime) >= cfg.MaxAge*9/10)
	w.lag.Set(float64(l.Behind))
	w.headroom.Set(l.Headroom)
	w.lost.Set(float64(l.Discarded))
	switch {
	case l.Discarded > 0:
		w.cfg.Logger.ErrorContext(ctx, "TELEMETRY discarded events the monitor had not stored (the ingest consumer fell behind the stream's limits); size the stream for the longest stall (docs/alerts.md)",
			"discarded", l.Discarded, "first_seq", l.First, "ack_floor", l.AckFloor, "last_seq", l.Last)
	case l.NearLimit && l.Headroom < LowHeadroom:
		w.cfg.Logger.WarnContext(ctx, "the ingest consumer's backlog fills TELEMETRY, which is at its limit and discards its oldest events: events will be lost unless it catches up",
			"headroom", l.Headroom, "behind", l.Behind, "first_seq", l.First, "ack_floor", l.AckFloor, "last_seq", l.Last,
			"stream_bytes", si.State.Bytes, "max_bytes", cfg.MaxBytes, "max_age", cfg.MaxAge)
	}
	return l, nil
}

// Run checks every Interval until ctx is done; a failed check is logged and retried at the next.
func (w *LagWatcher) Run(ctx context.Context) error {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := w.Check(ctx); err != nil && ctx.Err() == nil {
			w.cfg.Logger.WarnContext(ctx, "telemetry lag not read", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
