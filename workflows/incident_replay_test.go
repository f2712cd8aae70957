package workflows_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// recordedIncidentHistories are the files under testdata/ that TestRecordIncidentHistories writes, one
// per incident path; TestReplayRecordedHistories replays them with every other history kept there.
var recordedIncidentHistories = []string{
	"incident-restore.json",
	"incident-retire.json",
	"incident-escalated-to-security.json",
	"incident-notify-only.json",
	"incident-unknown-agent.json",
}

// incidentHistoriesV0 are the histories of the same paths recorded before change
// incident-suspend-first (policy as an activity, incident_opened before the suspension); the
// current code must keep replaying them.
var incidentHistoriesV0 = []string{
	"incident-restore-v0.json",
	"incident-retire-v0.json",
	"incident-escalated-to-security-v0.json",
	"incident-notify-only-v0.json",
	"incident-unknown-agent-v0.json",
}

// TestIncidentHistoriesCoverBothOrders: the kept incident histories are of both orders — the v0 ones
// without change incident-suspend-first, the current ones with it at version 1 — so the replay test
// covers the runs in flight from before the change and the runs after it; and in the current ones
// of the suspending paths the suspension is recorded before incident_opened is scheduled.
func TestIncidentHistoriesCoverBothOrders(t *testing.T) {
	suspending := []string{"incident-restore.json", "incident-retire.json", "incident-escalated-to-security.json"}
	for _, tt := range []struct {
		files       []string
		wantVersion int // -1: no marker of the change
	}{{incidentHistoriesV0, -1}, {recordedIncidentHistories, 1}} {
		for _, file := range tt.files {
			t.Run(file, func(t *testing.T) {
				f, err := os.Open(filepath.Join("testdata", file))
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				h, err := client.HistoryFromJSON(f, client.HistoryJSONOptions{})
				if err != nil {
					t.Fatal(err)
				}
				version, order := -1, []string{}
				for _, ev := range h.GetEvents() {
					if m := ev.GetMarkerRecordedEventAttributes(); m != nil {
						var name string
						switch m.GetMarkerName() {
						case "Version":
							if err := converter.GetDefaultDataConverter().FromPayloads(m.GetDetails()["change-id"], &name); err != nil {
								t.Fatal(err)
							}
							if name == "incident-suspend-first" {
								if err := converter.GetDefaultDataConverter().FromPayloads(m.GetDetails()["version"], &version); err != nil {
									t.Fatal(err)
								}
							}
						case "LocalActivity":
							var la struct{ ActivityType string }
							if err := converter.GetDefaultDataConverter().FromPayloads(m.GetDetails()["data"], &la); err != nil {
								t.Fatal(err)
							}
							order = append(order, "local:"+la.ActivityType)
						}
					}
					if a := ev.GetActivityTaskScheduledEventAttributes(); a != nil {
						order = append(order, a.GetActivityType().GetName())
					}
				}
				if version != tt.wantVersion {
					t.Fatalf("version of change incident-suspend-first = %d, want %d", version, tt.wantVersion)
				}
				if slices.Contains(suspending, file) {
					want := []string{"local:IncidentSuspendAgent", "local:IncidentRevokeTokens", "RecordIncidentOpened"}
					if len(order) < len(want) || !slices.Equal(order[:len(want)], want) {
						t.Fatalf("activities = %v, want them to start with %v", order, want)
					}
				}
			})
		}
	}
}

