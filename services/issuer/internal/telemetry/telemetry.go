// Package telemetry publishes the issuer's token request telemetry asynchronously and in batches: a
// request never waits for, nor fails because of, the TELEMETRY stream, and the stream gets one
// message per batch of a tenant's requests (issuerv1.TokenRequestedBatch) instead of one per token.
// Memory is bounded: a buffer absorbs bursts, at most Workers batches are in flight, and what does
// not fit is dropped, counted (issuer_telemetry_dropped_total) and logged. Records in a batch whose
// publish fails are counted too (issuer_telemetry_publish_failures_total), so nothing is lost
// without being counted.
//
// Denied requests have a budget of their own, so that a flood of them (an unauthenticated client
// hammering the token endpoint) neither costs one stored event each nor takes the room of issued
// tokens: every denial is counted by OAuth error (issuer_token_requests_total), at most
// DenialsPerSecond of a tenant's denials per second are stored as records, through a buffer apart
// from the issued tokens', and the others are only counted (issuer_token_denials_not_stored_total).
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/observability"
	"github.com/agentid/agentid/pkg/ratelimit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// Event types of token request telemetry.
const (
	// TokenRequestedType is one token request (issuerv1.TokenRequested); still read by the monitor.
	TokenRequestedType = "token.requested"
	// TokenRequestedBatchType is several token requests of one tenant (issuerv1.TokenRequestedBatch).
	TokenRequestedBatchType = "token.requested.batch"
)

// Defaults of Config.
const (
	DefaultBuffer        = 8192
	DefaultWorkers       = 4
	DefaultMaxBatch      = 256
	DefaultFlushInterval = 20 * time.Millisecond
	// DefaultDenialBuffer bounds the sampled denial records waiting to be batched.
	DefaultDenialBuffer = 1024
	// DefaultDenialsPerSecond is how many denials of a tenant are stored per second.
	DefaultDenialsPerSecond = 20
	drainTimeout            = 3 * time.Second
	publishTimeout          = 5 * time.Second
	dropLogEvery            = 10 * time.Second
)

// Subject returns the telemetry subject of token requests in tenant: telemetry.<tenant>.token.requested.
func Subject(tenant string) string { return "telemetry." + tenant + ".token.requested" }

// TenantName is the CloudEvents subject of a tenant's batch: tenants/<tenant>.
func TenantName(tenant string) string { return "tenants/" + tenant }

// Publisher stores one telemetry event (eventstore.Store.Publish).
type Publisher interface {
	Publish(ctx context.Context, subject, typ, ceSubject string, data proto.Message, md eventstore.Metadata) (eventstore.Event, error)
}

// Config configures an Emitter.
type Config struct {
	// Publisher stores the events. Required.
	Publisher Publisher
	// Buffer is how many issued-token records may wait to be batched; default DefaultBuffer.
	Buffer int
	// DenialBuffer is how many stored denial records may wait to be batched, apart from Buffer;
	// default DefaultDenialBuffer.
	DenialBuffer int
	// DenialsPerSecond is how many denied requests of a tenant are stored per second (the same
	// number at once); the others are counted only. Default DefaultDenialsPerSecond; negative
	// stores none.
	DenialsPerSecond float64
	// Workers publish batches concurrently; default DefaultWorkers.
	Workers int
	// MaxBatch is the most records in one event; default DefaultMaxBatch.
	MaxBatch int
	// FlushInterval is the longest a record waits for its batch to fill; default DefaultFlushInterval.
	FlushInterval time.Duration
	// Registerer receives the metrics; default prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Now is the clock of the records' time and of the denial sampling; default time.Now.
	Now func() time.Time
}

type batch struct {
	tenant string
	recs   []*issuerv1.TokenRequested
}

// Emitter buffers telemetry, batches it per tenant and publishes the batches from its Run loop.
type Emitter struct {
	pub      Publisher
	ch       chan *issuerv1.TokenRequested
	denials  chan *issuerv1.TokenRequested
	sampler  *ratelimit.Limiter // nil: no denial is stored
	batches  chan batch
	workers  int
	maxBatch int
	interval time.Duration
	logger   *slog.Logger
	now      func() time.Time

	dropped     atomic.Uint64
	failed      atomic.Uint64
	published   atomic.Uint64
	notStored   atomic.Uint64
	lastDropLog atomic.Int64

	requests   *prometheus.CounterVec
	dropTotal  prometheus.Counter
	failTotal  prometheus.Counter
	batchTotal prometheus.Counter
	notStoredC *prometheus.CounterVec
}

