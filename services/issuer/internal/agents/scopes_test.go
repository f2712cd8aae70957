package agents_test

import (
	"context"
	"slices"
	"testing"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"

	"github.com/agentid/agentid/services/issuer/internal/agents"
)

func TestStateKeepsRemovedScopes(t *testing.T) {
	ctx := context.Background()
	s := agents.NewState()
	steps := []struct {
		name string
		seq  uint64
		typ  string
		msg  *registryv1.AgentScopesRemoved
		want []string
	}{
		{"first removal", 3, agents.EventAgentScopesRemoved, &registryv1.AgentScopesRemoved{Name: agentName, Scopes: []string{"crm.write"}}, []string{"crm.write"}},
		{"second removal adds", 4, agents.EventAgentScopesRemoved, &registryv1.AgentScopesRemoved{Name: agentName, Scopes: []string{"crm.export", "crm.write"}}, []string{"crm.write", "crm.export"}},
		{"redelivered older event changes nothing", 2, agents.EventAgentScopesRemoved, &registryv1.AgentScopesRemoved{Name: agentName, Scopes: []string{"faq.read"}}, []string{"crm.write", "crm.export"}},
	}
	if err := s.Apply(ctx, event(t, agents.EventAgentRegistered, 1, registered(agentName))); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(ctx, event(t, agents.EventAgentActivated, 2, &registryv1.AgentActivated{Name: agentName})); err != nil {
		t.Fatal(err)
	}
	if got := s.RemovedScopes(agentName); got != nil {
		t.Fatalf("before any removal: %v", got)
	}
	for _, st := range steps {
		if err := s.Apply(ctx, event(t, st.typ, st.seq, st.msg)); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := s.RemovedScopes(agentName); !slices.Equal(got, st.want) {
			t.Fatalf("%s: removed %v, want %v", st.name, got, st.want)
		}
		if got := s.AgentState(agentName); got != registryv1.AgentState_AGENT_STATE_ACTIVE {
			t.Fatalf("%s: state %s, want ACTIVE (a removal leaves the state)", st.name, got)
		}
	}
	if got := s.RemovedScopes("tenants/acme/agents/agt_other"); got != nil {
		t.Fatalf("another agent: %v", got)
	}
	// An event naming an agent of another tenant is refused.
	bad := event(t, agents.EventAgentScopesRemoved, 9, &registryv1.AgentScopesRemoved{Name: "tenants/other/agents/agt_1", Scopes: []string{"x.y"}})
	if err := s.Apply(ctx, bad); err == nil {
		t.Fatal("a removal naming another tenant's agent was applied")
	}
}
