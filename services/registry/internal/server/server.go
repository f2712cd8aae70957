// Package server adapts the registry core to gRPC: it authenticates and authorizes the caller as
// each RPC's comment says, converts the request, calls the core and returns its result or error.
package server

import (
	"context"
	"errors"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// Registry is the core the server calls.
type Registry interface {
	CreateTenant(ctx context.Context, c registry.CreateTenant, md eventstore.Metadata) (*registryv1.Tenant, error)
	GetTenant(ctx context.Context, id string) (*registryv1.Tenant, error)
	ListTenants(ctx context.Context, size int32, token string) ([]*registryv1.Tenant, string, error)
	RegisterAgent(ctx context.Context, c registry.RegisterAgent, md eventstore.Metadata) (*registryv1.Agent, error)
	GetAgent(ctx context.Context, tenant, agentID string, minVersion uint64) (*registryv1.Agent, error)
	ListAgents(ctx context.Context, q registry.AgentQuery) (registry.AgentPage, error)
	ActivateAgent(ctx context.Context, c registry.ActivateAgent, md eventstore.Metadata) (*registryv1.Agent, error)
	RejectAgent(ctx context.Context, c registry.RejectAgent, md eventstore.Metadata) (*registryv1.Agent, error)
	RetireAgent(ctx context.Context, c registry.RetireAgent, md eventstore.Metadata) (*registryv1.Agent, error)
	CompleteRetirement(ctx context.Context, c registry.CompleteRetirement, md eventstore.Metadata) (*registryv1.Agent, error)
	Suspend(ctx context.Context, c registry.SuspendAgent, md eventstore.Metadata) (registry.Suspension, error)
	ResumeAgent(ctx context.Context, c registry.ResumeAgent, md eventstore.Metadata) (*registryv1.Agent, error)
}

// Server implements agentid.registry.v1.RegistryService.
type Server struct {
	registryv1.UnimplementedRegistryServiceServer
	reg Registry
}

var _ registryv1.RegistryServiceServer = (*Server)(nil)

// New returns a server calling reg.
func New(reg Registry) *Server { return &Server{reg: reg} }

// Role sets of the RPCs.
var (
	// anyRole: every role of the tenant may read.
	anyRole = []authn.Role{
		authn.RolePlatformAdmin, authn.RoleTenantAdmin, authn.RoleOwner,
		authn.RoleApprover, authn.RoleSecurityApprover, authn.RoleComplianceApprover, authn.RoleAuditor, authn.RoleAnalyst,
	}
	// readAgentRoles may read one agent: every role of the tenant and the lifecycle worker, whose
	// activities read the agent they act on.
	readAgentRoles = append(anyRole[:len(anyRole):len(anyRole)], authn.RoleLifecycleWorker)
	// readTenantRoles may read the tenant itself: every role of the tenant and its event subscribers,
	// which see the tenant's tenant.created event anyway (and agentctl login checks a session with it).
	readTenantRoles = append(anyRole[:len(anyRole):len(anyRole)], authn.RoleSubscriber)
	// manageRoles may register and retire agents (owners only their own).
	manageRoles = []authn.Role{authn.RolePlatformAdmin, authn.RoleTenantAdmin, authn.RoleOwner}
	// retireRoles may retire agents: manageRoles and the lifecycle worker (for an automated trigger
	// only: ttl, inactivity, anomaly, ...).
	retireRoles = append(manageRoles[:len(manageRoles):len(manageRoles)], authn.RoleLifecycleWorker)
	// suspendRoles may suspend and resume agents: admins, security approvers and the lifecycle
	// worker (incident response, reviews).
	suspendRoles = []authn.Role{authn.RolePlatformAdmin, authn.RoleTenantAdmin, authn.RoleSecurityApprover, authn.RoleLifecycleWorker}
	// decideRoles may record lifecycle decisions: the lifecycle worker (and platform-admins).
	decideRoles = []authn.Role{authn.RolePlatformAdmin, authn.RoleLifecycleWorker}
)

// principal returns the authenticated caller.
func principal(ctx context.Context) (*authn.Principal, error) {
	p, ok := authn.PrincipalFrom(ctx)
	if !ok {
		return nil, errs.Unauthenticated("UNAUTHENTICATED", "authentication required")
	}
	return p, nil
}

// authorize returns the caller if it may act in tenant with one of roles.
func authorize(ctx context.Context, tenant string, roles ...authn.Role) (*authn.Principal, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if err := p.Authorize(tenant, roles...); err != nil {
		return nil, err
	}
	return p, nil
}

// authorizeAgent parses the agent name the request gives in field and authorizes the caller for
// the agent's tenant with one of roles.
func authorizeAgent(ctx context.Context, field, name string, roles ...authn.Role) (tenant, id string, p *authn.Principal, err error) {
	if tenant, id, err = registry.ParseAgentName(field, name); err != nil {
		return "", "", nil, err
	}
	if p, err = authorize(ctx, tenant, roles...); err != nil {
		return "", "", nil, err
	}
	return tenant, id, p, nil
}

// authorizeTenant parses the tenant name the request gives in field and authorizes the caller for
// that tenant with one of roles.
func authorizeTenant(ctx context.Context, field, name string, roles ...authn.Role) (string, error) {
	tenant, err := registry.ParseTenantName(field, name)
	if err != nil {
		return "", err
	}
	if _, err := authorize(ctx, tenant, roles...); err != nil {
		return "", err
	}
	return tenant, nil
}

// requirePlatformAdmin returns the caller if it is a platform-admin of the system tenant.
func requirePlatformAdmin(ctx context.Context) (*authn.Principal, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if !p.IsPlatformAdmin() {
		return nil, errs.PermissionDenied("MISSING_ROLE", "requires the platform-admin role of the system tenant").
			WithMetadata("required_roles", string(authn.RolePlatformAdmin))
	}
	return p, nil
}

// ownerConstraint is the owner a caller is limited to: its own id when only its owner role allows
// it to manage agents, "" for tenant and platform admins. A platform-admin role outside the system
// tenant counts for nothing.
func ownerConstraint(p *authn.Principal) string {
	if p.IsPlatformAdmin() || p.HasRole(authn.RoleTenantAdmin) {
		return ""
	}
	return p.ID
}

// CreateTenant creates a tenant. Callers: platform-admin.
func (s *Server) CreateTenant(ctx context.Context, req *registryv1.CreateTenantRequest) (*registryv1.CreateTenantResponse, error) {
	_, err := requirePlatformAdmin(ctx)
	if err != nil {
		return nil, err
	}
	t, err := s.reg.CreateTenant(ctx, registry.CreateTenant{
		TenantID: req.GetTenantId(), DisplayName: req.GetDisplayName(), RequestID: req.GetRequestId(),
	}, grpcx.EventMetadata(ctx, ""))
	if err != nil {
		return nil, err
	}
	return &registryv1.CreateTenantResponse{Tenant: t}, nil
}

// GetTenant returns one tenant. Callers: platform-admin, or any role of that tenant (subscriber included).
func (s *Server) GetTenant(ctx context.Context, req *registryv1.GetTenantRequest) (*registryv1.GetTenantResponse, error) {
	tenant, err := authorizeTenant(ctx, "name", req.GetName(), readTenantRoles...)
	if err != nil {
		return nil, err
	}
	t, err := s.reg.GetTenant(ctx, tenant)
	if err != nil {
		return nil, err
	}
	return &registryv1.GetTenantResponse{Tenant: t}, nil
}

// ListTenants lists tenants. Callers: platform-admin, the lifecycle worker (its sweeps visit every
// tenant).
func (s *Server) ListTenants(ctx context.Context, req *registryv1.ListTenantsRequest) (*registryv1.ListTenantsResponse, error) {
	if p, err := principal(ctx); err != nil {
		return nil, err
	} else if !p.IsLifecycleWorker() {
		if _, err := requirePlatformAdmin(ctx); err != nil {
			return nil, err
		}
	}
	ts, next, err := s.reg.ListTenants(ctx, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &registryv1.ListTenantsResponse{Tenants: ts, NextPageToken: next}, nil
}

// RegisterAgent records a new agent in state PENDING (PROPOSED with proposed; nothing with
// validate_only). Callers: platform-admin, tenant-admin, owner (an owner only for agents whose owner
// is the caller); with validate_only also an auditor (validateOnlyRoles).
func (s *Server) RegisterAgent(ctx context.Context, req *registryv1.RegisterAgentRequest) (*registryv1.RegisterAgentResponse, error) {
	tenant, err := registry.ParseTenantName("parent", req.GetParent())
	if err != nil {
		return nil, err
	}
	p, err := authorizeManage(ctx, tenant, req.GetValidateOnly())
	if err != nil {
		return nil, err
	}
	a, err := s.reg.RegisterAgent(ctx, registry.RegisterAgent{
		Tenant: tenant, Agent: req.GetAgent(), RequestID: req.GetRequestId(), RequireOwner: manageOwnerConstraint(p),
		ValidateOnly: req.GetValidateOnly(), Proposed: req.GetProposed(),
	}, grpcx.EventMetadata(ctx, ""))
	if err != nil {
		return nil, err
	}
	return &registryv1.RegisterAgentResponse{Agent: a}, nil
}

// GetAgent returns one agent, at least at req.min_version when it is set; a read model that does
// not reach it in time answers Unavailable READ_MODEL_LAGGING with a google.rpc.RetryInfo.
// Callers: any role of the agent's tenant, the lifecycle worker.
func (s *Server) GetAgent(ctx context.Context, req *registryv1.GetAgentRequest) (*registryv1.GetAgentResponse, error) {
	tenant, id, _, err := authorizeAgent(ctx, "name", req.GetName(), readAgentRoles...)
	if err != nil {
		return nil, err
	}
	a, err := s.reg.GetAgent(ctx, tenant, id, req.GetMinVersion())
	if err != nil {
		return nil, withRetryInfo(err)
	}
	return &registryv1.GetAgentResponse{Agent: a}, nil
}

// ActivateAgent records an approved provisioning decision. Callers: the lifecycle worker,
// platform-admin.
func (s *Server) ActivateAgent(ctx context.Context, req *registryv1.ActivateAgentRequest) (*registryv1.ActivateAgentResponse, error) {
	tenant, id, _, err := authorizeAgent(ctx, "name", req.GetName(), decideRoles...)
	if err != nil {
		return nil, err
	}
	a, err := s.reg.ActivateAgent(ctx, registry.ActivateAgent{
		Tenant: tenant, AgentID: id, DecisionID: req.GetDecisionId(), ApprovedBy: req.GetApprovedBy(),
		Etag: req.GetEtag(), RequestID: req.GetRequestId(),
		Override: registry.RiskTierOverride{Tier: req.GetOverrideRiskTier(), Reason: req.GetOverrideReason(), Source: req.GetOverrideSource()},
	}, grpcx.EventMetadata(ctx, ""))
	if err != nil {
		return nil, err
	}
	return &registryv1.ActivateAgentResponse{Agent: a}, nil
}

// RejectAgent records a rejected provisioning decision. Callers: the lifecycle worker,
// platform-admin.
func (s *Server) RejectAgent(ctx context.Context, req *registryv1.RejectAgentRequest) (*registryv1.RejectAgentResponse, error) {
	tenant, id, _, err := authorizeAgent(ctx, "name", req.GetName(), decideRoles...)
	if err != nil {
		return nil, err
	}
	a, err := s.reg.RejectAgent(ctx, registry.RejectAgent{
		Tenant: tenant, AgentID: id, DecisionID: req.GetDecisionId(), Reason: req.GetReason(), RequestID: req.GetRequestId(),
	}, grpcx.EventMetadata(ctx, ""))
	if err != nil {
		return nil, err
	}
	return &registryv1.RejectAgentResponse{Agent: a}, nil
}

// RetireAgent requests retirement. Callers: platform-admin, tenant-admin, owner (an owner only of
// its own agents), and the lifecycle worker for a trigger other than `request` (a request is a
// person's: the worker retires only for what it detected itself, such as ttl or anomaly).
func (s *Server) RetireAgent(ctx context.Context, req *registryv1.RetireAgentRequest) (*registryv1.RetireAgentResponse, error) {
	tenant, id, p, err := authorizeAgent(ctx, "name", req.GetName(), retireRoles...)
	if err != nil {
		return nil, err
	}
	owner := ownerConstraint(p)
	if p.IsLifecycleWorker() && !p.IsPlatformAdmin() && !p.HasRole(authn.RoleTenantAdmin) {
		if t := req.GetTrigger(); t == "" || t == registry.TriggerRequest {
			return nil, errs.PermissionDenied("TRIGGER_NOT_ALLOWED",
				"the lifecycle worker retires agents only for an automated trigger (ttl, inactivity, owner_departed, replacement, policy_violation, anomaly, task_completed), not for a request").
				WithMetadata("trigger", registry.TriggerRequest)
		}
		owner = ""
	}
	a, err := s.reg.RetireAgent(ctx, registry.RetireAgent{
		Tenant: tenant, AgentID: id, Reason: req.GetReason(), Ticket: req.GetTicket(),
		Etag: req.GetEtag(), RequestID: req.GetRequestId(), RequireOwner: owner, Trigger: req.GetTrigger(),
	}, grpcx.EventMetadata(ctx, ""))
	if err != nil {
		return nil, err
	}
	return &registryv1.RetireAgentResponse{Agent: a}, nil
}

// CompleteRetirement records verified deprovisioning. Callers: the lifecycle worker,
// platform-admin.
func (s *Server) CompleteRetirement(ctx context.Context, req *registryv1.CompleteRetirementRequest) (*registryv1.CompleteRetirementResponse, error) {
	tenant, id, _, err := authorizeAgent(ctx, "name", req.GetName(), decideRoles...)
	if err != nil {
		return nil, err
	}
	a, err := s.reg.CompleteRetirement(ctx, registry.CompleteRetirement{
		Tenant: tenant, AgentID: id, VerifyTime: req.GetVerifyTime(), RequestID: req.GetRequestId(),
	}, grpcx.EventMetadata(ctx, ""))
	if err != nil {
		return nil, err
	}
	return &registryv1.CompleteRetirementResponse{Agent: a}, nil
}

// SuspendAgent suspends an ACTIVE agent (a SUSPENDED one is returned unchanged). Callers:
// platform-admin, tenant-admin, security-approver of the agent's tenant, the lifecycle worker.
func (s *Server) SuspendAgent(ctx context.Context, req *registryv1.SuspendAgentRequest) (*registryv1.SuspendAgentResponse, error) {
	tenant, id, _, err := authorizeAgent(ctx, "name", req.GetName(), suspendRoles...)
	if err != nil {
		return nil, err
	}
	res, err := s.reg.Suspend(ctx, registry.SuspendAgent{
		Tenant: tenant, AgentID: id, Reason: req.GetReason(), Cause: req.GetCause(), Ticket: req.GetTicket(),
		Etag: req.GetEtag(), RequestID: req.GetRequestId(),
	}, grpcx.EventMetadata(ctx, ""))
	if err != nil {
		return nil, err
	}
	return &registryv1.SuspendAgentResponse{Agent: res.Agent, SuspendedByRequest: res.ByRequest, SuspensionCause: res.Cause}, nil
}

// ResumeAgent returns a SUSPENDED agent to ACTIVE (with expected_cause, only a suspension of that
// cause). Callers: platform-admin, tenant-admin,
// security-approver of the agent's tenant, the lifecycle worker.
func (s *Server) ResumeAgent(ctx context.Context, req *registryv1.ResumeAgentRequest) (*registryv1.ResumeAgentResponse, error) {
	tenant, id, _, err := authorizeAgent(ctx, "name", req.GetName(), suspendRoles...)
	if err != nil {
		return nil, err
	}
	a, err := s.reg.ResumeAgent(ctx, registry.ResumeAgent{
		Tenant: tenant, AgentID: id, Reason: req.GetReason(), Ticket: req.GetTicket(),
		Etag: req.GetEtag(), RequestID: req.GetRequestId(), ExpectedCause: req.GetExpectedCause(),
	}, grpcx.EventMetadata(ctx, ""))
	if err != nil {
		return nil, err
	}
	return &registryv1.ResumeAgentResponse{Agent: a}, nil
}

// withRetryInfo tells the caller of a READ_MODEL_LAGGING error when to try again
// (google.rpc.RetryInfo); other errors pass unchanged.
func withRetryInfo(err error) error {
	var e *errs.Error
	if !errors.As(err, &e) || e.Kind != errs.KindUnavailable || e.Reason != registry.ReasonReadModelLagging {
		return err
	}
	return e.WithRetryAfter(registry.ReadRetryDelay)
}
