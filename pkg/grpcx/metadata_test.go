package grpcx_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
)

func TestEventMetadata(t *testing.T) {
	ctx := grpcx.WithRequestID(context.Background(), "req-1")
	if md := grpcx.EventMetadata(ctx, "acme"); md.Actor.ID != "" || md.Tenant != "acme" || md.CorrelationID != "req-1" {
		t.Fatalf("without a principal: %+v", md)
	}
	ctx = authn.WithPrincipal(ctx, &authn.Principal{ID: "agt_1", Kind: authn.KindAgent, Tenant: "acme", OnBehalfOf: "alice"})
	md := grpcx.EventMetadata(ctx, "acme")
	want := eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "agt_1", Kind: eventstore.ActorAgent}, OnBehalfOf: "alice", CorrelationID: "req-1"}
	if md != want {
		t.Fatalf("got %+v, want %+v", md, want)
	}
}

func TestEventMetadataCarriesTheTraceContext(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	if got, want := grpcx.EventMetadata(ctx, "acme").Traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"; got != want {
		t.Fatalf("traceparent %q, want %q", got, want)
	}
	if got := grpcx.EventMetadata(context.Background(), "acme").Traceparent; got != "" {
		t.Fatalf("traceparent without a span: %q", got)
	}
}
