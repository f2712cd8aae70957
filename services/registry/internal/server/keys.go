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

// KeyRegistry is what the key commands need from the core, next to Registry.
type KeyRegistry interface {
	AddAgentKey(ctx context.Context, c registry.AddAgentKey, md eventstore.Metadata) (*registryv1.Agent, *registryv1.AgentKey, error)
	RemoveAgentKey(ctx context.Context, c registry.RemoveAgentKey, md eventstore.Metadata) (*registryv1.Agent, error)
}

var _ KeyRegistry = (*registry.Service)(nil)

// errNoKey is the internal error of an added key missing from the agent the command returned.
var errNoKey = errors.New("registry: the added key is missing from the agent the command returned")

// keys returns the core's key commands; a core without them answers Unimplemented.
func (s *Server) keys() (KeyRegistry, error) {
	k, ok := s.reg.(KeyRegistry)
	if !ok {
		return nil, errs.Internal(errors.New("registry: the core does not implement the agent key commands"))
	}
	return k, nil
}

// keyRoles may add and remove agents' keys: admins, owners (their own agents) and the lifecycle
// worker (the rotation workflow).
var keyRoles = []authn.Role{authn.RolePlatformAdmin, authn.RoleTenantAdmin, authn.RoleOwner, authn.RoleLifecycleWorker}

// isAgentItself reports whether p is the agent tenant/id acting with its own token (not delegated).
func isAgentItself(p *authn.Principal, tenant, id string) bool {
	return p.Kind == authn.KindAgent && p.Tenant == tenant && p.ClientID == id && p.ID == id && p.OnBehalfOf == ""
}

// keyCaller authorizes a key command on agent tenant/id and returns the owner the caller is limited
// to ("" when it is not limited).
func keyCaller(ctx context.Context, tenant, id string, agentMayAct bool) (string, error) {
	p, err := principal(ctx)
	if err != nil {
		return "", err
	}
	if agentMayAct && isAgentItself(p, tenant, id) {
		return "", nil
	}
	if err := p.Authorize(tenant, keyRoles...); err != nil {
		return "", err
	}
	if p.IsLifecycleWorker() {
		return "", nil
	}
	return ownerConstraint(p), nil
}

// AddAgentKey registers an agent's next public key. Callers: the agent itself, its owner,
// tenant-admin, platform-admin, the lifecycle worker.
func (s *Server) AddAgentKey(ctx context.Context, req *registryv1.AddAgentKeyRequest) (*registryv1.AddAgentKeyResponse, error) {
	tenant, id, err := registry.ParseAgentName("name", req.GetName())
	if err != nil {
		return nil, err
	}
	owner, err := keyCaller(ctx, tenant, id, true)
	if err != nil {
		return nil, err
	}
	reg, err := s.keys()
	if err != nil {
		return nil, err
	}
	a, k, err := reg.AddAgentKey(ctx, registry.AddAgentKey{
		Tenant: tenant, AgentID: id, PublicJWK: req.GetPublicJwk(), RequestID: req.GetRequestId(), RequireOwner: owner,
	}, grpcx.EventMetadata(ctx, ""))
	if err != nil {
		return nil, err
	}
	if k == nil {
		return nil, errs.Internal(errNoKey)
	}
	return &registryv1.AddAgentKeyResponse{Agent: a, Key: k}, nil
}

// RemoveAgentKey removes one of an agent's keys. Callers: its owner, tenant-admin, platform-admin,
// the lifecycle worker.
func (s *Server) RemoveAgentKey(ctx context.Context, req *registryv1.RemoveAgentKeyRequest) (*registryv1.RemoveAgentKeyResponse, error) {
	tenant, id, err := registry.ParseAgentName("name", req.GetName())
	if err != nil {
		return nil, err
	}
	owner, err := keyCaller(ctx, tenant, id, false)
	if err != nil {
		return nil, err
	}
	reg, err := s.keys()
	if err != nil {
		return nil, err
	}
	a, err := reg.RemoveAgentKey(ctx, registry.RemoveAgentKey{
		Tenant: tenant, AgentID: id, Thumbprint: req.GetThumbprint(), Reason: req.GetReason(),
		RequestID: req.GetRequestId(), RequireOwner: owner,
	}, grpcx.EventMetadata(ctx, ""))
	if err != nil {
		return nil, err
	}
	return &registryv1.RemoveAgentKeyResponse{Agent: a}, nil
}
