package workflows_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

func provisionInput(agentID, tier string) workflows.ProvisionInput {
	return workflows.ProvisionInput{
		Tenant: tenant, Agent: workflows.AgentName(tenant, agentID), AgentID: agentID, RiskTier: tier, EventID: "evt-" + agentID,
	}
}

func decidedEvent(t *testing.T, f *fixture, agentID string) *lifecyclev1.ProvisioningDecided {
	t.Helper()
	evs := f.events(t, agentID)
	if len(evs) != 1 || evs[0].Type != workflows.EventProvisioningDecided {
		t.Fatalf("lifecycle events = %+v, want one %s", evs, workflows.EventProvisioningDecided)
	}
	if evs[0].Metadata.CausationID != "evt-"+agentID || evs[0].Metadata.Actor.Kind != eventstore.ActorService {
		t.Errorf("event metadata = %+v, want causation evt-%s by a service", evs[0].Metadata, agentID)
	}
	d, err := eventstore.DecodeAs[*lifecyclev1.ProvisioningDecided](evs[0])
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestProvisionAutoApproved(t *testing.T) {
	f := newFixture(t, workflows.ProvisionWorkflowID(tenant, "a1"))
	f.fakes.Registry.Put(workflowstest.NewAgent(tenant, "a1", registryv1.RiskTier_RISK_TIER_LOW))

	f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, provisionInput("a1", "low"))

	if err := f.env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	var res workflows.ProvisionResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Result != workflows.ResultActivated || !slices.Equal(res.ApprovedBy, []string{"policy:auto"}) || res.Client != "tenants/acme/clients/a1" {
		t.Fatalf("result = %+v", res)
	}
	// The steps of an auto-approved run are local activities of one workflow task: the Stage search
	// attribute goes from policy to done (the order of the steps is TestProvisionCredentialBeforeActivation's).
	wantStages := []string{"policy", "done"}
	if got := f.stages.all(); !slices.Equal(got, wantStages) {
		t.Errorf("stages = %v, want %v", got, wantStages)
	}

	evals := workflowstest.RequestsOf[*policyv1.EvaluateAdmissionRequest](f.fakes, "EvaluateAdmission")
	if len(evals) != 1 {
		t.Fatalf("EvaluateAdmission calls = %d", len(evals))
	}
	doc := evals[0].GetAgent().GetFields()
	if evals[0].GetTenant() != tenant || evals[0].GetRequestId() != "provision/acme/a1/policy" ||
		doc["name"].GetStringValue() != "tenants/acme/agents/a1" || doc["riskTier"].GetStringValue() != "RISK_TIER_LOW" {
		t.Errorf("EvaluateAdmission request = %v", evals[0])
	}

	acts := workflowstest.RequestsOf[*registryv1.ActivateAgentRequest](f.fakes, "ActivateAgent")
	if len(acts) != 1 {
		t.Fatalf("ActivateAgent calls = %d", len(acts))
	}
	if a := acts[0]; a.GetName() != "tenants/acme/agents/a1" || a.GetDecisionId() != "dec-provision/acme/a1/policy" ||
		a.GetApprovedBy() != "policy:auto" || a.GetRequestId() != "provision/acme/a1/activate" {
		t.Errorf("ActivateAgent request = %v", a)
	}

	creates := workflowstest.RequestsOf[*issuerv1.CreateClientRequest](f.fakes, "CreateClient")
	if len(creates) != 1 {
		t.Fatalf("CreateClient calls = %d", len(creates))
	}
	c := creates[0]
	agent := workflowstest.NewAgent(tenant, "a1", registryv1.RiskTier_RISK_TIER_LOW)
	if c.GetParent() != "tenants/acme" || c.GetRequestId() != "provision/acme/a1/credentials" ||
		c.GetClient().GetClientId() != "a1" || c.GetClient().GetAgent() != "tenants/acme/agents/a1" ||
		c.GetClient().GetEnvironment() != "dev" || c.GetClient().GetTokenTtlSeconds() != 600 ||
		c.GetClient().GetPublicJwks() != agent.GetPublicJwks() || !slices.Equal(c.GetClient().GetScopes(), agent.GetScopes()) {
		t.Errorf("CreateClient request = %v", c)
	}
	if got := f.fakes.Registry.Agent("tenants/acme/agents/a1").GetState(); got != registryv1.AgentState_AGENT_STATE_ACTIVE {
		t.Errorf("agent state = %v, want ACTIVE", got)
	}

	d := decidedEvent(t, f, "a1")
	if d.GetResult() != "activated" || d.GetWorkflowId() != "provision/acme/a1" || d.GetDecisionId() != res.DecisionID ||
		!slices.Equal(d.GetApprovedBy(), []string{"policy:auto"}) {
		t.Errorf("provisioning_decided = %v", d)
	}
	if s := f.status(t); s.Stage != "done" || s.Result != "activated" || s.WaitingFor != "" {
		t.Errorf("final status = %+v", s)
	}
}