// TestRecordIncidentHistories runs every incident path on a real Temporal dev server with a real
// worker, checks each run's outcome and that the fresh histories replay, and with -record writes them
// to testdata/ for the replay test.
func TestRecordIncidentHistories(t *testing.T) {
	srv := testkit.StartTemporal(t)
	fakes := workflowstest.Start(t)
	acts := activitiesFor(t, fakes, newStore(t))
	sent := &notifications{}
	acts.Notifier = sent
	c := startRecorder(t, srv, acts)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	// Each run has its own alert id: incident/<tenant>/<alert>.
	alert := func(n int) string { return "0190d1c0-0000-7000-8000-00000000010" + string(rune('0'+n)) }
	start := func(in workflows.IncidentInput) client.WorkflowRun {
		t.Helper()
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
			ID: workflows.IncidentWorkflowID(tenant, in.AlertID), TaskQueue: workflows.TaskQueue,
			WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
			TypedSearchAttributes: temporal.NewSearchAttributes(
				workflows.AgentIDKey.ValueSet(in.AgentID), workflows.TenantKey.ValueSet(tenant), workflows.RiskTierKey.ValueSet(in.RiskTier)),
		}, workflows.IncidentWorkflowName, in)
		if err != nil {
			t.Fatal(err)
		}
		return run
	}
	// incident is the input of an alert about a new ACTIVE agent of the fake registry, with the
	// actions the lifecycle consumer decides with the built-in policy.
	incident := func(n int, agentID, severity string, tier registryv1.RiskTier) workflows.IncidentInput {
		a := workflowstest.NewAgent(tenant, agentID, tier)
		a.State = registryv1.AgentState_AGENT_STATE_ACTIVE
		fakes.Registry.Put(a)
		in := incidentInput(agentID, severity, workflows.RiskTierName(tier))
		in.AlertID, in.EventID = alert(n), "evt-alert-"+agentID
		in.Actions = (&workflows.IncidentPolicy{}).Decide(workflows.IncidentPolicyRequest{
			Tenant: tenant, Severity: severity, RiskTier: in.RiskTier, Detector: in.Detector, AgentKnown: true,
		})
		return in
	}
	waitStatus := func(run client.WorkflowRun, what string, ok func(workflows.IncidentStatus) bool) {
		t.Helper()
		testkit.Eventually(t, time.Minute, run.GetID()+" to reach "+what, func() (bool, error) {
			v, err := c.QueryWorkflow(ctx, run.GetID(), run.GetRunID(), workflows.StatusQuery)
			if err != nil {
				return false, err
			}
			var s workflows.IncidentStatus
			if err := v.Get(&s); err != nil {
				return false, err
			}
			return ok(s), nil
		})
	}
	decide := func(run client.WorkflowRun, agentID, sub, step, decision string, roles ...string) (workflows.IncidentStatus, error) {
		t.Helper()
		tok := approvalIssuer(t).Token(t, authn.ApprovalClaims{Subject: sub, Agent: workflows.AgentName(tenant, agentID), Step: step,
			Decision: decision, Run: run.GetRunID(), Roles: roles})
		h, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
			WorkflowID: run.GetID(), RunID: run.GetRunID(), UpdateName: workflows.DecideUpdate,
			Args:         []any{workflows.IncidentDecision{Token: tok, Comment: "checked"}},
			WaitForStage: client.WorkflowUpdateStageCompleted,
		})
		if err != nil {
			return workflows.IncidentStatus{}, err
		}
		var s workflows.IncidentStatus
		return s, h.Get(ctx, &s)
	}
	waitingFor := func(step string) func(workflows.IncidentStatus) bool {
		return func(s workflows.IncidentStatus) bool {
			return s.Stage == workflows.StageIncidentDecide && s.Decider == step
		}
	}

	type recorded struct {
		file        string
		run         client.WorkflowRun
		wantOutcome string
		wantDecider string
	}
	var runs []recorded

	// Critical: suspended and revoked; a token for the wrong step is refused and recorded; the owner restores.
	run := start(incident(1, "i-restore", workflows.SeverityCritical, registryv1.RiskTier_RISK_TIER_LOW))
	waitStatus(run, "the owner's decision", waitingFor(workflows.StepOwner))
	if _, err := decide(run, "i-restore", "sec@corp.example", workflows.StepSecurity, workflows.DecisionRestore, "security-approver"); !workflows.IsApprovalRefused(err) {
		t.Fatalf("a decision for a step the run does not wait for: err = %v, want refused", err)
	}
	if st, err := decide(run, "i-restore", agentOwner, workflows.StepOwner, workflows.DecisionRestore); err != nil || st.Outcome != workflows.OutcomeRestored || st.RefusedCount != 1 {
		t.Fatalf("the owner's restore: %+v, %v; want restored with one refusal recorded", st, err)
	}
	runs = append(runs, recorded{"incident-restore.json", run, workflows.OutcomeRestored, agentOwner})

	// Critical: the sponsor, as the owner's delegate, retires.
	run = start(incident(2, "i-retire", workflows.SeverityCritical, registryv1.RiskTier_RISK_TIER_MODERATE))
	waitStatus(run, "the owner's decision", waitingFor(workflows.StepOwner))
	if _, err := decide(run, "i-retire", agentSponsor, workflows.StepOwner, workflows.DecisionRetire); err != nil {
		t.Fatal(err)
	}
	runs = append(runs, recorded{"incident-retire.json", run, workflows.OutcomeRetired, agentSponsor})

	// High on a high-risk agent: neither owner nor sponsor answers in time; security restores.
	// Security is reminded (change incident-security-reminders) only after an hour: the decision comes
	// first, so the reminder timer is recorded started and cancelled.
	in := incident(3, "i-escalated", workflows.SeverityHigh, registryv1.RiskTier_RISK_TIER_HIGH)
	in.OwnerFor, in.SponsorFor, in.SecurityRemindEvery = time.Second, time.Second, time.Hour
	run = start(in)
	waitStatus(run, "security's decision", waitingFor(workflows.StepSecurity))
	if _, err := decide(run, "i-escalated", "sec@corp.example", workflows.StepSecurity, workflows.DecisionRestore, "security-approver"); err != nil {
		t.Fatal(err)
	}
	runs = append(runs, recorded{"incident-escalated-to-security.json", run, workflows.OutcomeRestored, "sec@corp.example"})

	// Medium: the owner is notified, nothing is suspended. Started without actions, as a consumer
	// older than the change does: the run asks policy (a local activity).
	in = incident(4, "i-notify", workflows.SeverityMedium, registryv1.RiskTier_RISK_TIER_HIGH)
	in.Actions = nil
	runs = append(runs, recorded{"incident-notify-only.json", start(in), workflows.OutcomeNotified, ""})

	// An agent the registry does not know: security is notified, nothing to suspend.
	runs = append(runs, recorded{"incident-unknown-agent.json", start(workflows.IncidentInput{
		Tenant: tenant, AlertID: alert(5), Agent: "ghost-client-7", Detector: "unknown_agent", Severity: workflows.SeverityCritical,
		Summary: "tokens requested by an unregistered client", EventID: "evt-alert-ghost", Actions: []string{workflows.ActionNotify},
	}), workflows.OutcomeNotified, ""})

	var files []string
	for _, r := range runs {
		var res workflows.IncidentResult
		if err := r.run.Get(ctx, &res); err != nil {
			t.Fatalf("%s: %v", r.file, err)
		}
		if res.Result != r.wantOutcome || res.DecidedBy != r.wantDecider {
			t.Fatalf("%s: result %+v, want %s by %q", r.file, res, r.wantOutcome, r.wantDecider)
		}
		keepHistory(t, c, r.run, r.file)
		files = append(files, r.file)
	}
	checkRecorded(t, files, recordedIncidentHistories)
	want := []string{
		"incident.opened:owner", "incident.opened:owner", "incident.opened:owner",
		"incident.escalated:sponsor", "incident.escalated:security", "incident.opened:owner", "incident.opened:security",
	}
	// Every run's notifications, whatever the order in which the runs' last activities completed (a
	// notification may land after the next run started).
	got := sent.recipients()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("notifications = %v, want %v", got, want)
	}
}
