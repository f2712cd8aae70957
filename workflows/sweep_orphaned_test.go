package workflows_test

import (
	"slices"
	"strings"
	"testing"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// TestSweepOrphanedFindsAgentsMarkedOrphaned: an agent the registry marked orphaned (its owner
// departed the tenant's directory) is found although it names an owner and a sponsor, and the
// deprovision action retires it with trigger owner_departed; a marked agent no longer ACTIVE or
// SUSPENDED is left alone.
func TestSweepOrphanedFindsAgentsMarkedOrphaned(t *testing.T) {
	f := newSweepFixture(t, workflows.SweepOrphaned, []sweepAgent{
		{tenant: tenant, id: "o-departed", state: active, age: day},
		{tenant: tenant, id: "o-fine", state: active, age: day},
		{tenant: tenant, id: "o-pending", state: registryv1.AgentState_AGENT_STATE_PENDING, age: day},
	})
	for _, id := range []string{"o-departed", "o-pending"} {
		a := f.fakes.Registry.Agent(workflows.AgentName(tenant, id))
		a.Orphaned, a.OrphanReason = true, "owner bob@acme.example departed"
		f.fakes.Registry.Put(a)
	}
	res, err := f.sweep(t, workflows.SweepInput{Kind: workflows.SweepOrphaned, Action: workflows.SweepActionDeprovision})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := found(res), []string{"acme/o-departed=retired"}; !slices.Equal(got, want) {
		t.Fatalf("findings = %v, want %v", got, want)
	}
	if !strings.Contains(res.Findings[0].Reason, "orphaned: owner bob@acme.example departed") {
		t.Fatalf("reason %q", res.Findings[0].Reason)
	}
	retires := workflowstest.RequestsOf[*registryv1.RetireAgentRequest](f.fakes, "RetireAgent")
	if len(retires) != 1 || retires[0].GetTrigger() != workflows.TriggerOwnerDeparted {
		t.Fatalf("RetireAgent = %v, want o-departed with owner_departed", retires)
	}
}
