package workflows_test

import (
	"strings"
	"testing"

	"go.temporal.io/sdk/testsuite"

	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// TestCreateClientRacingRetirement: when the agent is retired while its client is being created, the
// activity takes the client back, so a retired agent never keeps a working credential.
func TestCreateClientRacingRetirement(t *testing.T) {
	fakes := workflowstest.Start(t)
	agent := workflowstest.NewAgent(tenant, "a7", registryv1.RiskTier_RISK_TIER_LOW)
	agent.State = registryv1.AgentState_AGENT_STATE_ACTIVE
	fakes.Registry.Put(agent)
	fakes.After("CreateClient", func() {
		retired := workflowstest.NewAgent(tenant, "a7", registryv1.RiskTier_RISK_TIER_LOW)
		retired.State = registryv1.AgentState_AGENT_STATE_RETIRED
		fakes.Registry.Put(retired)
	})
	var suite testsuite.WorkflowTestSuite
	suite.SetLogger(quietLogger())
	env := suite.NewTestActivityEnvironment()
	env.RegisterActivity(activitiesFor(t, fakes, newStore(t)))

	_, err := env.ExecuteActivity("CreateClient", workflows.CreateClientRequest{
		Tenant: tenant, Agent: agent.GetName(), AgentID: "a7", RequestID: "provision/acme/a7/credentials",
	})
	if err == nil || !strings.Contains(err.Error(), "no credential is issued") {
		t.Fatalf("CreateClient while the agent retired: %v, want a refusal", err)
	}
	c := fakes.Issuer.Client(workflows.ClientName(tenant, "a7"))
	if c == nil || c.GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED {
		t.Fatalf("client after the race: %v, want DISABLED", c)
	}

	// An agent that is not ACTIVE gets no client at all.
	before := len(fakes.Requests("CreateClient"))
	if _, err := env.ExecuteActivity("CreateClient", workflows.CreateClientRequest{
		Tenant: tenant, Agent: agent.GetName(), AgentID: "a7", RequestID: "again",
	}); err == nil {
		t.Fatal("CreateClient for a RETIRED agent succeeded")
	}
	if after := len(fakes.Requests("CreateClient")); after != before {
		t.Fatalf("CreateClient reached the issuer for a RETIRED agent (%d → %d calls)", before, after)
	}
}
