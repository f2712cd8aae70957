package server_test

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/testkit"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
	"github.com/agentid/agentid/services/lifecycle/internal/server"
	"github.com/agentid/agentid/workflows"
)

// reviewCallers are callers plus a compliance-approver of acme.
var reviewCallers = func() map[string]*authn.Claims {
	m := maps.Clone(callers)
	m["compliance"] = &authn.Claims{Subject: "cora@corp", Tenant: "acme", Roles: []string{"compliance-approver"}}
	return m
}()

// reviewsCore records what the server asks of the review core.
type reviewsCore struct {
	mu        sync.Mutex
	starts    []string // tenant/usage/answer/request id
	lists     []string // tenant/open|all/campaign/size/token
	decisions []recordedReviewDecision
}

type recordedReviewDecision struct {
	caller string
	d      lifecycle.ReviewDecisionInput
}

func (c *reviewsCore) StartCampaign(_ context.Context, tenant string, usageDays, answerDays int, requestID string) (string, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.starts = append(c.starts, tenant+"/"+strconv.Itoa(usageDays)+"/"+strconv.Itoa(answerDays)+"/"+requestID)
	return "od-1", workflows.ReviewCampaignWorkflowID(tenant, "od-1"), nil
}

func (c *reviewsCore) List(_ context.Context, tenant string, openOnly bool, campaign string, pageSize int, pageToken string) ([]lifecycle.Review, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	open := "all"
	if openOnly {
		open = "open"
	}
	c.lists = append(c.lists, tenant+"/"+open+"/"+campaign+"/"+strconv.Itoa(pageSize)+"/"+pageToken)
	return []lifecycle.Review{{
		Run:   lifecycle.Run{WorkflowID: workflows.ReviewWorkflowID(tenant, "q-1", "ag1"), RunID: "r1", Stage: workflows.StageReviewDecide},
		Agent: "tenants/" + tenant + "/agents/ag1", Campaign: "q-1",
		Status: workflows.ReviewStatus{Decider: workflows.StepOwner, Due: time.Date(2026, 10, 15, 6, 0, 0, 0, time.UTC), Scopes: []workflows.ReviewScopeStatus{
			{Scope: "crm.read", Used: true, Uses: 3}, {Scope: "crm.write"},
		}},
	}}, "next", nil
}

func (c *reviewsCore) Decide(_ context.Context, p *authn.Principal, d lifecycle.ReviewDecisionInput) (lifecycle.Review, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.decisions = append(c.decisions, recordedReviewDecision{caller: p.ID, d: d})
	outcome := workflows.ReviewOutcomeSuspended
	if d.Certify {
		outcome = workflows.ReviewOutcomeCertified
	}
	return lifecycle.Review{Run: lifecycle.Run{WorkflowID: "review/acme/" + d.Campaign + "/ag1", Stage: workflows.StageDone, Completed: true},
		Agent: d.Agent, Campaign: d.Campaign, Status: workflows.ReviewStatus{Outcome: outcome, Removed: []string{"crm.write"},
			Decision: &workflows.ReviewTaken{Decider: p.ID}}}, nil
}

func (c *reviewsCore) calls() (starts, lists []string, decisions []recordedReviewDecision) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.starts), slices.Clone(c.lists), slices.Clone(c.decisions)
}

func serveReviews(t *testing.T, reviews server.Reviews) lifecyclev1.LifecycleServiceClient {
	t.Helper()
	s := server.New(nil)
	if reviews != nil {
		s = s.WithReviews(reviews)
	}
	gs := grpcx.NewServer(grpcx.ServerConfig{Logger: slog.New(slog.DiscardHandler), Verifier: testkit.StaticVerifier(reviewCallers)})
	lifecyclev1.RegisterLifecycleServiceServer(gs, s)
	return lifecyclev1.NewLifecycleServiceClient(testkit.ServeGRPC(t, gs))
}

