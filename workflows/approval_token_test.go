package workflows_test

import (
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/testsuite"

	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// Who is who in the approval tests: the agent's owner and sponsor as workflowstest.NewAgent registers them.
const (
	agentOwner   = "team:payments"
	agentSponsor = "alice@corp.example"
)

// sent is one approval sent to the run at a point in (test) time, as a signal or an update.
type sent struct {
	at       time.Duration
	update   bool
	approval workflows.Approval
}

// approvalRun is what a run with approvals did.
type approvalRun struct {
	result     workflows.ProvisionResult
	updateErrs map[int]error // by index of the sent approval; nil entries for accepted updates
	status     workflows.Status
	activated  bool
}

// runApprovals runs agentID's provisioning with the required steps (the deadline 100h), sends the
// approvals, and reads the status once the run has ended.
func runApprovals(t *testing.T, agentID, registrant string, required []string, approvals []sent) approvalRun {
	t.Helper()
	f := newFixture(t, workflows.ProvisionWorkflowID(tenant, agentID))
	f.fakes.Registry.Put(workflowstest.NewAgent(tenant, agentID, registryv1.RiskTier_RISK_TIER_HIGH))
	f.fakes.Policy.Decide(workflows.AgentName(tenant, agentID), &policyv1.Decision{
		DecisionId: "dec-" + agentID, Outcome: policyv1.Outcome_OUTCOME_REQUIRE_APPROVAL, RequiredApprovals: required,
	})
	out := approvalRun{updateErrs: map[int]error{}}
	for i, s := range approvals {
		f.env.RegisterDelayedCallback(func() {
			if !s.update {
				f.env.SignalWorkflow(workflows.ApprovalSignal, s.approval)
				return
			}
			f.env.UpdateWorkflow(workflows.ApproveUpdate, "u"+string(rune('a'+i)), &testsuite.TestUpdateCallback{
				OnAccept:   func() {},
				OnReject:   func(err error) { out.updateErrs[i] = err },
				OnComplete: func(_ any, err error) { out.updateErrs[i] = err },
			}, s.approval)
		}, s.at)
	}
	in := provisionInput(agentID, "high")
	in.Registrant = registrant
	in.EscalateAfter, in.ApprovalDeadline = 100*time.Hour, 100*time.Hour
	f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, in)
	if err := f.env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if err := f.env.GetWorkflowResult(&out.result); err != nil {
		t.Fatal(err)
	}
	out.status = f.status(t)
	out.activated = len(f.fakes.Requests("ActivateAgent")) == 1
	return out
}

// refusedWith reports whether the run recorded a refusal whose reason contains want.
func (r approvalRun) refusedWith(want string) bool {
	for _, x := range r.status.Refused {
		if strings.Contains(x.Reason, want) {
			return true
		}
	}
	return false
}

func TestSelfAssertedApprovalRefused(t *testing.T) {
	selfAsserted := workflows.Approval{Approver: agentOwner, Role: "owner", Decision: "approve", Comment: "trust me"}
	forged := workflows.Approval{Token: `{"approver":"team:payments","role":"owner","decision":"approve"}`}
	r := runApprovals(t, "s1", "", []string{"owner"}, []sent{
		{time.Hour, false, selfAsserted},
		{2 * time.Hour, true, selfAsserted},
		{3 * time.Hour, false, forged},
	})
	if r.activated || r.result.Result != workflows.ResultRejected {
		t.Fatalf("result %+v activated=%v, want rejected after the deadline", r.result, r.activated)
	}
	if err := r.updateErrs[1]; err == nil || !workflows.IsApprovalRefused(err) || !strings.Contains(err.Error(), "no approval token") {
		t.Errorf("update without a token: %v, want refused saying no approval token", err)
	}
	if !r.refusedWith("no approval token") || !r.refusedWith("approval token is invalid") || r.status.RefusedCount != 2 {
		t.Errorf("refusals recorded = %+v (count %d), want the signal without a token and the forged token", r.status.Refused, r.status.RefusedCount)
	}
	if len(r.status.ApprovalsSoFar) != 0 {
		t.Errorf("approvals taken: %+v", r.status.ApprovalsSoFar)
	}
}

