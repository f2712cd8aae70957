package server

import (
	"context"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/grpcx"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
)

// clientKeyCaller authorizes a client key change: platform-admin, or the lifecycle worker on the
// client of an agent (the rotation workflow).
func clientKeyCaller(ctx context.Context, name string) (string, string, error) {
	p, err := principal(ctx)
	if err != nil {
		return "", "", err
	}
	tenant, clientID, err := credentials.ParseClientName("name", name)
	if err != nil {
		return "", "", err
	}
	if err := p.Authorize(tenant, authn.RoleLifecycleWorker); err != nil {
		return "", "", err
	}
	switch {
	case p.IsPlatformAdmin():
	case p.IsLifecycleWorker():
		if err := requireAgentClient(tenant, clientID); err != nil {
			return "", "", err
		}
	default:
		return "", "", errs.PermissionDenied("MISSING_ROLE", "client keys are changed by the platform-admin and the lifecycle worker (agent rotation)").
			WithMetadata("required_roles", string(authn.RolePlatformAdmin)+","+string(authn.RoleLifecycleWorker))
	}
	return tenant, clientID, nil
}

// AddClientKey adds a public key to a client. Callers: platform-admin, the lifecycle worker (agents'
// clients only).
func (s *Server) AddClientKey(ctx context.Context, req *issuerv1.AddClientKeyRequest) (*issuerv1.AddClientKeyResponse, error) {
	tenant, clientID, err := clientKeyCaller(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	c, err := s.svc.AddClientKey(ctx, grpcx.EventMetadata(ctx, tenant), tenant, clientID, req.GetPublicJwk(), req.GetThumbprint(), req.GetRequestId())
	if err != nil {
		return nil, err
	}
	return &issuerv1.AddClientKeyResponse{Client: c}, nil
}

// RemoveClientKey removes a public key from a client. Callers: platform-admin, the lifecycle worker
// (agents' clients only).
func (s *Server) RemoveClientKey(ctx context.Context, req *issuerv1.RemoveClientKeyRequest) (*issuerv1.RemoveClientKeyResponse, error) {
	tenant, clientID, err := clientKeyCaller(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	c, err := s.svc.RemoveClientKey(ctx, grpcx.EventMetadata(ctx, tenant), tenant, clientID, req.GetThumbprint(), req.GetReason(), req.GetRequestId())
	if err != nil {
		return nil, err
	}
	return &issuerv1.RemoveClientKeyResponse{Client: c}, nil
}
