package eventstore

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Envelope header names: CloudEvents NATS protocol binding, binary content mode, plus the platform's
// extension attributes.
const (
	HeaderSpecVersion      = "ce-specversion"
	HeaderID               = "ce-id"
	HeaderType             = "ce-type"
	HeaderSource           = "ce-source"
	HeaderSubject          = "ce-subject"
	HeaderTime             = "ce-time"
	HeaderContentType      = "content-type"
	HeaderDataSchema       = "ce-dataschema"
	HeaderTenant           = "ce-tenant"
	HeaderActorID          = "ce-actorid"
	HeaderActorKind        = "ce-actorkind"
	HeaderOnBehalfOf       = "ce-onbehalfof"
	HeaderCorrelationID    = "ce-correlationid"
	HeaderCausationID      = "ce-causationid"
	HeaderTraceparent      = "ce-traceparent"
	HeaderAggregateType    = "ce-aggregatetype"
	HeaderAggregateID      = "ce-aggregateid"
	HeaderAggregateVersion = "ce-aggregateversion"
)

const (
	// SpecVersion is the CloudEvents version of the envelope.
	SpecVersion = "1.0"
	// ContentTypeProtobuf is the content type of every event payload.
	ContentTypeProtobuf = "application/protobuf"
)

// AnyVersion as Append.ExpectedVersion skips the optimistic concurrency check.
const AnyVersion uint64 = math.MaxUint64

// ErrSchemaMismatch marks a typed decode of an event that carries another message type.
var ErrSchemaMismatch = errors.New("eventstore: data schema mismatch")

// ActorKind says what kind of principal caused an event.
type ActorKind string

// The kinds of actor.
const (
	ActorHuman   ActorKind = "human"
	ActorAgent   ActorKind = "agent"
	ActorService ActorKind = "service"
)

// Valid reports whether k is one of the defined kinds.
func (k ActorKind) Valid() bool {
	return k == ActorHuman || k == ActorAgent || k == ActorService
}

// Actor is the principal that caused an event.
type Actor struct {
	// ID is the principal id (a user, an agent's client id, a service identity).
	ID string
	// Kind is the kind of principal.
	Kind ActorKind
}

// Metadata is the context an event is recorded with: who, for whom, and as part of what.
type Metadata struct {
	// Tenant owns the event; for Append it defaults to Append.Tenant and must equal it.
	Tenant string
	// Actor is who caused the event; required for Append.
	Actor Actor
	// OnBehalfOf is the user a delegated action was performed for, if any.
	OnBehalfOf string
	// CorrelationID is the originating request id.
	CorrelationID string
	// CausationID is the id of the event or command that caused this event.
	CausationID string
	// Traceparent is the W3C trace context of the originating request.
	Traceparent string
}

// Event is one stored event: the CloudEvents envelope, where it is stored, and its protobuf payload.
type Event struct {
	// ID is the CloudEvents id (ce-id), a UUIDv7.
	ID string
	// Type is the event type (ce-type), e.g. "agent.registered".
	Type string
	// Source is the producing service (ce-source), e.g. "agentid/registry".
	Source string
	// Subject is the resource the event is about (ce-subject), e.g. "tenants/t/agents/a".
	Subject string
	// Time is when the event was recorded (ce-time), in UTC.
	Time time.Time
	// Metadata is the tenant, actor and request context.
	Metadata Metadata
	// AggregateType is the aggregate's type, e.g. "agent"; empty for published (non-aggregate) events.
	AggregateType string
	// AggregateID is the aggregate's id; empty for published events.
	AggregateID string
	// ExpectedVersion is the aggregate version the append was conditioned on (ce-aggregateversion);
	// AnyVersion when it was unconditional. The aggregate's version after this event is Sequence.
	ExpectedVersion uint64
	// Stream is the JetStream stream holding the event.
	Stream string
	// Sequence is the event's stream sequence.
	Sequence uint64
	// DataSchema is the full name of the payload's protobuf message (ce-dataschema).
	DataSchema string
	// Data is the protobuf-encoded payload.
	Data []byte
}

// Decode unmarshals the payload into a new message of the type named by DataSchema, looked up in
// protoregistry.GlobalTypes. It fails with ErrUnknownSchema when that type is not linked in.
func (e Event) Decode() (proto.Message, error) {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(e.DataSchema))
	if err != nil {
		return nil, fmt.Errorf("%w: %q (event %s, type %s): %v", ErrUnknownSchema, e.DataSchema, e.ID, e.Type, err)
	}
	m := mt.New().Interface()
	if err := proto.Unmarshal(e.Data, m); err != nil {
		return nil, fmt.Errorf("eventstore: decode event %s (%s): %w", e.ID, e.DataSchema, err)
	}
	return m, nil
}

