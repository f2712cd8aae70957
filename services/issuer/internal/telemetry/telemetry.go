// Package telemetry publishes the issuer's token request telemetry asynchronously: a request never
// waits for, nor fails because of, the TELEMETRY stream. A bounded buffer absorbs bursts; what does
// not fit is dropped, counted and logged.
package telemetry

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/observability"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// TokenRequestedType is the event type of token request telemetry.
const TokenRequestedType = "token.requested"

// Defaults of Config.
const (
	DefaultBuffer  = 8192
	DefaultWorkers = 4
	drainTimeout   = 3 * time.Second
	publishTimeout = 5 * time.Second
	dropLogEvery   = 10 * time.Second
)

// Subject returns the telemetry subject of token requests in tenant: telemetry.<tenant>.token.requested.
func Subject(tenant string) string { return "telemetry." + tenant + ".token.requested" }

// Publisher stores one telemetry event (eventstore.Store.Publish).
type Publisher interface {
	Publish(ctx context.Context, subject, typ, ceSubject string, data proto.Message, md eventstore.Metadata) (eventstore.Event, error)
}

// Config configures an Emitter.
type Config struct {
	// Publisher stores the events. Required.
	Publisher Publisher
	// Buffer is how many events may wait to be published; default DefaultBuffer.
	Buffer int
	// Workers publish concurrently; default DefaultWorkers.
	Workers int
	// Registerer receives the metrics; default prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
	// Logger; default slog.Default().
	Logger *slog.Logger
}

type item struct {
	subject   string
	ceSubject string
	md        eventstore.Metadata
	msg       *issuerv1.TokenRequested
}

// Emitter buffers telemetry and publishes it from its Run loop.
type Emitter struct {
	pub     Publisher
	ch      chan item
	workers int
	logger  *slog.Logger

	dropped     atomic.Uint64
	lastDropLog atomic.Int64

	requests  *prometheus.CounterVec
	dropTotal prometheus.Counter
	failTotal prometheus.Counter
}

// New returns an Emitter; events are published once Run is running.
func New(cfg Config) (*Emitter, error) {
	if cfg.Publisher == nil {
		return nil, errors.New("telemetry: Publisher is required")
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = DefaultBuffer
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.DefaultRegisterer
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	e := &Emitter{pub: cfg.Publisher, ch: make(chan item, cfg.Buffer), workers: cfg.Workers, logger: cfg.Logger}
	e.requests = observability.Register(cfg.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "issuer_token_requests_total",
		Help: "Token requests answered by the issuer, by outcome and OAuth error code.",
	}, []string{"outcome", "error"}))
	e.dropTotal = observability.Register(cfg.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "issuer_telemetry_dropped_total",
		Help: "Token request telemetry events dropped because the publish buffer was full.",
	}))
	e.failTotal = observability.Register(cfg.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "issuer_telemetry_publish_failures_total",
		Help: "Token request telemetry events that could not be published.",
	}))
	return e, nil
}

// TokenRequested queues the telemetry of one token request without blocking; when the buffer is
// full the event is dropped and counted.
func (e *Emitter) TokenRequested(ceSubject string, md eventstore.Metadata, msg *issuerv1.TokenRequested) {
	outcome := "issued"
	if msg.GetOutcome() != issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED {
		outcome = "denied"
	}
	e.requests.WithLabelValues(outcome, msg.GetError()).Inc()
	select {
	case e.ch <- item{subject: Subject(msg.GetTenant()), ceSubject: ceSubject, md: md, msg: msg}:
	default:
		n := e.dropped.Add(1)
		e.dropTotal.Inc()
		now := time.Now().UnixNano()
		last := e.lastDropLog.Load()
		if now-last >= int64(dropLogEvery) && e.lastDropLog.CompareAndSwap(last, now) {
			e.logger.Warn("telemetry buffer full: dropping token request events",
				"dropped_total", n, "buffer", cap(e.ch), "tenant", msg.GetTenant())
		}
	}
}

// Dropped is how many events were dropped because the buffer was full.
func (e *Emitter) Dropped() uint64 { return e.dropped.Load() }

// Run publishes queued events until ctx is done, then drains what is left for a short while.
func (e *Emitter) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range e.workers {
		wg.Go(func() {
			for {
				select {
				case it := <-e.ch:
					e.publish(ctx, it)
				case <-ctx.Done():
					return
				}
			}
		})
	}
	wg.Wait()
	// Drain on shutdown, bounded, so the last requests are not lost on a clean stop.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drainTimeout)
	defer cancel()
	for {
		select {
		case it := <-e.ch:
			e.publish(dctx, it)
		default:
			return nil
		}
		if dctx.Err() != nil {
			return nil
		}
	}
}

func (e *Emitter) publish(ctx context.Context, it item) {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	if _, err := e.pub.Publish(pctx, it.subject, TokenRequestedType, it.ceSubject, it.msg, it.md); err != nil {
		e.failTotal.Inc()
		e.logger.Warn("could not publish token request telemetry", "tenant", it.md.Tenant,
			"request_id", it.msg.GetRequestId(), "error", err)
	}
}