// approvalStep is one approval sent at a point in (test) time, as a signal or an update.
type approvalStep struct {
	at       time.Duration
	update   bool
	approval workflows.Approval
}

func TestProvisionWithApprovals(t *testing.T) {
	owner := tokenApproval(t, "a2", agentOwner, "owner", "approve", "ok")
	bob := tokenApproval(t, "a2", "bob@corp", "security", "approve", "", "security-approver")
	bobRejects := tokenApproval(t, "a2", "bob@corp", "security", "reject", "too broad", "security-approver")
	sponsorForOwner := tokenApproval(t, "a2", agentSponsor, "owner", "approve", "")
	sponsorForOwner.Decision = "APPROVE"

	tests := []struct {
		name         string
		steps        []approvalStep
		wantResult   string
		wantApprover string // ActivateAgent approved_by, or "" when rejected
		wantReason   string
	}{
		{"signals", []approvalStep{{time.Hour, false, owner}, {2 * time.Hour, false, bob}}, "activated", "team:payments,bob@corp", ""},
		{"updates", []approvalStep{{time.Hour, true, owner}, {2 * time.Hour, true, bob}}, "activated", "team:payments,bob@corp", ""},
		{"signal then update", []approvalStep{{time.Hour, false, owner}, {2 * time.Hour, true, bob}}, "activated", "team:payments,bob@corp", ""},
		{"sponsor acts for the owner", []approvalStep{{time.Hour, true, sponsorForOwner}, {2 * time.Hour, false, bob}}, "activated", "alice@corp.example,bob@corp", ""},
		{"both at once", []approvalStep{{time.Hour, true, owner}, {time.Hour, true, bob}}, "activated", "team:payments,bob@corp", ""},
		{"signal and update at once", []approvalStep{{time.Hour, false, owner}, {time.Hour, true, bob}}, "activated", "team:payments,bob@corp", ""},
		{"second approver rejects", []approvalStep{{time.Hour, false, owner}, {2 * time.Hour, true, bobRejects}}, "rejected", "", "rejected by bob@corp (security-approver): too broad"},
		{"first approver rejects by signal", []approvalStep{{time.Hour, false, tokenApproval(t, "a2", agentOwner, "owner", "reject", "")}}, "rejected", "", "rejected by team:payments (owner)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, workflows.ProvisionWorkflowID(tenant, "a2"))
			f.fakes.Registry.Put(workflowstest.NewAgent(tenant, "a2", registryv1.RiskTier_RISK_TIER_HIGH))
			f.fakes.Policy.Decide("tenants/acme/agents/a2", &policyv1.Decision{
				DecisionId: "dec-2", Outcome: policyv1.Outcome_OUTCOME_REQUIRE_APPROVAL,
				Reasons: []string{"pii"}, RequiredApprovals: []string{"owner", "security"},
			})

			var before workflows.Status
			f.env.RegisterDelayedCallback(func() { before = f.status(t) }, 30*time.Minute)
			var updateResults []workflows.Status
			var updateErrs []error
			for i, st := range tt.steps {
				f.env.RegisterDelayedCallback(func() {
					if !st.update {
						f.env.SignalWorkflow(workflows.ApprovalSignal, st.approval)
						return
					}
					f.env.UpdateWorkflow(workflows.ApproveUpdate, "u"+string(rune('0'+i)), &testsuite.TestUpdateCallback{
						OnAccept: func() {},
						OnReject: func(err error) { updateErrs = append(updateErrs, err) },
						OnComplete: func(v any, err error) {
							if err != nil {
								updateErrs = append(updateErrs, err)
								return
							}
							updateResults = append(updateResults, v.(workflows.Status))
						},
					}, st.approval)
				}, st.at)
			}

			f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, provisionInput("a2", "high"))

			if err := f.env.GetWorkflowError(); err != nil {
				t.Fatal(err)
			}
			if len(updateErrs) > 0 {
				t.Fatalf("updates failed: %v", updateErrs)
			}
			if before.Stage != "approval" || before.WaitingFor != "approval by owner" ||
				!slices.Equal(before.RequiredApprovals, []string{"owner", "security"}) || len(before.ApprovalsSoFar) != 0 ||
				!slices.Contains(before.MayAct, "the agent's owner") {
				t.Errorf("status while waiting = %+v", before)
			}
			for _, s := range updateResults {
				if len(s.ApprovalsSoFar) == 0 {
					t.Errorf("update returned status without the approval: %+v", s)
				}
			}
			var res workflows.ProvisionResult
			if err := f.env.GetWorkflowResult(&res); err != nil {
				t.Fatal(err)
			}
			if res.Result != tt.wantResult || res.DecisionID != "dec-2" {
				t.Fatalf("result = %+v, want %s", res, tt.wantResult)
			}
			activations := workflowstest.RequestsOf[*registryv1.ActivateAgentRequest](f.fakes, "ActivateAgent")
			rejections := workflowstest.RequestsOf[*registryv1.RejectAgentRequest](f.fakes, "RejectAgent")
			if tt.wantApprover != "" {
				if len(activations) != 1 || activations[0].GetApprovedBy() != tt.wantApprover || activations[0].GetDecisionId() != "dec-2" || len(rejections) != 0 {
					t.Fatalf("activations = %v, rejections = %v", activations, rejections)
				}
				if len(workflowstest.RequestsOf[*issuerv1.CreateClientRequest](f.fakes, "CreateClient")) != 1 {
					t.Error("no client created")
				}
			} else {
				if len(activations) != 0 || len(rejections) != 1 || rejections[0].GetReason() != tt.wantReason ||
					rejections[0].GetRequestId() != "provision/acme/a2/reject" {
					t.Fatalf("activations = %v, rejections = %v, want reason %q", activations, rejections, tt.wantReason)
				}
				if len(f.fakes.Requests("CreateClient")) != 0 {
					t.Error("a rejected agent got a client")
				}
			}
			if d := decidedEvent(t, f, "a2"); d.GetResult() != tt.wantResult {
				t.Errorf("provisioning_decided result = %s", d.GetResult())
			}
			if got := f.stages.all(); !slices.Contains(got, "approval") || got[len(got)-1] != "done" {
				t.Errorf("stages = %v", got)
			}
		})
	}
}

