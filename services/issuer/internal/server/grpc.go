package server

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/names"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
)

// Revoker runs the admin revocation command (revocation.Service).
type Revoker interface {
	RevokeTokens(ctx context.Context, md eventstore.Metadata, tenant string, req *issuerv1.RevokeTokensRequest) (*issuerv1.Revocation, error)
}

// Server implements issuerv1.IssuerServiceServer over the credentials and revocation services.
type Server struct {
	issuerv1.UnimplementedIssuerServiceServer
	svc       *credentials.Service
	revoker   Revoker
	approvals ApprovalMinter // nil: IssueApprovalToken is refused (APPROVALS_DISABLED)
	checker   ClientChecker  // nil: CheckClient is refused (CHECK_DISABLED)
}

var _ issuerv1.IssuerServiceServer = (*Server)(nil)

// NewServer returns the gRPC adapter of svc and revoker.
func NewServer(svc *credentials.Service, revoker Revoker) *Server {
	return &Server{svc: svc, revoker: revoker}
}

// allRoles lets any role of a tenant call read-only methods.
var allRoles = []authn.Role{
	authn.RolePlatformAdmin, authn.RoleTenantAdmin, authn.RoleOwner,
	authn.RoleApprover, authn.RoleAuditor, authn.RoleAnalyst,
}

func principal(ctx context.Context) (*authn.Principal, error) {
	p, ok := authn.PrincipalFrom(ctx)
	if !ok {
		return nil, errs.Unauthenticated("UNAUTHENTICATED", "authentication required")
	}
	return p, nil
}

// CreateClient registers an OAuth client. A platform-admin may register any client; the lifecycle
// worker only the client of an agent (its provisioning); a tenant-admin only staff identities
// (clients with roles, no agent) of its own tenant, with roles it holds itself. Only platform-admins
// register clients in tenant "system".
func (s *Server) CreateClient(ctx context.Context, req *issuerv1.CreateClientRequest) (*issuerv1.CreateClientResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	tenant, err := credentials.ParseTenantName("parent", req.GetParent())
	if err != nil {
		return nil, err
	}
	if err := p.Authorize(tenant, authn.RoleTenantAdmin, authn.RoleLifecycleWorker); err != nil {
		return nil, err
	}
	client := req.GetClient()
	// Agent ids name agent clients only, so that no other identity can take (or block) the client id
	// an agent's provisioning will create.
	if id := client.GetClientId(); strings.HasPrefix(id, names.AgentIDPrefix) &&
		client.GetAgent() != "tenants/"+tenant+"/agents/"+id {
		return nil, errs.InvalidArgument("client.client_id", "ids starting with "+names.AgentIDPrefix+" are reserved for the clients of the agents they name")
	}
	switch {
	case p.IsPlatformAdmin():
	case p.IsLifecycleWorker():
		if err := requireAgentClient(tenant, client.GetClientId()); err != nil {
			return nil, err
		}
		if client.GetAgent() != "tenants/"+tenant+"/agents/"+client.GetClientId() || len(client.GetRoles()) > 0 {
			return nil, errs.PermissionDenied("MISSING_ROLE", "the lifecycle-worker role creates only the clients of agents: client.agent must name the agent of client.client_id, and no roles").
				WithMetadata("required_roles", string(authn.RolePlatformAdmin))
		}
	// An agent's credential comes only from its provisioning run (the lifecycle worker):
	// registration and approval come before any credential. A tenant-admin manages the tenant's
	// staff identities (clients with roles, no agent) and grants only roles it holds.
	case client.GetAgent() != "" || len(client.GetRoles()) == 0:
		return nil, errs.PermissionDenied("MISSING_ROLE", "a tenant-admin may create staff identities (clients with roles) only; agent clients are created by provisioning").
			WithMetadata("required_roles", string(authn.RolePlatformAdmin))
	default:
		if r, ok := p.MayGrant(tenant, client.GetRoles()); !ok {
			return nil, errs.PermissionDenied("ROLE_NOT_HELD", fmt.Sprintf("a caller grants only roles it holds: the caller does not hold %q", r)).
				WithMetadata("role", string(r))
		}
	}
	c, err := s.svc.CreateClient(ctx, grpcx.EventMetadata(ctx, tenant), tenant, client, req.GetRequestId())
	if err != nil {
		return nil, err
	}
	return &issuerv1.CreateClientResponse{Client: c}, nil
}

