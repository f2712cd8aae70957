package eventstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
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
	StreamRevocations = "REVOCATIONS"
	StreamTelemetry   = "TELEMETRY"
	StreamAlerts      = "ALERTS"
	// StreamSIEMDeadLetters keeps the OCSF events the monitor's SIEM export could not deliver to its
	// webhook (siem.dead.<tenant>), with the last error, for an operator to inspect and replay.
	StreamSIEMDeadLetters = "SIEM_DLQ"
)

// Aggregate types with a stream of their own or a shared one (docs/architecture.md).
const (
	AggregateTenant     = "tenant"
	AggregateAgent      = "agent"
	AggregateClient     = "client"
	AggregateSigningKey = "signingkey"
	AggregatePolicy     = "policy"
	AggregateLifecycle  = "lifecycle"
	AggregateRevocation = "revocation"
)

// TypeTokensRevoked is the type of the revocation aggregate's only event (issuerv1.TokensRevoked). It
// is not prefixed by its aggregate type: its subject is EventSubject(tenant, AggregateRevocation, id,
// TypeTokensRevoked), agentid.<tenant>.revocation.<id>.tokens.revoked.
const TypeTokensRevoked = "tokens.revoked"

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
	alertsMaxBytes           = 1 << 30 // one tenant's alert flood cannot fill the disk
	siemDeadLettersMaxAge    = 90 * 24 * time.Hour
)

