package workflows_test

import (
	"context"
	"slices"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// recordedTeardownHistories are the files under testdata/ that TestRecordDeprovisionTeardownHistories
// writes; TestReplayRecordedHistories replays them with every other history kept there.
var recordedTeardownHistories = []string{
	"deprovision-teardown.json",
	"deprovision-cancels-provisioning.json",
}

// TestRecordDeprovisionTeardownHistories runs the teardown of ephemeral agents (trigger
// task_completed, no sign-off), started as the lifecycle service starts it, on a real Temporal dev
// server with a real worker whose own client cancels provisioning runs: an agent whose provisioning
// ended, and one whose provisioning run still waits for an approval (asked to cancel, it ends
// cancelled). Since deprovision-one-task the first ends in its first workflow task: no activity task,
// no external cancel command. With -record it writes the histories to testdata/.
func TestRecordDeprovisionTeardownHistories(t *testing.T) {
	srv := testkit.StartTemporal(t)
	fakes := workflowstest.Start(t)
	store := newStore(t)
	acts := activitiesFor(t, fakes, store)
	acts.Runs = nil // the worker's own Temporal client, as in the lifecycle service
	c := startRecorder(t, srv, acts)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	start := func(id, name string, arg any, agentID, stage string) client.WorkflowRun {
		t.Helper()
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
			ID: id, TaskQueue: workflows.TaskQueue, WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
			TypedSearchAttributes: temporal.NewSearchAttributes(workflows.AgentIDKey.ValueSet(agentID), workflows.TenantKey.ValueSet(tenant),
				workflows.RiskTierKey.ValueSet("low"), workflows.StageKey.ValueSet(stage)),
		}, name, arg)
		if err != nil {
			t.Fatal(err)
		}
		return run
	}
	teardown := func(agentID string) client.WorkflowRun {
		t.Helper()
		if _, err := fakes.Registry.RetireAgent(ctx, &registryv1.RetireAgentRequest{
			Name: workflows.AgentName(tenant, agentID), RequestId: "retire-" + agentID, Reason: "task done",
		}); err != nil {
			t.Fatal(err)
		}
		return start(workflows.DeprovisionWorkflowID(tenant, agentID), workflows.DeprovisionWorkflowName, workflows.DeprovisionInput{
			Tenant: tenant, Agent: workflows.AgentName(tenant, agentID), AgentID: agentID, RiskTier: "low", Reason: "task done",
			EventID: "evt-retire-" + agentID, Trigger: workflows.TriggerTaskCompleted, TriggerTime: time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC),
			NoSignOff: true, StartedWithIdentity: true,
		}, agentID, workflows.StageRevoke)
	}
	retired := func(run client.WorkflowRun) {
		t.Helper()
		var res workflows.DeprovisionResult
		if err := run.Get(ctx, &res); err != nil || res.Result != workflows.ResultRetired {
			t.Fatalf("%s: %+v, %v; want retired", run.GetID(), res, err)
		}
	}
	evidence := func(agentID string) {
		t.Helper()
		evs, _, err := store.Load(ctx, tenant, eventstore.AggregateLifecycle, agentID)
		if err != nil {
			t.Fatal(err)
		}
		var types []string
		for _, ev := range evs {
			types = append(types, ev.Type)
		}
		if !slices.Contains(types, workflows.EventDeprovisioningVerified) || !slices.Contains(types, workflows.EventDeprovisioningCompleted) {
			t.Fatalf("lifecycle events of %s = %v, want the verification and the evidence", agentID, types)
		}
	}

	// An ephemeral agent provisioned (auto-approved) and torn down when its task completed.
	fakes.Registry.Put(workflowstest.NewAgent(tenant, "r-teardown", registryv1.RiskTier_RISK_TIER_LOW))
	prov := start(workflows.ProvisionWorkflowID(tenant, "r-teardown"), workflows.ProvisionWorkflowName, provisionInput("r-teardown", "low"), "r-teardown", workflows.StagePolicy)
	var pres workflows.ProvisionResult
	if err := prov.Get(ctx, &pres); err != nil || pres.Result != "activated" {
		t.Fatalf("provisioning: %+v, %v", pres, err)
	}
	run := teardown("r-teardown")
	retired(run)
	evidence("r-teardown")
	h := history(t, c, run)
	count := map[enumspb.EventType]int{}
	for _, ev := range h.GetEvents() {
		count[ev.GetEventType()]++
	}
	if n := count[enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]; n != 1 {
		t.Errorf("teardown took %d workflow tasks, want 1", n)
	}
	for _, et := range []enumspb.EventType{enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, enumspb.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED} {
		if count[et] != 0 {
			t.Errorf("teardown history holds %d %s, want none", count[et], et)
		}
	}
	// GetVersion upserts TemporalChangeVersion; the run itself only its final stage (the start set the
	// identity attributes).
	var own []string
	for _, ev := range h.GetEvents() {
		for k := range ev.GetUpsertWorkflowSearchAttributesEventAttributes().GetSearchAttributes().GetIndexedFields() {
			if k != "TemporalChangeVersion" {
				own = append(own, k)
			}
		}
	}
	if !slices.Equal(own, []string{workflows.StageKey.GetName()}) {
		t.Errorf("teardown upserted search attributes %v, want only %s (done)", own, workflows.StageKey.GetName())
	}
	files := []string{"deprovision-teardown.json"}
	keepHistory(t, c, run, files[0])

	// An agent whose provisioning run waits for the owner's approval when its retirement comes: the
	// teardown asks the run to cancel (a local activity through the worker's client), and it ends.
	fakes.Registry.Put(workflowstest.NewAgent(tenant, "r-waiting", registryv1.RiskTier_RISK_TIER_LOW))
	fakes.Policy.Decide(workflows.AgentName(tenant, "r-waiting"), &policyv1.Decision{DecisionId: "dec-r-waiting",
		Outcome: policyv1.Outcome_OUTCOME_REQUIRE_APPROVAL, RequiredApprovals: []string{"owner"}})
	waiting := start(workflows.ProvisionWorkflowID(tenant, "r-waiting"), workflows.ProvisionWorkflowName, provisionInput("r-waiting", "low"), "r-waiting", workflows.StagePolicy)
	testkit.Eventually(t, time.Minute, "the provisioning run to wait for the owner", func() (bool, error) {
		v, err := c.QueryWorkflow(ctx, waiting.GetID(), "", workflows.StatusQuery)
		if err != nil {
			return false, nil
		}
		var s workflows.Status
		return v.Get(&s) == nil && s.Stage == workflows.StageApproval, nil
	})
	run = teardown("r-waiting")
	retired(run)
	evidence("r-waiting")
	if err := waiting.Get(ctx, nil); err == nil {
		t.Fatal("the provisioning run of a torn-down agent ended without error; want it cancelled")
	}
	desc, err := c.DescribeWorkflowExecution(ctx, waiting.GetID(), "")
	if err != nil {
		t.Fatal(err)
	}
	if st := desc.GetWorkflowExecutionInfo().GetStatus(); st != enumspb.WORKFLOW_EXECUTION_STATUS_CANCELED {
		t.Fatalf("provisioning run of the torn-down agent ended %s, want CANCELED", st)
	}
	files = append(files, "deprovision-cancels-provisioning.json")
	keepHistory(t, c, run, files[1])
	checkRecorded(t, files, recordedTeardownHistories)
}
