package eventstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/failpoint"
)

// Store appends and loads events on JetStream and drives projections and work consumers.
// It is safe for concurrent use.
type Store struct {
	js        jetstream.JetStream
	source    string
	logger    *slog.Logger
	clock     func() time.Time
	dupWindow time.Duration
	// dupWindowSet: the duplicate window was set explicitly (WithDuplicateWindow).
	dupWindowSet bool
	replicas     int
	registry     prometheus.Registerer
	// checkpointBytes > 0: EnsureStreams also ensures the checkpoint bucket (WithCheckpointBucket).
	checkpointBytes int64

	claimTimeout time.Duration // how long a work consumer's claim on a requested retry holds
	infoRefresh  time.Duration // how often Consume reads its consumer's info

	streamCache sync.Map // aggregate type -> stream name, for types outside streamOfAggregate

	failedMu sync.Mutex
	failedKV jetstream.KeyValue

	group atomic.Pointer[groupCommitter] // set by WithGroupCommit or EnableGroupCommit
}

// Option configures a Store.
type Option func(*Store)

// WithSource sets the ce-source of the events this store writes, e.g. "agentid/registry".
func WithSource(source string) Option { return func(s *Store) { s.source = source } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.logger = l } }

// WithClock sets the clock used for ce-time (default time.Now).
func WithClock(now func() time.Time) Option { return func(s *Store) { s.clock = now } }

// WithDuplicateWindow sets how long the aggregate streams remember idempotency keys
// (default DefaultDuplicateWindow). It takes effect through EnsureStreams.
func WithDuplicateWindow(d time.Duration) Option {
	return func(s *Store) { s.dupWindow, s.dupWindowSet = d, true }
}

// WithReplicas sets the replica count of the streams and bucket EnsureStreams creates (default 1;
// 3 in clusters).
func WithReplicas(n int) Option { return func(s *Store) { s.replicas = n } }

// WithRegisterer sets where the store's metrics (agentid_eventstore_*) are registered (default
// prometheus.DefaultRegisterer; nil registers none). The metrics are shared by all the stores of
// a process and registered once per registerer.
func WithRegisterer(reg prometheus.Registerer) Option { return func(s *Store) { s.registry = reg } }

// New returns a Store writing through js.
func New(js jetstream.JetStream, opts ...Option) *Store {
	s := &Store{
		js:        js,
		source:    "agentid",
		logger:    slog.Default(),
		clock:     time.Now,
		dupWindow: DefaultDuplicateWindow,
		replicas:  1,
		registry:  prometheus.DefaultRegisterer,

		claimTimeout: redriveClaimTimeout,
		infoRefresh:  consumerInfoRefresh,
	}
	for _, o := range opts {
		o(s)
	}
	registerMetrics(s.registry)
	return s
}

// JetStream returns the JetStream context the store uses.
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// Append is one event to append to an aggregate.
type Append struct {
	// Tenant owns the aggregate.
	Tenant string
	// AggregateType is the aggregate's type, e.g. "agent".
	AggregateType string
	// AggregateID is the aggregate's id; one subject token.
	AggregateID string
	// ExpectedVersion is the aggregate's version the decision was made on: the stream sequence of
	// its last event, 0 if it must not exist yet, or AnyVersion to skip the check.
	ExpectedVersion uint64
	// IdempotencyKey identifies the command (its request id); a repeat returns the original event.
	IdempotencyKey string
	// Type is the event type, "<aggregate-type>.<event-name>", e.g. "agent.registered".
	Type string
	// Subject is the resource name the event is about (ce-subject), e.g. "tenants/t/agents/a".
	Subject string
	// Data is the payload.
	Data proto.Message
	// Metadata is the request context; Metadata.Actor is required.
	Metadata Metadata
}

// validate checks a, defaults its metadata's tenant and returns the event name part of its type.
func (a *Append) validate() (string, error) {
	if err := checkTenant("tenant", a.Tenant); err != nil {
		return "", err
	}
	if err := checkAggregateType("aggregate_type", a.AggregateType); err != nil {
		return "", err
	}
	if err := checkToken("aggregate_id", a.AggregateID); err != nil {
		return "", err
	}
	name, ok := strings.CutPrefix(a.Type, a.AggregateType+".")
	switch {
	case a.AggregateType == AggregateRevocation && a.Type == TypeTokensRevoked:
		name = TypeTokensRevoked // the one type not named after its aggregate: ...revocation.<id>.tokens.revoked
	case !ok:
		return "", invalid("type", "%q must start with %q", a.Type, a.AggregateType+".")
	default:
		if err := checkToken("type", name); err != nil {
			return "", invalid("type", "event name of %q: %s", a.Type, err.(*InvalidError).Reason)
		}
	}
	if a.IdempotencyKey == "" {
		return "", invalid("idempotency_key", "must not be empty")
	}
	if err := checkHeaderValue("idempotency_key", a.IdempotencyKey); err != nil {
		return "", err
	}
	if a.Subject == "" {
		return "", invalid("subject", "must not be empty")
	}
	if err := checkHeaderValue("subject", a.Subject); err != nil {
		return "", err
	}
	if a.Data == nil {
		return "", invalid("data", "must not be nil")
	}
	switch a.Metadata.Tenant {
	case "":
		a.Metadata.Tenant = a.Tenant
	case a.Tenant:
	default:
		return "", invalid("metadata.tenant", "%q differs from tenant %q", a.Metadata.Tenant, a.Tenant)
	}
	if err := checkMetadata(a.Metadata, true); err != nil {
		return "", err
	}
	return name, nil
}

