package workflows_test

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/agentid/agentid/pkg/errs"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

const (
	principalActive   = registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE
	principalDeparted = registryv1.PrincipalStatus_PRINCIPAL_STATUS_DEPARTED
)

// notActive is the refusal VerifyApproval gives an owner or sponsor of tenant acme whom its
// directory does not list as ACTIVE.
func notActive(id string) string {
	return id + " is not an ACTIVE principal of tenant acme's directory: a departed or unknown principal holds no owner rights"
}

// directoryOf returns tenant acme's directory: the principals with their status.
func directoryOf(statuses map[string]registryv1.PrincipalStatus) []*registryv1.Principal {
	var out []*registryv1.Principal
	for id, st := range statuses {
		out = append(out, &registryv1.Principal{Id: id, Status: st})
	}
	return out
}

// TestVerifyApprovalChecksTheDirectory: the activity every token decision goes through refuses the
// token of an agent's owner or sponsor whom the tenant's directory does not list as ACTIVE (departed
// or unknown), and passes an ACTIVE one, anybody in a tenant without a directory, and a subject who
// is neither owner nor sponsor (not checked). A registry that cannot be asked is a retryable error,
// one that refuses the query a final one: nothing is decided unchecked.
func TestVerifyApprovalChecksTheDirectory(t *testing.T) {
	const agentID = "v1"
	agent := workflows.AgentName(tenant, agentID)
	dir := directoryOf(map[string]registryv1.PrincipalStatus{agentOwner: principalDeparted, agentSponsor: principalActive, "sam@corp.example": principalDeparted})
	for _, tc := range []struct {
		name          string
		directory     []*registryv1.Principal
		subject       string
		fail          error // the first ListPrincipals fails with it
		wantRefused   string
		wantErr       bool
		wantRetryable bool
	}{
		{"departed owner", dir, agentOwner, nil, notActive(agentOwner), false, false},
		{"active sponsor", dir, agentSponsor, nil, "", false, false},
		{"unknown sponsor", directoryOf(map[string]registryv1.PrincipalStatus{agentOwner: principalActive}), agentSponsor, nil, notActive(agentSponsor), false, false},
		{"departed approver, neither owner nor sponsor", dir, "sam@corp.example", nil, "", false, false},
		{"no directory", nil, agentOwner, nil, "", false, false},
		{"registry down", dir, agentSponsor, errs.Unavailable("DOWN", "registry down", nil), "", true, true},
		{"registry refuses the query", dir, agentSponsor, errs.PermissionDenied("DENIED", "not for the worker"), "", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fakes := workflowstest.Start(t)
			fakes.Registry.Put(workflowstest.NewAgent(tenant, agentID, registryv1.RiskTier_RISK_TIER_LOW))
			fakes.Registry.SetPrincipals(tenant, tc.directory...)
			if tc.fail != nil {
				fakes.FailNext("ListPrincipals", tc.fail)
			}
			var suite testsuite.WorkflowTestSuite
			suite.SetLogger(quietLogger())
			env := suite.NewTestActivityEnvironment()
			env.RegisterActivity(activitiesFor(t, fakes, nil))
			tok := approvalIssuer(t).Token(t, claimsOf(t, agentID, tc.subject, "owner", "approve", workflowstest.TestRunID, "owner"))
			val, err := env.ExecuteActivity("VerifyApproval", workflows.VerifyApprovalRequest{Agent: agent, Token: tok})
			if tc.wantErr {
				var app *temporal.ApplicationError
				if !errors.As(err, &app) || app.NonRetryable() == tc.wantRetryable {
					t.Fatalf("VerifyApproval: %v, want an application error, retryable %v", err, tc.wantRetryable)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var v workflows.VerifiedApproval
			if err := val.Get(&v); err != nil {
				t.Fatal(err)
			}
			if v.Refused != tc.wantRefused {
				t.Fatalf("refused %q, want %q", v.Refused, tc.wantRefused)
			}
			if tc.wantRefused == "" && (v.Subject != tc.subject || v.Owner != agentOwner || v.Sponsor != agentSponsor) {
				t.Fatalf("verified %+v", v)
			}
		})
	}
}

// TestDepartedOwnerApprovalRefused: a provisioning approval of the agent's departed owner counts
// neither as a signal (the Temporal UI's way) nor as an update, and each is recorded as refused
// saying why; the ACTIVE sponsor's approval, its directory read failing once first, counts.
func TestDepartedOwnerApprovalRefused(t *testing.T) {
	const agentID = "v2"
	f := newFixture(t, workflows.ProvisionWorkflowID(tenant, agentID))
	f.fakes.Registry.Put(workflowstest.NewAgent(tenant, agentID, registryv1.RiskTier_RISK_TIER_HIGH))
	f.fakes.Registry.SetPrincipals(tenant, directoryOf(map[string]registryv1.PrincipalStatus{agentOwner: principalDeparted, agentSponsor: principalActive})...)
	f.fakes.Policy.Decide(workflows.AgentName(tenant, agentID), &policyv1.Decision{
		DecisionId: "dec-" + agentID, Outcome: policyv1.Outcome_OUTCOME_REQUIRE_APPROVAL, RequiredApprovals: []string{"owner"},
	})
	var mu sync.Mutex
	updateErrs := map[string]error{}
	update := func(id string, a workflows.Approval) {
		f.env.UpdateWorkflow(workflows.ApproveUpdate, id, &testsuite.TestUpdateCallback{
			OnAccept:   func() {},
			OnReject:   func(err error) { mu.Lock(); updateErrs[id] = err; mu.Unlock() },
			OnComplete: func(_ any, err error) { mu.Lock(); updateErrs[id] = err; mu.Unlock() },
		}, a)
	}
	f.env.RegisterDelayedCallback(func() {
		f.env.SignalWorkflow(workflows.ApprovalSignal, tokenApproval(t, agentID, agentOwner, "owner", "approve", "by signal", "owner"))
	}, time.Hour)
	f.env.RegisterDelayedCallback(func() {
		update("owner", tokenApproval(t, agentID, agentOwner, "owner", "approve", "by update", "owner"))
	}, 2*time.Hour)
	f.env.RegisterDelayedCallback(func() {
		f.fakes.FailNext("ListPrincipals", errs.Unavailable("DOWN", "registry down", nil))
		update("sponsor", tokenApproval(t, agentID, agentSponsor, "owner", "approve", "as delegate", "owner"))
	}, 3*time.Hour)
	in := provisionInput(agentID, "high")
	in.EscalateAfter, in.ApprovalDeadline = 100*time.Hour, 100*time.Hour
	f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, in)
	var res workflows.ProvisionResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if err := updateErrs["owner"]; err == nil || !workflows.IsApprovalRefused(err) || !strings.Contains(err.Error(), notActive(agentOwner)) {
		t.Errorf("the departed owner's update: %v, want refused saying %q", err, notActive(agentOwner))
	}
	if err := updateErrs["sponsor"]; err != nil {
		t.Errorf("the ACTIVE sponsor's update: %v", err)
	}
	st := f.status(t)
	refused := 0
	for _, r := range st.Refused {
		if strings.Contains(r.Reason, notActive(agentOwner)) {
			refused++
		}
	}
	if refused != 2 || st.RefusedCount != 2 {
		t.Errorf("refusals = %+v (count %d), want the owner's signal and update refused as not ACTIVE", st.Refused, st.RefusedCount)
	}
	if len(st.ApprovalsSoFar) != 1 || st.ApprovalsSoFar[0].Approver != agentSponsor {
		t.Errorf("approvals = %+v, want the sponsor's alone", st.ApprovalsSoFar)
	}
	if res.Result != workflows.ResultActivated || len(f.fakes.Requests("ActivateAgent")) != 1 {
		t.Errorf("result %+v, want the agent approved and activated", res)
	}
	if n := len(f.fakes.Requests("ListPrincipals")); n < 5 {
		t.Errorf("%d directory reads, want every owner decision checked (and the failed read retried)", n)
	}
}