func TestProvisionDenied(t *testing.T) {
	f := newFixture(t, workflows.ProvisionWorkflowID(tenant, "a3"))
	f.fakes.Registry.Put(workflowstest.NewAgent(tenant, "a3", registryv1.RiskTier_RISK_TIER_HIGH))
	f.fakes.Policy.Decide("tenants/acme/agents/a3", &policyv1.Decision{
		DecisionId: "dec-3", Outcome: policyv1.Outcome_OUTCOME_DENY, Reasons: []string{"admin scope", "prod write from dev"},
	})

	f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, provisionInput("a3", "high"))

	var res workflows.ProvisionResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	want := "denied by policy: admin scope; prod write from dev"
	if res.Result != "rejected" || res.Reason != want {
		t.Fatalf("result = %+v", res)
	}
	rej := workflowstest.RequestsOf[*registryv1.RejectAgentRequest](f.fakes, "RejectAgent")
	if len(rej) != 1 || rej[0].GetReason() != want || rej[0].GetDecisionId() != "dec-3" {
		t.Fatalf("RejectAgent = %v", rej)
	}
	if n := len(f.fakes.Requests("ActivateAgent")) + len(f.fakes.Requests("CreateClient")); n != 0 {
		t.Fatalf("denied agent was activated or got a client (%d calls)", n)
	}
	if got := f.fakes.Registry.Agent("tenants/acme/agents/a3"); got.GetState() != registryv1.AgentState_AGENT_STATE_REJECTED {
		t.Errorf("agent = %v", got)
	}
	if d := decidedEvent(t, f, "a3"); d.GetResult() != "rejected" || len(d.GetApprovedBy()) != 0 {
		t.Errorf("provisioning_decided = %v", d)
	}
	if got, want := f.stages.all(), []string{"policy", "reject", "done"}; !slices.Equal(got, want) {
		t.Errorf("stages = %v, want %v", got, want)
	}
}

