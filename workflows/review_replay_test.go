package workflows_test

import (
	"context"
	"slices"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/testkit"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// recordedReviewHistories are the files under testdata/ that TestRecordReviewHistories writes: one
// per path of an access review and a campaign run; TestReplayRecordedHistories replays them with
// every other history kept there.
var recordedReviewHistories = []string{
	"review-certified-keep.json",
	"review-certified-remove.json",
	"review-unanswered-suspended.json",
	"review-revoked.json",
	"review-campaign.json",
}

// TestRecordReviewHistories runs every path of an access review on a real Temporal dev server with a
// real worker (certify keeping an unused scope with a reason after a refused decision; certify
// removing a used scope; no answer -> sponsor -> suspended; revoke; a campaign opening one review per
// ACTIVE agent), checks each outcome and that the fresh histories replay, and with -record writes
// them to testdata/.
func TestRecordReviewHistories(t *testing.T) {
	srv := testkit.StartTemporal(t)
	fakes := workflowstest.Start(t)
	acts := activitiesFor(t, fakes, newStore(t))
	acts.Monitor = monitorv1.NewMonitorServiceClient(fakes.Conn(t))
	sent := &notifications{}
	acts.Notifier = sent
	c := startRecorder(t, srv, acts)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	// agent puts an ACTIVE agent of tenant with reviewScopes into the fake registry; the monitor saw
	// only crm.read used.
	agent := func(tn, agentID string) *registryv1.Agent {
		a := workflowstest.NewAgent(tn, agentID, registryv1.RiskTier_RISK_TIER_MODERATE)
		a.State = registryv1.AgentState_AGENT_STATE_ACTIVE
		a.Scopes = slices.Clone(reviewScopes)
		fakes.Registry.Put(a)
		fakes.Monitor.SetScopeUses(a.GetName(), map[string]int64{"crm.read": 42})
		return a
	}
	start := func(agentID string, mutate func(*workflows.ReviewInput)) client.WorkflowRun {
		t.Helper()
		agent(tenant, agentID)
		in := reviewInput(agentID)
		if mutate != nil {
			mutate(&in)
		}
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
			ID: workflows.ReviewWorkflowID(tenant, campaign, agentID), TaskQueue: workflows.TaskQueue,
			WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
			TypedSearchAttributes: temporal.NewSearchAttributes(
				workflows.AgentIDKey.ValueSet(agentID), workflows.TenantKey.ValueSet(tenant), workflows.RiskTierKey.ValueSet(in.RiskTier)),
		}, workflows.ReviewWorkflowName, in)
		if err != nil {
			t.Fatal(err)
		}
		return run
	}
	status := func(run client.WorkflowRun) (workflows.ReviewStatus, error) {
		v, err := c.QueryWorkflow(ctx, run.GetID(), run.GetRunID(), workflows.StatusQuery)
		if err != nil {
			return workflows.ReviewStatus{}, err
		}
		var s workflows.ReviewStatus
		return s, v.Get(&s)
	}
	waitingForOwner := func(run client.WorkflowRun) {
		t.Helper()
		testkit.Eventually(t, time.Minute, run.GetID()+" to wait for the owner", func() (bool, error) {
			s, err := status(run)
			return err == nil && s.Stage == workflows.StageReviewDecide && s.Decider == workflows.StepOwner, err
		})
	}
	decide := func(run client.WorkflowRun, agentID, sub, step, decision string, d workflows.ReviewDecision, roles ...string) (workflows.ReviewStatus, error) {
		t.Helper()
		d.Token = approvalIssuer(t).Token(t, authn.ApprovalClaims{Subject: sub, Agent: workflows.AgentName(tenant, agentID), Step: step,
			Decision: decision, Run: run.GetRunID(), Roles: roles})
		h, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
			WorkflowID: run.GetID(), RunID: run.GetRunID(), UpdateName: workflows.ReviewDecideUpdate,
			Args: []any{d}, WaitForStage: client.WorkflowUpdateStageCompleted,
		})
		if err != nil {
			return workflows.ReviewStatus{}, err
		}
		var s workflows.ReviewStatus
		return s, h.Get(ctx, &s)
	}
	type recorded struct {
		file  string
		run   client.WorkflowRun
		check func(t *testing.T, run client.WorkflowRun)
	}
	var runs []recorded
	reviewOutcome := func(outcome, decidedBy string, removed ...string) func(*testing.T, client.WorkflowRun) {
		return func(t *testing.T, run client.WorkflowRun) {
			var res workflows.ReviewResult
			if err := run.Get(ctx, &res); err != nil {
				t.Fatalf("%s: %v", run.GetID(), err)
			}
			if res.Outcome != outcome || res.DecidedBy != decidedBy || !slices.Equal(res.Removed, removed) {
				t.Fatalf("%s: result %+v, want %s by %q removing %v", run.GetID(), res, outcome, decidedBy, removed)
			}
		}
	}

	// Certify keeping the unused crm.write with a reason, after two refused decisions (a keep without
	// a reason, refused before the run takes it up; a token of someone who may not decide, refused
	// and recorded); crm.export, unused and not kept, is removed at close.
	run := start("rv-keep", nil)
	waitingForOwner(run)
	if _, err := decide(run, "rv-keep", agentOwner, workflows.StepOwner, workflows.DecisionApprove,
		workflows.ReviewDecision{Keep: map[string]string{"crm.write": ""}}); err == nil || !workflows.IsApprovalRefused(err) {
		t.Fatalf("a keep without a reason: %v, want refused", err)
	}
	if _, err := decide(run, "rv-keep", "mallory@corp.example", workflows.StepOwner, workflows.DecisionApprove,
		workflows.ReviewDecision{}, "approver"); err == nil || !workflows.IsApprovalRefused(err) {
		t.Fatalf("a decision by someone who may not decide: %v, want refused", err)
	}
	st, err := decide(run, "rv-keep", agentOwner, workflows.StepOwner, workflows.DecisionApprove,
		workflows.ReviewDecision{Keep: map[string]string{"crm.write": "quarter-end batch writes"}, Comment: "reviewed"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Outcome != workflows.ReviewOutcomeCertified || st.RefusedCount != 1 || st.Refused[0].Approver != "mallory@corp.example" {
		t.Fatalf("status after the decision %+v", st)
	}
	runs = append(runs, recorded{"review-certified-keep.json", run, reviewOutcome(workflows.ReviewOutcomeCertified, agentOwner, "crm.export")})

	// Certify by the sponsor as the owner's delegate, removing the used crm.read too.
	run = start("rv-remove", nil)
	waitingForOwner(run)
	if _, err := decide(run, "rv-remove", agentSponsor, workflows.StepOwner, workflows.DecisionApprove, workflows.ReviewDecision{Remove: []string{"crm.read"}}); err != nil {
		t.Fatal(err)
	}
	runs = append(runs, recorded{"review-certified-remove.json", run, reviewOutcome(workflows.ReviewOutcomeCertified, agentSponsor, reviewScopes...)})

	// Nobody answers: the owner's window ends, the sponsor is asked, then the agent is suspended and
	// the unused scopes removed.
	run = start("rv-silent", func(in *workflows.ReviewInput) { in.AnswerFor, in.SponsorFor = time.Second, time.Second })
	runs = append(runs, recorded{"review-unanswered-suspended.json", run, reviewOutcome(workflows.ReviewOutcomeSuspended, "", "crm.export", "crm.write")})

	// A security-approver revokes: the agent is suspended and its unused scopes are removed.
	run = start("rv-revoke", nil)
	waitingForOwner(run)
	if _, err := decide(run, "rv-revoke", "sam@corp.example", workflows.StepOwner, workflows.DecisionReject,
		workflows.ReviewDecision{Comment: "no longer needed"}, "security-approver"); err != nil {
		t.Fatal(err)
	}
	runs = append(runs, recorded{"review-revoked.json", run, reviewOutcome(workflows.ReviewOutcomeSuspended, "sam@corp.example", "crm.export", "crm.write")})

	// A campaign in tenant globex opens one review per ACTIVE agent with scopes (not the suspended
	// one, not the one without scopes).
	agent("globex", "g-one")
	agent("globex", "g-two")
	suspended := agent("globex", "g-suspended")
	suspended.State = registryv1.AgentState_AGENT_STATE_SUSPENDED
	fakes.Registry.Put(suspended)
	bare := agent("globex", "g-bare")
	bare.Scopes = nil
	fakes.Registry.Put(bare)
	const globexCampaign = "od-rec"
	run, err = c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: workflows.ReviewCampaignWorkflowID("globex", globexCampaign), TaskQueue: workflows.TaskQueue,
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
	}, workflows.ReviewCampaignWorkflowName, workflows.ReviewCampaignInput{Campaign: globexCampaign, Tenants: []string{"globex"}, UsageDays: 30})
	if err != nil {
		t.Fatal(err)
	}
	runs = append(runs, recorded{"review-campaign.json", run, func(t *testing.T, run client.WorkflowRun) {
		var res workflows.ReviewCampaignResult
		if err := run.Get(ctx, &res); err != nil {
			t.Fatal(err)
		}
		if res.Campaign != globexCampaign || res.Tenants != 1 || res.Opened != 2 {
			t.Fatalf("campaign result %+v, want 2 reviews opened in 1 tenant", res)
		}
		for _, id := range []string{"g-one", "g-two"} {
			rid := workflows.ReviewWorkflowID("globex", globexCampaign, id)
			testkit.Eventually(t, time.Minute, rid+" to wait for the owner", func() (bool, error) {
				v, err := c.QueryWorkflow(ctx, rid, "", workflows.StatusQuery)
				if err != nil {
					return false, err
				}
				var s workflows.ReviewStatus
				if err := v.Get(&s); err != nil {
					return false, err
				}
				return s.Decider == workflows.StepOwner && s.Campaign == globexCampaign, nil
			})
		}
		if _, err := c.DescribeWorkflowExecution(ctx, workflows.ReviewWorkflowID("globex", globexCampaign, "g-suspended"), ""); err == nil {
			t.Fatal("the campaign opened a review of a suspended agent")
		}
	}})

	var files []string
	for _, r := range runs {
		r.check(t, r.run)
		keepHistory(t, c, r.run, r.file)
		files = append(files, r.file)
	}
	checkRecorded(t, files, recordedReviewHistories)
	sus := workflowstest.RequestsOf[*registryv1.SuspendAgentRequest](fakes, "SuspendAgent")
	var causes []string
	for _, s := range sus {
		causes = append(causes, s.GetName()+"="+s.GetCause())
	}
	slices.Sort(causes)
	if want := []string{workflows.AgentName(tenant, "rv-revoke") + "=review:" + campaign, workflows.AgentName(tenant, "rv-silent") + "=review:" + campaign}; !slices.Equal(causes, want) {
		t.Fatalf("suspensions %v, want %v", causes, want)
	}
	if got := sent.recipients(); !slices.Contains(got, "review.escalated:sponsor") {
		t.Fatalf("notifications %v, want the escalation to the sponsor", got)
	}
}
