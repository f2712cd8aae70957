package workflows_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/testsuite"

	"github.com/agentid/agentid/pkg/eventstore"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

const campaign = "q-2026-10"

var reviewScopes = []string{"crm.export", "crm.read", "crm.write"}

// reviewFixture is a workflow test of one review of an ACTIVE agent with reviewScopes of which the
// monitor saw only crm.read used.
func reviewFixture(t *testing.T, agentID string) (*fixture, *notifications) {
	t.Helper()
	f := newFixture(t, workflows.ReviewWorkflowID(tenant, campaign, agentID))
	a := workflowstest.NewAgent(tenant, agentID, registryv1.RiskTier_RISK_TIER_MODERATE)
	a.State = registryv1.AgentState_AGENT_STATE_ACTIVE
	a.Scopes = slices.Clone(reviewScopes)
	f.fakes.Registry.Put(a)
	f.fakes.Monitor.SetScopeUses(a.GetName(), map[string]int64{"crm.read": 42})
	f.acts.Monitor = monitorv1.NewMonitorServiceClient(f.fakes.Conn(t))
	n := &notifications{}
	f.acts.Notifier = n
	return f, n
}

func reviewInput(agentID string) workflows.ReviewInput {
	return workflows.ReviewInput{
		Tenant: tenant, Campaign: campaign, Agent: workflows.AgentName(tenant, agentID), AgentID: agentID,
		Owner: agentOwner, Sponsor: agentSponsor, RiskTier: "moderate", Scopes: slices.Clone(reviewScopes),
	}
}

type reviewOutcome struct {
	rejected  error
	completed error
	status    workflows.ReviewStatus
}

// decideReview sends update "decide-review" at the given time and keeps its outcome.
func (f *fixture) decideReview(at time.Duration, id string, d workflows.ReviewDecision) *reviewOutcome {
	out := &reviewOutcome{}
	f.env.RegisterDelayedCallback(func() {
		f.env.UpdateWorkflow(workflows.ReviewDecideUpdate, id, &testsuite.TestUpdateCallback{
			OnAccept: func() {},
			OnReject: func(err error) { out.rejected = err },
			OnComplete: func(v any, err error) {
				out.completed = err
				if err == nil {
					out.status = v.(workflows.ReviewStatus)
				}
			},
		}, d)
	}, at)
	return out
}

func reviewToken(t *testing.T, agentID, sub, step, decision string, roles ...string) string {
	t.Helper()
	return tokenApproval(t, agentID, sub, step, decision, "", roles...).Token
}

func reviewResult(t *testing.T, f *fixture) workflows.ReviewResult {
	t.Helper()
	if !f.env.IsWorkflowCompleted() {
		t.Fatal("the review run did not complete")
	}
	if err := f.env.GetWorkflowError(); err != nil {
		t.Fatalf("review run failed: %v", err)
	}
	var res workflows.ReviewResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	return res
}

