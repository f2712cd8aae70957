package eventstore

import (
	"cmp"
	"context"
	"errors"
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
//
// It never weakens an existing stream or the bucket: when the configuration asked for has fewer
// replicas, a shorter duplicate window or a lower limit (MaxAge, MaxBytes, MaxMsgs,
// MaxMsgsPerSubject, MaxMsgSize) than the existing one, nothing is changed and EnsureStreams fails
// with a *WeakerConfigError naming the stream, the setting and both values. Stronger settings are
// applied. The effective configuration of every stream and of the bucket is logged.
func (s *Store) EnsureStreams(ctx context.Context) error {
	for _, cfg := range s.Streams() {
		if err := s.ensureStream(ctx, cfg.Name, cfg, func() (jetstream.StreamConfig, error) {
			st, err := s.js.CreateOrUpdateStream(ctx, cfg)
			if err != nil {
				return jetstream.StreamConfig{}, err
			}
			return st.CachedInfo().Config, nil
		}); err != nil {
			return err
		}
	}
	kvCfg := s.failedBucketConfig()
	want := jetstream.StreamConfig{ // what CreateOrUpdateKeyValue asks of the bucket's stream
		Replicas:          kvCfg.Replicas,
		MaxMsgsPerSubject: int64(kvCfg.History),
		MaxAge:            kvCfg.TTL,
		MaxBytes:          kvCfg.MaxBytes,
		MaxMsgSize:        kvCfg.MaxValueSize,
		Duplicates:        min(2*time.Minute, cmp.Or(kvCfg.TTL, 2*time.Minute)),
	}
	return s.ensureStream(ctx, "KV_"+FailedEventsBucket, want, func() (jetstream.StreamConfig, error) {
		if _, err := s.js.CreateOrUpdateKeyValue(ctx, kvCfg); err != nil {
			return jetstream.StreamConfig{}, err
		}
		st, err := s.js.Stream(ctx, "KV_"+FailedEventsBucket)
		if err != nil {
			return jetstream.StreamConfig{}, err
		}
		return st.CachedInfo().Config, nil
	})
}

// ensureStream refuses want if it is weaker than the existing stream name, then runs apply and
// logs the configuration it returns.
func (s *Store) ensureStream(ctx context.Context, name string, want jetstream.StreamConfig, apply func() (jetstream.StreamConfig, error)) error {
	st, err := s.js.Stream(ctx, name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
	case err != nil:
		return fmt.Errorf("eventstore: ensure stream %s: %w", name, err)
	default:
		if err := weaker(name, st.CachedInfo().Config, want); err != nil {
			return err
		}
	}
	got, err := apply()
	if err != nil {
		return fmt.Errorf("eventstore: ensure stream %s: %w", name, err)
	}
	s.logger.InfoContext(ctx, "stream configuration", "stream", name, "subjects", got.Subjects,
		"replicas", got.Replicas, "storage", got.Storage.String(), "retention", got.Retention.String(),
		"max_age", got.MaxAge, "max_bytes", got.MaxBytes, "max_msgs", got.MaxMsgs,
		"max_msgs_per_subject", got.MaxMsgsPerSubject, "max_msg_size", got.MaxMsgSize,
		"duplicate_window", got.Duplicates, "deny_delete", got.DenyDelete, "deny_purge", got.DenyPurge)
	return nil
}

// WeakerConfigError is EnsureStreams refusing to weaken an existing stream or bucket.
type WeakerConfigError struct {
	// Stream is the stream (KV_<bucket> for a bucket).
	Stream string
	// Setting is the weakened setting, e.g. "replicas" or "max_age".
	Setting string
	// Existing and Requested are the stream's value and the one asked for.
	Existing, Requested string
	// Flag is the operator flag that sets it, if any.
	Flag string
}

// Error implements error.
func (e *WeakerConfigError) Error() string {
	msg := fmt.Sprintf("eventstore: stream %s: refusing to lower %s from %s to %s", e.Stream, e.Setting, e.Existing, e.Requested)
	if e.Flag != "" {
		msg += fmt.Sprintf(" (start with %s=%s, or change the stream deliberately with the nats CLI)", e.Flag, e.Existing)
	} else {
		msg += " (change the stream deliberately with the nats CLI if that is intended)"
	}
	return msg
}

// Is reports whether target is ErrWeakerConfig.
func (e *WeakerConfigError) Is(target error) bool { return target == ErrWeakerConfig }

// ErrWeakerConfig marks EnsureStreams refusing to weaken a stream; the error is a *WeakerConfigError.
var ErrWeakerConfig = errors.New("eventstore: requested stream configuration is weaker than the existing one")

// weaker returns a *WeakerConfigError for the first setting of want weaker than have's.
func weaker(name string, have, want jetstream.StreamConfig) error {
	refuse := func(setting, existing, requested, flag string) error {
		return &WeakerConfigError{Stream: name, Setting: setting, Existing: existing, Requested: requested, Flag: flag}
	}
	if max(want.Replicas, 1) < have.Replicas {
		return refuse("replicas", fmt.Sprint(have.Replicas), fmt.Sprint(max(want.Replicas, 1)), "--stream-replicas")
	}
	if want.Duplicates > 0 && want.Duplicates < have.Duplicates {
		return refuse("duplicate window", have.Duplicates.String(), want.Duplicates.String(), "")
	}
	// A limit of 0 (or -1) is no limit, the strongest setting.
	limits := []struct {
		setting    string
		have, want int64
		show       func(int64) string
	}{
		{"max_age", int64(have.MaxAge), int64(want.MaxAge), func(v int64) string { return time.Duration(v).String() }},
		{"max_bytes", have.MaxBytes, want.MaxBytes, nil},
		{"max_msgs", have.MaxMsgs, want.MaxMsgs, nil},
		{"max_msgs_per_subject", have.MaxMsgsPerSubject, want.MaxMsgsPerSubject, nil},
		{"max_msg_size", int64(have.MaxMsgSize), int64(want.MaxMsgSize), nil},
	}
	for _, l := range limits {
		if !limitLower(l.have, l.want) {
			continue
		}
		show := l.show
		if show == nil {
			show = func(v int64) string { return fmt.Sprint(v) }
		}
		existing := "unlimited"
		if l.have > 0 {
			existing = show(l.have)
		}
		return refuse(l.setting, existing, show(l.want), "")
	}
	return nil
}

// limitLower reports whether limit want is lower than have, where a value <= 0 is no limit.
func limitLower(have, want int64) bool {
	switch {
	case want <= 0:
		return false
	case have <= 0:
		return true
	default:
		return want < have
	}
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
