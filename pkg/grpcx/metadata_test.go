package grpcx_test

import (
	"context"
	"testing"

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
