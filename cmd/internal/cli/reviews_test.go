package cli_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
)

// reviewServices fakes LifecycleService's review RPCs and the issuer's approval tokens: reviews are
// listed one per page (filtered by open_only and campaign); refuse (when set) is DecideReview's
// answer; every request is remembered.
type reviewServices struct {
	lifecyclev1.UnimplementedLifecycleServiceServer
	issuerv1.UnimplementedIssuerServiceServer

	reviews []*lifecyclev1.Review
	refuse  error

	mu        sync.Mutex
	starts    []*lifecyclev1.StartReviewCampaignRequest
	lists     []*lifecyclev1.ListReviewsRequest
	tokens    []*issuerv1.IssueApprovalTokenRequest
	decisions []*lifecyclev1.DecideReviewRequest
}

func (f *reviewServices) StartReviewCampaign(_ context.Context, req *lifecyclev1.StartReviewCampaignRequest) (*lifecyclev1.StartReviewCampaignResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.starts = append(f.starts, req)
	tenant := strings.TrimPrefix(req.GetParent(), "tenants/")
	return &lifecyclev1.StartReviewCampaignResponse{Campaign: "od-1234", WorkflowId: "review-campaign/" + tenant + "/od-1234"}, nil
}

func (f *reviewServices) ListReviews(_ context.Context, req *lifecyclev1.ListReviewsRequest) (*lifecyclev1.ListReviewsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists = append(f.lists, req)
	var matching []*lifecyclev1.Review
	for _, rv := range f.reviews {
		if (!req.GetOpenOnly() || !rv.GetWorkflow().GetCompleted()) && (req.GetCampaign() == "" || rv.GetCampaign() == req.GetCampaign()) {
			matching = append(matching, rv)
		}
	}
	page, next := onePerPage(matching, req.GetPageToken())
	return &lifecyclev1.ListReviewsResponse{Reviews: page, NextPageToken: next}, nil
}

func (f *reviewServices) IssueApprovalToken(_ context.Context, req *issuerv1.IssueApprovalTokenRequest) (*issuerv1.IssueApprovalTokenResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens = append(f.tokens, req)
	return fakeApprovalToken(req), nil
}

func (f *reviewServices) DecideReview(_ context.Context, req *lifecyclev1.DecideReviewRequest) (*lifecyclev1.DecideReviewResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.decisions = append(f.decisions, req)
	if f.refuse != nil {
		return nil, f.refuse
	}
	out := &lifecyclev1.Review{Workflow: &lifecyclev1.WorkflowStatus{Stage: "done", Completed: true}, Agent: req.GetAgent(), Campaign: req.GetCampaign(),
		Outcome: "certified", DecidedBy: "olivia@corp", RemovedScopes: []string{"crm.export"}}
	if req.GetDecision() == lifecyclev1.ReviewDecision_REVIEW_DECISION_REVOKE {
		out.Outcome, out.RemovedScopes = "suspended", nil
	}
	return &lifecyclev1.DecideReviewResponse{Review: out}, nil
}

func (f *reviewServices) sent() ([]*lifecyclev1.StartReviewCampaignRequest, []*lifecyclev1.ListReviewsRequest, []*issuerv1.IssueApprovalTokenRequest, []*lifecyclev1.DecideReviewRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*lifecyclev1.StartReviewCampaignRequest(nil), f.starts...), append([]*lifecyclev1.ListReviewsRequest(nil), f.lists...),
		append([]*issuerv1.IssueApprovalTokenRequest(nil), f.tokens...), append([]*lifecyclev1.DecideReviewRequest(nil), f.decisions...)
}

const crmBot = "tenants/default/agents/crm-bot"