func TestStartReviewCampaignAuthorization(t *testing.T) {
	core := &reviewsCore{}
	api := serveReviews(t, core)
	req := &lifecyclev1.StartReviewCampaignRequest{Parent: "tenants/acme", UsageDays: 30, AnswerDays: 7, RequestId: "q4"}
	tests := []struct {
		name      string
		bearer    string
		req       *lifecyclev1.StartReviewCampaignRequest
		wantCode  codes.Code
		wantField string
		wantCall  string
	}{
		{"no bearer token", "", req, codes.Unauthenticated, "", ""},
		{"another tenant's caller", "other", req, codes.NotFound, "", ""},
		{"owner may not start", "owner", req, codes.PermissionDenied, "", ""},
		{"approver may not start", "approver", req, codes.PermissionDenied, "", ""},
		{"auditor may not start", "auditor", req, codes.PermissionDenied, "", ""},
		{"bad parent", "admin", &lifecyclev1.StartReviewCampaignRequest{Parent: "acme"}, codes.InvalidArgument, "parent", ""},
		{"tenant-admin starts", "admin", req, codes.OK, "", "acme/30/7/q4"},
		{"security-approver starts", "security", req, codes.OK, "", "acme/30/7/q4"},
		{"compliance-approver starts", "compliance", &lifecyclev1.StartReviewCampaignRequest{Parent: "tenants/acme"}, codes.OK, "", "acme/0/0/"},
		{"the other tenant starts its own", "other", &lifecyclev1.StartReviewCampaignRequest{Parent: "tenants/other"}, codes.OK, "", "other/0/0/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _, _ := core.calls()
			resp, err := api.StartReviewCampaign(testkit.WithBearer(t.Context(), tt.bearer), tt.req)
			if status.Code(err) != tt.wantCode {
				t.Fatalf("StartReviewCampaign: %v, want %v", err, tt.wantCode)
			}
			if tt.wantField != "" && errs.FromStatus(err).Field != tt.wantField {
				t.Fatalf("field = %q, want %q", errs.FromStatus(err).Field, tt.wantField)
			}
			after, _, _ := core.calls()
			if tt.wantCall == "" {
				if len(after) != len(before) {
					t.Fatalf("a refused call reached the core: %v", after[len(before):])
				}
				return
			}
			if len(after) != len(before)+1 || after[len(after)-1] != tt.wantCall {
				t.Fatalf("core calls = %v, want %s", after[len(before):], tt.wantCall)
			}
			tenant := strings.TrimPrefix(tt.req.GetParent(), "tenants/")
			if resp.GetCampaign() != "od-1" || resp.GetWorkflowId() != workflows.ReviewCampaignWorkflowID(tenant, "od-1") {
				t.Fatalf("response = %v", resp)
			}
		})
	}
}

