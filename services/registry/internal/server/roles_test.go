package server_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// TestLifecycleRoleCannotCreateTenant: the lifecycle worker's role reads agents and records
// lifecycle decisions in every tenant, lists tenants and agents for its sweeps, and does nothing
// else: no tenants, no registrations, no retirements on request (only for an automated trigger); the
// role held outside tenant system grants nothing.
func TestLifecycleRoleCannotCreateTenant(t *testing.T) {
	h := newHarness(t)
	h.createTenant(t, "acme")
	ctx := t.Context()
	activated := h.register(t, acmeOwner, "roles-1")
	rejected := h.register(t, acmeOwner, "roles-2")

	refused := []struct {
		name  string
		token string
		call  func(context.Context) error
		want  codes.Code
	}{
		{"create tenant", worker, func(ctx context.Context) error {
			_, err := h.client.CreateTenant(ctx, &registryv1.CreateTenantRequest{TenantId: "initech", DisplayName: "Initech"})
			return err
		}, codes.PermissionDenied},
		{"role outside system lists tenants", acmeWorker, func(ctx context.Context) error {
			_, err := h.client.ListTenants(ctx, &registryv1.ListTenantsRequest{})
			return err
		}, codes.PermissionDenied},
		{"get tenant", worker, func(ctx context.Context) error {
			_, err := h.client.GetTenant(ctx, &registryv1.GetTenantRequest{Name: "tenants/acme"})
			return err
		}, codes.NotFound},
		{"register an agent", worker, func(ctx context.Context) error {
			_, err := h.client.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{Parent: "tenants/acme", Agent: agentInput(t)})
			return err
		}, codes.NotFound},
		{"role outside system lists agents", acmeWorker, func(ctx context.Context) error {
			_, err := h.client.ListAgents(ctx, &registryv1.ListAgentsRequest{Parent: "tenants/acme"})
			return err
		}, codes.PermissionDenied},
		{"retire an agent on request", worker, func(ctx context.Context) error {
			_, err := h.client.RetireAgent(ctx, &registryv1.RetireAgentRequest{Name: activated.GetName(), Reason: "r"})
			return err
		}, codes.PermissionDenied},
		{"retire an agent with trigger request", worker, func(ctx context.Context) error {
			_, err := h.client.RetireAgent(ctx, &registryv1.RetireAgentRequest{Name: activated.GetName(), Reason: "r", Trigger: "request"})
			return err
		}, codes.PermissionDenied},
		{"role outside system retires for ttl", acmeWorker, func(ctx context.Context) error {
			_, err := h.client.RetireAgent(ctx, &registryv1.RetireAgentRequest{Name: activated.GetName(), Reason: "r", Trigger: "ttl"})
			return err
		}, codes.PermissionDenied},
		{"role outside system activates", acmeWorker, func(ctx context.Context) error {
			_, err := h.client.ActivateAgent(ctx, &registryv1.ActivateAgentRequest{Name: activated.GetName(), DecisionId: "d", ApprovedBy: "x"})
			return err
		}, codes.PermissionDenied},
		{"role outside system reads", acmeWorker, func(ctx context.Context) error {
			_, err := h.client.GetAgent(ctx, &registryv1.GetAgentRequest{Name: activated.GetName()})
			return err
		}, codes.PermissionDenied},
	}
	agentsBefore := testkit.StreamMessages(t, h.store.JetStream(), eventstore.StreamAgents)
	tenantsBefore := testkit.StreamMessages(t, h.store.JetStream(), eventstore.StreamTenants)
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, tt.call(testkit.WithBearer(ctx, tt.token)), tt.want)
		})
	}
	agents := testkit.StreamMessages(t, h.store.JetStream(), eventstore.StreamAgents)
	tenants := testkit.StreamMessages(t, h.store.JetStream(), eventstore.StreamTenants)
	if agents != agentsBefore || tenants != tenantsBefore {
		t.Fatalf("refused calls wrote events: AGENTS %d→%d, TENANTS %d→%d", agentsBefore, agents, tenantsBefore, tenants)
	}

	// What its activities do, it may do: its sweeps list the tenants and their agents.
	as := testkit.WithBearer(ctx, worker)
	ts, err := h.client.ListTenants(as, &registryv1.ListTenantsRequest{})
	if err != nil || len(ts.GetTenants()) == 0 {
		t.Fatalf("worker lists tenants: %v %v", ts, err)
	}
	list, err := h.client.ListAgents(as, &registryv1.ListAgentsRequest{Parent: "tenants/acme"})
	if err != nil || len(list.GetAgents()) != 2 {
		t.Fatalf("worker lists the agents of acme: %v %v", list, err)
	}
	got, err := h.client.GetAgent(as, &registryv1.GetAgentRequest{Name: activated.GetName()})
	if err != nil || got.GetAgent().GetAgentId() != activated.GetAgentId() {
		t.Fatalf("worker reads the agent: %v %v", got, err)
	}
	act, err := h.client.ActivateAgent(as, &registryv1.ActivateAgentRequest{
		Name: activated.GetName(), DecisionId: "dec-1", ApprovedBy: "alice@acme.example", Etag: got.GetAgent().GetEtag(), RequestId: "act-1"})
	if err != nil || act.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_ACTIVE {
		t.Fatalf("worker activates: %v %v", act, err)
	}
	rej, err := h.client.RejectAgent(as, &registryv1.RejectAgentRequest{Name: rejected.GetName(), DecisionId: "dec-2", Reason: "denied"})
	if err != nil || rej.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_REJECTED {
		t.Fatalf("worker rejects: %v %v", rej, err)
	}
	ret, err := h.client.RetireAgent(testkit.WithBearer(ctx, acmeOwner), &registryv1.RetireAgentRequest{
		Name: activated.GetName(), Reason: "replaced", Etag: act.GetAgent().GetEtag(), RequestId: "ret-1"})
	if err != nil {
		t.Fatalf("owner retires: %v", err)
	}
	done, err := h.client.CompleteRetirement(as, &registryv1.CompleteRetirementRequest{Name: ret.GetAgent().GetName(), RequestId: "done-1"})
	if err != nil || done.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_RETIRED {
		t.Fatalf("worker completes retirement: %v %v", done, err)
	}
}

// TestSystemTenantAdministeredByPlatformAdminsOnly: tenant-admin and owner roles of tenant system
// grant nothing there.
func TestSystemTenantAdministeredByPlatformAdminsOnly(t *testing.T) {
	h := newHarness(t)
	for _, token := range []string{systemAdmin, systemOwner} {
		t.Run(token, func(t *testing.T) {
			_, err := h.client.RegisterAgent(testkit.WithBearer(t.Context(), token), &registryv1.RegisterAgentRequest{Parent: "tenants/system", Agent: agentInput(t)})
			wantCode(t, err, codes.PermissionDenied)
			_, err = h.client.ListAgents(testkit.WithBearer(t.Context(), token), &registryv1.ListAgentsRequest{Parent: "tenants/system"})
			wantCode(t, err, codes.PermissionDenied)
		})
	}
}
