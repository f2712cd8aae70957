package server

import (
	"context"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
)

// SignOffs is the core that takes deprovisioning sign-offs (lifecycle.Service).
type SignOffs interface {
	SignOffDeprovisioning(ctx context.Context, p *authn.Principal, so lifecycle.SignOff) (lifecycle.Run, error)
}

// WithSignOffs makes s serve SignOffDeprovisioning with c and returns s.
func (s *Server) WithSignOffs(c SignOffs) *Server {
	s.signOffs = c
	return s
}

// signOffRoles may sign off deprovisioning (the run decides who may sign which step).
var signOffRoles = []authn.Role{authn.RoleOwner, authn.RoleSecurityApprover, authn.RoleTenantAdmin}

// SignOffDeprovisioning records the caller's sign-off on the agent's verified deprovisioning, with
// the caller's SIGN_OFF approval token. Callers: owner, security-approver, tenant-admin.
func (s *Server) SignOffDeprovisioning(ctx context.Context, req *lifecyclev1.SignOffDeprovisioningRequest) (*lifecyclev1.SignOffDeprovisioningResponse, error) {
	p, err := authorize(ctx, req.GetAgent(), signOffRoles)
	if err != nil {
		return nil, err
	}
	if s.signOffs == nil {
		return nil, errs.FailedPrecondition("SIGN_OFF_DISABLED", "this lifecycle service does not take sign-offs")
	}
	r, err := s.signOffs.SignOffDeprovisioning(ctx, p, lifecycle.SignOff{
		Agent: req.GetAgent(), Comment: req.GetComment(), RequestID: req.GetRequestId(), Token: req.GetApprovalToken(),
	})
	if err != nil {
		return nil, err
	}
	return &lifecyclev1.SignOffDeprovisioningResponse{Workflow: toProto(r)}, nil
}