// New returns an Emitter; events are published once Run is running.
func New(cfg Config) (*Emitter, error) {
	if cfg.Publisher == nil {
		return nil, errors.New("telemetry: Publisher is required")
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = DefaultBuffer
	}
	if cfg.DenialBuffer <= 0 {
		cfg.DenialBuffer = DefaultDenialBuffer
	}
	if cfg.DenialsPerSecond == 0 {
		cfg.DenialsPerSecond = DefaultDenialsPerSecond
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.DefaultRegisterer
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	e := &Emitter{pub: cfg.Publisher, ch: make(chan *issuerv1.TokenRequested, cfg.Buffer),
		denials: make(chan *issuerv1.TokenRequested, cfg.DenialBuffer),
		batches: make(chan batch), workers: cfg.Workers, maxBatch: cfg.MaxBatch, interval: cfg.FlushInterval,
		logger: cfg.Logger, now: cfg.Now}
	if cfg.DenialsPerSecond > 0 {
		var err error
		e.sampler, err = ratelimit.New(ratelimit.Config{Rate: cfg.DenialsPerSecond, Now: cfg.Now, MaxKeys: 4096})
		if err != nil {
			return nil, fmt.Errorf("telemetry: DenialsPerSecond: %w", err)
		}
	}
	e.requests = observability.Register(cfg.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "issuer_token_requests_total",
		Help: "Token requests answered by the issuer, by outcome and OAuth error code.",
	}, []string{"outcome", "error"}))
	e.dropTotal = observability.Register(cfg.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "issuer_telemetry_dropped_total",
		Help: "Token request telemetry records dropped because the publish buffer was full or the issuer stopped before they could be published.",
	}))
	e.failTotal = observability.Register(cfg.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "issuer_telemetry_publish_failures_total",
		Help: "Token request telemetry records in batches that could not be published.",
	}))
	e.notStoredC = observability.Register(cfg.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "issuer_token_denials_not_stored_total",
		Help: "Denied token requests counted but not stored as telemetry records (over the per-tenant sample rate or the denial buffer), by OAuth error code.",
	}, []string{"error"}))
	e.batchTotal = observability.Register(cfg.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "issuer_telemetry_batches_total",
		Help: "Token request telemetry batches published (each one TELEMETRY message).",
	}))
	return e, nil
}

// TokenRequested queues the telemetry of one token request without blocking; when the buffer is
// full the record is dropped and counted. A denied request is stored only within its tenant's
// denial budget and otherwise counted. The request is stamped with the current time if it has
// none. ceSubject and md are not used: a batch carries only its tenant, and each record its client,
// agent and request id.
func (e *Emitter) TokenRequested(_ string, _ eventstore.Metadata, msg *issuerv1.TokenRequested) {
	outcome := "issued"
	if msg.GetOutcome() != issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED {
		outcome = "denied"
	}
	e.requests.WithLabelValues(outcome, msg.GetError()).Inc()
	if msg.Time == nil {
		msg.Time = timestamppb.New(e.now())
	}
	if outcome == "denied" {
		e.denied(msg)
		return
	}
	select {
	case e.ch <- msg:
	default:
		e.drop(1, msg.GetTenant(), "telemetry buffer full: dropping token request records")
	}
}

// denied queues a denial within its tenant's budget, and counts it otherwise.
func (e *Emitter) denied(msg *issuerv1.TokenRequested) {
	if e.sampler != nil {
		if ok, _ := e.sampler.Allow(msg.GetTenant()); ok {
			select {
			case e.denials <- msg:
				return
			default:
			}
		}
	}
	e.notStored.Add(1)
	e.notStoredC.WithLabelValues(msg.GetError()).Inc()
}

func (e *Emitter) drop(n int, tenant, why string) {
	total := e.dropped.Add(uint64(n))
	e.dropTotal.Add(float64(n))
	now := time.Now().UnixNano()
	last := e.lastDropLog.Load()
	if now-last >= int64(dropLogEvery) && e.lastDropLog.CompareAndSwap(last, now) {
		e.logger.Warn(why, "dropped_total", total, "buffer", cap(e.ch), "tenant", tenant)
	}
}

