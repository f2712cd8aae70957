package server

import (
	"context"
	"errors"
	"time"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	"github.com/agentid/agentid/services/issuer/internal/credentials"
	"github.com/agentid/agentid/services/issuer/internal/oauth"
)

// ClientChecker runs the token endpoint's and introspection's gates for a client without its key
// (oauth.Server).
type ClientChecker interface {
	CheckClient(ctx context.Context, tenant, clientID, tokenID string, issuedAt time.Time) (oauth.ClientCheck, error)
}

// WithClientChecker makes s serve CheckClient with c and returns s.
func (s *Server) WithClientChecker(c ClientChecker) *Server {
	s.checker = c
	return s
}

// maxTokenIDLen bounds CheckClientRequest.token_id.
const maxTokenIDLen = 128

// CheckClient answers what the token endpoint and introspection would answer for a client now.
// Callers: platform-admin, lifecycle-worker (agents' clients only). Nothing is written.
func (s *Server) CheckClient(ctx context.Context, req *issuerv1.CheckClientRequest) (*issuerv1.CheckClientResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	tenant, clientID, err := credentials.ParseClientName("name", req.GetName())
	if err != nil {
		return nil, err
	}
	if err := p.Authorize(tenant, authn.RoleLifecycleWorker); err != nil {
		return nil, err
	}
	if !p.IsPlatformAdmin() && !p.IsLifecycleWorker() {
		return nil, errs.PermissionDenied("MISSING_ROLE", "CheckClient is for the platform-admin and the lifecycle worker").
			WithMetadata("required_roles", string(authn.RolePlatformAdmin)+","+string(authn.RoleLifecycleWorker))
	}
	if !p.IsPlatformAdmin() {
		if err := requireAgentClient(tenant, clientID); err != nil {
			return nil, err
		}
	}
	if len(req.GetTokenId()) > maxTokenIDLen {
		return nil, errs.InvalidArgument("token_id", "token_id must be at most 128 bytes")
	}
	var issued time.Time
	if t := req.GetTokenIssueTime(); t != nil {
		if !t.IsValid() {
			return nil, errs.InvalidArgument("token_issue_time", "token_issue_time is not a valid time")
		}
		issued = t.AsTime()
	}
	if s.checker == nil {
		return nil, errs.FailedPrecondition("CHECK_DISABLED", "this issuer does not serve CheckClient")
	}
	c, err := s.checker.CheckClient(ctx, tenant, clientID, req.GetTokenId(), issued)
	if errors.Is(err, oauth.ErrCheckUnavailable) {
		return nil, errs.Unavailable("CHECK_UNAVAILABLE", "the client cannot be checked now, retry later", err)
	}
	if err != nil {
		return nil, errs.Internal(err)
	}
	return &issuerv1.CheckClientResponse{
		TokenRefused: c.TokenRefused, TokenError: c.TokenError, TokenReason: c.TokenReason,
		TokenActive: c.TokenActive, TokenInactiveReason: c.TokenInactiveReason,
		Scopes: c.Scopes, Resources: c.Resources, Roles: c.Roles,
	}, nil
}
