package oauth_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"

	"github.com/agentid/agentid/services/issuer/internal/agents"
	"github.com/agentid/agentid/services/issuer/internal/oauth"
)

// projectedAgents answers the token endpoint from the issuer's real agents projection.
type projectedAgents struct{ *agents.State }

func (p projectedAgents) Check(_ context.Context, name string) (registryv1.AgentState, error) {
	return p.AgentState(name), nil
}

// agentEvent is an AGENTS event of tenant acme, agent clientID, at sequence seq.
func agentEvent(t *testing.T, typ string, seq uint64, msg proto.Message) eventstore.Event {
	t.Helper()
	data, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return eventstore.Event{ID: typ + "-id", Type: typ, Metadata: eventstore.Metadata{Tenant: tenant}, AggregateType: "agent",
		AggregateID: clientID, Sequence: seq, Time: time.Now(), DataSchema: string(msg.ProtoReflect().Descriptor().FullName()), Data: data}
}

// TestAgentUpdateRemovingAScopeIsNotGranted: once the issuer's projection has applied an agent.updated
// that no longer lists a scope of the agent's client, the token endpoint refuses that scope and leaves
// it out of the default grant; an EXPIRED agent gets no token.
func TestAgentUpdateRemovingAScopeIsNotGranted(t *testing.T) {
	const agent = "tenants/" + tenant + "/agents/" + clientID
	state := agents.NewState()
	f := newCoreWith(t, func(c *oauth.Config) { c.Agents = projectedAgents{state} })
	apply := func(e eventstore.Event) {
		t.Helper()
		if err := state.Apply(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	token := func(extra ...string) (*oauth.TokenResponse, *oauth.Error) {
		return f.srv.Token(context.Background(), tenant, oauth.Request{
			ContentType: oauth.FormContentType, Body: strings.NewReader(form(f.assertion(t, issuer, time.Minute), extra...)),
		})
	}
	apply(agentEvent(t, agents.EventAgentRegistered, 1, &registryv1.AgentRegistered{Agent: &registryv1.Agent{Name: agent, Scopes: []string{"orders.read", "orders.write"}}}))
	apply(agentEvent(t, agents.EventAgentActivated, 2, &registryv1.AgentActivated{Name: agent}))
	if resp, oerr := token(); oerr != nil || resp.Scope != "orders.read orders.write" {
		t.Fatalf("before the update: %v, %v", resp, oerr)
	}
	apply(agentEvent(t, agents.EventAgentUpdated, 3, &registryv1.AgentUpdated{Name: agent, ChangedFields: []string{"scopes"},
		Agent: &registryv1.Agent{Scopes: []string{"orders.read"}}}))
	if resp, oerr := token(); oerr != nil || resp.Scope != "orders.read" {
		t.Fatalf("default grant after the update: %v, %v; want orders.read only", resp, oerr)
	}
	if resp, oerr := token("scope", "orders.write"); oerr == nil || oerr.Code != oauth.ErrInvalidScope {
		t.Fatalf("orders.write after the update: %v, %v; want invalid_scope", resp, oerr)
	}
	// An update that gives the scope back grants it again; other fields change nothing.
	apply(agentEvent(t, agents.EventAgentUpdated, 4, &registryv1.AgentUpdated{Name: agent, ChangedFields: []string{"scopes", "purpose"},
		Agent: &registryv1.Agent{Scopes: []string{"orders.read", "orders.write"}, Purpose: "p"}}))
	if resp, oerr := token("scope", "orders.write"); oerr != nil || resp.Scope != "orders.write" {
		t.Fatalf("orders.write given back: %v, %v", resp, oerr)
	}
	apply(agentEvent(t, agents.EventAgentExpired, 5, &registryv1.AgentExpired{Name: agent}))
	if resp, oerr := token(); oerr == nil || oerr.Code != oauth.ErrInvalidClient {
		t.Fatalf("EXPIRED agent: %v, %v; want invalid_client", resp, oerr)
	}
}