func TestListReviewsAuthorization(t *testing.T) {
	core := &reviewsCore{}
	api := serveReviews(t, core)
	tests := []struct {
		name      string
		bearer    string
		req       *lifecyclev1.ListReviewsRequest
		wantCode  codes.Code
		wantField string
		wantCall  string
	}{
		{"no bearer token", "", &lifecyclev1.ListReviewsRequest{Parent: "tenants/acme"}, codes.Unauthenticated, "", ""},
		{"another tenant's caller", "other", &lifecyclev1.ListReviewsRequest{Parent: "tenants/acme"}, codes.NotFound, "", ""},
		{"bad parent", "auditor", &lifecyclev1.ListReviewsRequest{Parent: "tenants/acme/agents/x"}, codes.InvalidArgument, "parent", ""},
		{"auditor reads all", "auditor", &lifecyclev1.ListReviewsRequest{Parent: "tenants/acme"}, codes.OK, "", "acme/all//0/"},
		{"analyst reads a campaign's open ones", "analyst", &lifecyclev1.ListReviewsRequest{Parent: "tenants/acme", OpenOnly: true, Campaign: "q-1", PageSize: 5, PageToken: "t"},
			codes.OK, "", "acme/open/q-1/5/t"},
		{"owner reads", "owner", &lifecyclev1.ListReviewsRequest{Parent: "tenants/acme"}, codes.OK, "", "acme/all//0/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, before, _ := core.calls()
			resp, err := api.ListReviews(testkit.WithBearer(t.Context(), tt.bearer), tt.req)
			if status.Code(err) != tt.wantCode {
				t.Fatalf("ListReviews: %v, want %v", err, tt.wantCode)
			}
			if tt.wantField != "" && errs.FromStatus(err).Field != tt.wantField {
				t.Fatalf("field = %q, want %q", errs.FromStatus(err).Field, tt.wantField)
			}
			_, after, _ := core.calls()
			if tt.wantCall == "" {
				if len(after) != len(before) {
					t.Fatalf("a refused call reached the core: %v", after[len(before):])
				}
				return
			}
			if len(after) != len(before)+1 || after[len(after)-1] != tt.wantCall {
				t.Fatalf("core calls = %v, want %s", after[len(before):], tt.wantCall)
			}
			rv := resp.GetReviews()
			if len(rv) != 1 || resp.GetNextPageToken() != "next" || rv[0].GetWorkflow().GetKind() != lifecyclev1.WorkflowKind_WORKFLOW_KIND_REVIEW ||
				rv[0].GetDecider() != "owner" || rv[0].GetCampaign() != "q-1" || !rv[0].GetDueTime().AsTime().Equal(time.Date(2026, 10, 15, 6, 0, 0, 0, time.UTC)) ||
				len(rv[0].GetScopes()) != 2 || !rv[0].GetScopes()[0].GetUsed() || rv[0].GetScopes()[0].GetUses() != 3 || rv[0].GetScopes()[1].GetUsed() {
				t.Fatalf("response = %v", resp)
			}
		})
	}
}

func TestDecideReviewAuthorization(t *testing.T) {
	core := &reviewsCore{}
	api := serveReviews(t, core)
	const agent = "tenants/acme/agents/ag1"
	certify, revoke := lifecyclev1.ReviewDecision_REVIEW_DECISION_CERTIFY, lifecyclev1.ReviewDecision_REVIEW_DECISION_REVOKE
	req := func(d lifecyclev1.ReviewDecision, keep ...*lifecyclev1.KeepScope) *lifecyclev1.DecideReviewRequest {
		return &lifecyclev1.DecideReviewRequest{Agent: agent, Campaign: "q-1", Decision: d, Keep: keep, Remove: []string{"crm.admin"},
			Comment: "checked", ApprovalToken: "tok", RequestId: "req-1"}
	}
	tests := []struct {
		name        string
		bearer      string
		req         *lifecyclev1.DecideReviewRequest
		wantCode    codes.Code
		wantField   string
		wantCaller  string
		wantCertify bool
		wantKeep    map[string]string
	}{
		{"no bearer token", "", req(certify), codes.Unauthenticated, "", "", false, nil},
		{"another tenant's caller", "other", req(revoke), codes.NotFound, "", "", false, nil},
		{"auditor may not decide", "auditor", req(certify), codes.PermissionDenied, "", "", false, nil},
		{"analyst may not decide", "analyst", req(revoke), codes.PermissionDenied, "", "", false, nil},
		{"bad agent name", "owner", &lifecyclev1.DecideReviewRequest{Agent: "agents/ag1", Campaign: "q-1", Decision: certify}, codes.InvalidArgument, "agent", "", false, nil},
		{"no decision", "owner", req(lifecyclev1.ReviewDecision_REVIEW_DECISION_UNSPECIFIED), codes.InvalidArgument, "decision", "", false, nil},
		{"keep without reason", "owner", req(certify, &lifecyclev1.KeepScope{Scope: "crm.write", Reason: "  "}), codes.InvalidArgument, "keep", "", false, nil},
		{"keep without scope", "owner", req(certify, &lifecyclev1.KeepScope{Reason: "batch"}), codes.InvalidArgument, "keep", "", false, nil},
		{"owner certifies keeping a scope", "owner", req(certify, &lifecyclev1.KeepScope{Scope: "crm.write", Reason: "batch"}), codes.OK, "", "olivia@corp", true,
			map[string]string{"crm.write": "batch"}},
		{"security-approver revokes", "security", req(revoke), codes.OK, "", "sam@corp", false, map[string]string{}},
		{"approver certifies (the run decides whether they may)", "approver", req(certify), codes.OK, "", "alice@corp", true, map[string]string{}},
		{"compliance-approver revokes", "compliance", req(revoke), codes.OK, "", "cora@corp", false, map[string]string{}},
		{"tenant-admin revokes", "admin", req(revoke), codes.OK, "", "carol@corp", false, map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, before := core.calls()
			resp, err := api.DecideReview(testkit.WithBearer(t.Context(), tt.bearer), tt.req)
			if status.Code(err) != tt.wantCode {
				t.Fatalf("DecideReview: %v, want %v", err, tt.wantCode)
			}
			if tt.wantField != "" && errs.FromStatus(err).Field != tt.wantField {
				t.Fatalf("field = %q, want %q", errs.FromStatus(err).Field, tt.wantField)
			}
			_, _, after := core.calls()
			if tt.wantCaller == "" {
				if len(after) != len(before) {
					t.Fatalf("a refused call reached the core: %+v", after[len(before):])
				}
				return
			}
			if len(after) != len(before)+1 {
				t.Fatalf("core decisions = %+v, want one more", after)
			}
			got := after[len(after)-1]
			if got.caller != tt.wantCaller || got.d.Agent != agent || got.d.Campaign != "q-1" || got.d.Certify != tt.wantCertify ||
				!maps.Equal(got.d.Keep, tt.wantKeep) || !slices.Equal(got.d.Remove, []string{"crm.admin"}) || got.d.Comment != "checked" ||
				got.d.Token != "tok" || got.d.RequestID != "req-1" {
				t.Fatalf("core got %+v from %s, want certify=%v keep %v from %s (the caller from the verified bearer token)", got.d, got.caller, tt.wantCertify, tt.wantKeep, tt.wantCaller)
			}
			rv := resp.GetReview()
			if rv.GetAgent() != agent || rv.GetWorkflow().GetKind() != lifecyclev1.WorkflowKind_WORKFLOW_KIND_REVIEW || rv.GetDecidedBy() != tt.wantCaller ||
				!slices.Equal(rv.GetRemovedScopes(), []string{"crm.write"}) {
				t.Fatalf("response = %v", resp)
			}
		})
	}
}

