package registry_test

import (
	"context"
	"testing"

	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"

	"github.com/agentid/agentid/services/registry/internal/registry"
)

// TestProjectionsRefuseForgedEvents: events appended around the commands (a leaked NATS credential
// that may publish on AGENTS or TENANTS) that name another tenant's agent or tenant are refused as
// permanent failures (the failed-event log keeps them) and change nothing.
func TestProjectionsRefuseForgedEvents(t *testing.T) {
	ctx := context.Background()
	agentTests := []struct {
		name        string
		agentName   string
		wantRefused bool
	}{
		{"its own name", registry.AgentName("acme", "agt-1"), false},
		{"another tenant's agent", registry.AgentName("beta", "agt-1"), true},
		{"another agent id", registry.AgentName("acme", "agt-2"), true},
		{"no name", "", true},
	}
	for _, tt := range agentTests {
		t.Run("agent: "+tt.name, func(t *testing.T) {
			p := registry.NewAgentProjection()
			ev := history(t, "acme", registry.AggregateAgent, "agt-1",
				registry.AgentRegistered(&registryv1.Agent{Name: tt.agentName, AgentId: "agt-1", DisplayName: "x"}))[0]
			err := p.Apply(ctx, ev)
			_, exists := p.Get("acme", "agt-1")
			if tt.wantRefused {
				if !eventstore.IsPermanent(err) || exists {
					t.Fatalf("Apply = %v (agent exists: %v), want a permanent refusal and no agent", err, exists)
				}
				return
			}
			if err != nil || !exists {
				t.Fatalf("Apply = %v (agent exists: %v), want it applied", err, exists)
			}
		})
	}
	tenantTests := []struct {
		name, eventTenant, aggID, tenantID string
		wantRefused                        bool
	}{
		{"its own tenant", "acme", "acme", "acme", false},
		{"aggregate of another tenant", "acme", "system", "system", true},
		{"creates another tenant", "acme", "acme", "system", true},
	}
	for _, tt := range tenantTests {
		t.Run("tenant: "+tt.name, func(t *testing.T) {
			p := registry.NewTenantProjection()
			ev := history(t, tt.eventTenant, registry.AggregateTenant, tt.aggID,
				registry.TenantCreated(&registryv1.Tenant{Name: registry.TenantName(tt.tenantID), TenantId: tt.tenantID}))[0]
			err := p.Apply(ctx, ev)
			n := len(p.Snapshot())
			if tt.wantRefused {
				if !eventstore.IsPermanent(err) || n != 0 {
					t.Fatalf("Apply = %v (%d tenants), want a permanent refusal and no tenant", err, n)
				}
				return
			}
			if err != nil || n != 1 {
				t.Fatalf("Apply = %v (%d tenants), want it applied", err, n)
			}
		})
	}
}
