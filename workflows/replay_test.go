package workflows_test

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

var (
	record     = flag.Bool("record", false, "write the histories recorded by TestRecordHistories to testdata/")
	recordOnly = flag.String("record-only", "", "with -record: write only these comma-separated files (default all)")
)

// recordFile says whether -record writes file.
func recordFile(file string) bool {
	return *record && (*recordOnly == "" || slices.Contains(strings.Split(*recordOnly, ","), file))
}

// recordedHistories are the files under testdata/ that TestRecordHistories writes;
// TestReplayRecordedHistories replays them and every other history kept there.
var recordedHistories = []string{
	"provision-auto-approved.json",
	"provision-approvals.json",
	"provision-rejected-by-approver.json",
	"provision-denied.json",
	"provision-client-unusable.json",
	"provision-escalated.json",
	"provision-reminded.json",
	"provision-policy-override.json",
	"deprovision.json",
}

func quietLogger() sdklog.Logger { return sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler)) }

// TestRecordHistories runs every kind of run on a real Temporal dev server with a real worker, checks
// that the fresh histories replay, and with -record writes them to testdata/ for the replay test.
func TestRecordHistories(t *testing.T) {
	srv := testkit.StartTemporal(t)
	fakes := workflowstest.Start(t)
	acts := activitiesFor(t, fakes, newStore(t))
	notifier := &notifications{}
	acts.Notifier = notifier
	c := startRecorder(t, srv, acts)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	start := func(id, name string, arg any, tier string, agentID string) client.WorkflowRun {
		t.Helper()
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
			ID: id, TaskQueue: workflows.TaskQueue,
			WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
			TypedSearchAttributes: temporal.NewSearchAttributes(
				workflows.AgentIDKey.ValueSet(agentID), workflows.TenantKey.ValueSet(tenant), workflows.RiskTierKey.ValueSet(tier)),
		}, name, arg)
		if err != nil {
			t.Fatal(err)
		}
		return run
	}
	agent := func(id string, tier registryv1.RiskTier, d *policyv1.Decision) workflows.ProvisionInput {
		fakes.Registry.Put(workflowstest.NewAgent(tenant, id, tier))
		if d != nil {
			fakes.Policy.Decide(workflows.AgentName(tenant, id), d)
		}
		return provisionInput(id, workflows.RiskTierName(tier))
	}
	waitStatus := func(id, what string, ok func(workflows.Status) bool) {
		t.Helper()
		for {
			v, err := c.QueryWorkflow(ctx, id, "", workflows.StatusQuery)
			if err == nil {
				var s workflows.Status
				if err := v.Get(&s); err == nil && ok(s) {
					return
				}
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s never reached %s", id, what)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	waitFor := func(id, stage string, approvals int) {
		t.Helper()
		waitStatus(id, fmt.Sprintf("stage %s with %d approvals", stage, approvals), func(s workflows.Status) bool {
			return s.Stage == stage && len(s.ApprovalsSoFar) == approvals
		})
	}
	// token is sub's approval token for the decision on step of agentID's run.
	token := func(run client.WorkflowRun, agentID, sub, step, decision string, roles ...string) string {
		return approvalIssuer(t).Token(t, authn.ApprovalClaims{Subject: sub, Agent: workflows.AgentName(tenant, agentID), Step: step,
			Decision: decision, Run: run.GetRunID(), Roles: roles})
	}
	approve := func(id string, a workflows.Approval) (workflows.Status, error) {
		h, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
			WorkflowID: id, UpdateName: workflows.ApproveUpdate, Args: []any{a}, WaitForStage: client.WorkflowUpdateStageCompleted,
		})
		if err != nil {
			return workflows.Status{}, err
		}
		var s workflows.Status
		return s, h.Get(ctx, &s)
	}
	requireApproval := func(id string, roles ...string) *policyv1.Decision {
		return &policyv1.Decision{DecisionId: "dec-" + id, Outcome: policyv1.Outcome_OUTCOME_REQUIRE_APPROVAL, RequiredApprovals: roles}
	}

	type recorded struct {
		file       string
		run        client.WorkflowRun
		wantResult string
	}
	var runs []recorded

	id := workflows.ProvisionWorkflowID(tenant, "r-auto")
	runs = append(runs, recorded{"provision-auto-approved.json", start(id, workflows.ProvisionWorkflowName, agent("r-auto", registryv1.RiskTier_RISK_TIER_LOW, nil), "low", "r-auto"), "activated"})

	// Approvals with approval tokens: the owner step by the agent's sponsor (the owner's delegate) as a
	// signal with a token, as from the Temporal UI; the security step by a security-approver as an
	// update. A token for another step and a self-asserted signal are refused and recorded.
	id = workflows.ProvisionWorkflowID(tenant, "r-approvals")
	run := start(id, workflows.ProvisionWorkflowName, agent("r-approvals", registryv1.RiskTier_RISK_TIER_HIGH, requireApproval("r-approvals", "owner", "security")), "high", "r-approvals")
	waitFor(id, workflows.StageApproval, 0)
	sponsor := workflowstest.NewAgent(tenant, "r-approvals", registryv1.RiskTier_RISK_TIER_HIGH).GetSponsor()
	if _, err := approve(id, workflows.Approval{Token: token(run, "r-approvals", "mallory@corp", "security", "approve", "security-approver")}); err == nil || !workflows.IsApprovalRefused(err) {
		t.Fatalf("approval of a step the run does not wait for: err = %v (%T), want refused", err, err)
	}
	if err := c.SignalWorkflow(ctx, id, "", workflows.ApprovalSignal, map[string]string{"approver": sponsor, "role": "owner", "decision": "approve"}); err != nil {
		t.Fatal(err)
	}
	waitStatus(id, "two refused approvals", func(s workflows.Status) bool { return s.RefusedCount == 2 })
	if err := c.SignalWorkflow(ctx, id, "", workflows.ApprovalSignal, map[string]string{"token": token(run, "r-approvals", sponsor, "owner", "approve"), "comment": "ok"}); err != nil {
		t.Fatal(err)
	}
	// Signals are asynchronous: an update sent at once may be handled before the signal is.
	waitFor(id, workflows.StageApproval, 1)
	st, err := approve(id, workflows.Approval{Token: token(run, "r-approvals", "bob@corp", "security", "approve", "security-approver"), Comment: "reviewed"})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.ApprovalsSoFar) != 2 || st.ApprovalsSoFar[0].Approver != sponsor || st.ApprovalsSoFar[1].Approver != "bob@corp" || st.RefusedCount != 2 {
		t.Fatalf("status after the approvals = %+v", st)
	}
	runs = append(runs, recorded{"provision-approvals.json", run, "activated"})

	id = workflows.ProvisionWorkflowID(tenant, "r-rejected")
	run = start(id, workflows.ProvisionWorkflowName, agent("r-rejected", registryv1.RiskTier_RISK_TIER_MODERATE, requireApproval("r-rejected", "owner")), "moderate", "r-rejected")
	waitFor(id, workflows.StageApproval, 0)
	if _, err := approve(id, workflows.Approval{Token: token(run, "r-rejected", sponsor, "owner", "reject"), Comment: "no purpose"}); err != nil {
		t.Fatal(err)
	}
	runs = append(runs, recorded{"provision-rejected-by-approver.json", run, "rejected"})

	id = workflows.ProvisionWorkflowID(tenant, "r-denied")
	runs = append(runs, recorded{"provision-denied.json", start(id, workflows.ProvisionWorkflowName, agent("r-denied", registryv1.RiskTier_RISK_TIER_HIGH,
		&policyv1.Decision{DecisionId: "dec-r-denied", Outcome: policyv1.Outcome_OUTCOME_DENY, Reasons: []string{"admin scope"}}), "high", "r-denied"), "rejected"})

	// The agent's client id was disabled by an administrator before provisioning: the run rejects the agent.
	id = workflows.ProvisionWorkflowID(tenant, "r-unusable")
	in := agent("r-unusable", registryv1.RiskTier_RISK_TIER_LOW, nil)
	if _, err := fakes.Issuer.DisableClient(ctx, &issuerv1.DisableClientRequest{Name: workflows.ClientName(tenant, "r-unusable"), RequestId: "admin-1"}); err == nil {
		t.Fatal("disabling a client that does not exist: want NotFound (and a tombstone)")
	}
	runs = append(runs, recorded{"provision-client-unusable.json", start(id, workflows.ProvisionWorkflowName, in, "low", "r-unusable"), "rejected"})

	// Escalation path: nobody decides the owner step within EscalateAfter; it is handed to approver,
	// who is notified and approves.
	id = workflows.ProvisionWorkflowID(tenant, "r-escalated")
	in = agent("r-escalated", registryv1.RiskTier_RISK_TIER_HIGH, requireApproval("r-escalated", "owner"))
	in.EscalateAfter, in.RemindEvery = time.Second, time.Hour
	run = start(id, workflows.ProvisionWorkflowName, in, "high", "r-escalated")
	waitStatus(id, "the owner step handed to approver", func(s workflows.Status) bool { return s.Holder == "approver" && len(s.Notices) == 1 })
	if _, err := approve(id, workflows.Approval{Token: token(run, "r-escalated", "carol@corp", "owner", "approve", "approver"), Comment: "owner away"}); err != nil {
		t.Fatal(err)
	}
	runs = append(runs, recorded{"provision-escalated.json", run, "activated"})

	// Reminder path: the security-approver is reminded before deciding.
	id = workflows.ProvisionWorkflowID(tenant, "r-reminded")
	in = agent("r-reminded", registryv1.RiskTier_RISK_TIER_HIGH, requireApproval("r-reminded", "security"))
	in.EscalateAfter, in.RemindEvery = time.Hour, time.Second
	run = start(id, workflows.ProvisionWorkflowName, in, "high", "r-reminded")
	waitStatus(id, "a reminder to security-approver", func(s workflows.Status) bool { return len(s.Notices) >= 1 })
	if _, err := approve(id, workflows.Approval{Token: token(run, "r-reminded", "bob@corp", "security", "approve", "security-approver")}); err != nil {
		t.Fatal(err)
	}
	runs = append(runs, recorded{"provision-reminded.json", run, "activated"})

	// The policy's risk tier override reaches the activation (versionPolicyOverride).
	id = workflows.ProvisionWorkflowID(tenant, "r-override")
	runs = append(runs, recorded{"provision-policy-override.json", start(id, workflows.ProvisionWorkflowName, agent("r-override", registryv1.RiskTier_RISK_TIER_LOW,
		&policyv1.Decision{DecisionId: "dec-r-override", Outcome: policyv1.Outcome_OUTCOME_ALLOW, Reasons: []string{"template"},
			RiskTierOverride: &policyv1.RiskTierOverride{Tier: "RISK_TIER_HIGH", Reason: "customer-facing"}}), "low", "r-override"), "activated"})

	for _, r := range runs {
		var res workflows.ProvisionResult

		if err := r.run.Get(ctx, &res); err != nil {
			t.Fatalf("%s: %v", r.file, err)
		}
		if res.Result != r.wantResult {
			t.Fatalf("%s: result %+v, want %s", r.file, res, r.wantResult)
		}
	}

	overridden := fakes.Registry.Agent(workflows.AgentName(tenant, "r-override"))
	if c := overridden.GetClassification(); overridden.GetRiskTier() != registryv1.RiskTier_RISK_TIER_HIGH ||
		c.GetOverrideRiskTier() != registryv1.RiskTier_RISK_TIER_HIGH || c.GetOverrideReason() != "customer-facing" || c.GetOverrideSource() != workflows.OverrideSourcePrefix+"test-bundle" {
		t.Fatalf("agent activated with the policy's override: risk tier %s, classification %v", overridden.GetRiskTier(), c)
	}

	if got := notifier.recipients(); !slices.Contains(got, "approval.escalated:approver") || !slices.Contains(got, "approval.reminder:security-approver") {
		t.Fatalf("notifications = %v, want the escalation to approver and a reminder to security-approver", got)
	}

	// Retire the auto-approved agent: its client exists and is disabled.
	if _, err := fakes.Registry.RetireAgent(ctx, &registryv1.RetireAgentRequest{Name: workflows.AgentName(tenant, "r-auto"), RequestId: "retire-r-auto"}); err != nil {
		t.Fatal(err)
	}
	// The full saga with sign-offs: a token for the wrong step is refused and recorded; the owner step
	// by the sponsor as an update, the security step by a security-approver as a signal.
	id = workflows.DeprovisionWorkflowID(tenant, "r-auto")
	run = start(id, workflows.DeprovisionWorkflowName, workflows.DeprovisionInput{
		Tenant: tenant, Agent: workflows.AgentName(tenant, "r-auto"), AgentID: "r-auto", RiskTier: "low", Reason: "project finished", EventID: "evt-retire",
		Trigger: workflows.TriggerRequest, ChangeRef: "CHG-7", TriggerTime: time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC),
	}, "low", "r-auto")
	signOff := func(a workflows.Approval) (workflows.Status, error) {
		h, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
			WorkflowID: id, UpdateName: workflows.SignOffUpdate, Args: []any{a}, WaitForStage: client.WorkflowUpdateStageCompleted,
		})
		if err != nil {
			return workflows.Status{}, err
		}
		var s workflows.Status
		return s, h.Get(ctx, &s)
	}
	waitStatus(id, "the owner sign-off", func(s workflows.Status) bool { return s.Stage == workflows.StageSignOff })
	if _, err := signOff(workflows.Approval{Token: token(run, "r-auto", "bob@corp", "security", workflows.DecisionSignOff, "security-approver")}); err == nil || !workflows.IsApprovalRefused(err) {
		t.Fatalf("sign-off of a step the run does not wait for: err = %v, want refused", err)
	}
	if _, err := signOff(workflows.Approval{Token: token(run, "r-auto", sponsor, "owner", workflows.DecisionSignOff), Comment: "done"}); err != nil {
		t.Fatal(err)
	}
	if err := c.SignalWorkflow(ctx, id, "", workflows.SignOffSignal, map[string]string{"token": token(run, "r-auto", "bob@corp", "security", workflows.DecisionSignOff, "security-approver")}); err != nil {
		t.Fatal(err)
	}
	var dres workflows.DeprovisionResult
	if err := run.Get(ctx, &dres); err != nil {
		t.Fatal(err)
	}
	if dres.Result != workflows.ResultRetired || len(dres.SignOffs) != 2 {
		t.Fatalf("deprovision result %+v", dres)
	}
	runs = append(runs, recorded{"deprovision.json", run, "retired"})

	var files []string
	for _, r := range runs {
		keepHistory(t, c, r.run, r.file)
		files = append(files, r.file)
	}
	checkRecorded(t, files, recordedHistories)
}