func TestApprovalTokenBoundToStep(t *testing.T) {
	// A security-approver's token for the security step, sent while the run waits for the owner.
	security := tokenApproval(t, "s2", "sam@corp", "security", "approve", "", "security-approver")
	otherAgent := tokenApproval(t, "s2-other", agentOwner, "owner", "approve", "", "owner")
	otherRun := tokenApproval(t, "s2", agentOwner, "owner", "approve", "", "owner")
	otherRun.Token = approvalIssuer(t).Token(t, claimsOf(t, "s2", agentOwner, "owner", "approve", "another-run"))
	r := runApprovals(t, "s2", "", []string{"owner", "security"}, []sent{
		{time.Hour, true, security},
		{2 * time.Hour, true, otherAgent},
		{3 * time.Hour, true, otherRun},
	})
	for i, want := range []string{"the approval token is for the security step, the run waits for the owner step",
		"is for agent tenants/acme/agents/s2-other", "is for run another-run"} {
		if err := r.updateErrs[i]; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("update %d: %v, want refused: %s", i, err, want)
		}
		if !r.refusedWith(want) {
			t.Errorf("refusal %q not recorded: %+v", want, r.status.Refused)
		}
	}
	if r.activated || len(r.status.ApprovalsSoFar) != 0 {
		t.Fatalf("a token for another step, agent or run counted: %+v", r.status)
	}
}

func TestApprovalTokenReplayRefused(t *testing.T) {
	owner := tokenApproval(t, "s3", agentOwner, "owner", "approve", "ok", "owner")
	r := runApprovals(t, "s3", "", []string{"owner", "approver"}, []sent{
		{time.Hour, true, owner},
		{2 * time.Hour, true, owner},
		{3 * time.Hour, false, owner},
	})
	if err := r.updateErrs[0]; err != nil {
		t.Fatalf("first use: %v", err)
	}
	if err := r.updateErrs[1]; err == nil || !strings.Contains(err.Error(), "has been used already") {
		t.Errorf("replayed by update: %v, want refused as used", err)
	}
	if r.status.RefusedCount != 2 || !r.refusedWith("has been used already") {
		t.Errorf("refusals %+v (count %d), want the update and the signal refused as used", r.status.Refused, r.status.RefusedCount)
	}
	if len(r.status.ApprovalsSoFar) != 1 || r.activated {
		t.Fatalf("approvals %+v activated=%v, want only the first use", r.status.ApprovalsSoFar, r.activated)
	}
}

func TestRegistrantCannotApproveOwnAgent(t *testing.T) {
	// The sponsor may stand in for the owner, but not on an agent the sponsor registered.
	r := runApprovals(t, "s4", agentSponsor, []string{"owner"}, []sent{
		{time.Hour, true, tokenApproval(t, "s4", agentSponsor, "owner", "approve", "")},
		{2 * time.Hour, true, tokenApproval(t, "s4", agentOwner, "owner", "approve", "")},
	})
	if err := r.updateErrs[0]; err == nil || !strings.Contains(err.Error(), agentSponsor+" registered the agent and cannot approve it") {
		t.Errorf("registrant's approval: %v, want refused", err)
	}
	if err := r.updateErrs[1]; err != nil {
		t.Errorf("owner's approval: %v", err)
	}
	if !r.activated || strings.Join(r.result.ApprovedBy, ",") != agentOwner {
		t.Fatalf("result %+v activated=%v, want activated by the owner", r.result, r.activated)
	}
}