func TestApproveUpdateValidator(t *testing.T) {
	tests := []struct {
		name     string
		approval workflows.Approval
		wantErr  string // "" = accepted
	}{
		{"token for another step", tokenApproval(t, "a5", "eve@corp", "security", "approve", "", "security-approver"), "is for the security step, the run waits for the owner step"},
		{"role without approval rights", tokenApproval(t, "a5", "eve@corp", "owner", "approve", "", "analyst"), "the owner step is decided by the agent's owner"},
		{"unknown decision", func() workflows.Approval {
			a := tokenApproval(t, "a5", agentOwner, "owner", "approve", "")
			a.Decision = "maybe"
			return a
		}(), `decision "maybe"`},
		{"decision other than the token's", func() workflows.Approval {
			a := tokenApproval(t, "a5", agentOwner, "owner", "approve", "")
			a.Decision = "reject"
			return a
		}(), "the approval token is for approve, the request says reject"},
		{"self-asserted", workflows.Approval{Approver: agentOwner, Role: "owner", Decision: "approve"}, "no approval token"},
		{"the owner", tokenApproval(t, "a5", agentOwner, "owner", "approve", ""), ""},
		{"the sponsor", tokenApproval(t, "a5", agentSponsor, "owner", "approve", ""), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, workflows.ProvisionWorkflowID(tenant, "a5"))
			f.fakes.Registry.Put(workflowstest.NewAgent(tenant, "a5", registryv1.RiskTier_RISK_TIER_MODERATE))
			f.fakes.Policy.Decide("tenants/acme/agents/a5", &policyv1.Decision{
				DecisionId: "dec-5", Outcome: policyv1.Outcome_OUTCOME_REQUIRE_APPROVAL, RequiredApprovals: []string{"owner"},
			})
			var rejected, completed error
			var accepted bool
			f.env.RegisterDelayedCallback(func() {
				f.env.UpdateWorkflow(workflows.ApproveUpdate, "u1", &testsuite.TestUpdateCallback{
					OnAccept:   func() { accepted = true },
					OnReject:   func(err error) { rejected = err },
					OnComplete: func(_ any, err error) { completed = err },
				}, tt.approval)
			}, time.Hour)
			var after workflows.Status
			f.env.RegisterDelayedCallback(func() { after = f.status(t) }, 2*time.Hour)
			// A signal with the same content is refused (and recorded) rather than taken.
			f.env.RegisterDelayedCallback(func() { f.env.SignalWorkflow(workflows.ApprovalSignal, tt.approval) }, 3*time.Hour)

			f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, provisionInput("a5", "moderate"))

			if tt.wantErr == "" {
				if !accepted || rejected != nil || completed != nil {
					t.Fatalf("accepted=%v rejected=%v completed=%v, want accepted", accepted, rejected, completed)
				}
				var res workflows.ProvisionResult
				if err := f.env.GetWorkflowResult(&res); err != nil || res.Result != "activated" {
					t.Fatalf("result = %+v, %v", res, err)
				}
				return
			}
			// The validator refuses what needs no verification; the handler refuses after verifying the token.
			refused := rejected
			if refused == nil {
				refused = completed
			}
			if refused == nil || !strings.Contains(refused.Error(), tt.wantErr) || !workflows.IsApprovalRefused(refused) {
				t.Fatalf("accepted=%v rejected=%v completed=%v, want a refusal mentioning %q", accepted, rejected, completed, tt.wantErr)
			}
			if after.Stage != "approval" || len(after.ApprovalsSoFar) != 0 {
				t.Errorf("a refused approval changed the run: %+v", after)
			}
			// Nobody valid approved: the request expires after the deadline.
			var res workflows.ProvisionResult
			if err := f.env.GetWorkflowResult(&res); err != nil || res.Result != "rejected" {
				t.Fatalf("result = %+v, %v", res, err)
			}
			if len(f.fakes.Requests("ActivateAgent")) != 0 {
				t.Fatal("agent activated without a valid approval")
			}
		})
	}
}

