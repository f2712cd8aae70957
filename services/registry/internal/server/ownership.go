package server

import (
	"context"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// Ownership transfers agents and keeps the tenants' directories (registry.Service).
type Ownership interface {
	TransferAgentOwnership(ctx context.Context, c registry.TransferAgentOwnership, md eventstore.Metadata) (*registryv1.Agent, error)
	SyncDirectory(ctx context.Context, c registry.SyncDirectory, md eventstore.Metadata) (registry.SyncResult, error)
	ListPrincipals(ctx context.Context, tenant string, status registryv1.PrincipalStatus, size int32, token string) ([]*registryv1.Principal, string, error)
	ListPrincipalsByID(ctx context.Context, tenant string, status registryv1.PrincipalStatus, ids []string) ([]*registryv1.Principal, error)
}

// directoryAdminRoles may sync a tenant's directory: platform-admin and tenant-admin.
var directoryAdminRoles = []authn.Role{authn.RolePlatformAdmin, authn.RoleTenantAdmin}

// ownership returns the core's ownership commands, FailedPrecondition when it has none.
func (s *Server) ownership() (Ownership, error) {
	o, ok := s.reg.(Ownership)
	if !ok {
		return nil, errs.FailedPrecondition("OWNERSHIP_DISABLED", "this registry does not manage ownership")
	}
	return o, nil
}

// TransferAgentOwnership gives an agent a new owner and/or sponsor. Callers: platform-admin,
// tenant-admin, the agent's current owner.
func (s *Server) TransferAgentOwnership(ctx context.Context, req *registryv1.TransferAgentOwnershipRequest) (*registryv1.TransferAgentOwnershipResponse, error) {
	tenant, id, p, err := authorizeAgent(ctx, "name", req.GetName(), manageRoles...)
	if err != nil {
		return nil, err
	}
	o, err := s.ownership()
	if err != nil {
		return nil, err
	}
	a, err := o.TransferAgentOwnership(ctx, registry.TransferAgentOwnership{
		Tenant: tenant, AgentID: id, NewOwner: req.GetNewOwner(), NewSponsor: req.GetNewSponsor(), Reason: req.GetReason(),
		Etag: req.GetEtag(), RequestID: req.GetRequestId(), RequireOwner: ownerConstraint(p),
	}, grpcx.EventMetadata(ctx, ""))
	if err != nil {
		return nil, err
	}
	return &registryv1.TransferAgentOwnershipResponse{Agent: a}, nil
}

// SyncDirectory records a tenant's people and teams. Callers: platform-admin, tenant-admin.
func (s *Server) SyncDirectory(ctx context.Context, req *registryv1.SyncDirectoryRequest) (*registryv1.SyncDirectoryResponse, error) {
	tenant, err := authorizeTenant(ctx, "parent", req.GetParent(), directoryAdminRoles...)
	if err != nil {
		return nil, err
	}
	o, err := s.ownership()
	if err != nil {
		return nil, err
	}
	res, err := o.SyncDirectory(ctx, registry.SyncDirectory{
		Tenant: tenant, Principals: req.GetPrincipals(), Replace: req.GetReplace(), AllowMassDeparture: req.GetAllowMassDeparture(),
		RequestID: req.GetRequestId(),
	}, grpcx.EventMetadata(ctx, ""))
	if err != nil {
		return nil, err
	}
	return &registryv1.SyncDirectoryResponse{
		Added: int32(res.Added), Updated: int32(res.Updated), Departed: res.Departed, AgentsOrphaned: int32(res.AgentsOrphaned),
	}, nil
}

// ListPrincipals pages through a tenant's directory. Callers: any role of the tenant, and the
// lifecycle worker, which refuses the decisions of owners the directory does not list as ACTIVE.
func (s *Server) ListPrincipals(ctx context.Context, req *registryv1.ListPrincipalsRequest) (*registryv1.ListPrincipalsResponse, error) {
	tenant, err := authorizeTenant(ctx, "parent", req.GetParent(), readAgentRoles...)
	if err != nil {
		return nil, err
	}
	o, err := s.ownership()
	if err != nil {
		return nil, err
	}
	if ids := req.GetIds(); len(ids) > 0 {
		if req.GetPageSize() != 0 || req.GetPageToken() != "" {
			return nil, errs.InvalidArgument("ids", "ids: cannot be combined with page_size or page_token (the named principals are one page)")
		}
		ps, err := o.ListPrincipalsByID(ctx, tenant, req.GetStatus(), ids)
		if err != nil {
			return nil, err
		}
		return &registryv1.ListPrincipalsResponse{Principals: ps}, nil
	}
	ps, next, err := o.ListPrincipals(ctx, tenant, req.GetStatus(), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &registryv1.ListPrincipalsResponse{Principals: ps, NextPageToken: next}, nil
}
