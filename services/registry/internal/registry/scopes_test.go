package registry_test

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

func TestRemoveAgentScopes(t *testing.T) {
	e := newEnv(t)
	e.createTenant(t, "acme")
	ctx := t.Context()
	a := e.activeAgent(t, "acme", "rs1")
	id := a.GetAgentId()

	got, err := e.svc.RemoveAgentScopes(ctx, registry.RemoveAgentScopes{Tenant: "acme", AgentID: id,
		Scopes: []string{"ticket.search.own", "other.read"}, Reason: "unused for 90 days", Ticket: "review:q4", Etag: a.GetEtag(), RequestID: "rm-1"}, admin)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.GetScopes(), []string{"faq.read"}) || got.GetState() != registryv1.AgentState_AGENT_STATE_ACTIVE {
		t.Fatalf("after removal: scopes %v state %v", got.GetScopes(), got.GetState())
	}
	evs := e.agentEvents(t, "acme", id)
	last := evs[len(evs)-1]
	d, err := eventstore.DecodeAs[*registryv1.AgentScopesRemoved](last)
	if err != nil {
		t.Fatal(err)
	}
	want := &registryv1.AgentScopesRemoved{Name: a.GetName(), Scopes: []string{"ticket.search.own"}, RemainingScopes: []string{"faq.read"},
		Reason: "unused for 90 days", Ticket: "review:q4"}
	if last.Type != registry.EventAgentScopesRemoved || !proto.Equal(d, want) {
		t.Fatalf("stored %s %v, want %s %v", last.Type, d, registry.EventAgentScopesRemoved, want)
	}
	if read, err := e.svc.GetAgent(ctx, "acme", id, 0); err != nil || !proto.Equal(read, got) {
		t.Fatalf("read model: %v %v, want %v", read, err, got)
	}

	// Removing scopes the agent no longer holds writes nothing, whatever the request id or etag.
	before := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamAgents)
	for _, rid := range []string{"rm-1", "rm-2", ""} {
		again, err := e.svc.RemoveAgentScopes(ctx, registry.RemoveAgentScopes{Tenant: "acme", AgentID: id,
			Scopes: []string{"ticket.search.own"}, Reason: "again", Etag: "1", RequestID: rid}, admin)
		if err != nil || !slices.Equal(again.GetScopes(), []string{"faq.read"}) {
			t.Fatalf("remove again (request id %q): %v %v", rid, again, err)
		}
	}
	if after := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamAgents); after != before {
		t.Fatalf("a repeated removal wrote %d events", after-before)
	}

	// A suspended agent loses scopes too; a retiring one does not.
	sus, err := e.svc.SuspendAgent(ctx, registry.SuspendAgent{Tenant: "acme", AgentID: id, Reason: "review", Cause: "review:q4", RequestID: "sus"}, admin)
	if err != nil {
		t.Fatal(err)
	}
	b := e.activeAgent(t, "acme", "rs2")
	if _, err := e.svc.RetireAgent(ctx, registry.RetireAgent{Tenant: "acme", AgentID: b.GetAgentId(), Reason: "done", RequestID: "ret"}, admin); err != nil {
		t.Fatal(err)
	}
	before = testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamAgents)
	_, err = e.svc.RemoveAgentScopes(ctx, registry.RemoveAgentScopes{Tenant: "acme", AgentID: b.GetAgentId(), Scopes: []string{"faq.read"}, Reason: "x", RequestID: "rm-3"}, admin)
	wantError(t, err, errs.KindFailedPrecondition, "", "")
	if got, err := e.svc.RemoveAgentScopes(ctx, registry.RemoveAgentScopes{Tenant: "acme", AgentID: id, Scopes: []string{"faq.read"}, Reason: "x", Etag: sus.GetEtag(), RequestID: "rm-4"}, admin); err != nil || len(got.GetScopes()) != 0 {
		t.Fatalf("suspended agent: %v %v", got, err)
	}
	if after := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamAgents); after != before+1 {
		t.Fatalf("wrote %d events, want 1 (the suspended agent's removal only)", after-before)
	}
}

func TestRemoveAgentScopesRefusesBadInput(t *testing.T) {
	e := newEnv(t)
	e.createTenant(t, "acme")
	a := e.activeAgent(t, "acme", "bad")
	tests := []struct {
		name  string
		c     registry.RemoveAgentScopes
		kind  errs.Kind
		field string
	}{
		{"no scopes", registry.RemoveAgentScopes{Reason: "x"}, errs.KindInvalidArgument, "scopes"},
		{"bad scope", registry.RemoveAgentScopes{Scopes: []string{"*"}, Reason: "x"}, errs.KindInvalidArgument, "scopes"},
		{"too many scopes", registry.RemoveAgentScopes{Scopes: slices.Repeat([]string{"faq.read"}, 101), Reason: "x"}, errs.KindInvalidArgument, "scopes"},
		{"no reason", registry.RemoveAgentScopes{Scopes: []string{"faq.read"}}, errs.KindInvalidArgument, "reason"},
		{"stale etag", registry.RemoveAgentScopes{Scopes: []string{"faq.read"}, Reason: "x", Etag: "1"}, errs.KindConflict, ""},
		{"unknown agent", registry.RemoveAgentScopes{AgentID: "agt_unknown", Scopes: []string{"faq.read"}, Reason: "x"}, errs.KindNotFound, ""},
	}
	before := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamAgents)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.c
			c.Tenant = "acme"
			if c.AgentID == "" {
				c.AgentID = a.GetAgentId()
			}
			_, err := e.svc.RemoveAgentScopes(t.Context(), c, admin)
			wantError(t, err, tt.kind, "", tt.field)
			if tt.field != "" {
				wantFieldMessage(t, err, tt.field)
			}
		})
	}
	if after := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamAgents); after != before {
		t.Fatalf("refused removals wrote %d events", after-before)
	}
}
