package server

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	"github.com/agentid/agentid/services/issuer/internal/approval"
)

// ApprovalMinter mints approval tokens (approval.Minter).
type ApprovalMinter interface {
	Mint(p *authn.Principal, r approval.Request) (approval.Token, error)
}

// WithApprovals makes s serve IssueApprovalToken with m and returns s.
func (s *Server) WithApprovals(m ApprovalMinter) *Server {
	s.approvals = m
	return s
}

// IssueApprovalToken mints an approval token for the calling person. Callers: approver,
// security-approver, compliance-approver, owner, tenant-admin of the agent's tenant, people only.
func (s *Server) IssueApprovalToken(ctx context.Context, req *issuerv1.IssueApprovalTokenRequest) (*issuerv1.IssueApprovalTokenResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if s.approvals == nil {
		return nil, errs.FailedPrecondition("APPROVALS_DISABLED", "this issuer does not issue approval tokens")
	}
	var decision string
	switch req.GetDecision() {
	case issuerv1.ApprovalTokenDecision_APPROVAL_TOKEN_DECISION_APPROVE:
		decision = approval.DecisionApprove
	case issuerv1.ApprovalTokenDecision_APPROVAL_TOKEN_DECISION_REJECT:
		decision = approval.DecisionReject
	case issuerv1.ApprovalTokenDecision_APPROVAL_TOKEN_DECISION_RESTORE:
		decision = approval.DecisionRestore
	case issuerv1.ApprovalTokenDecision_APPROVAL_TOKEN_DECISION_RETIRE:
		decision = approval.DecisionRetire
	case issuerv1.ApprovalTokenDecision_APPROVAL_TOKEN_DECISION_SIGN_OFF:
		decision = approval.DecisionSignOff
	default:
		return nil, errs.InvalidArgument("decision", "must be APPROVAL_TOKEN_DECISION_APPROVE, _REJECT, _RESTORE, _RETIRE or _SIGN_OFF")
	}
	tok, err := s.approvals.Mint(p, approval.Request{
		Agent: req.GetAgent(), Step: req.GetStep(), Decision: decision, Run: req.GetWorkflowRunId(),
	})
	if err != nil {
		return nil, err
	}
	return &issuerv1.IssueApprovalTokenResponse{Token: tok.Token, ExpireTime: timestamppb.New(tok.Expiry), TokenId: tok.ID}, nil
}