// Dropped is how many records were dropped: the buffer was full, or the issuer stopped first.
func (e *Emitter) Dropped() uint64 { return e.dropped.Load() }

// Failed is how many records were in batches that could not be published.
func (e *Emitter) Failed() uint64 { return e.failed.Load() }

// NotStored is how many denied requests were counted but not stored (over the sample rate or the
// denial buffer).
func (e *Emitter) NotStored() uint64 { return e.notStored.Load() }

// Published is how many records were published.
func (e *Emitter) Published() uint64 { return e.published.Load() }

// Run batches and publishes queued records until ctx is done, then publishes what is left for a
// short while; what is still left after that is counted as dropped.
func (e *Emitter) Run(ctx context.Context) error {
	// Publishing outlives ctx by the drain, so that a clean stop loses nothing.
	pubCtx, stopPublishing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPublishing()
	var wg sync.WaitGroup
	for range e.workers {
		wg.Go(func() {
			for b := range e.batches {
				e.publish(pubCtx, b)
			}
		})
	}
	pending := e.collect(ctx, pubCtx)
	timer := time.AfterFunc(drainTimeout, stopPublishing)
	defer timer.Stop()
	for drained := false; !drained; {
		select {
		case rec := <-e.ch:
			e.add(pubCtx, pending, rec)
		case rec := <-e.denials:
			e.add(pubCtx, pending, rec)
		default:
			drained = true
		}
	}
	e.flush(pubCtx, pending)
	close(e.batches)
	wg.Wait()
	return nil
}

// collect gathers records into per-tenant batches and hands full ones, and every batch at least
// once per FlushInterval, to the workers, until ctx is done; it returns the batches not handed over.
func (e *Emitter) collect(ctx, pubCtx context.Context) map[string][]*issuerv1.TokenRequested {
	pending := map[string][]*issuerv1.TokenRequested{}
	tick := time.NewTicker(e.interval)
	defer tick.Stop()
	for {
		select {
		case rec := <-e.ch:
			e.add(pubCtx, pending, rec)
		case rec := <-e.denials:
			e.add(pubCtx, pending, rec)
		case <-tick.C:
			e.flush(pubCtx, pending)
		case <-ctx.Done():
			return pending
		}
	}
}

func (e *Emitter) add(ctx context.Context, pending map[string][]*issuerv1.TokenRequested, rec *issuerv1.TokenRequested) {
	t := rec.GetTenant()
	recs := append(pending[t], rec)
	if len(recs) < e.maxBatch {
		pending[t] = recs
		return
	}
	delete(pending, t)
	e.send(ctx, batch{tenant: t, recs: recs})
}

func (e *Emitter) flush(ctx context.Context, pending map[string][]*issuerv1.TokenRequested) {
	for t, recs := range pending {
		delete(pending, t)
		e.send(ctx, batch{tenant: t, recs: recs})
	}
}

// send hands b to a worker, waiting while all are busy (the buffer absorbs requests meanwhile).
// When ctx ends first (the drain at shutdown ran out of time) the batch is counted as dropped.
func (e *Emitter) send(ctx context.Context, b batch) {
	select {
	case e.batches <- b:
	case <-ctx.Done():
		e.drop(len(b.recs), b.tenant, "telemetry not published before shutdown: dropping token request records")
	}
}

func (e *Emitter) publish(ctx context.Context, b batch) {
	if ctx.Err() != nil {
		e.drop(len(b.recs), b.tenant, "telemetry not published before shutdown: dropping token request records")
		return
	}
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	msg := &issuerv1.TokenRequestedBatch{Requests: b.recs}
	md := eventstore.Metadata{Tenant: b.tenant}
	if _, err := e.pub.Publish(pctx, Subject(b.tenant), TokenRequestedBatchType, TenantName(b.tenant), msg, md); err != nil {
		e.failed.Add(uint64(len(b.recs)))
		e.failTotal.Add(float64(len(b.recs)))
		e.logger.Warn("could not publish token request telemetry", "tenant", b.tenant,
			"records", len(b.recs), "error", err)
		return
	}
	e.published.Add(uint64(len(b.recs)))
	e.batchTotal.Inc()
}
