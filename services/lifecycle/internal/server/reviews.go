package server

import (
	"context"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
)

// Reviews is the access review core the server calls (lifecycle.Reviews).
type Reviews interface {
	StartCampaign(ctx context.Context, tenant string, usageDays, answerDays int, requestID string) (campaign, workflowID string, err error)
	List(ctx context.Context, tenant string, openOnly bool, campaign string, pageSize int, pageToken string) ([]lifecycle.Review, string, error)
	Decide(ctx context.Context, p *authn.Principal, d lifecycle.ReviewDecisionInput) (lifecycle.Review, error)
}

// WithReviews makes s serve StartReviewCampaign, ListReviews and DecideReview with r and returns s.
func (s *Server) WithReviews(r Reviews) *Server {
	s.reviews = r
	return s
}

var (
	// campaignRoles may start a campaign.
	campaignRoles = []authn.Role{authn.RoleTenantAdmin, authn.RoleSecurityApprover, authn.RoleComplianceApprover, authn.RolePlatformAdmin}
	// reviewDecideRoles may decide reviews (the run decides who may decide which step).
	reviewDecideRoles = []authn.Role{authn.RoleOwner, authn.RoleApprover, authn.RoleSecurityApprover, authn.RoleComplianceApprover, authn.RoleTenantAdmin}
)

func tenantOf(ctx context.Context, parent string, roles []authn.Role) (string, error) {
	p, ok := authn.PrincipalFrom(ctx)
	if !ok {
		return "", errs.Unauthenticated("UNAUTHENTICATED", "authentication required")
	}
	tenant, found := strings.CutPrefix(parent, "tenants/")
	if !found || !authn.ValidTenant(tenant) {
		return "", errs.InvalidArgument("parent", "must be tenants/{tenant}")
	}
	return tenant, p.Authorize(tenant, roles...)
}

func (s *Server) reviewCore() (Reviews, error) {
	if s.reviews != nil {
		return s.reviews, nil
	}
	return nil, errs.FailedPrecondition("REVIEWS_DISABLED", "this lifecycle service does not run access reviews")
}

// StartReviewCampaign starts a campaign in the tenant. Callers: tenant-admin, security-approver,
// compliance-approver.
func (s *Server) StartReviewCampaign(ctx context.Context, req *lifecyclev1.StartReviewCampaignRequest) (*lifecyclev1.StartReviewCampaignResponse, error) {
	tenant, err := tenantOf(ctx, req.GetParent(), campaignRoles)
	if err != nil {
		return nil, err
	}
	r, err := s.reviewCore()
	if err != nil {
		return nil, err
	}
	c, id, err := r.StartCampaign(ctx, tenant, int(req.GetUsageDays()), int(req.GetAnswerDays()), req.GetRequestId())
	if err != nil {
		return nil, err
	}
	return &lifecyclev1.StartReviewCampaignResponse{Campaign: c, WorkflowId: id}, nil
}

// ListReviews lists the tenant's reviews. Callers: any role of the tenant.
func (s *Server) ListReviews(ctx context.Context, req *lifecyclev1.ListReviewsRequest) (*lifecyclev1.ListReviewsResponse, error) {
	tenant, err := tenantOf(ctx, req.GetParent(), anyRole)
	if err != nil {
		return nil, err
	}
	r, err := s.reviewCore()
	if err != nil {
		return nil, err
	}
	list, next, err := r.List(ctx, tenant, req.GetOpenOnly(), req.GetCampaign(), int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &lifecyclev1.ListReviewsResponse{NextPageToken: next}
	for _, rv := range list {
		resp.Reviews = append(resp.Reviews, reviewProto(rv))
	}
	return resp, nil
}

// DecideReview forwards the caller's decision, with the caller's approval token, to the review run.
// Callers: owner, approver, security-approver, compliance-approver, tenant-admin (the run decides who
// may decide which step).
func (s *Server) DecideReview(ctx context.Context, req *lifecyclev1.DecideReviewRequest) (*lifecyclev1.DecideReviewResponse, error) {
	p, err := authorize(ctx, req.GetAgent(), reviewDecideRoles)
	if err != nil {
		return nil, err
	}
	var certify bool
	switch req.GetDecision() {
	case lifecyclev1.ReviewDecision_REVIEW_DECISION_CERTIFY:
		certify = true
	case lifecyclev1.ReviewDecision_REVIEW_DECISION_REVOKE:
	default:
		return nil, errs.InvalidArgument("decision", "must be REVIEW_DECISION_CERTIFY or REVIEW_DECISION_REVOKE")
	}
	keep := map[string]string{}
	for _, k := range req.GetKeep() {
		if k.GetScope() == "" || strings.TrimSpace(k.GetReason()) == "" {
			return nil, errs.InvalidArgument("keep", "each kept scope needs its scope and a reason")
		}
		keep[k.GetScope()] = k.GetReason()
	}
	r, err := s.reviewCore()
	if err != nil {
		return nil, err
	}
	rv, err := r.Decide(ctx, p, lifecycle.ReviewDecisionInput{
		Agent: req.GetAgent(), Campaign: req.GetCampaign(), Certify: certify, Keep: keep, Remove: req.GetRemove(),
		Comment: req.GetComment(), Token: req.GetApprovalToken(), RequestID: req.GetRequestId(),
	})
	if err != nil {
		return nil, err
	}
	return &lifecyclev1.DecideReviewResponse{Review: reviewProto(rv)}, nil
}

func reviewProto(rv lifecycle.Review) *lifecyclev1.Review {
	w := toProto(rv.Run)
	w.Kind = lifecyclev1.WorkflowKind_WORKFLOW_KIND_REVIEW
	out := &lifecyclev1.Review{
		Workflow: w, Agent: rv.Agent, Campaign: rv.Campaign, Decider: rv.Status.Decider, Outcome: rv.Status.Outcome,
		RemovedScopes: rv.Status.Removed, Timeline: rv.Status.Timeline,
	}
	if !rv.Status.Due.IsZero() {
		out.DueTime = timestamppb.New(rv.Status.Due)
	}
	if rv.Status.Decision != nil {
		out.DecidedBy = rv.Status.Decision.Decider
	}
	for _, sc := range rv.Status.Scopes {
		out.Scopes = append(out.Scopes, &lifecyclev1.ReviewScope{Scope: sc.Scope, Used: sc.Used, Uses: sc.Uses, Decision: sc.Decision, Reason: sc.Reason})
	}
	return out
}