// requireAgentClient refuses, for the lifecycle worker, a client id that is not an agent's: the
// lifecycle-worker role reads, creates and disables the clients of agents only.
func requireAgentClient(tenant, clientID string) error {
	if strings.HasPrefix(clientID, names.AgentIDPrefix) {
		return nil
	}
	return errs.PermissionDenied("MISSING_ROLE", "the lifecycle-worker role acts on the clients of agents ("+names.AgentIDPrefix+"...) only").
		WithMetadata("client", credentials.ClientName(tenant, clientID)).
		WithMetadata("required_roles", string(authn.RoleTenantAdmin))
}

// GetClient returns one client to a platform-admin or a tenant-admin of its tenant, and an agent's
// client to the lifecycle worker.
func (s *Server) GetClient(ctx context.Context, req *issuerv1.GetClientRequest) (*issuerv1.GetClientResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	tenant, clientID, err := credentials.ParseClientName("name", req.GetName())
	if err != nil {
		return nil, err
	}
	if err := p.Authorize(tenant, authn.RoleTenantAdmin, authn.RoleLifecycleWorker); err != nil {
		return nil, err
	}
	if !p.IsPlatformAdmin() && p.IsLifecycleWorker() {
		if err := requireAgentClient(tenant, clientID); err != nil {
			return nil, err
		}
	}
	c, err := s.svc.GetClient(tenant, clientID)
	if err != nil {
		return nil, err
	}
	return &issuerv1.GetClientResponse{Client: c}, nil
}

// DisableClient disables a client, or tombstones a client id that has none unless
// req.require_existing; platform-admin, the lifecycle worker (agents' clients only), or tenant-admin
// in its tenant (existing clients only).
func (s *Server) DisableClient(ctx context.Context, req *issuerv1.DisableClientRequest) (*issuerv1.DisableClientResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	tenant, clientID, err := credentials.ParseClientName("name", req.GetName())
	if err != nil {
		return nil, err
	}
	if err := p.Authorize(tenant, authn.RoleTenantAdmin, authn.RoleLifecycleWorker); err != nil {
		return nil, err
	}
	worker := !p.IsPlatformAdmin() && p.IsLifecycleWorker()
	if worker {
		if err := requireAgentClient(tenant, clientID); err != nil {
			return nil, err
		}
	}
	// Only the platform's own identities (deprovisioning, the reconciler) tombstone a client id before
	// its client exists: a tenant-admin disables existing clients, so no one can squat an agent's
	// future client id or grow the tombstones without bound.
	requireExisting := req.GetRequireExisting() || !(p.IsPlatformAdmin() || worker)
	c, err := s.svc.DisableClient(ctx, grpcx.EventMetadata(ctx, tenant), tenant, clientID, req.GetReason(), req.GetRequestId(), requireExisting)
	if err != nil {
		return nil, err
	}
	return &issuerv1.DisableClientResponse{Client: c}, nil
}

// ListSigningKeys lists a tenant's public signing keys to any role of the tenant.
func (s *Server) ListSigningKeys(ctx context.Context, req *issuerv1.ListSigningKeysRequest) (*issuerv1.ListSigningKeysResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	tenant, err := credentials.ParseTenantName("parent", req.GetParent())
	if err != nil {
		return nil, err
	}
	if err := p.Authorize(tenant, allRoles...); err != nil {
		return nil, err
	}
	ks, err := s.svc.ListSigningKeys(tenant)
	if err != nil {
		return nil, err
	}
	return &issuerv1.ListSigningKeysResponse{Keys: ks}, nil
}

// RevokeTokens revokes a token, every token of a client or an agent, or every token of the tenant
// issued before a time; platform-admin, or tenant-admin in its tenant; the lifecycle worker every
// token of an agent (incident suspension, deprovisioning) or of one client key (rotation), nothing
// wider.
func (s *Server) RevokeTokens(ctx context.Context, req *issuerv1.RevokeTokensRequest) (*issuerv1.RevokeTokensResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	tenant, err := credentials.ParseTenantName("parent", req.GetParent())
	if err != nil {
		return nil, err
	}
	roles := []authn.Role{authn.RoleTenantAdmin}
	switch req.GetTarget().(type) {
	case *issuerv1.RevokeTokensRequest_Agent, *issuerv1.RevokeTokensRequest_ClientKey:
		roles = append(roles, authn.RoleLifecycleWorker)
	}
	if err := p.Authorize(tenant, roles...); err != nil {
		return nil, err
	}
	if s.revoker == nil {
		return nil, errs.Internal(errors.New("issuer: no revocation service configured"))
	}
	rev, err := s.revoker.RevokeTokens(ctx, grpcx.EventMetadata(ctx, tenant), tenant, req)
	if err != nil {
		return nil, err
	}
	return &issuerv1.RevokeTokensResponse{Revocation: rev}, nil
}
