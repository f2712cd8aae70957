package siem

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/observability"
)

// The durable consumers of the export (pkg/natsauth lets only the monitor use them).
const (
	ConsumerAlerts      = "monitor-siem-alerts"
	ConsumerAgents      = "monitor-siem-agents"
	ConsumerRevocations = "monitor-siem-revocations"
)

// Subjects of the export.
const (
	// SubjectPrefix + <tenant> carries every OCSF event (core NATS, not stored).
	SubjectPrefix = "siem.ocsf."
	// DeadLetterPrefix + <tenant> is where undeliverable events go (stream SIEM_DLQ).
	DeadLetterPrefix = "siem.dead."
)

// Headers of the NATS copies and of the dead letters.
const (
	// NATSHeaderEventID is the OCSF metadata.uid.
	NATSHeaderEventID = "Agentid-Event-Id"
	// NATSHeaderError is the last delivery error of a dead letter.
	NATSHeaderError = "Agentid-Siem-Error"
	// NATSHeaderAttempts is how many POSTs a dead letter got.
	NATSHeaderAttempts = "Agentid-Siem-Attempts"
	// NATSHeaderStatus is the last HTTP status of a dead letter (0: no answer).
	NATSHeaderStatus = "Agentid-Siem-Status"
	// NATSHeaderSource is the source event's stream and sequence, "<stream>/<seq>".
	NATSHeaderSource = "Agentid-Siem-Source"
)

// DefaultConcurrency is how many events of each consumer are delivered at once.
const DefaultConcurrency = 4

// Source delivers events through a durable consumer (implemented by *eventstore.Store).
type Source interface {
	Consume(ctx context.Context, name, stream string, filterSubjects []string, h eventstore.Handler, opts ...eventstore.ConsumeOption) error
}

// Config configures an Exporter.
type Config struct {
	// Source delivers ALERTS, AGENTS and REVOCATIONS; required.
	Source Source
	// JetStream publishes the NATS copies (core NATS) and the dead letters; required.
	JetStream jetstream.JetStream
	// Webhook, if set, receives every event; nil exports on NATS only.
	Webhook *Webhook
	// Concurrency is how many events of each consumer are in flight (default DefaultConcurrency).
	Concurrency int
	// ConsumeOptions are passed on to Source.Consume.
	ConsumeOptions []eventstore.ConsumeOption
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the export's metrics; default prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
}

// Exporter sends alerts and audit-relevant events to the SIEM. Each event is acknowledged only
// after its NATS copy is published and the webhook took it or the dead-letter stream holds it, so
// nothing is lost across restarts; delivery is at least once (receivers deduplicate on the event
// id).
type Exporter struct {
	cfg       Config
	log       *slog.Logger
	delivered *prometheus.CounterVec
	retried   prometheus.Counter
	dead      *prometheus.CounterVec
}

// New validates cfg and builds the exporter.
func New(cfg Config) (*Exporter, error) {
	switch {
	case cfg.Source == nil:
		return nil, errors.New("siem: Config.Source is required")
	case cfg.JetStream == nil:
		return nil, errors.New("siem: Config.JetStream is required")
	case cfg.Concurrency < 0:
		return nil, fmt.Errorf("siem: Config.Concurrency %d must not be negative", cfg.Concurrency)
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.DefaultRegisterer
	}
	x := &Exporter{cfg: cfg, log: cfg.Logger}
	x.delivered = observability.Register(cfg.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentid_monitor_siem_delivered_total",
		Help: "OCSF events delivered by the SIEM export, by sink (nats, webhook).",
	}, []string{"sink"}))
	x.retried = observability.Register(cfg.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "agentid_monitor_siem_retries_total",
		Help: "Webhook attempts of the SIEM export that failed and were retried.",
	}))
	x.dead = observability.Register(cfg.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentid_monitor_siem_dead_lettered_total",
		Help: "OCSF events the webhook did not take, put on the SIEM_DLQ stream, by reason (refused, exhausted).",
	}, []string{"reason"}))
	return x, nil
}