// serveReviews serves f for a session in dir: crm-bot's review in campaign q-1 waits for the
// sponsor in run run-7 (crm.read used, crm.export and crm.write unused); faq-bot's review in q-1
// has closed (certified); etl-bot has open reviews in q-1 and od-2.
func serveReviews(t *testing.T, dir string, f *reviewServices) {
	t.Helper()
	scopes := []*lifecyclev1.ReviewScope{{Scope: "crm.export"}, {Scope: "crm.read", Used: true, Uses: 42}, {Scope: "crm.write"}}
	open := func(agent, campaign, run string) *lifecyclev1.Review {
		return &lifecyclev1.Review{Workflow: &lifecyclev1.WorkflowStatus{WorkflowId: "review/default/" + campaign + "/" + agent, RunId: run, Stage: "decide",
			Kind: lifecyclev1.WorkflowKind_WORKFLOW_KIND_REVIEW}, Agent: "tenants/default/agents/" + agent, Campaign: campaign, Decider: "sponsor",
			DueTime: timestamppb.New(time.Date(2026, 10, 15, 6, 0, 0, 0, time.UTC)), Scopes: scopes}
	}
	f.reviews = []*lifecyclev1.Review{
		open("crm-bot", "q-1", "run-7"),
		{Workflow: &lifecyclev1.WorkflowStatus{WorkflowId: "review/default/q-1/faq-bot", RunId: "run-8", Stage: "done", Completed: true},
			Agent: "tenants/default/agents/faq-bot", Campaign: "q-1", Outcome: "certified", DecidedBy: "olivia@corp", RemovedScopes: []string{"faq.admin"}},
		open("etl-bot", "q-1", "run-9"),
		open("etl-bot", "od-2", "run-10"),
	}
	serveServices(t, dir, func(srv *grpc.Server) {
		lifecyclev1.RegisterLifecycleServiceServer(srv, f)
		issuerv1.RegisterIssuerServiceServer(srv, f)
	})
}