func eventTypes(evs []eventstore.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

func TestReviewCertifyKeepsUnusedScopeWithReason(t *testing.T) {
	f, n := reviewFixture(t, "agt_rev1")
	d := f.decideReview(time.Hour, "u1", workflows.ReviewDecision{
		Token: reviewToken(t, "agt_rev1", agentOwner, workflows.StepOwner, workflows.DecisionApprove),
		Keep:  map[string]string{"crm.write": "quarter-end batch writes"}, Comment: "reviewed",
	})
	f.env.ExecuteWorkflow(workflows.ReviewWorkflowName, reviewInput("agt_rev1"))
	res := reviewResult(t, f)
	if d.rejected != nil || d.completed != nil {
		t.Fatalf("decision: rejected %v, completed %v", d.rejected, d.completed)
	}
	if res.Outcome != workflows.ReviewOutcomeCertified || res.DecidedBy != agentOwner ||
		!slices.Equal(res.Removed, []string{"crm.export"}) || !slices.Equal(res.Kept, []string{"crm.read", "crm.write"}) {
		t.Fatalf("result %+v", res)
	}
	if got := f.fakes.Registry.Agent(workflows.AgentName(tenant, "agt_rev1")); !slices.Equal(got.GetScopes(), []string{"crm.read", "crm.write"}) ||
		got.GetState() != registryv1.AgentState_AGENT_STATE_ACTIVE {
		t.Fatalf("agent after review: scopes %v state %v", got.GetScopes(), got.GetState())
	}
	rm := workflowstest.RequestsOf[*registryv1.RemoveAgentScopesRequest](f.fakes, "RemoveAgentScopes")
	if len(rm) != 1 || rm[0].GetTicket() != "review:"+campaign || !strings.Contains(rm[0].GetReason(), "crm.export: not used in 90 days") {
		t.Fatalf("removal requests %v", rm)
	}
	if s := workflowstest.RequestsOf[*registryv1.SuspendAgentRequest](f.fakes, "SuspendAgent"); len(s) != 0 {
		t.Fatalf("a certified agent was suspended: %v", s)
	}
	evs := f.events(t, "agt_rev1")
	want := []string{workflows.EventReviewOpened, workflows.EventReviewDecided, workflows.EventReviewScopesRemoved, workflows.EventReviewClosed}
	if !slices.Equal(eventTypes(evs), want) {
		t.Fatalf("events %v, want %v", eventTypes(evs), want)
	}
	opened, err := eventstore.DecodeAs[*lifecyclev1.ReviewOpened](evs[0])
	if err != nil || !slices.Equal(opened.GetUsedScopes(), []string{"crm.read"}) || !slices.Equal(opened.GetUnusedScopes(), []string{"crm.export", "crm.write"}) {
		t.Fatalf("opened %v %v", opened, err)
	}
	decided, err := eventstore.DecodeAs[*lifecyclev1.ReviewDecided](evs[1])
	if err != nil || decided.GetDecidedBy() != agentOwner || decided.GetRole() != "owner" || decided.GetDecision() != workflows.ReviewCertify ||
		!slices.Equal(decided.GetKept(), []string{"crm.write: quarter-end batch writes"}) || decided.GetApprovalTokenId() == "" {
		t.Fatalf("decided %v %v", decided, err)
	}
	closed, err := eventstore.DecodeAs[*lifecyclev1.ReviewClosed](evs[3])
	if err != nil || closed.GetOutcome() != workflows.ReviewOutcomeCertified || !slices.Equal(closed.GetRemovedScopes(), []string{"crm.export"}) {
		t.Fatalf("closed %v %v", closed, err)
	}
	if got := n.recipients(); !slices.Equal(got, []string{"review.opened:owner"}) {
		t.Fatalf("notifications %v", got)
	}
	if d.status.Outcome != workflows.ReviewOutcomeCertified || d.status.Stage == "" {
		t.Fatalf("update answered %+v", d.status)
	}
}

func TestReviewRemovesUnusedAndNamedScopes(t *testing.T) {
	f, _ := reviewFixture(t, "agt_rev2")
	d := f.decideReview(time.Hour, "u1", workflows.ReviewDecision{
		Token:  reviewToken(t, "agt_rev2", agentSponsor, workflows.StepOwner, workflows.DecisionApprove),
		Remove: []string{"crm.read"},
	})
	f.env.ExecuteWorkflow(workflows.ReviewWorkflowName, reviewInput("agt_rev2"))
	res := reviewResult(t, f)
	if d.rejected != nil || d.completed != nil {
		t.Fatalf("decision: rejected %v, completed %v", d.rejected, d.completed)
	}
	if res.Outcome != workflows.ReviewOutcomeCertified || !slices.Equal(res.Removed, reviewScopes) || len(res.Kept) != 0 {
		t.Fatalf("result %+v", res)
	}
	if got := f.fakes.Registry.Agent(workflows.AgentName(tenant, "agt_rev2")); len(got.GetScopes()) != 0 {
		t.Fatalf("scopes left %v", got.GetScopes())
	}
	decided, err := eventstore.DecodeAs[*lifecyclev1.ReviewDecided](f.events(t, "agt_rev2")[1])
	if err != nil || decided.GetRole() != "owner-delegate" || !slices.Equal(decided.GetRemoved(), []string{"crm.read"}) {
		t.Fatalf("decided %v %v", decided, err)
	}
}

func TestReviewWithoutAnswerEscalatesToSponsorThenSuspends(t *testing.T) {
	f, n := reviewFixture(t, "agt_rev3")
	var atSponsor workflows.ReviewStatus
	f.env.RegisterDelayedCallback(func() {
		v, err := f.env.QueryWorkflow(workflows.StatusQuery)
		if err == nil {
			_ = v.Get(&atSponsor)
		}
	}, workflows.DefaultReviewAnswerFor+time.Hour)
	f.env.ExecuteWorkflow(workflows.ReviewWorkflowName, reviewInput("agt_rev3"))
	res := reviewResult(t, f)
	if atSponsor.Decider != workflows.StepSponsor || atSponsor.Stage != workflows.StageReviewDecide {
		t.Fatalf("after the owner's window: %+v", atSponsor)
	}
	if res.Outcome != workflows.ReviewOutcomeSuspended || res.DecidedBy != "" || !slices.Equal(res.Removed, []string{"crm.export", "crm.write"}) {
		t.Fatalf("result %+v", res)
	}
	sus := workflowstest.RequestsOf[*registryv1.SuspendAgentRequest](f.fakes, "SuspendAgent")
	if len(sus) != 1 || sus[0].GetCause() != "review:"+campaign {
		t.Fatalf("suspensions %v", sus)
	}
	if got := f.fakes.Registry.Agent(workflows.AgentName(tenant, "agt_rev3")); got.GetState() != registryv1.AgentState_AGENT_STATE_SUSPENDED ||
		!slices.Equal(got.GetScopes(), []string{"crm.read"}) {
		t.Fatalf("agent %v %v", got.GetState(), got.GetScopes())
	}
	evs := f.events(t, "agt_rev3")
	want := []string{workflows.EventReviewOpened, workflows.EventReviewEscalated, workflows.EventReviewEscalated,
		workflows.EventReviewScopesRemoved, workflows.EventReviewClosed}
	if !slices.Equal(eventTypes(evs), want) {
		t.Fatalf("events %v, want %v", eventTypes(evs), want)
	}
	for i, to := range []string{workflows.StepSponsor, "suspend"} {
		e, err := eventstore.DecodeAs[*lifecyclev1.ReviewEscalated](evs[1+i])
		if err != nil || e.GetToStep() != to {
			t.Fatalf("escalation %d: %v %v, want to %s", i, e, err, to)
		}
	}
	if got := n.recipients(); !slices.Equal(got, []string{"review.opened:owner", "review.escalated:sponsor"}) {
		t.Fatalf("notifications %v", got)
	}
}

func TestReviewRevokeSuspends(t *testing.T) {
	f, _ := reviewFixture(t, "agt_rev4")
	d := f.decideReview(time.Hour, "u1", workflows.ReviewDecision{
		Token: reviewToken(t, "agt_rev4", "sam@corp.example", workflows.StepOwner, workflows.DecisionReject, "security-approver"),
	})
	f.env.ExecuteWorkflow(workflows.ReviewWorkflowName, reviewInput("agt_rev4"))
	res := reviewResult(t, f)
	if d.rejected != nil || d.completed != nil {
		t.Fatalf("decision: %v %v", d.rejected, d.completed)
	}
	if res.Outcome != workflows.ReviewOutcomeSuspended || res.DecidedBy != "sam@corp.example" {
		t.Fatalf("result %+v", res)
	}
	if got := f.fakes.Registry.Agent(workflows.AgentName(tenant, "agt_rev4")); got.GetState() != registryv1.AgentState_AGENT_STATE_SUSPENDED {
		t.Fatalf("state %v", got.GetState())
	}
}

func TestReviewRefusesDecisionsThatCannotCount(t *testing.T) {
	const agentID = "agt_rev5"
	f, _ := reviewFixture(t, agentID)
	good := reviewToken(t, agentID, agentOwner, workflows.StepOwner, workflows.DecisionApprove)
	tests := []struct {
		name string
		d    workflows.ReviewDecision
		want string
	}{
		{"no token", workflows.ReviewDecision{}, "no approval token"},
		{"bad token", workflows.ReviewDecision{Token: "not.a.token"}, "approval token is invalid"},
		{"wrong person", workflows.ReviewDecision{Token: reviewToken(t, agentID, "mallory@corp.example", workflows.StepOwner, workflows.DecisionApprove, "approver")}, "is decided by"},
		{"wrong step", workflows.ReviewDecision{Token: reviewToken(t, agentID, agentSponsor, workflows.StepSponsor, workflows.DecisionApprove)}, "waits for a decision by owner"},
		{"restore is no review decision", workflows.ReviewDecision{Token: reviewToken(t, agentID, agentOwner, workflows.StepOwner, workflows.DecisionRestore)}, "is for \"restore\""},
		{"keep without reason", workflows.ReviewDecision{Token: good, Keep: map[string]string{"crm.write": ""}}, "only with a reason"},
		{"keep a used scope", workflows.ReviewDecision{Token: good, Keep: map[string]string{"crm.read": "x"}}, "was used"},
		{"remove a foreign scope", workflows.ReviewDecision{Token: good, Remove: []string{"hr.read"}}, "not a scope"},
		{"revoke with keeps", workflows.ReviewDecision{Token: good, Decision: workflows.ReviewRevoke, Keep: map[string]string{"crm.write": "x"}}, "keeps and removes no scope"},
	}
	outs := make([]*reviewOutcome, len(tests))
	for i, tt := range tests {
		outs[i] = f.decideReview(time.Duration(i+1)*time.Minute, tt.name, tt.d)
	}
	ok := f.decideReview(time.Hour, "good", workflows.ReviewDecision{Token: good, Keep: map[string]string{"crm.write": "batch"}})
	late := f.decideReview(time.Hour, "late", workflows.ReviewDecision{Token: reviewToken(t, agentID, agentOwner, workflows.StepOwner, workflows.DecisionApprove)})
	f.env.ExecuteWorkflow(workflows.ReviewWorkflowName, reviewInput(agentID))
	res := reviewResult(t, f)
	for i, tt := range tests {
		err := outs[i].rejected
		if err == nil {
			err = outs[i].completed
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	if ok.rejected != nil || ok.completed != nil {
		t.Fatalf("the owner's decision: %v %v", ok.rejected, ok.completed)
	}
	if late.rejected == nil && late.completed == nil || !strings.Contains(fmtErr(late), "decided already") {
		t.Fatalf("a second decision on a decided review: %v %v, want refused as decided already", late.rejected, late.completed)
	}
	if res.Outcome != workflows.ReviewOutcomeCertified || !slices.Equal(res.Removed, []string{"crm.export"}) {
		t.Fatalf("result %+v", res)
	}
	// Refused decisions changed nothing: one decision recorded, the owner's.
	var decided int
	for _, e := range f.events(t, agentID) {
		if e.Type == workflows.EventReviewDecided {
			decided++
		}
	}
	if decided != 1 {
		t.Fatalf("%d decisions recorded, want 1", decided)
	}
}

func TestReviewWithoutMonitorFailsClosed(t *testing.T) {
	f, _ := reviewFixture(t, "agt_rev6")
	f.acts.Monitor = nil
	f.env.ExecuteWorkflow(workflows.ReviewWorkflowName, reviewInput("agt_rev6"))
	if err := f.env.GetWorkflowError(); err == nil || !strings.Contains(err.Error(), "no monitor") {
		t.Fatalf("run error %v, want the missing monitor", err)
	}
	if rm := workflowstest.RequestsOf[*registryv1.RemoveAgentScopesRequest](f.fakes, "RemoveAgentScopes"); len(rm) != 0 {
		t.Fatalf("scopes removed without telemetry: %v", rm)
	}
}

func TestReviewInputRefused(t *testing.T) {
	for _, tt := range []struct {
		name string
		mut  func(*workflows.ReviewInput)
	}{
		{"campaign with slash", func(in *workflows.ReviewInput) { in.Campaign = "a/b" }},
		{"no campaign", func(in *workflows.ReviewInput) { in.Campaign = "" }},
		{"agent of another tenant", func(in *workflows.ReviewInput) { in.Agent = "tenants/other/agents/agt_x" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := reviewFixture(t, "agt_rev7")
			in := reviewInput("agt_rev7")
			tt.mut(&in)
			f.env.ExecuteWorkflow(workflows.ReviewWorkflowName, in)
			if err := f.env.GetWorkflowError(); err == nil || !strings.Contains(err.Error(), "INVALID_ARGUMENT") && !strings.Contains(err.Error(), "is not") && !strings.Contains(err.Error(), "agent") {
				t.Fatalf("run error %v", err)
			}
			if len(f.events(t, "agt_rev7")) != 0 {
				t.Fatal("a refused input recorded events")
			}
		})
	}
}

func fmtErr(o *reviewOutcome) string {
	switch {
	case o.rejected != nil:
		return o.rejected.Error()
	case o.completed != nil:
		return o.completed.Error()
	}
	return ""
}
