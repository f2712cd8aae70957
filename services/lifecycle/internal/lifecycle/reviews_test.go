package lifecycle_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// reviewEnv is the access review core on real engines: Temporal dev server with a worker running the
// workflows against fake registry, issuer, policy and monitor; LIFECYCLE events on embedded NATS.
type reviewEnv struct {
	temporal  client.Client
	fakes     *workflowstest.Services
	approvals *workflowstest.ApprovalIssuer
	reviews   *lifecycle.Reviews
}

func startReviews(t *testing.T, cfg lifecycle.ReviewConfig) *reviewEnv {
	t.Helper()
	srv := testkit.StartTemporal(t)
	c, err := client.Dial(client.Options{HostPort: srv.HostPort(), Namespace: workflows.Namespace, Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	store := eventstore.New(testkit.StartNATS(t).JetStream(t), eventstore.WithSource("agentid/lifecycle"))
	if err := store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	e := &reviewEnv{temporal: c, fakes: workflowstest.Start(t), approvals: workflowstest.NewApprovalIssuer(t)}
	cc := e.fakes.Conn(t)
	w := worker.New(c, workflows.TaskQueue, worker.Options{})
	workflows.Register(w, &workflows.Activities{
		Registry: registryv1.NewRegistryServiceClient(cc), Issuer: issuerv1.NewIssuerServiceClient(cc), Policy: policyv1.NewPolicyServiceClient(cc),
		Monitor: monitorv1.NewMonitorServiceClient(cc), Events: store, ApprovalTokens: e.approvals.Verifier, Notifier: &notified{},
	})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	if e.reviews, err = lifecycle.NewReviews(c, "", cfg); err != nil {
		t.Fatal(err)
	}
	e.reviews.WithRegistry(registryv1.NewRegistryServiceClient(cc))
	return e
}

// agent puts an ACTIVE agent with scopes crm.export, crm.read, crm.write into the fake registry; the
// monitor saw only crm.read used.
func (e *reviewEnv) agent(tenant, id string) *registryv1.Agent {
	a := workflowstest.NewAgent(tenant, id, registryv1.RiskTier_RISK_TIER_MODERATE)
	a.State = registryv1.AgentState_AGENT_STATE_ACTIVE
	a.Scopes = []string{"crm.export", "crm.read", "crm.write"}
	e.fakes.Registry.Put(a)
	e.fakes.Monitor.SetScopeUses(a.GetName(), map[string]int64{"crm.read": 7})
	return a
}

// status is the status of the review of agentID in campaign.
func (e *reviewEnv) status(ctx context.Context, tenant, campaign, agentID string) (workflows.ReviewStatus, error) {
	v, err := e.temporal.QueryWorkflow(ctx, workflows.ReviewWorkflowID(tenant, campaign, agentID), "", workflows.StatusQuery)
	if err != nil {
		return workflows.ReviewStatus{}, err
	}
	var s workflows.ReviewStatus
	return s, v.Get(&s)
}

// waitOwner waits until the review of agentID in campaign waits for its owner.
func (e *reviewEnv) waitOwner(t *testing.T, tenant, campaign, agentID string) workflows.ReviewStatus {
	t.Helper()
	var s workflows.ReviewStatus
	testkit.Eventually(t, 0, "review of "+agentID+" in "+campaign+" waiting for the owner", func() (bool, error) {
		var err error
		s, err = e.status(t.Context(), tenant, campaign, agentID)
		return err == nil && s.Stage == workflows.StageReviewDecide && s.Decider == workflows.StepOwner, err
	})
	return s
}

// campaignDone waits for the campaign run to complete.
func (e *reviewEnv) campaignDone(t *testing.T, workflowID string) workflows.ReviewCampaignResult {
	t.Helper()
	var res workflows.ReviewCampaignResult
	if err := e.temporal.GetWorkflow(t.Context(), workflowID, "").Get(t.Context(), &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// TestStartReviewCampaign: a campaign opens one review per ACTIVE agent of the tenant with the
// service's windows when the request gives none; the same request id starts nothing new, another one
// a new campaign; bad input is refused naming the field and starts nothing.
func TestStartReviewCampaign(t *testing.T) {
	e := startReviews(t, lifecycle.ReviewConfig{UsageDays: 30, AnswerDays: 7})
	ctx := t.Context()
	e.agent("acme", "c1")
	e.agent("acme", "c2")
	e.agent("beta", "c1")
	before := time.Now().UTC()
	campaign, id, err := e.reviews.StartCampaign(ctx, "acme", 0, 0, "quarter-4")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(campaign, "od-") || id != workflows.ReviewCampaignWorkflowID("acme", campaign) {
		t.Fatalf("campaign %q, run %q", campaign, id)
	}
	if res := e.campaignDone(t, id); res.Opened != 2 || res.Tenants != 1 {
		t.Fatalf("campaign result %+v, want 2 reviews in 1 tenant", res)
	}
	st := e.waitOwner(t, "acme", campaign, "c1")
	if d := before.Sub(st.UsageStart); d < 30*24*time.Hour-time.Minute || d > 30*24*time.Hour+time.Minute {
		t.Fatalf("usage window starts %s, want 30 days before %s (the service's default)", st.UsageStart, before)
	}
	if d := st.Due.Sub(before); d < 7*24*time.Hour-time.Minute || d > 7*24*time.Hour+time.Minute {
		t.Fatalf("due %s, want 7 days after %s (the service's default)", st.Due, before)
	}
	e.waitOwner(t, "acme", campaign, "c2")
	if _, err := e.status(ctx, "acme", campaign, "beta-c1"); err == nil {
		t.Fatal("a campaign of acme opened a review outside the tenant")
	}

	again, againID, err := e.reviews.StartCampaign(ctx, "acme", 90, 14, "quarter-4")
	if err != nil || again != campaign || againID != id {
		t.Fatalf("the same request id again: %q %q %v, want %q %q", again, againID, err, campaign, id)
	}
	d, err := e.temporal.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		t.Fatal(err)
	}
	if runs := e.runsOf(t, id); len(runs) != 1 || runs[0] != d.GetWorkflowExecutionInfo().GetExecution().GetRunId() {
		t.Fatalf("runs of %s: %v, want the first only", id, runs)
	}
	other, otherID, err := e.reviews.StartCampaign(ctx, "acme", 60, 3, "quarter-4-bis")
	if err != nil || other == campaign {
		t.Fatalf("another request id: %q %v, want a new campaign", other, err)
	}
	e.campaignDone(t, otherID)
	if st := e.waitOwner(t, "acme", other, "c1"); st.Due.Sub(before) > 3*24*time.Hour+time.Minute {
		t.Fatalf("due %s, want the request's 3 days", st.Due)
	}

	for _, bad := range []struct {
		name, tenant, requestID, field string
		usage, answer                  int
	}{
		{"bad tenant", "ACME!", "", "parent", 0, 0},
		{"usage days", "acme", "", "usage_days", 401, 0},
		{"negative usage days", "acme", "", "usage_days", -1, 0},
		{"answer days", "acme", "", "answer_days", 0, 91},
		{"request id", "acme", strings.Repeat("x", 201), "request_id", 0, 0},
	} {
		if _, _, err := e.reviews.StartCampaign(ctx, bad.tenant, bad.usage, bad.answer, bad.requestID); errs.FromStatus(err).Field != bad.field {
			t.Errorf("%s: %v, want InvalidArgument on %s", bad.name, err, bad.field)
		}
	}
}

// runsOf lists every run with the workflow id.
func (e *reviewEnv) runsOf(t *testing.T, id string) []string {
	t.Helper()
	var out []string
	testkit.Eventually(t, 0, "visibility of "+id, func() (bool, error) {
		resp, err := e.temporal.ListWorkflow(t.Context(), &workflowservice.ListWorkflowExecutionsRequest{Query: "WorkflowId = '" + id + "'"})
		if err != nil {
			return false, err
		}
		out = out[:0]
		for _, r := range resp.GetExecutions() {
			out = append(out, r.GetExecution().GetRunId())
		}
		return len(out) > 0, nil
	})
	return out
}

// TestListReviews: a tenant's reviews, open ones or all, of one campaign or every one, a page at a
// time: pages of a campaign are full (the filter is in the visibility query), never those of another
// tenant or campaign.
func TestListReviews(t *testing.T) {
	e := startReviews(t, lifecycle.ReviewConfig{})
	ctx := t.Context()
	for _, id := range []string{"l1", "l2", "l3"} {
		e.agent("acme", id)
	}
	e.agent("beta", "l1")
	start := func(tenant, requestID string) string {
		t.Helper()
		c, id, err := e.reviews.StartCampaign(ctx, tenant, 0, 0, requestID)
		if err != nil {
			t.Fatal(err)
		}
		e.campaignDone(t, id)
		return c
	}
	first, second, betas := start("acme", "first"), start("acme", "second"), start("beta", "first")
	if betas == first {
		t.Fatal("the same request id in two tenants made the same campaign id")
	}
	// One review of the first campaign closes: its owner certifies.
	e.waitOwner(t, "acme", first, "l1")
	d, err := e.temporal.DescribeWorkflowExecution(ctx, workflows.ReviewWorkflowID("acme", first, "l1"), "")
	if err != nil {
		t.Fatal(err)
	}
	owner := e.fakes.Registry.Agent(workflows.AgentName("acme", "l1")).GetOwner()
	tok := e.approvals.Token(t, authn.ApprovalClaims{Subject: owner, Agent: workflows.AgentName("acme", "l1"), Step: workflows.StepOwner,
		Decision: workflows.DecisionApprove, Run: d.GetWorkflowExecutionInfo().GetExecution().GetRunId()})
	if _, err := e.reviews.Decide(ctx, &authn.Principal{ID: owner, Tenant: "acme", Roles: []authn.Role{authn.RoleOwner}},
		lifecycle.ReviewDecisionInput{Agent: workflows.AgentName("acme", "l1"), Campaign: first, Certify: true, Token: tok}); err != nil {
		t.Fatal(err)
	}

	// pages lists every page of size 1 and fails on a short one before the last.
	pages := func(tenant string, open bool, campaign string) []lifecycle.Review {
		t.Helper()
		var all []lifecycle.Review
		token := ""
		for {
			page, next, err := e.reviews.List(ctx, tenant, open, campaign, 1, token)
			if err != nil {
				t.Fatal(err)
			}
			if next != "" && len(page) != 1 {
				t.Fatalf("List(%s, open %v, campaign %q): a page of %d before the last", tenant, open, campaign, len(page))
			}
			all = append(all, page...)
			if token = next; token == "" {
				return all
			}
			if len(all) > 20 {
				t.Fatalf("List(%s, open %v, campaign %q) does not end", tenant, open, campaign)
			}
		}
	}
	agents := func(list []lifecycle.Review) []string {
		var out []string
		for _, rv := range list {
			out = append(out, rv.Campaign+"/"+rv.Agent[strings.LastIndex(rv.Agent, "/")+1:])
		}
		slices.Sort(out)
		return out
	}
	want := func(campaign string, ids ...string) []string {
		var out []string
		for _, id := range ids {
			out = append(out, campaign+"/"+id)
		}
		return out
	}
	var got []lifecycle.Review
	testkit.Eventually(t, 0, "visibility of the closed review", func() (bool, error) {
		got = pages("acme", false, first)
		return slices.ContainsFunc(got, func(rv lifecycle.Review) bool { return rv.Run.Completed }), nil
	})
	if a := agents(got); !slices.Equal(a, want(first, "l1", "l2", "l3")) {
		t.Fatalf("the first campaign's reviews: %v", a)
	}
	for _, rv := range got {
		switch {
		case rv.Agent == workflows.AgentName("acme", "l1"):
			if !rv.Run.Completed || rv.Status.Outcome != workflows.ReviewOutcomeCertified || !slices.Equal(rv.Status.Removed, []string{"crm.export", "crm.write"}) ||
				rv.Status.Decision == nil || rv.Status.Decision.Decider != owner {
				t.Fatalf("closed review %+v", rv)
			}
		default:
			if rv.Run.Completed || rv.Status.Decider != workflows.StepOwner || rv.Status.Due.IsZero() || len(rv.Status.Scopes) != 3 || !rv.Status.Scopes[1].Used {
				t.Fatalf("open review %+v", rv)
			}
		}
	}
	if a := agents(pages("acme", true, first)); !slices.Equal(a, want(first, "l2", "l3")) {
		t.Fatalf("the first campaign's open reviews: %v", a)
	}
	if a := agents(pages("acme", false, second)); !slices.Equal(a, want(second, "l1", "l2", "l3")) {
		t.Fatalf("the second campaign's reviews: %v", a)
	}
	if a := agents(pages("acme", true, "")); len(a) != 5 {
		t.Fatalf("acme's open reviews: %v, want 5", a)
	}
	if a := agents(pages("beta", false, "")); !slices.Equal(a, want(betas, "l1")) {
		t.Fatalf("beta's reviews: %v", a)
	}
	if a := agents(pages("beta", false, first)); len(a) != 0 {
		t.Fatalf("beta's reviews of acme's campaign: %v, want none", a)
	}
	for _, bad := range []struct {
		tenant, campaign, token, field string
		size                           int
	}{{"ACME!", "", "", "parent", 0}, {"acme", "a/b", "", "campaign", 0}, {"acme", "", "", "page_size", -1}, {"acme", "", "not base64!", "page_token", 0}} {
		if _, _, err := e.reviews.List(ctx, bad.tenant, false, bad.campaign, bad.size, bad.token); errs.FromStatus(err).Field != bad.field {
			t.Errorf("List(%q, campaign %q, size %d, token %q): %v, want InvalidArgument on %s", bad.tenant, bad.campaign, bad.size, bad.token, err, bad.field)
		}
	}
}

// TestDecideReview: refused decisions are recorded in the run and change nothing (no scope removed,
// nothing suspended, still waiting for the owner); a review of another agent, tenant or campaign is
// NotFound; the owner's decision closes the review; a decision after that is refused.
func TestDecideReview(t *testing.T) {
	e := startReviews(t, lifecycle.ReviewConfig{})
	ctx := t.Context()
	a := e.agent("acme", "d1")
	e.agent("acme", "d2")
	e.agent("beta", "d1")
	campaign, id, err := e.reviews.StartCampaign(ctx, "acme", 0, 0, "decide")
	if err != nil {
		t.Fatal(err)
	}
	e.campaignDone(t, id)
	e.waitOwner(t, "acme", campaign, "d1")
	desc, err := e.temporal.DescribeWorkflowExecution(ctx, workflows.ReviewWorkflowID("acme", campaign, "d1"), "")
	if err != nil {
		t.Fatal(err)
	}
	runID := desc.GetWorkflowExecutionInfo().GetExecution().GetRunId()
	token := func(sub, step, decision, run string, roles ...string) string {
		return e.approvals.Token(t, authn.ApprovalClaims{Subject: sub, Agent: a.GetName(), Step: step, Decision: decision, Run: run, Roles: roles})
	}
	owner := &authn.Principal{ID: a.GetOwner(), Tenant: "acme", Roles: []authn.Role{authn.RoleOwner}}
	mallory := &authn.Principal{ID: "mallory@corp.example", Tenant: "acme", Roles: []authn.Role{authn.RoleApprover}}
	ownerCertifies := token(a.GetOwner(), workflows.StepOwner, workflows.DecisionApprove, runID)
	decision := func(agent, camp, tok string) lifecycle.ReviewDecisionInput {
		return lifecycle.ReviewDecisionInput{Agent: agent, Campaign: camp, Certify: true, Token: tok, Keep: map[string]string{"crm.write": "month-end batch"}, Comment: "reviewed"}
	}
	refusals := []struct {
		name       string
		p          *authn.Principal
		d          lifecycle.ReviewDecisionInput
		wantKind   errs.Kind
		wantReason string // reason code or field
		wantMsg    string
		recorded   bool
	}{
		{"no approval token", owner, decision(a.GetName(), campaign, ""), errs.KindInvalidArgument, "approval_token", "", false},
		{"bad campaign", owner, decision(a.GetName(), "a/b", ownerCertifies), errs.KindInvalidArgument, "campaign", "", false},
		{"bad agent", owner, decision("agents/d1", campaign, ownerCertifies), errs.KindInvalidArgument, "agent", "", false},
		{"bad request id", owner, lifecycle.ReviewDecisionInput{Agent: a.GetName(), Campaign: campaign, Token: ownerCertifies, RequestID: "has space"},
			errs.KindInvalidArgument, "request_id", "", false},
		{"unknown campaign", owner, decision(a.GetName(), "od-nothing", ownerCertifies), errs.KindNotFound, "REVIEW_NOT_FOUND", "", false},
		{"another tenant's review", owner, decision("tenants/beta/agents/d1", campaign, ownerCertifies), errs.KindNotFound, "REVIEW_NOT_FOUND", "", false},
		{"an agent without a review", owner, decision("tenants/acme/agents/d9", campaign, ownerCertifies), errs.KindNotFound, "REVIEW_NOT_FOUND", "", false},
		{"keep a used scope", owner, lifecycle.ReviewDecisionInput{Agent: a.GetName(), Campaign: campaign, Certify: true, Token: ownerCertifies,
			Keep: map[string]string{"crm.read": "x"}}, errs.KindFailedPrecondition, "APPROVAL_REFUSED", "was used", false},
		{"garbage token", owner, decision(a.GetName(), campaign, "not-a-jws"), errs.KindFailedPrecondition, "APPROVAL_REFUSED", "", true},
		{"token of another run", owner, decision(a.GetName(), campaign, token(a.GetOwner(), workflows.StepOwner, workflows.DecisionApprove, "another-run")),
			errs.KindFailedPrecondition, "APPROVAL_REFUSED", "not this review run", true},
		{"token for the sponsor step", owner, decision(a.GetName(), campaign, token(a.GetOwner(), workflows.StepSponsor, workflows.DecisionApprove, runID)),
			errs.KindFailedPrecondition, "APPROVAL_REFUSED", "waits for a decision by owner", true},
		{"someone else's token", mallory, decision(a.GetName(), campaign, token(a.GetOwner(), workflows.StepOwner, workflows.DecisionApprove, runID)),
			errs.KindFailedPrecondition, "APPROVAL_REFUSED", "not to the caller mallory@corp.example", true},
		{"a caller who may not decide", mallory, decision(a.GetName(), campaign, token("mallory@corp.example", workflows.StepOwner, workflows.DecisionApprove, runID, "approver")),
			errs.KindFailedPrecondition, "APPROVAL_REFUSED", "is decided by", true},
		{"token says revoke, request certify", owner, decision(a.GetName(), campaign, token(a.GetOwner(), workflows.StepOwner, workflows.DecisionReject, runID)),
			errs.KindFailedPrecondition, "APPROVAL_REFUSED", "the request says certify", true},
	}
	recorded := 0
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			_, err := e.reviews.Decide(ctx, r.p, r.d)
			got := errs.FromStatus(err)
			if err == nil || got.Kind != r.wantKind || (got.Reason != r.wantReason && got.Field != r.wantReason) || !strings.Contains(got.Message, r.wantMsg) {
				t.Fatalf("Decide: %v (kind %v, reason %q, field %q), want %v %s saying %q", err, got.Kind, got.Reason, got.Field, r.wantKind, r.wantReason, r.wantMsg)
			}
			if r.recorded {
				recorded++
			}
			st, err := e.status(ctx, "acme", campaign, "d1")
			if err != nil {
				t.Fatal(err)
			}
			if st.Stage != workflows.StageReviewDecide || st.Decider != workflows.StepOwner || st.Decision != nil || st.RefusedCount != recorded {
				t.Fatalf("after the refusal: %+v, want still waiting for the owner with %d refusals recorded", st, recorded)
			}
		})
	}
	if n := len(e.fakes.Requests("RemoveAgentScopes")) + len(e.fakes.Requests("SuspendAgent")); n != 0 {
		t.Fatalf("refused decisions changed the agent: %d remove/suspend requests", n)
	}
	if got := e.fakes.Registry.Agent(a.GetName()); got.GetState() != registryv1.AgentState_AGENT_STATE_ACTIVE || len(got.GetScopes()) != 3 {
		t.Fatalf("agent after refused decisions: %s %v", got.GetState(), got.GetScopes())
	}

	rv, err := e.reviews.Decide(ctx, owner, decision(a.GetName(), campaign, ownerCertifies))
	if err != nil {
		t.Fatal(err)
	}
	if rv.Status.Outcome != workflows.ReviewOutcomeCertified || !slices.Equal(rv.Status.Removed, []string{"crm.export"}) || rv.Campaign != campaign ||
		rv.Agent != a.GetName() || rv.Status.Decision == nil || rv.Status.Decision.Decider != a.GetOwner() || rv.Status.RefusedCount != recorded {
		t.Fatalf("decided review = %+v", rv)
	}
	if got := e.fakes.Registry.Agent(a.GetName()); !slices.Equal(got.GetScopes(), []string{"crm.read", "crm.write"}) {
		t.Fatalf("scopes after the review %v, want crm.export removed", got.GetScopes())
	}
	_, err = e.reviews.Decide(ctx, owner, decision(a.GetName(), campaign, token(a.GetOwner(), workflows.StepOwner, workflows.DecisionApprove, runID)))
	if got := errs.FromStatus(err); err == nil || got.Kind == errs.KindInternal || got.Kind == errs.KindUnavailable {
		t.Fatalf("a decision after the review closed: %v, want it refused", err)
	}
	if n := len(e.fakes.Requests("RemoveAgentScopes")); n != 1 {
		t.Fatalf("%d RemoveAgentScopes requests, want 1", n)
	}
	// The other agent's review is untouched.
	if st := e.waitOwner(t, "acme", campaign, "d2"); st.RefusedCount != 0 || st.Decision != nil {
		t.Fatalf("d2's review %+v", st)
	}
}