// TestProvisionActivityErrors: errors a retry can fix are retried; a final error of the activation
// settles the run: the agent, still PENDING, is rejected with the error as reason, the client created
// before is taken back, and the rejection is recorded (a failed run would be started again and the
// approvers asked again, for ever).
func TestProvisionActivityErrors(t *testing.T) {
	tests := []struct {
		name       string
		fail       []error
		wantReason string // "" = the agent is activated after retries
		wantCalls  int
	}{
		{"unavailable is retried", []error{errs.Unavailable("DOWN", "registry down", nil), errs.Conflict("ETAG", "changed")}, "", 3},
		{"invalid argument is final", []error{errs.InvalidArgument("decision_id", "too long")}, "too long", 1},
		{"permission denied is final", []error{errs.PermissionDenied("MISSING_ROLE", "no")}, "MISSING_ROLE", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, workflows.ProvisionWorkflowID(tenant, "a6"))
			f.fakes.Registry.Put(workflowstest.NewAgent(tenant, "a6", registryv1.RiskTier_RISK_TIER_LOW))
			f.fakes.FailNext("ActivateAgent", tt.fail...)

			f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, provisionInput("a6", "low"))

			if n := len(f.fakes.Requests("ActivateAgent")); n != tt.wantCalls {
				t.Errorf("ActivateAgent calls = %d, want %d", n, tt.wantCalls)
			}
			var res workflows.ProvisionResult
			if err := f.env.GetWorkflowResult(&res); err != nil {
				t.Fatal(err)
			}
			agent := f.fakes.Registry.Agent("tenants/acme/agents/a6")
			if tt.wantReason == "" {
				if res.Result != workflows.ResultActivated || agent.GetState() != registryv1.AgentState_AGENT_STATE_ACTIVE {
					t.Fatalf("result %+v, agent %v, want activated", res, agent.GetState())
				}
				return
			}
			if res.Result != workflows.ResultRejected || agent.GetState() != registryv1.AgentState_AGENT_STATE_REJECTED ||
				!strings.Contains(agent.GetStateReason(), tt.wantReason) {
				t.Fatalf("result %+v, agent %v (%q), want rejected naming %s", res, agent.GetState(), agent.GetStateReason(), tt.wantReason)
			}
			if got := decidedEvent(t, f, "a6"); got.GetResult() != workflows.ResultRejected {
				t.Errorf("recorded outcome = %v, want rejected", got)
			}
			// The client created before the failed activation is taken back.
			if c := f.fakes.Issuer.Client("tenants/acme/clients/a6"); c.GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED {
				t.Errorf("client after a failed activation = %v, want DISABLED", c)
			}
		})
	}
}

func TestProvisionRejectsBadInput(t *testing.T) {
	tests := []struct {
		name string
		in   workflows.ProvisionInput
	}{
		{"malformed agent name", workflows.ProvisionInput{Tenant: tenant, Agent: "agents/a7", AgentID: "a7"}},
		{"agent of another tenant", workflows.ProvisionInput{Tenant: tenant, Agent: "tenants/other/agents/a7", AgentID: "a7"}},
		{"id mismatch", workflows.ProvisionInput{Tenant: tenant, Agent: "tenants/acme/agents/a8", AgentID: "a7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, "provision/acme/a7")
			f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, tt.in)
			var app *temporal.ApplicationError
			if err := f.env.GetWorkflowError(); !errors.As(err, &app) || app.Type() != "INVALID_ARGUMENT" {
				t.Fatalf("err = %v, want INVALID_ARGUMENT", err)
			}
			if n := len(f.fakes.Requests("GetAgent")); n != 0 {
				t.Fatalf("bad input reached the registry (%d calls)", n)
			}
		})
	}
}

func TestProvisionCancelledWhileWaitingForApproval(t *testing.T) {
	f := newFixture(t, workflows.ProvisionWorkflowID(tenant, "a9"))
	f.fakes.Registry.Put(workflowstest.NewAgent(tenant, "a9", registryv1.RiskTier_RISK_TIER_HIGH))
	f.fakes.Policy.Decide("tenants/acme/agents/a9", &policyv1.Decision{
		DecisionId: "dec-9", Outcome: policyv1.Outcome_OUTCOME_REQUIRE_APPROVAL, RequiredApprovals: []string{"owner"},
	})
	f.env.RegisterDelayedCallback(f.env.CancelWorkflow, time.Hour)

	f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, provisionInput("a9", "high"))

	if err := f.env.GetWorkflowError(); !temporal.IsCanceledError(err) {
		t.Fatalf("err = %v, want cancelled", err)
	}
	if got := f.stages.all(); got[len(got)-1] != "failed" {
		t.Errorf("stages = %v, want failed last", got)
	}
	if n := len(f.fakes.Requests("ActivateAgent")) + len(f.fakes.Requests("RejectAgent")); n != 0 {
		t.Errorf("a cancelled run changed the agent (%d calls)", n)
	}
}