// msgID is the stream-wide deduplication id of the append: the idempotency key scoped to its aggregate.
func (a *Append) msgID() string {
	return a.Tenant + "/" + a.AggregateType + "/" + a.AggregateID + "/" + a.IdempotencyKey
}

// Append stores one event if the aggregate is still at a.ExpectedVersion and returns it with its
// stream sequence, which is the aggregate's new version.
//
// A stale ExpectedVersion fails with a *ConflictError (errors.Is(err, ErrConflict)). Repeating an
// append with the same IdempotencyKey returns the original event and stores nothing, whether the
// repeat carries the original ExpectedVersion or a newer one. Keys are scoped to the aggregate (the
// stream's Nats-Msg-Id is tenant/type/id/key), so equal request ids of different tenants or
// aggregates never collide; a key that already produced an event of another type on the same
// aggregate fails with ErrIdempotencyKeyReused. Invalid input fails with an
// *InvalidError (errors.Is(err, ErrInvalid)) naming the field; nothing is written on any error.
func (s *Store) Append(ctx context.Context, a Append) (Event, error) {
	p, err := s.prepareAppend(ctx, a)
	if err != nil {
		return Event{}, err
	}
	if g := s.group.Load(); g != nil {
		return g.append(ctx, p)
	}
	return s.appendPrepared(ctx, p)
}

// preparedAppend is a validated append with its event and message built, ready to publish alone or
// in a group commit.
type preparedAppend struct {
	a          Append
	stream     string // the stream that holds the aggregate
	subject    string // the event's subject
	aggSubject string // the aggregate's wildcard subject
	ev         Event  // the event without its stream and sequence
}