func history(t *testing.T, c client.Client, run client.WorkflowRun) *historypb.History {
	t.Helper()
	it := c.GetWorkflowHistory(t.Context(), run.GetID(), run.GetRunID(), false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	h := &historypb.History{}
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		h.Events = append(h.Events, ev)
	}
	return h
}

// TestReplayRecordedHistories replays the committed histories against the current workflow code: a
// change that is not deterministic for runs already in flight fails here.
func TestReplayRecordedHistories(t *testing.T) {
	files := replayedHistoryFiles(t)
	recorders := []struct {
		test  string
		files []string
	}{
		{"TestRecordHistories", recordedHistories},
		{"TestRecordIncidentHistories", recordedIncidentHistories},
		{"TestRecordSweepHistories", recordedSweepHistories},
		{"TestRecordReviewHistories", recordedReviewHistories},
		{"TestRecordRotationHistories", recordedRotationHistories},
		{"TestRecordDeprovisionTeardownHistories", recordedTeardownHistories},
		{"TestRecordEvaluatedVersionHistories", recordedEvaluatedVersionHistories},
	}
	for _, r := range recorders {
		for _, want := range r.files {
			if !slices.Contains(files, filepath.Join("testdata", want)) {
				t.Errorf("testdata/%s is missing: record it with go test -run %s -record", want, r.test)
			}
		}
	}
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(name, func(t *testing.T) {
			replayer := worker.NewWorkflowReplayer()
			workflows.RegisterWorkflows(replayer)
			if err := replayer.ReplayWorkflowHistoryFromJSONFile(quietLogger(), filepath.Join("testdata", name)); err != nil {
				t.Fatalf("replay %s: %v", name, err)
			}
		})
	}
}