func TestReviewsStart(t *testing.T) {
	dir := t.TempDir()
	f := &reviewServices{}
	serveReviews(t, dir, f)
	code, stdout, stderr := run(t, dir, "reviews", "start", "--tenant", "acme", "--usage-days", "30", "--answer-days", "7", "--request-id", "q4-review")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if want := "campaign od-1234 started in tenant acme (run review-campaign/acme/od-1234)"; !strings.Contains(stdout, want) {
		t.Fatalf("output %q, want %q", stdout, want)
	}
	code, stdout, stderr = run(t, dir, "reviews", "start", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil || doc["campaign"] != "od-1234" {
		t.Fatalf("json output %s (%v)", stdout, err)
	}
	starts, _, _, _ := f.sent()
	if len(starts) != 2 {
		t.Fatalf("%d campaigns started, want 2", len(starts))
	}
	want := &lifecyclev1.StartReviewCampaignRequest{Parent: "tenants/acme", UsageDays: 30, AnswerDays: 7, RequestId: "q4-review"}
	if !proto.Equal(starts[0], want) {
		t.Fatalf("request %v, want %v", starts[0], want)
	}
	if s := starts[1]; s.GetParent() != "tenants/default" || s.GetUsageDays() != 0 || s.GetAnswerDays() != 0 || !strings.HasPrefix(s.GetRequestId(), "review-campaign-") {
		t.Fatalf("request without flags %v, want the session's tenant, the service's defaults and a fresh request id", s)
	}
}

func TestReviewsListPagesAndFilters(t *testing.T) {
	dir := t.TempDir()
	f := &reviewServices{}
	serveReviews(t, dir, f)

	code, stdout, stderr := run(t, dir, "reviews", "list", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got []map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); err != nil || len(got) != 4 || got[0]["agent"] != crmBot || got[1]["outcome"] != "certified" {
		t.Fatalf("output %s (%v): want every page's reviews", stdout, err)
	}
	_, lists, _, _ := f.sent()
	if len(lists) != 4 || lists[0].GetParent() != "tenants/default" || lists[0].GetOpenOnly() || lists[0].GetCampaign() != "" || lists[3].GetPageToken() != "3" {
		t.Fatalf("requests = %v, want four pages of tenant default, every review", lists)
	}

	code, stdout, stderr = run(t, dir, "reviews", "list", "--open", "--campaign", "q-1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	_, lists, _, _ = f.sent()
	if last := lists[len(lists)-1]; !last.GetOpenOnly() || last.GetCampaign() != "q-1" {
		t.Fatalf("last request %v, want open reviews of q-1", last)
	}
	for _, want := range []string{"DECIDER", "UNUSED", crmBot, "q-1", "sponsor", "2026-10-15T06:00:00Z", "crm.export,crm.write"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table does not show %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "faq-bot") || strings.Contains(stdout, "od-2") {
		t.Errorf("--open --campaign q-1 shows a closed review or another campaign's:\n%s", stdout)
	}

	code, stdout, _ = run(t, dir, "reviews", "list", "--limit", "1", "-o", "yaml")
	if code != 0 || strings.Count(stdout, "agent:") != 1 {
		t.Fatalf("--limit 1 -o yaml: exit %d, %s", code, stdout)
	}
}

func TestReviewsDecideCarriesTheCallersToken(t *testing.T) {
	approve, reject := issuerv1.ApprovalTokenDecision_APPROVAL_TOKEN_DECISION_APPROVE, issuerv1.ApprovalTokenDecision_APPROVAL_TOKEN_DECISION_REJECT
	certify, revoke := lifecyclev1.ReviewDecision_REVIEW_DECISION_CERTIFY, lifecyclev1.ReviewDecision_REVIEW_DECISION_REVOKE
	tests := []struct {
		name         string
		args         []string
		wantRun      string
		wantToken    issuerv1.ApprovalTokenDecision
		wantDecision *lifecyclev1.DecideReviewRequest // approval token and request id checked apart
		wantRequest  string                           // request id, or its prefix when it ends with "-"
		wantOut      string
	}{
		{"certify keeping a scope, by bare id", []string{"reviews", "decide", "crm-bot", "--certify", "--keep", "crm.write = quarter-end batch", "--comment", "checked"},
			"run-7", approve, &lifecyclev1.DecideReviewRequest{Agent: crmBot, Campaign: "q-1", Decision: certify,
				Keep: []*lifecyclev1.KeepScope{{Scope: "crm.write", Reason: "quarter-end batch"}}, Comment: "checked"},
			"review-", "review of " + crmBot + " in campaign q-1: certified (decided by you at the sponsor step); scopes removed: crm.export"},
		{"revoke in a named campaign", []string{"reviews", "decide", "tenants/default/agents/etl-bot", "--revoke", "--campaign", "od-2", "--request-id", "req-9"},
			"run-10", reject, &lifecyclev1.DecideReviewRequest{Agent: "tenants/default/agents/etl-bot", Campaign: "od-2", Decision: revoke},
			"req-9", "suspended"},
		{"certify removing a used scope", []string{"reviews", "decide", "crm-bot", "--certify", "--remove", "crm.read"},
			"run-7", approve, &lifecyclev1.DecideReviewRequest{Agent: crmBot, Campaign: "q-1", Decision: certify, Remove: []string{"crm.read"}},
			"review-", "certified"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			f := &reviewServices{}
			serveReviews(t, dir, f)
			code, stdout, stderr := run(t, dir, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if !strings.Contains(stdout, tt.wantOut) {
				t.Fatalf("output %q, want %q", stdout, tt.wantOut)
			}
			_, _, tokens, decisions := f.sent()
			if len(tokens) != 1 || tokens[0].GetAgent() != tt.wantDecision.GetAgent() || tokens[0].GetStep() != "sponsor" ||
				tokens[0].GetWorkflowRunId() != tt.wantRun || tokens[0].GetDecision() != tt.wantToken {
				t.Fatalf("token requests = %v, want one for %s, the sponsor step and %s", tokens, tt.wantRun, tt.wantToken)
			}
			if len(decisions) != 1 {
				t.Fatalf("%d decisions sent, want 1", len(decisions))
			}
			d := proto.Clone(decisions[0]).(*lifecyclev1.DecideReviewRequest)
			rid := d.GetRequestId()
			ridOK := rid == tt.wantRequest || (strings.HasSuffix(tt.wantRequest, "-") && strings.HasPrefix(rid, tt.wantRequest) && len(rid) > len(tt.wantRequest))
			if !ridOK || d.GetApprovalToken() != "token-for-sponsor-"+tt.wantToken.String() {
				t.Fatalf("request id %q, token %q", rid, d.GetApprovalToken())
			}
			d.RequestId, d.ApprovalToken = "", ""
			if !proto.Equal(d, tt.wantDecision) {
				t.Fatalf("decision = %v, want %v", d, tt.wantDecision)
			}
		})
	}
}

func TestReviewsDecideRefusals(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		refuse     error
		wantErr    string
		wantCalls  bool // the token and the decision were sent
		wantListed bool
	}{
		{"neither certify nor revoke", []string{"reviews", "decide", "crm-bot"}, nil, "say --certify or --revoke", false, false},
		{"both", []string{"reviews", "decide", "crm-bot", "--certify", "--revoke"}, nil, "say --certify or --revoke", false, false},
		{"keep without reason", []string{"reviews", "decide", "crm-bot", "--certify", "--keep", "crm.write"}, nil, `--keep "crm.write": want SCOPE=REASON`, false, false},
		{"keep with an empty reason", []string{"reviews", "decide", "crm-bot", "--certify", "--keep", "crm.write= "}, nil, "want SCOPE=REASON", false, false},
		{"keep twice", []string{"reviews", "decide", "crm-bot", "--certify", "--keep", "crm.write=a", "--keep", "crm.write=b"}, nil, "--keep crm.write is given twice", false, false},
		{"revoke with keep", []string{"reviews", "decide", "crm-bot", "--revoke", "--keep", "crm.write=a"}, nil, "go with --certify", false, false},
		{"bad agent", []string{"reviews", "decide", "a/b", "--certify"}, nil, "want tenants/{tenant}/agents/{agent} or a bare agent id", false, false},
		{"no open review", []string{"reviews", "decide", "faq-bot", "--certify"}, nil, "tenants/default/agents/faq-bot has no open review", false, true},
		{"no open review in the campaign", []string{"reviews", "decide", "crm-bot", "--certify", "--campaign", "od-2"}, nil, "has no open review in campaign od-2", false, true},
		{"open reviews in two campaigns", []string{"reviews", "decide", "etl-bot", "--certify"}, nil, "open reviews in campaigns q-1, od-2: say which with --campaign", false, true},
		{"keep a scope not under review", []string{"reviews", "decide", "crm-bot", "--certify", "--keep", "hr.read=x"}, nil, "--keep hr.read: not a scope under review", false, true},
		{"the run refuses", []string{"reviews", "decide", "crm-bot", "--certify"},
			errs.FailedPrecondition("APPROVAL_REFUSED", "approval refused: the sponsor step of a review is decided by [the agent's sponsor]"),
			"the sponsor step of a review is decided by", true, true},
		{"limit", []string{"reviews", "list", "--limit", "0"}, nil, "--limit 0: want a positive number of reviews", false, false},
		{"usage days", []string{"reviews", "start", "--usage-days", "401"}, nil, "--usage-days 401: want 1 to 400", false, false},
		{"answer days", []string{"reviews", "start", "--answer-days", "-1"}, nil, "--answer-days -1: want 1 to 90", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			f := &reviewServices{refuse: tt.refuse}
			serveReviews(t, dir, f)
			code, stdout, stderr := run(t, dir, tt.args...)
			if code != 1 || !strings.Contains(stderr, tt.wantErr) || stdout != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want a failure saying %q", code, stdout, stderr, tt.wantErr)
			}
			starts, lists, tokens, decisions := f.sent()
			if len(starts) != 0 {
				t.Errorf("a campaign was started: %v", starts)
			}
			if tt.wantListed != (len(lists) > 0) {
				t.Errorf("listed reviews: %v, want %v", len(lists) > 0, tt.wantListed)
			}
			if tt.wantCalls != (len(tokens) == 1 && len(decisions) == 1) || (!tt.wantCalls && len(tokens)+len(decisions) > 0) {
				t.Errorf("token requests %v, decisions %v; want sent=%v", tokens, decisions, tt.wantCalls)
			}
		})
	}
}