// Run consumes ALERTS, AGENTS and REVOCATIONS until ctx is done.
func (x *Exporter) Run(ctx context.Context) error {
	opts := append([]eventstore.ConsumeOption{eventstore.WithConcurrency(x.cfg.Concurrency)}, x.cfg.ConsumeOptions...)
	g, ctx := errgroup.WithContext(ctx)
	for _, c := range []struct{ name, stream, filter string }{
		{ConsumerAlerts, eventstore.StreamAlerts, "alerts.>"},
		{ConsumerAgents, eventstore.StreamAgents, eventstore.AggregateTypeSubject(eventstore.AggregateAgent)},
		{ConsumerRevocations, eventstore.StreamRevocations, eventstore.AggregateTypeSubject(eventstore.AggregateRevocation)},
	} {
		g.Go(func() error {
			return x.cfg.Source.Consume(ctx, c.name, c.stream, []string{c.filter}, x.Handle, opts...)
		})
	}
	if x.cfg.Webhook != nil {
		x.log.InfoContext(ctx, "siem export running", "webhook", x.cfg.Webhook.Target(), "nats_subject", SubjectPrefix+"<tenant>")
	} else {
		x.log.InfoContext(ctx, "siem export running", "webhook", "none", "nats_subject", SubjectPrefix+"<tenant>")
	}
	return g.Wait()
}

// Handle exports one event: it maps it to OCSF (events without a mapping are skipped), publishes
// it on siem.ocsf.<tenant>, and delivers it to the webhook, dead-lettering it when the webhook
// refuses it or every attempt failed. An error leaves the event unacknowledged (redelivered); a
// payload that cannot be mapped is a permanent error (the failed-event log).
func (x *Exporter) Handle(ctx context.Context, ev eventstore.Event) error {
	oe, ok, err := Map(ev)
	if err != nil {
		return eventstore.Permanent(err)
	}
	if !ok {
		return nil
	}
	body, err := json.Marshal(oe)
	if err != nil {
		return eventstore.Permanent(fmt.Errorf("siem: encode event %s: %w", ev.ID, err))
	}
	id, tenant := oe.Metadata.UID, oe.Metadata.TenantUID
	msg := &nats.Msg{Subject: SubjectPrefix + tenant, Data: body, Header: nats.Header{}}
	msg.Header.Set(NATSHeaderEventID, id)
	msg.Header.Set("Content-Type", "application/json")
	if err := x.cfg.JetStream.Conn().PublishMsg(msg); err != nil {
		return fmt.Errorf("siem: publish %s: %w", msg.Subject, err)
	}
	x.delivered.WithLabelValues("nats").Inc()
	if x.cfg.Webhook == nil {
		return nil
	}
	out, err := x.cfg.Webhook.Deliver(ctx, id, body, func(n int, err error, wait time.Duration) {
		x.retried.Inc()
		x.log.WarnContext(ctx, "siem webhook delivery failed; retrying", "event_id", id, "tenant", tenant,
			"attempt", n, "retry_in", wait, "error", err)
	})
	if err != nil {
		return err // ctx ended: the event comes back
	}
	if out.Delivered {
		x.delivered.WithLabelValues("webhook").Inc()
		return nil
	}
	return x.deadLetter(ctx, ev, id, tenant, body, out)
}

// deadLetter puts an undelivered event on siem.dead.<tenant> with the last error; the event's id
// is the message id, so a redelivery that dead-letters it again is deduplicated.
func (x *Exporter) deadLetter(ctx context.Context, ev eventstore.Event, id, tenant string, body []byte, out Outcome) error {
	reason := "exhausted"
	if out.Refused {
		reason = "refused"
	}
	msg := &nats.Msg{Subject: DeadLetterPrefix + tenant, Data: body, Header: nats.Header{}}
	msg.Header.Set(NATSHeaderEventID, id)
	msg.Header.Set(NATSHeaderError, Sanitize(out.Err.Error(), 1024))
	msg.Header.Set(NATSHeaderAttempts, strconv.Itoa(out.Attempts))
	msg.Header.Set(NATSHeaderStatus, strconv.Itoa(out.Status))
	msg.Header.Set(NATSHeaderSource, ev.Stream+"/"+strconv.FormatUint(ev.Sequence, 10))
	msg.Header.Set("Content-Type", "application/json")
	if _, err := x.cfg.JetStream.PublishMsg(ctx, msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(eventstore.StreamSIEMDeadLetters)); err != nil {
		return fmt.Errorf("siem: dead-letter event %s to %s: %w", id, msg.Subject, err)
	}
	x.dead.WithLabelValues(reason).Inc()
	x.log.ErrorContext(ctx, "siem webhook did not take an event; dead-lettered", "event_id", id, "tenant", tenant,
		"reason", reason, "attempts", out.Attempts, "status", out.Status, "error", out.Err, "dead_letter_subject", msg.Subject)
	return nil
}