// TestDepartedSponsorSignOffRefused: a deprovisioning sign-off of the agent's departed sponsor sent as
// a signal (from the Temporal UI) or an update is refused and recorded; the ACTIVE owner and a
// security-approver the directory does not list (neither owner nor sponsor) sign.
func TestDepartedSponsorSignOffRefused(t *testing.T) {
	const agentID = "v3"
	tok := func(sub, step string, roles ...string) workflows.Approval {
		return tokenApproval(t, agentID, sub, step, workflows.DecisionSignOff, "checked", roles...)
	}
	f := newFixture(t, workflows.DeprovisionWorkflowID(tenant, agentID))
	f.fakes.Registry.Put(retiringAgent(agentID))
	f.fakes.Registry.SetPrincipals(tenant, directoryOf(map[string]registryv1.PrincipalStatus{agentOwner: principalActive, agentSponsor: principalDeparted})...)
	f.fakes.Issuer.Put(activeClient(agentID))
	f.env.OnRequestCancelExternalWorkflow(mock.Anything, mock.Anything, mock.Anything).Return(nil)
	f.acts.Notifier = &recordingNotifier{}
	var mu sync.Mutex
	var sponsorUpdateErr error
	f.env.RegisterDelayedCallback(func() { f.env.SignalWorkflow(workflows.SignOffSignal, tok(agentSponsor, "owner")) }, time.Hour)
	f.env.RegisterDelayedCallback(func() {
		f.env.UpdateWorkflow(workflows.SignOffUpdate, "sponsor", &testsuite.TestUpdateCallback{
			OnAccept:   func() {},
			OnReject:   func(err error) { mu.Lock(); sponsorUpdateErr = err; mu.Unlock() },
			OnComplete: func(_ any, err error) { mu.Lock(); sponsorUpdateErr = err; mu.Unlock() },
		}, tok(agentSponsor, "owner"))
	}, 2*time.Hour)
	f.env.RegisterDelayedCallback(func() { f.env.SignalWorkflow(workflows.SignOffSignal, tok(agentOwner, "owner", "owner")) }, 3*time.Hour)
	f.env.RegisterDelayedCallback(func() {
		f.env.SignalWorkflow(workflows.SignOffSignal, tok("sec@corp.example", "security", "security-approver"))
	}, 4*time.Hour)
	in := deprovisionInput(agentID)
	in.Trigger, in.RemindEvery, in.EscalateAfter = workflows.TriggerRequest, 24*time.Hour, 20*time.Hour
	f.env.ExecuteWorkflow(workflows.DeprovisionWorkflow, in)
	var res workflows.DeprovisionResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if sponsorUpdateErr == nil || !strings.Contains(sponsorUpdateErr.Error(), notActive(agentSponsor)) {
		t.Errorf("the departed sponsor's update: %v, want refused saying %q", sponsorUpdateErr, notActive(agentSponsor))
	}
	var signers []string
	for _, s := range res.SignOffs {
		signers = append(signers, s.Approver)
	}
	if !slices.Equal(signers, []string{agentOwner, "sec@corp.example"}) {
		t.Errorf("sign-offs by %v, want the owner's and security's", signers)
	}
	st := f.status(t)
	refused := 0
	for _, r := range st.Refused {
		if strings.Contains(r.Reason, notActive(agentSponsor)) {
			refused++
		}
	}
	if refused != 2 || st.RefusedCount != 2 {
		t.Errorf("refusals = %+v (count %d), want the sponsor's signal and update refused as not ACTIVE", st.Refused, st.RefusedCount)
	}
}
