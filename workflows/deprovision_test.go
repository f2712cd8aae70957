package workflows_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

func retiringAgent(id string) *registryv1.Agent {
	a := workflowstest.NewAgent(tenant, id, registryv1.RiskTier_RISK_TIER_LOW)
	a.State = registryv1.AgentState_AGENT_STATE_RETIRING
	return a
}

func activeClient(id string) *issuerv1.Client {
	return &issuerv1.Client{
		Name: workflows.ClientName(tenant, id), ClientId: id, Tenant: tenant,
		Agent: workflows.AgentName(tenant, id), State: issuerv1.ClientState_CLIENT_STATE_ACTIVE,
	}
}

func TestDeprovision(t *testing.T) {
	tests := []struct {
		name       string
		client     bool
		wantCheck  string
		wantRounds int
	}{
		{"active client is disabled", true, "client disabled: tenants/acme/clients/d1", 1},
		{"agent never had a client", false, "no client: tenants/acme/clients/d1 was never issued", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, workflows.DeprovisionWorkflowID(tenant, "d1"))
			f.fakes.Registry.Put(retiringAgent("d1"))
			if tt.client {
				f.fakes.Issuer.Put(activeClient("d1"))
			}
			var cancelled []string
			f.env.OnRequestCancelExternalWorkflow(mock.Anything, mock.Anything, mock.Anything).Run(func(args mock.Arguments) {
				cancelled = append(cancelled, args.String(1))
			}).Return(errors.New("workflow not found"))

			f.env.ExecuteWorkflow(workflows.DeprovisionWorkflow, workflows.DeprovisionInput{
				Tenant: tenant, Agent: workflows.AgentName(tenant, "d1"), AgentID: "d1", RiskTier: "low",
				Reason: "project finished", EventID: "evt-d1",
			})

			var res workflows.DeprovisionResult
			if err := f.env.GetWorkflowResult(&res); err != nil {
				t.Fatal(err)
			}
			if res.Result != "retired" || !slices.Equal(res.Checks, []string{tt.wantCheck}) || res.VerifyTime.IsZero() {
				t.Fatalf("result = %+v", res)
			}
			if !slices.Equal(cancelled, []string{"provision/acme/d1"}) {
				t.Errorf("cancelled = %v, want the provisioning run", cancelled)
			}
			disables := workflowstest.RequestsOf[*issuerv1.DisableClientRequest](f.fakes, "DisableClient")
			if len(disables) != tt.wantRounds || disables[0].GetName() != "tenants/acme/clients/d1" ||
				disables[0].GetReason() != "project finished" || disables[0].GetRequestId() != "deprovision/acme/d1/revoke" {
				t.Errorf("DisableClient = %v", disables)
			}
			if tt.client && f.fakes.Issuer.Client("tenants/acme/clients/d1").GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED {
				t.Error("client still active")
			}
			if len(f.fakes.Requests("GetClient")) == 0 {
				t.Error("revocation was not verified")
			}
			done := workflowstest.RequestsOf[*registryv1.CompleteRetirementRequest](f.fakes, "CompleteRetirement")
			if len(done) != 1 || !done[0].GetVerifyTime().AsTime().Equal(res.VerifyTime) || done[0].GetRequestId() != "deprovision/acme/d1/retire" {
				t.Fatalf("CompleteRetirement = %v", done)
			}
			if got := f.fakes.Registry.Agent("tenants/acme/agents/d1").GetState(); got != registryv1.AgentState_AGENT_STATE_RETIRED {
				t.Errorf("agent state = %v", got)
			}
			evs := f.events(t, "d1")
			if len(evs) != 1 || evs[0].Type != workflows.EventDeprovisioningVerified || evs[0].Metadata.CausationID != "evt-d1" {
				t.Fatalf("events = %+v", evs)
			}
			v, err := eventstore.DecodeAs[*lifecyclev1.DeprovisioningVerified](evs[0])
			if err != nil {
				t.Fatal(err)
			}
			if v.GetWorkflowId() != "deprovision/acme/d1" || !slices.Equal(v.GetChecks(), res.Checks) || !v.GetVerifyTime().AsTime().Equal(res.VerifyTime) {
				t.Errorf("deprovisioning_verified = %v", v)
			}
			if got, want := f.stages.all(), []string{"revoke", "verify", "done"}; !slices.Equal(got, want) {
				t.Errorf("stages = %v, want %v", got, want)
			}
		})
	}
}

func TestDeprovisionRevokesAgainWhenClientReappears(t *testing.T) {
	f := newFixture(t, workflows.DeprovisionWorkflowID(tenant, "d2"))
	f.fakes.Registry.Put(retiringAgent("d2"))
	f.fakes.Issuer.Put(activeClient("d2"))
	f.env.OnRequestCancelExternalWorkflow(mock.Anything, mock.Anything, mock.Anything).Return(nil)
	f.acts.ReadLag = 100 * time.Millisecond
	// After the first disable, the client shows up active again (created concurrently).
	reactivated := false
	f.env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, _ converter.EncodedValues) {
		if info.ActivityType.Name == "VerifyRevocation" && !reactivated {
			reactivated = true
			f.fakes.Issuer.Put(activeClient("d2"))
		}
	})

	f.env.ExecuteWorkflow(workflows.DeprovisionWorkflow, workflows.DeprovisionInput{
		Tenant: tenant, Agent: workflows.AgentName(tenant, "d2"), AgentID: "d2", Reason: "owner left",
	})

	var res workflows.DeprovisionResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	disables := workflowstest.RequestsOf[*issuerv1.DisableClientRequest](f.fakes, "DisableClient")
	if len(disables) != 2 || disables[1].GetRequestId() != "deprovision/acme/d2/revoke-2" {
		t.Fatalf("DisableClient = %v, want a second round with a new request id", disables)
	}
	if f.fakes.Issuer.Client("tenants/acme/clients/d2").GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED {
		t.Fatal("client still active")
	}
	if !strings.HasPrefix(res.Checks[0], "client disabled") {
		t.Errorf("checks = %v", res.Checks)
	}
}