// TestReplayDetectsChangedWorkflows makes sure the replay test has teeth: workflow code that issues
// other commands than the recorded run did fails to replay.
func TestReplayDetectsChangedWorkflows(t *testing.T) {
	changed := map[string]any{
		"provision-auto-approved.json": func(ctx workflow.Context, in workflows.ProvisionInput) (workflows.ProvisionResult, error) {
			// Skips the policy decision and activates at once.
			ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
			err := workflow.ExecuteActivity(ctx, "ActivateAgent", workflows.ActivateRequest{Agent: in.Agent}).Get(ctx, nil)
			return workflows.ProvisionResult{}, err
		},
		"deprovision.json": func(ctx workflow.Context, in workflows.DeprovisionInput) (workflows.DeprovisionResult, error) {
			// Waits before revoking.
			return workflows.DeprovisionResult{}, workflow.Sleep(ctx, time.Minute)
		},
		"ttl-expired.json": func(ctx workflow.Context, in workflows.TTLInput) (workflows.TTLResult, error) {
			// Retires at once instead of waiting for the expiry.
			ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
			err := workflow.ExecuteActivity(ctx, "RetireExpired", workflows.RetireExpiredRequest{Agent: in.Agent}).Get(ctx, nil)
			return workflows.TTLResult{}, err
		},
		"sweep-expired.json": func(ctx workflow.Context, in workflows.SweepInput) (workflows.SweepResult, error) {
			// Lists the tenants although the run was given them.
			ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
			return workflows.SweepResult{}, workflow.ExecuteActivity(ctx, "ListSweepTenants").Get(ctx, nil)
		},
		"review-certified-keep.json": func(ctx workflow.Context, in workflows.ReviewInput) (workflows.ReviewResult, error) {
			// Removes the scopes before it asks the monitor.
			ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
			err := workflow.ExecuteActivity(ctx, "ReviewRemoveScopes", workflows.RemoveScopesRequest{Agent: in.Agent, Scopes: in.Scopes}).Get(ctx, nil)
			return workflows.ReviewResult{}, err
		},
		"review-campaign.json": func(ctx workflow.Context, in workflows.ReviewCampaignInput) (workflows.ReviewCampaignResult, error) {
			// Lists the tenants although the run was given them.
			ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
			return workflows.ReviewCampaignResult{}, workflow.ExecuteActivity(ctx, "ListSweepTenants").Get(ctx, nil)
		},
		"incident-restore.json": func(ctx workflow.Context, in workflows.IncidentInput) (workflows.IncidentResult, error) {
			// Notifies before it suspends.
			ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
			err := workflow.ExecuteActivity(ctx, "IncidentNotify", workflows.Notification{AlertID: in.AlertID}).Get(ctx, nil)
			return workflows.IncidentResult{}, err
		},
	}
	for file, fn := range changed {
		t.Run(file, func(t *testing.T) {
			replayer := worker.NewWorkflowReplayer()
			name := workflows.ProvisionWorkflowName
			switch {
			case strings.HasPrefix(file, "deprovision"):
				name = workflows.DeprovisionWorkflowName
			case strings.HasPrefix(file, "incident"):
				name = workflows.IncidentWorkflowName
			case strings.HasPrefix(file, "ttl"):
				name = workflows.TTLWorkflowName
			case strings.HasPrefix(file, "sweep"):
				name = workflows.SweepWorkflowName
			case file == "review-campaign.json":
				name = workflows.ReviewCampaignWorkflowName
			case strings.HasPrefix(file, "review"):
				name = workflows.ReviewWorkflowName
			}
			replayer.RegisterWorkflowWithOptions(fn, workflow.RegisterOptions{Name: name})
			err := replayer.ReplayWorkflowHistoryFromJSONFile(quietLogger(), filepath.Join("testdata", file))
			if err == nil || !strings.Contains(err.Error(), "TMPRL1100") {
				t.Fatalf("replay of changed code: err = %v, want a nondeterminism error", err)
			}
		})
	}
}