// DecodeAs unmarshals the payload into a new T, failing with ErrSchemaMismatch if the event carries
// another message type. T is a generated message pointer type such as *registryv1.AgentRegistered.
func DecodeAs[T proto.Message](e Event) (T, error) {
	var zero T
	if any(zero) == nil {
		return zero, fmt.Errorf("eventstore: DecodeAs needs a concrete message type, not %T", (*T)(nil))
	}
	m, ok := zero.ProtoReflect().New().Interface().(T)
	if !ok {
		return zero, fmt.Errorf("eventstore: cannot instantiate %T", zero)
	}
	if want := string(m.ProtoReflect().Descriptor().FullName()); want != e.DataSchema {
		return zero, fmt.Errorf("%w: event %s (%s) carries %q, want %q", ErrSchemaMismatch, e.ID, e.Type, e.DataSchema, want)
	}
	if err := proto.Unmarshal(e.Data, m); err != nil {
		return zero, fmt.Errorf("eventstore: decode event %s (%s): %w", e.ID, e.DataSchema, err)
	}
	return m, nil
}

// header renders the envelope as NATS headers.
func (e Event) header() nats.Header {
	h := nats.Header{}
	set := func(k, v string) {
		if v != "" {
			h[k] = []string{v}
		}
	}
	set(HeaderSpecVersion, SpecVersion)
	set(HeaderID, e.ID)
	set(HeaderType, e.Type)
	set(HeaderSource, e.Source)
	set(HeaderSubject, e.Subject)
	set(HeaderTime, e.Time.UTC().Format(time.RFC3339Nano))
	set(HeaderContentType, ContentTypeProtobuf)
	set(HeaderDataSchema, e.DataSchema)
	set(HeaderTenant, e.Metadata.Tenant)
	set(HeaderActorID, e.Metadata.Actor.ID)
	set(HeaderActorKind, string(e.Metadata.Actor.Kind))
	set(HeaderOnBehalfOf, e.Metadata.OnBehalfOf)
	set(HeaderCorrelationID, e.Metadata.CorrelationID)
	set(HeaderCausationID, e.Metadata.CausationID)
	set(HeaderTraceparent, e.Metadata.Traceparent)
	set(HeaderAggregateType, e.AggregateType)
	set(HeaderAggregateID, e.AggregateID)
	if e.ExpectedVersion != AnyVersion && e.AggregateType != "" {
		set(HeaderAggregateVersion, strconv.FormatUint(e.ExpectedVersion, 10))
	}
	return h
}

// EventFromMsg decodes an event delivered by a JetStream consumer.
func EventFromMsg(m jetstream.Msg) (Event, error) {
	md, err := m.Metadata()
	if err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrMalformedEvent, err)
	}
	return EventFromRaw(md.Stream, md.Sequence.Stream, m.Subject(), m.Headers(), m.Data())
}

// EventFromRaw decodes an event from a stored message's parts, e.g. from a direct get or
// jetstream.RawStreamMsg. subject is the NATS subject, quoted in errors.
func EventFromRaw(stream string, seq uint64, subject string, h nats.Header, data []byte) (Event, error) {
	get := func(k string) string {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	fail := func(format string, args ...any) (Event, error) {
		return Event{}, fmt.Errorf("%w: %s seq %d (%s): %s", ErrMalformedEvent, stream, seq, subject, fmt.Sprintf(format, args...))
	}
	if v := get(HeaderSpecVersion); v != SpecVersion {
		return fail("%s is %q, want %q", HeaderSpecVersion, v, SpecVersion)
	}
	for _, k := range []string{HeaderID, HeaderType, HeaderSource, HeaderTime} {
		if get(k) == "" {
			return fail("missing %s", k)
		}
	}
	t, err := time.Parse(time.RFC3339Nano, get(HeaderTime))
	if err != nil {
		return fail("bad %s: %v", HeaderTime, err)
	}
	// An aggregate event's subject, agentid.<tenant>.<type>.<id>.<event>, and its headers name the same
	// tenant and aggregate: the headers of an event that reached a stream around Append (a publish
	// with a leaked credential, or a consumer delivering into another stream) are not trusted alone.
	if tokens := strings.Split(subject, "."); len(tokens) >= 5 && tokens[0] == SubjectRoot {
		if tokens[1] != get(HeaderTenant) || tokens[2] != get(HeaderAggregateType) || tokens[3] != get(HeaderAggregateID) {
			return fail("subject names tenant %q, aggregate %s/%s; headers tenant %q, aggregate %s/%s",
				tokens[1], tokens[2], tokens[3], get(HeaderTenant), get(HeaderAggregateType), get(HeaderAggregateID))
		}
	}
	expected := AnyVersion
	if v := get(HeaderAggregateVersion); v != "" {
		if expected, err = strconv.ParseUint(v, 10, 64); err != nil {
			return fail("bad %s: %v", HeaderAggregateVersion, err)
		}
	}
	return Event{
		ID:      get(HeaderID),
		Type:    get(HeaderType),
		Source:  get(HeaderSource),
		Subject: get(HeaderSubject),
		Time:    t.UTC(),
		Metadata: Metadata{
			Tenant:        get(HeaderTenant),
			Actor:         Actor{ID: get(HeaderActorID), Kind: ActorKind(get(HeaderActorKind))},
			OnBehalfOf:    get(HeaderOnBehalfOf),
			CorrelationID: get(HeaderCorrelationID),
			CausationID:   get(HeaderCausationID),
			Traceparent:   get(HeaderTraceparent),
		},
		AggregateType:   get(HeaderAggregateType),
		AggregateID:     get(HeaderAggregateID),
		ExpectedVersion: expected,
		Stream:          stream,
		Sequence:        seq,
		DataSchema:      get(HeaderDataSchema),
		Data:            data,
	}, nil
}