func TestSecurityStepNeedsSecurityApprover(t *testing.T) {
	tests := []struct {
		name    string
		roles   []string
		wantErr string
	}{
		{"approver", []string{"approver"}, "the security step is decided by [security-approver]"},
		{"tenant-admin", []string{"tenant-admin"}, "the security step is decided by [security-approver]"},
		{"compliance-approver", []string{"compliance-approver"}, "the security step is decided by [security-approver]"},
		{"security-approver", []string{"security-approver"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runApprovals(t, "s5", "", []string{"security"}, []sent{
				{time.Hour, true, tokenApproval(t, "s5", "sam@corp", "security", "approve", "", tt.roles...)},
			})
			err := r.updateErrs[0]
			if tt.wantErr == "" {
				if err != nil || !r.activated || r.status.ApprovalsSoFar[0].Role != "security-approver" {
					t.Fatalf("err %v activated %v status %+v, want activated", err, r.activated, r.status)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || r.activated {
				t.Fatalf("err %v activated %v, want refused: %s", err, r.activated, tt.wantErr)
			}
		})
	}
}

func TestOwnerStepTakenByOwner(t *testing.T) {
	tests := []struct {
		name     string
		sub      string
		decision string
		roles    []string
		wantRole string // "" = refused
	}{
		{"an approver", "bob@corp", "approve", []string{"approver"}, ""},
		{"a tenant-admin", "root", "approve", []string{"tenant-admin"}, ""},
		{"the owner", agentOwner, "approve", nil, "owner"},
		{"the sponsor as the owner's delegate", agentSponsor, "approve", nil, "owner-delegate"},
		{"an approver may still reject", "bob@corp", "reject", []string{"approver"}, "approver"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runApprovals(t, "s6", "", []string{"owner"}, []sent{
				{time.Hour, true, tokenApproval(t, "s6", tt.sub, "owner", tt.decision, "", tt.roles...)},
			})
			err := r.updateErrs[0]
			if tt.wantRole == "" {
				if err == nil || !strings.Contains(err.Error(), "the owner step is decided by the agent's owner ("+agentOwner+")") || r.activated {
					t.Fatalf("err %v activated %v, want refused", err, r.activated)
				}
				return
			}
			if err != nil || len(r.status.ApprovalsSoFar) != 1 || r.status.ApprovalsSoFar[0].Role != tt.wantRole ||
				r.status.ApprovalsSoFar[0].Approver != tt.sub || r.status.ApprovalsSoFar[0].Token != "" {
				t.Fatalf("err %v approvals %+v, want taken as %s", err, r.status.ApprovalsSoFar, tt.wantRole)
			}
			if wantActive := tt.decision == "approve"; r.activated != wantActive {
				t.Fatalf("activated = %v, want %v", r.activated, wantActive)
			}
		})
	}
}

func TestDistinctHumanPerStep(t *testing.T) {
	r := runApprovals(t, "s7", "", []string{"owner", "security"}, []sent{
		// The sponsor approves the owner step, then tries the security step too (by update and signal).
		{time.Hour, true, tokenApproval(t, "s7", agentSponsor, "owner", "approve", "", "security-approver")},
		{2 * time.Hour, true, tokenApproval(t, "s7", agentSponsor, "security", "approve", "", "security-approver")},
		{3 * time.Hour, false, tokenApproval(t, "s7", agentSponsor, "security", "approve", "", "security-approver")},
		{4 * time.Hour, false, tokenApproval(t, "s7", "sam@corp", "security", "approve", "", "security-approver")},
	})
	if err := r.updateErrs[1]; err == nil || !strings.Contains(err.Error(), agentSponsor+" already approved the owner step") {
		t.Errorf("second step by the same person: %v, want refused", err)
	}
	if r.status.RefusedCount != 2 {
		t.Errorf("refusals %+v, want the update and the signal", r.status.Refused)
	}
	if !r.activated || strings.Join(r.result.ApprovedBy, ",") != agentSponsor+",sam@corp" {
		t.Fatalf("result %+v activated=%v, want activated by two people", r.result, r.activated)
	}
}