// prepareAppend validates a and builds its event.
func (s *Store) prepareAppend(ctx context.Context, a Append) (preparedAppend, error) {
	name, err := a.validate()
	if err != nil {
		return preparedAppend{}, err
	}
	stream, err := s.streamFor(ctx, a.Tenant, a.AggregateType, a.AggregateID)
	if err != nil {
		return preparedAppend{}, err
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(a.Data)
	if err != nil {
		return preparedAppend{}, fmt.Errorf("eventstore: marshal %s: %w", a.Type, err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return preparedAppend{}, fmt.Errorf("eventstore: event id: %w", err)
	}
	return preparedAppend{
		a:          a,
		stream:     stream,
		subject:    EventSubject(a.Tenant, a.AggregateType, a.AggregateID, name),
		aggSubject: AggregateSubject(a.Tenant, a.AggregateType, a.AggregateID),
		ev: Event{
			ID:              id.String(),
			Type:            a.Type,
			Source:          s.source,
			Subject:         a.Subject,
			Time:            s.clock().UTC(),
			Metadata:        a.Metadata,
			AggregateType:   a.AggregateType,
			AggregateID:     a.AggregateID,
			ExpectedVersion: a.ExpectedVersion,
			DataSchema:      string(a.Data.ProtoReflect().Descriptor().FullName()),
			Data:            data,
		},
	}, nil
}

// appendPrepared publishes one prepared append on its own and resolves conflicts and repeats.
func (s *Store) appendPrepared(ctx context.Context, p preparedAppend) (Event, error) {
	a, ev := p.a, p.ev
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(a.msgID()), jetstream.WithExpectStream(p.stream)}
	if a.ExpectedVersion != AnyVersion {
		opts = append(opts, jetstream.WithExpectLastSequenceForSubject(a.ExpectedVersion, p.aggSubject))
	}
	ack, err := s.publish(ctx, &nats.Msg{Subject: p.subject, Header: ev.header(), Data: ev.Data}, opts)
	switch {
	case isWrongLastSequence(err):
		return s.resolveConflict(ctx, p.stream, p.aggSubject, a)
	case errors.Is(err, jetstream.ErrNoStreamResponse):
		return Event{}, fmt.Errorf("eventstore: append %s: no stream answers %s (run EnsureStreams): %w", a.Type, p.subject, err)
	case err != nil:
		return Event{}, fmt.Errorf("eventstore: append %s to %s: %w", a.Type, p.subject, err)
	case ack.Duplicate:
		s.logger.DebugContext(ctx, "duplicate append", "idempotency_key", a.IdempotencyKey, "stream", ack.Stream, "seq", ack.Sequence)
		return s.original(ctx, ack.Stream, ack.Sequence, a)
	}
	ev.Stream, ev.Sequence = ack.Stream, ack.Sequence
	if err := failpoint.Inject(ctx, failpoint.AppendBeforeReply); err != nil {
		return Event{}, fmt.Errorf("eventstore: append %s: %w", a.Type, err)
	}
	return ev, nil
}

// errCodeDuplicateInProcess is a clustered stream's answer to a message whose Nats-Msg-Id belongs to
// a message it is still replicating ("duplicate message id is in process").
const errCodeDuplicateInProcess jetstream.ErrorCode = 10158

// Bounds of the waits for a clustered stream to settle (see publish and resolveConflict).
const (
	settleFirstDelay = 5 * time.Millisecond
	settleMaxDelay   = 100 * time.Millisecond
	settleTimeout    = 2 * time.Second
)

// publish publishes an append. A repeat that reaches a clustered stream while its original is still
// being replicated is refused as in process; publish sends it again until the original is stored and
// the repeat resolves to it as a duplicate (or settleTimeout has passed).
func (s *Store) publish(ctx context.Context, msg *nats.Msg, opts []jetstream.PublishOpt) (*jetstream.PubAck, error) {
	delay, deadline := settleFirstDelay, time.Now().Add(settleTimeout)
	for {
		ack, err := s.js.PublishMsg(ctx, msg, opts...)
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || apiErr.ErrorCode != errCodeDuplicateInProcess || time.Now().After(deadline) {
			return ack, err
		}
		if !sleepCtx(ctx, delay) {
			return ack, err
		}
		delay = min(2*delay, settleMaxDelay)
	}
}

// sleepCtx waits for d and reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// isWrongLastSequence reports whether err is the server's answer to a failed expected-sequence check.
func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// resolveConflict tells a genuine conflict from a repeated append: a single server checks the
// expected sequence before the duplicate window, so a repeat of an append that has already
// succeeded fails the sequence check. It looks for the key among the aggregate's newer events.
//
// A clustered stream also refuses an append while another append to the same aggregate is being
// replicated, before that one is stored, and a replica may answer the reads a moment behind the
// leader. While the reads still show the aggregate at the expected version, which the failed check
// rules out, it reads again for up to settleTimeout.
func (s *Store) resolveConflict(ctx context.Context, stream, aggSubject string, a Append) (Event, error) {
	delay, deadline := settleFirstDelay, time.Now().Add(settleTimeout)
	for {
		var (
			actual uint64
			found  *rawMsg
		)
		err := s.scan(ctx, stream, aggSubject, a.ExpectedVersion+1, func(m rawMsg) error {
			actual = m.seq
			if found == nil && m.header.Get(jetstream.MsgIDHeader) == a.msgID() {
				found = &m
			}
			return nil
		})
		if err != nil {
			return Event{}, fmt.Errorf("eventstore: append %s: reading %s after conflict: %w", a.Type, aggSubject, err)
		}
		if found != nil {
			s.logger.DebugContext(ctx, "repeated append", "idempotency_key", a.IdempotencyKey, "stream", stream, "seq", found.seq)
			return s.checkOriginal(*found, a)
		}
		if actual == 0 {
			if actual, err = s.lastSeq(ctx, stream, aggSubject); err != nil {
				return Event{}, fmt.Errorf("eventstore: append %s: reading %s after conflict: %w", a.Type, aggSubject, err)
			}
		}
		if actual != a.ExpectedVersion || time.Now().After(deadline) || !sleepCtx(ctx, delay) {
			return Event{}, &ConflictError{Aggregate: aggSubject, Expected: a.ExpectedVersion, Actual: actual}
		}
		delay = min(2*delay, settleMaxDelay)
	}
}

// original returns the event a duplicate append resolved to.
func (s *Store) original(ctx context.Context, stream string, seq uint64, a Append) (Event, error) {
	m, err := s.getSeq(ctx, stream, seq)
	if err != nil {
		return Event{}, fmt.Errorf("eventstore: append %s: reading original event %s/%d: %w", a.Type, stream, seq, err)
	}
	return s.checkOriginal(m, a)
}

func (s *Store) checkOriginal(m rawMsg, a Append) (Event, error) {
	ev, err := m.event()
	if err != nil {
		return Event{}, err
	}
	if ev.Metadata.Tenant != a.Tenant || ev.AggregateType != a.AggregateType || ev.AggregateID != a.AggregateID || ev.Type != a.Type {
		return Event{}, fmt.Errorf("%w: key %q produced %s on %s (%s/%d)", ErrIdempotencyKeyReused, a.IdempotencyKey, ev.Type, m.subject, m.stream, m.seq)
	}
	return ev, nil
}

// Load returns every event of one aggregate in order and its version (the last event's sequence;
// 0 and no events if it does not exist). It reads with batched direct gets: one round trip for
// aggregates of up to a few hundred events. In a cluster a replica may answer slightly behind the
// leader; a decision made on such a read fails its Append with ErrConflict and is retried.
func (s *Store) Load(ctx context.Context, tenant, aggType, aggID string) ([]Event, uint64, error) {
	if err := checkTenant("tenant", tenant); err != nil {
		return nil, 0, err
	}
	if err := checkAggregateType("aggregate_type", aggType); err != nil {
		return nil, 0, err
	}
	if err := checkToken("aggregate_id", aggID); err != nil {
		return nil, 0, err
	}
	stream, err := s.streamFor(ctx, tenant, aggType, aggID)
	if err != nil {
		return nil, 0, err
	}
	var events []Event
	err = s.scan(ctx, stream, AggregateSubject(tenant, aggType, aggID), 1, func(m rawMsg) error {
		ev, err := m.event()
		if err != nil {
			return err
		}
		events = append(events, ev)
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("eventstore: load %s/%s/%s: %w", tenant, aggType, aggID, err)
	}
	if len(events) == 0 {
		return nil, 0, nil
	}
	return events, events[len(events)-1].Sequence, nil
}

// Publish stores one event unconditionally on subject, for the telemetry and alert streams
// (telemetry.<tenant>.<kind>, alerts.<tenant>.<kind>). The subject's second token must be
// md.Tenant. The generated ce-id doubles as Nats-Msg-Id, so the client's own retries are not
// stored twice. Aggregate events are written with Append only.
func (s *Store) Publish(ctx context.Context, subject, typ, ceSubject string, data proto.Message, md Metadata) (Event, error) {
	return s.publishEvent(ctx, "", subject, typ, ceSubject, data, md)
}

// PublishWithID is Publish with the event id chosen by the caller (a UUID): an event derived from
// another stored event keeps one id however often it is published again, so the stream's duplicate
// window and consumers that de-duplicate by event id keep it once.
func (s *Store) PublishWithID(ctx context.Context, id, subject, typ, ceSubject string, data proto.Message, md Metadata) (Event, error) {
	if _, err := uuid.Parse(id); err != nil {
		return Event{}, invalid("id", "%q is not a UUID", id)
	}
	return s.publishEvent(ctx, id, subject, typ, ceSubject, data, md)
}

// publishEvent is Publish with the given event id, or a new UUIDv7 when id is empty.
func (s *Store) publishEvent(ctx context.Context, id, subject, typ, ceSubject string, data proto.Message, md Metadata) (Event, error) {
	if err := checkSubject("subject", subject); err != nil {
		return Event{}, err
	}
	tokens := strings.Split(subject, ".")
	if tokens[0] == SubjectRoot {
		return Event{}, invalid("subject", "%q is an aggregate subject; use Append", subject)
	}
	if err := checkTenant("metadata.tenant", md.Tenant); err != nil {
		return Event{}, err
	}
	if len(tokens) < 2 || tokens[1] != md.Tenant {
		return Event{}, invalid("subject", "%q must have the tenant %q as its second token", subject, md.Tenant)
	}
	if typ == "" {
		return Event{}, invalid("type", "must not be empty")
	}
	if err := checkHeaderValue("type", typ); err != nil {
		return Event{}, err
	}
	if err := checkHeaderValue("subject", ceSubject); err != nil {
		return Event{}, err
	}
	if data == nil {
		return Event{}, invalid("data", "must not be nil")
	}
	if err := checkMetadata(md, false); err != nil {
		return Event{}, err
	}
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(data)
	if err != nil {
		return Event{}, fmt.Errorf("eventstore: marshal %s: %w", typ, err)
	}
	if id == "" {
		u, err := uuid.NewV7()
		if err != nil {
			return Event{}, fmt.Errorf("eventstore: event id: %w", err)
		}
		id = u.String()
	}
	ev := Event{
		ID:              id,
		Type:            typ,
		Source:          s.source,
		Subject:         ceSubject,
		Time:            s.clock().UTC(),
		Metadata:        md,
		ExpectedVersion: AnyVersion,
		DataSchema:      string(data.ProtoReflect().Descriptor().FullName()),
		Data:            payload,
	}
	ack, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: ev.header(), Data: payload}, jetstream.WithMsgID(ev.ID))
	if err != nil {
		return Event{}, fmt.Errorf("eventstore: publish %s to %s: %w", typ, subject, err)
	}
	ev.Stream, ev.Sequence = ack.Stream, ack.Sequence
	return ev, nil
}
