package grpcx

import (
	"context"

	"go.opentelemetry.io/otel/propagation"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
)

// EventMetadata is the event metadata of the current call: the tenant, the authenticated principal
// as actor (and the user it acts for), the request id as correlation id and the W3C trace context. Without a principal the
// actor is empty, which eventstore.Append refuses: nothing is recorded anonymously.
func EventMetadata(ctx context.Context, tenant string) eventstore.Metadata {
	md := eventstore.Metadata{Tenant: tenant, CorrelationID: RequestID(ctx), Traceparent: traceparent(ctx)}
	if p, ok := authn.PrincipalFrom(ctx); ok && p != nil {
		kind := eventstore.ActorKind(p.Kind)
		if !kind.Valid() {
			kind = eventstore.ActorHuman
		}
		md.Actor = eventstore.Actor{ID: p.ID, Kind: kind}
		md.OnBehalfOf = p.OnBehalfOf
	}
	return md
}

// traceparent is the W3C traceparent of the span in ctx, or "" when there is none.
func traceparent(ctx context.Context) string {
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	return carrier.Get("traceparent")
}