func TestProvisionWaitsForTheRegistryReadModel(t *testing.T) {
	tests := []struct {
		name     string
		appearIn time.Duration // 0 = never
		wantErr  string
	}{
		{"agent shows up late", 300 * time.Millisecond, ""},
		{"agent never shows up", 0, "AGENT_NOT_FOUND"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, workflows.ProvisionWorkflowID(tenant, "a10"))
			f.acts.ReadLag = 2 * time.Second
			f.acts.NotFoundRetryFor = time.Second // lag for a second, final after (TestNotFoundIsLagForABoundedTime)
			if tt.appearIn > 0 {
				timer := time.AfterFunc(tt.appearIn, func() {
					f.fakes.Registry.Put(workflowstest.NewAgent(tenant, "a10", registryv1.RiskTier_RISK_TIER_LOW))
				})
				defer timer.Stop()
			}

			f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, provisionInput("a10", "low"))

			gets := len(f.fakes.Requests("GetAgent"))
			if gets < 2 {
				t.Errorf("GetAgent calls = %d, want it to wait for the read model", gets)
			}
			err := f.env.GetWorkflowError()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(f.fakes.Requests("ActivateAgent")) != 1 {
					t.Fatal("agent not activated")
				}
				return
			}
			var app *temporal.ApplicationError
			if !errors.As(err, &app) || app.Type() != tt.wantErr || !app.NonRetryable() {
				t.Fatalf("err = %v, want non-retryable %s", err, tt.wantErr)
			}
		})
	}
}

// TestOneApproverPerStep enforces separation of duties: a principal who approved one step cannot
// approve the next one too (by update or by signal), while a different approver can.
func TestOneApproverPerStep(t *testing.T) {
	f := newFixture(t, workflows.ProvisionWorkflowID(tenant, "a6"))
	f.fakes.Registry.Put(workflowstest.NewAgent(tenant, "a6", registryv1.RiskTier_RISK_TIER_HIGH))
	f.fakes.Policy.Decide("tenants/acme/agents/a6", &policyv1.Decision{
		DecisionId: "dec-6", Outcome: policyv1.Outcome_OUTCOME_REQUIRE_APPROVAL, RequiredApprovals: []string{"owner", "security"},
	})
	var secondRejected error
	var midway workflows.Status
	f.env.RegisterDelayedCallback(func() {
		f.env.UpdateWorkflow(workflows.ApproveUpdate, "u1", &testsuite.TestUpdateCallback{
			OnAccept: func() {}, OnReject: func(err error) { t.Errorf("first approval refused: %v", err) }, OnComplete: func(any, error) {},
		}, tokenApproval(t, "a6", agentSponsor, "owner", "approve", "", "security-approver"))
	}, time.Hour)
	f.env.RegisterDelayedCallback(func() {
		f.env.UpdateWorkflow(workflows.ApproveUpdate, "u2", &testsuite.TestUpdateCallback{
			OnAccept: func() {}, OnReject: func(err error) { secondRejected = err }, OnComplete: func(_ any, err error) { secondRejected = err },
		}, tokenApproval(t, "a6", agentSponsor, "security", "approve", "", "security-approver"))
		f.env.SignalWorkflow(workflows.ApprovalSignal, tokenApproval(t, "a6", agentSponsor, "security", "approve", "", "security-approver"))
	}, 2*time.Hour)
	f.env.RegisterDelayedCallback(func() { midway = f.status(t) }, 3*time.Hour)
	f.env.RegisterDelayedCallback(func() {
		f.env.SignalWorkflow(workflows.ApprovalSignal, tokenApproval(t, "a6", "sam@corp", "security", "approve", "", "security-approver"))
	}, 4*time.Hour)

	f.env.ExecuteWorkflow(workflows.ProvisionWorkflow, provisionInput("a6", "high"))

	if secondRejected == nil || !strings.Contains(secondRejected.Error(), agentSponsor+" already approved") {
		t.Fatalf("second approval by the same principal: %v, want refused", secondRejected)
	}
	if len(midway.ApprovalsSoFar) != 1 || midway.WaitingFor != "approval by security" {
		t.Fatalf("after the refused approvals the run shows %+v", midway)
	}
	var res workflows.ProvisionResult
	if err := f.env.GetWorkflowResult(&res); err != nil || res.Result != "activated" {
		t.Fatalf("result = %+v, %v", res, err)
	}
	if got := strings.Join(res.ApprovedBy, ","); got != agentSponsor+",sam@corp" {
		t.Fatalf("approved by %s, want %s,sam@corp", got, agentSponsor)
	}
}
