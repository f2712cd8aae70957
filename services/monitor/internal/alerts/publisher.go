// Package alerts is the monitor's alert pipeline after detection: it publishes the detectors'
// alerts on the ALERTS stream (Publisher), keeps them queryable (Store, fed by Projection from the
// stream), runs detection on every stored telemetry batch (Runtime) and answers the alert,
// baseline and usage queries of MonitorService (Reader).
package alerts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
)

// EventType is the type of an alert event on the ALERTS stream; its payload is monitorv1.AlertRaised.
const EventType = "alert.raised"

// ConsumerName names the monitor's projection of the ALERTS stream (its version included).
const ConsumerName = "monitor-alerts-v1"

// FilterSubject selects every alert.
const FilterSubject = "alerts.>"

// Subject is the ALERTS subject of one tenant's alerts of one detector: alerts.<tenant>.<detector>.
func Subject(tenant, detector string) string { return "alerts." + tenant + "." + detector }

// Retry delays of Publisher.Publish.
const (
	// firstRetry is the delay after the first failed attempt; it doubles up to maxRetry.
	firstRetry = 50 * time.Millisecond
	maxRetry   = 5 * time.Second
)

// EventPublisher stores an event under a chosen id (implemented by *eventstore.Store).
type EventPublisher interface {
	PublishWithID(ctx context.Context, id, subject, typ, ceSubject string, data proto.Message, md eventstore.Metadata) (eventstore.Event, error)
}

// Publisher publishes alerts on the ALERTS stream as `alert.raised` events whose CloudEvents id and
// Nats-Msg-Id are the alert id, so an alert raised again (a replayed telemetry event after a
// restart) is stored once within the stream's duplicate window, and once by the alert store's id
// key after it.
type Publisher struct {
	events EventPublisher
	logger *slog.Logger
}

// NewPublisher returns a Publisher storing alerts through events.
func NewPublisher(events EventPublisher, logger *slog.Logger) (*Publisher, error) {
	if events == nil {
		return nil, errors.New("alerts: NewPublisher needs an event publisher")
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &Publisher{events: events, logger: logger}, nil
}

// Publish stores alert on ALERTS, retrying failures with backoff (50 ms doubling to 5 s) until it
// is stored or ctx is done; it returns the stored event. An alert that can never be stored (no
// tenant, detector or UUID alert id; the store refuses it as invalid) fails at once.
func (p *Publisher) Publish(ctx context.Context, alert *monitorv1.Alert) (eventstore.Event, error) {
	switch {
	case alert.GetTenant() == "":
		return eventstore.Event{}, errors.New("alerts: alert has no tenant")
	case alert.GetDetector() == "":
		return eventstore.Event{}, fmt.Errorf("alerts: alert %s has no detector", alert.GetAlertId())
	}
	if _, err := uuid.Parse(alert.GetAlertId()); err != nil {
		return eventstore.Event{}, fmt.Errorf("alerts: alert id %q is not a UUID", alert.GetAlertId())
	}
	md := eventstore.Metadata{
		Tenant: alert.GetTenant(),
		Actor:  eventstore.Actor{ID: "monitor", Kind: eventstore.ActorService},
	}
	if ids := alert.GetEventIds(); len(ids) > 0 {
		md.CausationID = ids[0]
	}
	subject := Subject(alert.GetTenant(), alert.GetDetector())
	data := &monitorv1.AlertRaised{Alert: alert}
	delay := firstRetry
	for attempt := 1; ; attempt++ {
		ev, err := p.events.PublishWithID(ctx, alert.GetAlertId(), subject, EventType, alert.GetAgent(), data, md)
		if err == nil {
			return ev, nil
		}
		if errors.Is(err, eventstore.ErrInvalid) {
			return eventstore.Event{}, fmt.Errorf("alerts: alert %s refused: %w", alert.GetAlertId(), err)
		}
		p.logger.WarnContext(ctx, "alert not published yet; retrying", "alert_id", alert.GetAlertId(),
			"tenant", alert.GetTenant(), "detector", alert.GetDetector(), "attempt", attempt, "retry_in", delay, "error", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return eventstore.Event{}, fmt.Errorf("alerts: alert %s not published: %w (last error: %v)", alert.GetAlertId(), ctx.Err(), err)
		case <-t.C:
		}
		delay = min(2*delay, maxRetry)
	}
}
