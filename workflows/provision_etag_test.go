package workflows_test

import (
	"context"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// TestProvisionActivatesTheEvaluatedVersion: the activation names the agent version (etag) the
// policy decided on, so the registry activates that version or nothing.
func TestProvisionActivatesTheEvaluatedVersion(t *testing.T) {
	f := newFixture(t, workflows.ProvisionWorkflowID(tenant, "e1"))
	a := workflowstest.NewAgent(tenant, "e1", registryv1.RiskTier_RISK_TIER_LOW)
	a.Etag = "5"
	f.fakes.Registry.Put(a)

	f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, provisionInput("e1", "low"))

	var res workflows.ProvisionResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	acts := workflowstest.RequestsOf[*registryv1.ActivateAgentRequest](f.fakes, "ActivateAgent")
	if res.Result != workflows.ResultActivated || len(acts) != 1 || acts[0].GetEtag() != "5" {
		t.Fatalf("result %+v, activations %v: want one activation with etag 5", res, acts)
	}
}

// changeAfterDecision has the fake registry hold a changed version (etag 6) of a after the policy
// decided on it (etag 5), and refuse the next activation with ETAG_MISMATCH as the registry does.
func changeAfterDecision(fakes *workflowstest.Services, a *registryv1.Agent, change func(*registryv1.Agent)) {
	fakes.After("EvaluateAdmission", func() {
		changed := proto.CloneOf(a)
		change(changed)
		changed.Etag = "6"
		fakes.Registry.Put(changed)
		fakes.After("EvaluateAdmission", nil)
	})
	fakes.FailNext("ActivateAgent", errs.Conflict(workflows.ReasonAgentChanged, "the agent has changed since it was read (etag 5, current 6); re-read and retry"))
}

// TestProvisionRefusesAChangedAgent: an agent whose policy input changed after the policy decided
// (the registry refuses the activation with ETAG_MISMATCH; here a scope was added) is not retried
// into activation: the run rejects it with a reason that says it changed, and takes its client back.
func TestProvisionRefusesAChangedAgent(t *testing.T) {
	f := newFixture(t, workflows.ProvisionWorkflowID(tenant, "e2"))
	a := workflowstest.NewAgent(tenant, "e2", registryv1.RiskTier_RISK_TIER_LOW)
	a.Etag = "5"
	f.fakes.Registry.Put(a)
	changeAfterDecision(f.fakes, a, func(c *registryv1.Agent) { c.Scopes = append(c.Scopes, "ticket.delete") })

	f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, provisionInput("e2", "low"))

	var res workflows.ProvisionResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if n := len(f.fakes.Requests("ActivateAgent")); n != 1 {
		t.Errorf("ActivateAgent calls = %d, want 1 (a changed agent is not retried)", n)
	}
	agent := f.fakes.Registry.Agent("tenants/acme/agents/e2")
	if res.Result != workflows.ResultRejected || agent.GetState() != registryv1.AgentState_AGENT_STATE_REJECTED ||
		!strings.Contains(agent.GetStateReason(), "changed after the policy decided on its version 5") {
		t.Fatalf("result %+v, agent %v (%q): want rejected because it changed", res, agent.GetState(), agent.GetStateReason())
	}
	if c := f.fakes.Issuer.Client("tenants/acme/clients/e2"); c.GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED {
		t.Errorf("client of the changed agent = %v, want DISABLED", c)
	}
}