// streamOfAggregate maps each known aggregate type to its stream.
var streamOfAggregate = map[string]string{
	AggregateTenant:     StreamTenants,
	AggregateAgent:      StreamAgents,
	AggregateClient:     StreamCredentials,
	AggregateSigningKey: StreamCredentials,
	AggregatePolicy:     StreamPolicy,
	AggregateLifecycle:  StreamLifecycle,
	AggregateRevocation: StreamRevocations,
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
			// Group commit (WithGroupCommit) publishes concurrent appends as one atomic batch.
			AllowAtomicPublish: true,
		}
	}
	return []jetstream.StreamConfig{
		forever(StreamTenants, "Tenant aggregate events", AggregateTenant),
		forever(StreamAgents, "Agent aggregate events", AggregateAgent),
		forever(StreamCredentials, "OAuth client and signing key events", AggregateClient, AggregateSigningKey),
		forever(StreamPolicy, "Policy bundle events", AggregatePolicy),
		forever(StreamLifecycle, "Lifecycle events (reviews, evidence)", AggregateLifecycle),
		forever(StreamRevocations, "Token revocations (tokens.revoked), consumed by every verifier", AggregateRevocation),
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
			MaxBytes:    alertsMaxBytes,
			Storage:     jetstream.FileStorage,
			Replicas:    s.replicas,
			Duplicates:  telemetryDuplicateWindow,
			AllowDirect: true,
		},
		{
			Name:        StreamSIEMDeadLetters,
			Description: "SIEM export dead letters: siem.dead.<tenant>, OCSF events the webhook refused or never took",
			Subjects:    []string{"siem.dead.>"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      siemDeadLettersMaxAge,
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
// It never changes an operator's value silently. On an existing stream or bucket:
//   - replicas (--stream-replicas, WithReplicas) and, when set with WithDuplicateWindow, the
//     duplicate window of the aggregate streams are explicit: a higher value is applied, a lower
//     one is refused with a *WeakerConfigError naming the stream, the setting and both values, and
//     nothing is changed;
//   - the limits (MaxAge, MaxBytes, MaxMsgs, MaxMsgsPerSubject, MaxMsgSize) and a duplicate window
//     not set explicitly have no operator option: the existing value is kept, higher or lower than
//     the built-in one, and a difference is logged as a warning naming the setting and both values.
//
// A stream or bucket whose configuration already is the merged one is only read (STREAM.INFO), never
// updated: a process whose NATS identity may read but not change the streams starts (pkg/natsauth).
//
// A store created WithCheckpointBucket also creates or checks the checkpoint bucket.
//
// The effective configuration of every stream and of the bucket is logged.
func (s *Store) EnsureStreams(ctx context.Context) error {
	for _, cfg := range s.Streams() {
		explicitDup := cfg.Name != StreamTelemetry && cfg.Name != StreamAlerts && cfg.Name != StreamSIEMDeadLetters && s.dupWindowSet
		if err := s.ensureStream(ctx, cfg.Name, cfg, explicitDup,
			func() (*jetstream.StreamInfo, error) {
				st, err := s.js.CreateStream(ctx, cfg)
				if err != nil {
					return nil, err
				}
				return st.CachedInfo(), nil
			},
			func(have jetstream.StreamConfig) jetstream.StreamConfig { return cfg },
		); err != nil {
			return err
		}
	}
	kvCfg := s.failedBucketConfig()
	want := jetstream.StreamConfig{ // what CreateKeyValue asks of the bucket's stream
		Replicas:          kvCfg.Replicas,
		MaxMsgsPerSubject: int64(kvCfg.History),
		MaxAge:            kvCfg.TTL,
		MaxBytes:          kvCfg.MaxBytes,
		MaxMsgSize:        kvCfg.MaxValueSize,
		Duplicates:        min(2*time.Minute, cmp.Or(kvCfg.TTL, 2*time.Minute)),
	}
	if err := s.ensureStream(ctx, "KV_"+FailedEventsBucket, want, false,
		func() (*jetstream.StreamInfo, error) {
			if _, err := s.js.CreateKeyValue(ctx, kvCfg); err != nil {
				return nil, err
			}
			st, err := s.js.Stream(ctx, "KV_"+FailedEventsBucket)
			if err != nil {
				return nil, err
			}
			return st.CachedInfo(), nil
		},
		// The bucket's other settings are the KV layout: keep them as they are.
		func(have jetstream.StreamConfig) jetstream.StreamConfig { return have },
	); err != nil {
		return err
	}
	if s.checkpointBytes > 0 {
		return s.ensureCheckpointBucket(ctx)
	}
	return nil
}

// ensureStream creates the stream name with create when it does not exist. Otherwise it merges
// want into the existing configuration (base(have) with want's explicit settings, refusing a
// lower one, and have's other settings) and updates the stream. It logs the configuration.
func (s *Store) ensureStream(ctx context.Context, name string, want jetstream.StreamConfig, explicitDup bool,
	create func() (*jetstream.StreamInfo, error), base func(have jetstream.StreamConfig) jetstream.StreamConfig,
) error {
	var got jetstream.StreamConfig
	st, err := s.js.Stream(ctx, name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		info, err := create()
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) || errors.Is(err, jetstream.ErrBucketExists) {
			// Another replica created it meanwhile: check it as an existing one.
			return s.ensureStream(ctx, name, want, explicitDup, create, base)
		}
		if err != nil {
			return fmt.Errorf("eventstore: ensure stream %s: %w", name, err)
		}
		got = info.Config
	case err != nil:
		return fmt.Errorf("eventstore: ensure stream %s: %w", name, err)
	default:
		have := st.CachedInfo().Config
		cfg, err := s.mergeStreamConfig(ctx, name, have, want, base(have), explicitDup)
		if err != nil {
			return err
		}
		got = have
		if streamConfigDiffers(have, cfg) {
			// Only then: a process whose NATS identity may only read the streams starts.
			info, err := s.js.UpdateStream(ctx, cfg)
			switch {
			case err != nil && onlyAtomicPublishDiffers(have, cfg):
				// Atomic publish only speeds appends up (group commit); without it they are
				// published one by one. A process that may not update the stream still starts.
				s.logger.WarnContext(ctx, "cannot allow atomic publish on the stream; appends are published one by one until a process whose NATS identity may update streams runs EnsureStreams",
					"stream", name, "error", err.Error())
			case err != nil:
				return fmt.Errorf("eventstore: ensure stream %s: %w", name, err)
			default:
				got = info.CachedInfo().Config
			}
		}
	}
	s.logger.InfoContext(ctx, "stream configuration", "stream", name, "subjects", got.Subjects,
		"replicas", got.Replicas, "storage", got.Storage.String(), "retention", got.Retention.String(),
		"max_age", got.MaxAge, "max_bytes", got.MaxBytes, "max_msgs", got.MaxMsgs,
		"max_msgs_per_subject", got.MaxMsgsPerSubject, "max_msg_size", got.MaxMsgSize,
		"duplicate_window", got.Duplicates, "deny_delete", got.DenyDelete, "deny_purge", got.DenyPurge,
		"allow_atomic_publish", got.AllowAtomicPublish)
	return nil
}

// streamConfigDiffers reports whether updating a stream from have to cfg would change a setting that
// EnsureStreams manages: the settings of the built-in configurations and the merged limits. A zero
// limit in cfg and a negative one in have both mean none.
func streamConfigDiffers(have, cfg jetstream.StreamConfig) bool {
	limit := func(v int64) int64 { return max(v, 0) }
	return cfg.Description != have.Description ||
		!slices.Equal(cfg.Subjects, have.Subjects) ||
		cfg.Retention != have.Retention || cfg.Discard != have.Discard || cfg.Storage != have.Storage ||
		max(cfg.Replicas, 1) != max(have.Replicas, 1) ||
		(cfg.Duplicates != 0 && cfg.Duplicates != have.Duplicates) ||
		cfg.AllowDirect != have.AllowDirect || cfg.DenyDelete != have.DenyDelete || cfg.DenyPurge != have.DenyPurge ||
		cfg.AllowRollup != have.AllowRollup || cfg.AllowAtomicPublish != have.AllowAtomicPublish ||
		limit(int64(cfg.MaxAge)) != limit(int64(have.MaxAge)) || limit(cfg.MaxBytes) != limit(have.MaxBytes) ||
		limit(cfg.MaxMsgs) != limit(have.MaxMsgs) || limit(cfg.MaxMsgsPerSubject) != limit(have.MaxMsgsPerSubject) ||
		limit(int64(cfg.MaxMsgSize)) != limit(int64(have.MaxMsgSize))
}

// onlyAtomicPublishDiffers reports whether AllowAtomicPublish is the only managed setting in which
// have and cfg differ.
func onlyAtomicPublishDiffers(have, cfg jetstream.StreamConfig) bool {
	cfg.AllowAtomicPublish = have.AllowAtomicPublish
	return !streamConfigDiffers(have, cfg)
}

// mergeStreamConfig returns cfg with the replicas (and, if explicitDup, the duplicate window) of
// want, refusing lower ones than have's, and the limits (and a duplicate window not set
// explicitly) of have, warning where have differs from want.
func (s *Store) mergeStreamConfig(ctx context.Context, name string, have, want, cfg jetstream.StreamConfig, explicitDup bool) (jetstream.StreamConfig, error) {
	cfg.Replicas = max(want.Replicas, 1)
	if cfg.Replicas < have.Replicas {
		return cfg, &WeakerConfigError{Stream: name, Setting: "replicas", Existing: fmt.Sprint(have.Replicas), Requested: fmt.Sprint(cfg.Replicas), Flag: "--stream-replicas"}
	}
	keep := func(setting string, existing, builtIn string) {
		s.logger.WarnContext(ctx, "stream setting differs from the built-in one; keeping the existing value",
			"stream", name, "setting", setting, "existing", existing, "built_in", builtIn)
	}
	switch {
	case explicitDup && want.Duplicates < have.Duplicates:
		return cfg, &WeakerConfigError{Stream: name, Setting: "duplicate window", Existing: have.Duplicates.String(), Requested: want.Duplicates.String()}
	case explicitDup:
		cfg.Duplicates = want.Duplicates
	default:
		if want.Duplicates != have.Duplicates && want.Duplicates > 0 {
			keep("duplicate window", have.Duplicates.String(), want.Duplicates.String())
		}
		cfg.Duplicates = have.Duplicates
	}
	showDur := func(v int64) string { return time.Duration(v).String() }
	limits := []struct {
		setting    string
		have, want int64
		show       func(int64) string
		set        func(*jetstream.StreamConfig)
	}{
		{"max_age", int64(have.MaxAge), int64(want.MaxAge), showDur, func(c *jetstream.StreamConfig) { c.MaxAge = have.MaxAge }},
		{"max_bytes", have.MaxBytes, want.MaxBytes, nil, func(c *jetstream.StreamConfig) { c.MaxBytes = have.MaxBytes }},
		{"max_msgs", have.MaxMsgs, want.MaxMsgs, nil, func(c *jetstream.StreamConfig) { c.MaxMsgs = have.MaxMsgs }},
		{"max_msgs_per_subject", have.MaxMsgsPerSubject, want.MaxMsgsPerSubject, nil, func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = have.MaxMsgsPerSubject }},
		{"max_msg_size", int64(have.MaxMsgSize), int64(want.MaxMsgSize), nil, func(c *jetstream.StreamConfig) { c.MaxMsgSize = have.MaxMsgSize }},
	}
	for _, l := range limits {
		l.set(&cfg)
		if max(l.have, 0) == max(l.want, 0) { // <= 0: no limit
			continue
		}
		show := l.show
		if show == nil {
			show = func(v int64) string { return fmt.Sprint(v) }
		}
		shown := func(v int64) string {
			if v <= 0 {
				return "unlimited"
			}
			return show(v)
		}
		keep(l.setting, shown(l.have), shown(l.want))
	}
	return cfg, nil
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
