package server

import (
	"context"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
)

// Rotations is the core that shows rotation runs and takes the owner's decision on a new key
// (lifecycle.Service); the server serves DecideRotation and GetRotation when its core implements it.
type Rotations interface {
	DecideRotation(ctx context.Context, p *authn.Principal, d lifecycle.RotationDecision) (lifecycle.Run, error)
	GetRotation(ctx context.Context, agent, thumbprint string) (lifecycle.Run, bool, error)
}

// rotationDecideRoles may decide a rotation's new key (the run decides who may approve or reject).
var rotationDecideRoles = []authn.Role{authn.RoleOwner, authn.RoleApprover, authn.RoleTenantAdmin}

// rotations is the core as Rotations, or an error when it does not serve them.
func (s *Server) rotations() (Rotations, error) {
	r, ok := s.core.(Rotations)
	if !ok {
		return nil, errs.FailedPrecondition("ROTATION_DECISIONS_DISABLED", "this lifecycle service does not take rotation decisions")
	}
	return r, nil
}

// DecideRotation sends the caller's APPROVE or REJECT of a high-tier agent's new key, with the
// caller's approval token for step owner, to its rotation run. Callers: owner, approver, tenant-admin.
func (s *Server) DecideRotation(ctx context.Context, req *lifecyclev1.DecideRotationRequest) (*lifecyclev1.DecideRotationResponse, error) {
	p, err := authorize(ctx, req.GetAgent(), rotationDecideRoles)
	if err != nil {
		return nil, err
	}
	rot, err := s.rotations()
	if err != nil {
		return nil, err
	}
	r, err := rot.DecideRotation(ctx, p, lifecycle.RotationDecision{
		Agent: req.GetAgent(), Thumbprint: req.GetThumbprint(), Token: req.GetApprovalToken(), Comment: req.GetComment(), RequestID: req.GetRequestId(),
	})
	if err != nil {
		return nil, err
	}
	return &lifecyclev1.DecideRotationResponse{Workflow: toProto(r)}, nil
}

// GetRotation returns the rotation run of an agent's new key. Callers: any role of the tenant.
func (s *Server) GetRotation(ctx context.Context, req *lifecyclev1.GetRotationRequest) (*lifecyclev1.GetRotationResponse, error) {
	if _, err := authorize(ctx, req.GetAgent(), anyRole); err != nil {
		return nil, err
	}
	rot, err := s.rotations()
	if err != nil {
		return nil, err
	}
	r, found, err := rot.GetRotation(ctx, req.GetAgent(), req.GetThumbprint())
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, errs.NotFound("ROTATION_NOT_FOUND", "the agent has no rotation run for key "+req.GetThumbprint())
	}
	return &lifecyclev1.GetRotationResponse{Workflow: toProto(r)}, nil
}
