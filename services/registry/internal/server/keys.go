package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/metadata"

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
// to ("" when it is not limited) and whether the caller is the agent itself (which must then prove
// possession of a current key).
func keyCaller(ctx context.Context, tenant, id string, agentMayAct bool) (owner string, self bool, err error) {
	p, err := principal(ctx)
	if err != nil {
		return "", false, err
	}
	if agentMayAct && isAgentItself(p, tenant, id) {
		return "", true, nil
	}
	if err := p.Authorize(tenant, keyRoles...); err != nil {
		return "", false, err
	}
	if p.IsLifecycleWorker() {
		return "", false, nil
	}
	return ownerConstraint(p), false, nil
}

// checkKeyProof verifies that the agent adding req's key to itself holds one of its current keys:
// the request carries (metadata authn.KeyProofMetadata) a JWS signed with a key the agent holds now,
// over the agent, the new key's thumbprint, the request id and its time (authn.VerifyKeyProof). An
// access token alone (stolen, 10 minutes) cannot add a key. Fails closed: no proof, a proof that
// does not verify, or an agent whose keys cannot be read is PermissionDenied or the read's error,
// and nothing is written.
func (s *Server) checkKeyProof(ctx context.Context, tenant, id string, req *registryv1.AddAgentKeyRequest) error {
	denied := func(why string) error {
		return errs.PermissionDenied("KEY_PROOF_REQUIRED", "an agent adds a key to itself only with a proof signed by one of its current keys ("+
			authn.KeyProofMetadata+" metadata, e.g. agentctl agents rotate --key-in CURRENT.json): "+why)
	}
	if req.GetRequestId() == "" {
		return denied("the request id it binds is missing")
	}
	var newKey jose.JSONWebKey
	if err := newKey.UnmarshalJSON([]byte(req.GetPublicJwk())); err != nil {
		return errs.InvalidArgument("public_jwk", "is not one JWK")
	}
	tp, err := authn.Thumbprint(newKey)
	if err != nil {
		return errs.InvalidArgument("public_jwk", "has no RFC 7638 thumbprint")
	}
	var proof string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(authn.KeyProofMetadata); len(v) == 1 {
			proof = v[0]
		}
	}
	agent, err := s.reg.GetAgent(ctx, tenant, id, 0)
	if err != nil {
		return err
	}
	current, err := authn.ParsePublicJWKS(agent.GetPublicJwks(), maxProofKeys)
	if err != nil {
		return errs.Internal(fmt.Errorf("registry: agent %s/%s public_jwks %w", tenant, id, err))
	}
	if _, err := authn.VerifyKeyProof(proof, current, authn.KeyProofClaims{
		Agent: registry.AgentName(tenant, id), NewKeyThumbprint: tp, RequestID: req.GetRequestId(),
	}, time.Now()); err != nil {
		return denied(err.Error())
	}
	return nil
}

// maxProofKeys bounds the agent keys a proof is checked against (an agent holds at most 2).
const maxProofKeys = 5

// AddAgentKey registers an agent's next public key. Callers: the agent itself (with a proof of
// possession of a current key, checkKeyProof), its owner, tenant-admin, platform-admin, the
// lifecycle worker.
func (s *Server) AddAgentKey(ctx context.Context, req *registryv1.AddAgentKeyRequest) (*registryv1.AddAgentKeyResponse, error) {
	tenant, id, err := registry.ParseAgentName("name", req.GetName())
	if err != nil {
		return nil, err
	}
	owner, self, err := keyCaller(ctx, tenant, id, true)
	if err != nil {
		return nil, err
	}
	if self {
		if err := s.checkKeyProof(ctx, tenant, id, req); err != nil {
			return nil, err
		}
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
	owner, _, err := keyCaller(ctx, tenant, id, false)
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
