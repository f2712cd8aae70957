package eventsapi

import (
	"encoding/json"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/eventstore"
	eventsv1 "github.com/agentid/agentid/proto/gen/go/agentid/events/v1"
)

// DataSchemaPrefix prefixes the payload's protobuf message name in the dataschema attribute of
// CloudEvents JSON, which must be a URI.
const DataSchemaPrefix = "urn:agentid:proto:"

// cloudEvent is the structured-mode CloudEvents 1.0 JSON object of one event; the platform's
// envelope extensions keep the names of their ce- headers.
type cloudEvent struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject,omitempty"`
	Time            string          `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	DataSchema      string          `json:"dataschema,omitempty"`
	Tenant          string          `json:"tenant,omitempty"`
	ActorID         string          `json:"actorid,omitempty"`
	ActorKind       string          `json:"actorkind,omitempty"`
	OnBehalfOf      string          `json:"onbehalfof,omitempty"`
	CorrelationID   string          `json:"correlationid,omitempty"`
	CausationID     string          `json:"causationid,omitempty"`
	Traceparent     string          `json:"traceparent,omitempty"`
	AggregateType   string          `json:"aggregatetype,omitempty"`
	AggregateID     string          `json:"aggregateid,omitempty"`
	Stream          string          `json:"stream"`
	Sequence        string          `json:"sequence"`
	Data            json.RawMessage `json:"data,omitempty"`
}

// cloudEventJSON renders e as CloudEvents JSON with its redacted payload msg (nil: no data).
func cloudEventJSON(e eventstore.Event, msg proto.Message) ([]byte, error) {
	ce := cloudEvent{
		SpecVersion: eventstore.SpecVersion, ID: e.ID, Source: e.Source, Type: e.Type, Subject: e.Subject,
		Time: e.Time.UTC().Format(time.RFC3339Nano), DataContentType: "application/json",
		Tenant: e.Metadata.Tenant, ActorID: e.Metadata.Actor.ID, ActorKind: string(e.Metadata.Actor.Kind),
		OnBehalfOf: e.Metadata.OnBehalfOf, CorrelationID: e.Metadata.CorrelationID,
		CausationID: e.Metadata.CausationID, Traceparent: e.Metadata.Traceparent,
		AggregateType: e.AggregateType, AggregateID: e.AggregateID,
		Stream: e.Stream, Sequence: strconv.FormatUint(e.Sequence, 10),
	}
	if e.DataSchema != "" {
		ce.DataSchema = DataSchemaPrefix + e.DataSchema
	}
	if msg != nil {
		data, err := protojson.Marshal(msg)
		if err != nil {
			return nil, err
		}
		ce.Data = data
	}
	return json.Marshal(ce)
}

// protoEvent renders e as the Event envelope with its redacted payload msg (nil: no data).
func protoEvent(e eventstore.Event, msg proto.Message) (*eventsv1.Event, error) {
	out := &eventsv1.Event{
		Id: e.ID, Type: e.Type, Source: e.Source, Subject: e.Subject, Time: timestamppb.New(e.Time),
		SpecVersion: eventstore.SpecVersion, DataContentType: eventstore.ContentTypeProtobuf, DataSchema: e.DataSchema,
		Tenant: e.Metadata.Tenant, ActorId: e.Metadata.Actor.ID, ActorKind: string(e.Metadata.Actor.Kind),
		OnBehalfOf: e.Metadata.OnBehalfOf, CorrelationId: e.Metadata.CorrelationID,
		CausationId: e.Metadata.CausationID, Traceparent: e.Metadata.Traceparent,
		AggregateType: e.AggregateType, AggregateId: e.AggregateID, Stream: e.Stream, Sequence: e.Sequence,
	}
	if msg != nil {
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
		if err != nil {
			return nil, err
		}
		out.Data = data
	}
	return out, nil
}