// TestReviewsDisabled: a server without access reviews answers FailedPrecondition, after
// authorizing the caller.
func TestReviewsDisabled(t *testing.T) {
	api := serveReviews(t, nil)
	ctx := testkit.WithBearer(t.Context(), "admin")
	_, err := api.StartReviewCampaign(ctx, &lifecyclev1.StartReviewCampaignRequest{Parent: "tenants/acme"})
	if e := errs.FromStatus(err); status.Code(err) != codes.FailedPrecondition || e.Reason != "REVIEWS_DISABLED" {
		t.Fatalf("StartReviewCampaign: %v, want FailedPrecondition REVIEWS_DISABLED", err)
	}
	_, err = api.ListReviews(ctx, &lifecyclev1.ListReviewsRequest{Parent: "tenants/acme"})
	if e := errs.FromStatus(err); status.Code(err) != codes.FailedPrecondition || e.Reason != "REVIEWS_DISABLED" {
		t.Fatalf("ListReviews: %v, want FailedPrecondition REVIEWS_DISABLED", err)
	}
	_, err = api.DecideReview(ctx, &lifecyclev1.DecideReviewRequest{Agent: "tenants/acme/agents/ag1", Campaign: "q-1",
		Decision: lifecyclev1.ReviewDecision_REVIEW_DECISION_REVOKE, ApprovalToken: "tok"})
	if e := errs.FromStatus(err); status.Code(err) != codes.FailedPrecondition || e.Reason != "REVIEWS_DISABLED" {
		t.Fatalf("DecideReview: %v, want FailedPrecondition REVIEWS_DISABLED", err)
	}
	_, err = api.ListReviews(testkit.WithBearer(t.Context(), "other"), &lifecyclev1.ListReviewsRequest{Parent: "tenants/acme"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("ListReviews of another tenant on a server without reviews: %v, want NotFound", err)
	}
}
