package grpcx

import (
	"context"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
)

// EventMetadata is the event metadata of the current call: the tenant, the authenticated principal
// as actor (and the user it acts for), and the request id as correlation id. Without a principal the
// actor is empty, which eventstore.Append refuses: nothing is recorded anonymously.
func EventMetadata(ctx context.Context, tenant string) eventstore.Metadata {
	md := eventstore.Metadata{Tenant: tenant, CorrelationID: RequestID(ctx)}
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
