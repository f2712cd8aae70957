package eventstore

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream names (docs/architecture.md).
const (
	StreamTenants     = "TENANTS"
	StreamAgents      = "AGENTS"
	StreamCredentials = "CREDENTIALS"
	StreamPolicy      = "POLICY"
	StreamLifecycle   = "LIFECYCLE"
	StreamTelemetry   = "TELEMETRY"
	StreamAlerts      = "ALERTS"
)

// Aggregate types with a stream of their own or a shared one (docs/architecture.md).
const (
	AggregateTenant     = "tenant"
	AggregateAgent      = "agent"
	AggregateClient     = "client"
	AggregateSigningKey = "signingkey"
	AggregatePolicy     = "policy"
	AggregateLifecycle  = "lifecycle"
)

// SubjectRoot is the first token of every aggregate event subject.
const SubjectRoot = "agentid"

const (
	// DefaultDuplicateWindow is how long the aggregate streams remember idempotency keys.
	DefaultDuplicateWindow = 24 * time.Hour
	// telemetryDuplicateWindow keeps the dedupe table of the high-volume streams small; their
	// idempotency only has to cover client retries.
	telemetryDuplicateWindow = 2 * time.Minute
	telemetryMaxAge          = 7 * 24 * time.Hour
	telemetryMaxBytes        = 10 << 30
	alertsMaxAge             = 30 * 24 * time.Hour
)

// streamOfAggregate maps each known aggregate type to its stream.
var streamOfAggregate = map[string]string{
	AggregateTenant:     StreamTenants,
	AggregateAgent:      StreamAgents,
	AggregateClient:     StreamCredentials,
	AggregateSigningKey: StreamCredentials,
	AggregatePolicy:     StreamPolicy,
	AggregateLifecycle:  StreamLifecycle,
}

// StreamForAggregate returns the stream that holds events of aggregate type aggType.
func StreamForAggregate(aggType string) (string, bool) {
	s, ok := streamOfAggregate[aggType]
	return s, ok
}

// EventSubject is the subject of one event: agentid.<tenant>.<aggType>.<aggID>.<eventName>.
func EventSubject(tenant, aggType, aggID, eventName string) string {
	return SubjectRoot + "." + tenant + "." + aggType + "." + aggID + "." + eventName
}

// AggregateSubject is the wildcard covering every event of one aggregate:
// agentid.<tenant>.<aggType>.<aggID>.>.
func AggregateSubject(tenant, aggType, aggID string) string {
	return SubjectRoot + "." + tenant + "." + aggType + "." + aggID + ".>"
}

// AggregateTypeSubject is the wildcard covering every event of an aggregate type in all tenants:
// agentid.*.<aggType>.>.
func AggregateTypeSubject(aggType string) string {
	return SubjectRoot + ".*." + aggType + ".>"
}

// Streams returns the configurations EnsureStreams applies: the aggregate streams keep events
// forever and refuse deletes and purges; TELEMETRY and ALERTS are limits-based.
func (s *Store) Streams() []jetstream.StreamConfig {
	forever := func(name, desc string, aggTypes ...string) jetstream.StreamConfig {
		subjects := make([]string, len(aggTypes))
		for i, t := range aggTypes {
			subjects[i] = AggregateTypeSubject(t)
		}
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    subjects,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardNew,
			Storage:     jetstream.FileStorage,
			Replicas:    s.replicas,
			Duplicates:  s.dupWindow,
			AllowDirect: true,
			DenyDelete:  true,
			DenyPurge:   true,
		}
	}
	return []jetstream.StreamConfig{
		forever(StreamTenants, "Tenant aggregate events", AggregateTenant),
		forever(StreamAgents, "Agent aggregate events", AggregateAgent),
		forever(StreamCredentials, "OAuth client and signing key events", AggregateClient, AggregateSigningKey),
		forever(StreamPolicy, "Policy bundle events", AggregatePolicy),
		forever(StreamLifecycle, "Lifecycle events (reviews, evidence)", AggregateLifecycle),
		{
			Name:        StreamTelemetry,
			Description: "Agent telemetry: telemetry.<tenant>.<kind>; long-term copy in the telemetry store",
			Subjects:    []string{"telemetry.>"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      telemetryMaxAge,
			MaxBytes:    telemetryMaxBytes,
			Storage:     jetstream.FileStorage,
			Replicas:    s.replicas,
			Duplicates:  telemetryDuplicateWindow,
			AllowDirect: true,
		},
		{
			Name:        StreamAlerts,
			Description: "Alerts: alerts.<tenant>.<kind>",
			Subjects:    []string{"alerts.>"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      alertsMaxAge,
			Storage:     jetstream.FileStorage,
			Replicas:    s.replicas,
			Duplicates:  telemetryDuplicateWindow,
			AllowDirect: true,
		},
	}
}

// EnsureStreams creates the streams of Streams and the failed-event bucket, or updates them to the
// current configuration. It is safe to call from every replica on every start.
func (s *Store) EnsureStreams(ctx context.Context) error {
	for _, cfg := range s.Streams() {
		if _, err := s.js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("eventstore: ensure stream %s: %w", cfg.Name, err)
		}
	}
	if _, err := s.js.CreateOrUpdateKeyValue(ctx, s.failedBucketConfig()); err != nil {
		return fmt.Errorf("eventstore: ensure bucket %s: %w", FailedEventsBucket, err)
	}
	return nil
}

// streamFor returns the stream holding aggType's events, asking the server for types outside the
// built-in table.
func (s *Store) streamFor(ctx context.Context, tenant, aggType, aggID string) (string, error) {
	if name, ok := streamOfAggregate[aggType]; ok {
		return name, nil
	}
	if name, ok := s.streamCache.Load(aggType); ok {
		return name.(string), nil
	}
	name, err := s.js.StreamNameBySubject(ctx, EventSubject(tenant, aggType, aggID, "x"))
	if err != nil {
		return "", fmt.Errorf("eventstore: no stream for aggregate type %q: %w", aggType, err)
	}
	s.streamCache.Store(aggType, name)
	return name, nil
}
