package server

import (
	"context"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/grpcx"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
)

// RotateSigningKey creates a tenant's NEXT signing key; platform-admin, or tenant-admin in its tenant.
func (s *Server) RotateSigningKey(ctx context.Context, req *issuerv1.RotateSigningKeyRequest) (*issuerv1.RotateSigningKeyResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	tenant, err := credentials.ParseTenantName("parent", req.GetParent())
	if err != nil {
		return nil, err
	}
	if err := p.Authorize(tenant, authn.RoleTenantAdmin); err != nil {
		return nil, err
	}
	key, err := s.svc.RotateSigningKey(ctx, grpcx.EventMetadata(ctx, tenant), tenant, req.GetRequestId())
	if err != nil {
		return nil, err
	}
	return &issuerv1.RotateSigningKeyResponse{Key: key}, nil
}

// ResealSigningKeys re-seals signing keys under the current key-encryption key; platform-admin only.
func (s *Server) ResealSigningKeys(ctx context.Context, req *issuerv1.ResealSigningKeysRequest) (*issuerv1.ResealSigningKeysResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if !p.IsPlatformAdmin() {
		return nil, errs.PermissionDenied("PLATFORM_ADMIN_REQUIRED", "only a platform-admin may re-seal signing keys")
	}
	tenant := ""
	if req.GetParent() != "" {
		if tenant, err = credentials.ParseTenantName("parent", req.GetParent()); err != nil {
			return nil, err
		}
	}
	return s.svc.ResealSigningKeys(ctx, grpcx.EventMetadata(ctx, authn.SystemTenant), tenant)
}
