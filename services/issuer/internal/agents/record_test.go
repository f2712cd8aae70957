package agents_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"

	"github.com/agentid/agentid/services/issuer/internal/agents"
)

// TestStateFollowsTheRecord: a proposal is PROPOSED, a submission PENDING, an expiry EXPIRED (not
// ACTIVE: no token); an update of the scopes sets the allowed scopes and gives back a removed scope it
// lists; an update of the expire time moves it; a re-driven older update changes nothing.
func TestStateFollowsTheRecord(t *testing.T) {
	ctx := context.Background()
	s := agents.NewState()
	expire := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	steps := []struct {
		name  string
		typ   string
		seq   uint64
		msg   proto.Message
		state registryv1.AgentState
	}{
		{"proposed", agents.EventAgentRegistered, 1, &registryv1.AgentRegistered{Agent: &registryv1.Agent{Name: agentName, State: registryv1.AgentState_AGENT_STATE_PROPOSED}}, registryv1.AgentState_AGENT_STATE_PROPOSED},
		{"submitted", agents.EventAgentSubmitted, 2, &registryv1.AgentSubmitted{Name: agentName}, registryv1.AgentState_AGENT_STATE_PENDING},
		{"activated", agents.EventAgentActivated, 3, &registryv1.AgentActivated{Name: agentName}, registryv1.AgentState_AGENT_STATE_ACTIVE},
		{"scope removed", agents.EventAgentScopesRemoved, 4, &registryv1.AgentScopesRemoved{Name: agentName, Scopes: []string{"crm.write"}}, registryv1.AgentState_AGENT_STATE_ACTIVE},
		{"updated", agents.EventAgentUpdated, 5, &registryv1.AgentUpdated{Name: agentName, ChangedFields: []string{"scopes", "expire_time"},
			Agent: &registryv1.Agent{Scopes: []string{"crm.read", "crm.write"}, ExpireTime: timestamppb.New(expire)}}, registryv1.AgentState_AGENT_STATE_ACTIVE},
		{"old update", agents.EventAgentUpdated, 4, &registryv1.AgentUpdated{Name: agentName, ChangedFields: []string{"scopes"},
			Agent: &registryv1.Agent{Scopes: []string{"crm.export"}}}, registryv1.AgentState_AGENT_STATE_ACTIVE},
	}
	for _, st := range steps {
		if err := s.Apply(ctx, event(t, st.typ, st.seq, st.msg)); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := s.AgentState(agentName); got != st.state {
			t.Fatalf("%s: state %s, want %s", st.name, got, st.state)
		}
	}
	if got, ok := s.AllowedScopes(agentName); !ok || !slices.Equal(got, []string{"crm.read", "crm.write"}) {
		t.Fatalf("allowed %v %v", got, ok)
	}
	if got := s.RemovedScopes(agentName); got != nil {
		t.Fatalf("removed %v: the update gave crm.write back", got)
	}
	if got, ok := s.ExpireTime(agentName); !ok || !got.Equal(expire) {
		t.Fatalf("expire %v %v, want %v", got, ok, expire)
	}
	if _, ok := s.AllowedScopes("tenants/acme/agents/agt_other"); ok {
		t.Fatal("an agent without updates has allowed scopes")
	}
	if err := s.Apply(ctx, event(t, agents.EventAgentExpired, 7, &registryv1.AgentExpired{Name: agentName})); err != nil {
		t.Fatal(err)
	}
	if got := s.AgentState(agentName); got != registryv1.AgentState_AGENT_STATE_EXPIRED {
		t.Fatalf("after agent.expired: %s", got)
	}
	if !slices.Contains(agents.LeavingActive, agents.EventAgentExpired) {
		t.Fatal("agent.expired does not revoke the agent's tokens")
	}
	bad := event(t, agents.EventAgentUpdated, 9, &registryv1.AgentUpdated{Name: "tenants/other/agents/agt_1", ChangedFields: []string{"scopes"}})
	if err := s.Apply(ctx, bad); err == nil {
		t.Fatal("an update naming another tenant's agent was applied")
	}
}
