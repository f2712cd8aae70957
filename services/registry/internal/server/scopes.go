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

// ScopeRemover removes scopes from agents (registry.Service).
type ScopeRemover interface {
	RemoveAgentScopes(ctx context.Context, c registry.RemoveAgentScopes, md eventstore.Metadata) (*registryv1.Agent, error)
}

// removeScopesRoles may remove an agent's scopes: admins and the lifecycle worker (access reviews).
var removeScopesRoles = []authn.Role{authn.RolePlatformAdmin, authn.RoleTenantAdmin, authn.RoleLifecycleWorker}

// RemoveAgentScopes removes scopes from an ACTIVE or SUSPENDED agent. Callers: platform-admin,
// tenant-admin of the agent's tenant, the lifecycle worker.
func (s *Server) RemoveAgentScopes(ctx context.Context, req *registryv1.RemoveAgentScopesRequest) (*registryv1.RemoveAgentScopesResponse, error) {
	tenant, id, _, err := authorizeAgent(ctx, "name", req.GetName(), removeScopesRoles...)
	if err != nil {
		return nil, err
	}
	r, ok := s.reg.(ScopeRemover)
	if !ok {
		return nil, errs.FailedPrecondition("SCOPE_REMOVAL_DISABLED", "this registry does not remove scopes")
	}
	a, err := r.RemoveAgentScopes(ctx, registry.RemoveAgentScopes{
		Tenant: tenant, AgentID: id, Scopes: req.GetScopes(), Reason: req.GetReason(), Ticket: req.GetTicket(),
		Etag: req.GetEtag(), RequestID: req.GetRequestId(),
	}, grpcx.EventMetadata(ctx, ""))
	if err != nil {
		return nil, err
	}
	return &registryv1.RemoveAgentScopesResponse{Agent: a}, nil
}
