// Package server adapts the lifecycle core to gRPC: it authorizes the caller as each RPC's comment
// says, converts the request, calls the core and returns its result or error.
package server

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
)

// Lifecycle is the core the server calls.
type Lifecycle interface {
	AgentRuns(ctx context.Context, agent string) ([]lifecycle.Run, error)
	SubmitApproval(ctx context.Context, p *authn.Principal, a lifecycle.Approval) (lifecycle.Run, error)
}

// Server implements agentid.lifecycle.v1.LifecycleService.
type Server struct {
	lifecyclev1.UnimplementedLifecycleServiceServer
	core      Lifecycle
	incidents Incidents
	signOffs  SignOffs
	reviews   Reviews
}

var _ lifecyclev1.LifecycleServiceServer = (*Server)(nil)

// New returns a server calling core.
func New(core Lifecycle) *Server { return &Server{core: core} }

// Role sets of the RPCs.
var (
	// anyRole: every role of the agent's tenant may read.
	anyRole = []authn.Role{
		authn.RolePlatformAdmin, authn.RoleTenantAdmin, authn.RoleOwner,
		authn.RoleApprover, authn.RoleSecurityApprover, authn.RoleComplianceApprover, authn.RoleAuditor, authn.RoleAnalyst,
	}
	// approveRoles may decide approvals.
	approveRoles = []authn.Role{authn.RoleApprover, authn.RoleSecurityApprover, authn.RoleComplianceApprover,
		authn.RoleOwner, authn.RoleTenantAdmin, authn.RolePlatformAdmin}
)

// authorize returns the caller if it may act in the agent's tenant with one of roles.
func authorize(ctx context.Context, agent string, roles []authn.Role) (*authn.Principal, error) {
	p, ok := authn.PrincipalFrom(ctx)
	if !ok {
		return nil, errs.Unauthenticated("UNAUTHENTICATED", "authentication required")
	}
	tenant, _, err := lifecycle.ParseAgent("agent", agent)
	if err != nil {
		return nil, err
	}
	if err := p.Authorize(tenant, roles...); err != nil {
		return nil, err
	}
	return p, nil
}

// GetAgentWorkflows returns the agent's lifecycle workflows. Callers: any role of the agent's tenant.
func (s *Server) GetAgentWorkflows(ctx context.Context, req *lifecyclev1.GetAgentWorkflowsRequest) (*lifecyclev1.GetAgentWorkflowsResponse, error) {
	if _, err := authorize(ctx, req.GetAgent(), anyRole); err != nil {
		return nil, err
	}
	runs, err := s.core.AgentRuns(ctx, req.GetAgent())
	if err != nil {
		return nil, err
	}
	resp := &lifecyclev1.GetAgentWorkflowsResponse{}
	for _, r := range runs {
		resp.Workflows = append(resp.Workflows, toProto(r))
	}
	return resp, nil
}

// SubmitApproval records the caller's decision on the agent's provisioning run, with the caller's
// approval token. Callers: approver, security-approver, compliance-approver, owner, tenant-admin (the
// run decides who may decide which step).
func (s *Server) SubmitApproval(ctx context.Context, req *lifecyclev1.SubmitApprovalRequest) (*lifecyclev1.SubmitApprovalResponse, error) {
	p, err := authorize(ctx, req.GetAgent(), approveRoles)
	if err != nil {
		return nil, err
	}
	var approve bool
	switch req.GetDecision() {
	case lifecyclev1.ApprovalDecision_APPROVAL_DECISION_APPROVE:
		approve = true
	case lifecyclev1.ApprovalDecision_APPROVAL_DECISION_REJECT:
	default:
		return nil, errs.InvalidArgument("decision", "must be APPROVAL_DECISION_APPROVE or APPROVAL_DECISION_REJECT")
	}
	r, err := s.core.SubmitApproval(ctx, p, lifecycle.Approval{
		Agent: req.GetAgent(), Approve: approve, Comment: req.GetComment(), RequestID: req.GetRequestId(), Token: req.GetApprovalToken(),
	})
	if err != nil {
		return nil, err
	}
	return &lifecyclev1.SubmitApprovalResponse{Workflow: toProto(r)}, nil
}

func toProto(r lifecycle.Run) *lifecyclev1.WorkflowStatus {
	w := &lifecyclev1.WorkflowStatus{
		WorkflowId:   r.WorkflowID,
		Stage:        r.Stage,
		WaitingFor:   r.WaitingFor,
		Completed:    r.Completed,
		Result:       r.Result,
		RunId:        r.RunID,
		ApprovalStep: r.ApprovalStep,
	}
	switch r.Kind {
	case lifecycle.KindProvision:
		w.Kind = lifecyclev1.WorkflowKind_WORKFLOW_KIND_PROVISION
	case lifecycle.KindDeprovision:
		w.Kind = lifecyclev1.WorkflowKind_WORKFLOW_KIND_DEPROVISION
	}
	if !r.StartTime.IsZero() {
		w.StartTime = timestamppb.New(r.StartTime)
	}
	if !r.CloseTime.IsZero() {
		w.CloseTime = timestamppb.New(r.CloseTime)
	}
	return w
}