// TestProvisionActivatesANeutrallyChangedAgent: an agent changed after the decision only in fields
// neither the policy nor the approvers rely on (its display name) is activated at its current version;
// one whose labels, purpose, owner or orphan mark changed is rejected (a bundle may read labels, the
// approvers read the purpose, policies may decide by owner, and an orphaned agent goes to its review).
func TestProvisionActivatesANeutrallyChangedAgent(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*registryv1.Agent)
		want   string
	}{
		{"display name", func(c *registryv1.Agent) { c.DisplayName = "Renamed" }, workflows.ResultActivated},
		{"labels", func(c *registryv1.Agent) { c.Labels = map[string]string{"exposure": "internet"} }, workflows.ResultRejected},
		{"purpose", func(c *registryv1.Agent) { c.Purpose = "moves money" }, workflows.ResultRejected},
		{"orphan mark", func(c *registryv1.Agent) { c.Orphaned, c.OrphanReason = true, "sponsor departed" }, workflows.ResultRejected},
		{"owner transferred", func(c *registryv1.Agent) { c.Owner = "team:other" }, workflows.ResultRejected},
		{"risk tier", func(c *registryv1.Agent) { c.RiskTier = registryv1.RiskTier_RISK_TIER_HIGH }, workflows.ResultRejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, workflows.ProvisionWorkflowID(tenant, "e3"))
			a := workflowstest.NewAgent(tenant, "e3", registryv1.RiskTier_RISK_TIER_LOW)
			a.Etag = "5"
			f.fakes.Registry.Put(a)
			changeAfterDecision(f.fakes, a, tc.change)

			f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, provisionInput("e3", "low"))

			var res workflows.ProvisionResult
			if err := f.env.GetWorkflowResult(&res); err != nil {
				t.Fatal(err)
			}
			acts := workflowstest.RequestsOf[*registryv1.ActivateAgentRequest](f.fakes, "ActivateAgent")
			if res.Result != tc.want {
				t.Fatalf("result %+v, want %s", res, tc.want)
			}
			if tc.want == workflows.ResultActivated {
				if len(acts) != 2 || acts[1].GetEtag() != "6" || acts[1].GetRequestId() == acts[0].GetRequestId() {
					t.Fatalf("activations %v: want a second one at etag 6 under its own request id", acts)
				}
				if st := f.fakes.Registry.Agent("tenants/acme/agents/e3").GetState(); st != registryv1.AgentState_AGENT_STATE_ACTIVE {
					t.Fatalf("agent %v, want ACTIVE", st)
				}
			} else if len(acts) != 1 {
				t.Fatalf("activations %v: want one (a changed policy input is not activated)", acts)
			}
		})
	}
}

// recordedEvaluatedVersionHistories are the files under testdata/ that
// TestRecordEvaluatedVersionHistories writes (change activate-evaluated-version).
var recordedEvaluatedVersionHistories = []string{
	"provision-evaluated-version.json",
	"provision-agent-changed.json",
	"provision-neutral-change.json",
}

// TestRecordEvaluatedVersionHistories records, on a real Temporal dev server, a run that activates
// the version the policy evaluated and one whose agent changed after the decision (rejected), checks
// that they replay and with -record writes them to testdata/.
func TestRecordEvaluatedVersionHistories(t *testing.T) {
	srv := testkit.StartTemporal(t)
	fakes := workflowstest.Start(t)
	c := startRecorder(t, srv, activitiesFor(t, fakes, newStore(t)))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	// run provisions agentID; change, if set, changes the agent after the policy decided.
	run := func(agentID string, change func(*registryv1.Agent)) client.WorkflowRun {
		t.Helper()
		a := workflowstest.NewAgent(tenant, agentID, registryv1.RiskTier_RISK_TIER_LOW)
		a.Etag = "5"
		fakes.Registry.Put(a)
		if change != nil {
			changeAfterDecision(fakes, a, change)
		}
		r, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
			ID: workflows.ProvisionWorkflowID(tenant, agentID), TaskQueue: workflows.TaskQueue,
			WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
			TypedSearchAttributes: temporal.NewSearchAttributes(workflows.AgentIDKey.ValueSet(agentID), workflows.TenantKey.ValueSet(tenant),
				workflows.RiskTierKey.ValueSet("low")),
		}, workflows.ProvisionWorkflowName, provisionInput(agentID, "low"))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	result := func(r client.WorkflowRun, want string) {
		t.Helper()
		var res workflows.ProvisionResult
		if err := r.Get(ctx, &res); err != nil || res.Result != want {
			t.Fatalf("%s: %+v, %v; want %s", r.GetID(), res, err, want)
		}
	}
	activated := run("r-evaluated", nil)
	result(activated, workflows.ResultActivated)
	changed := run("r-changed", func(c *registryv1.Agent) { c.Scopes = append(c.Scopes, "ticket.delete") })
	result(changed, workflows.ResultRejected)
	neutral := run("r-neutral", func(c *registryv1.Agent) { c.DisplayName = "Renamed" })
	result(neutral, workflows.ResultActivated)

	keepHistory(t, c, activated, recordedEvaluatedVersionHistories[0])
	keepHistory(t, c, changed, recordedEvaluatedVersionHistories[1])
	keepHistory(t, c, neutral, recordedEvaluatedVersionHistories[2])
	checkRecorded(t, recordedEvaluatedVersionHistories, recordedEvaluatedVersionHistories)
}
