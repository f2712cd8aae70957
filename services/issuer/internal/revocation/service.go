package revocation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
)

// TokenVerifier checks that a presented access token was issued by a tenant: signature by one of the
// tenant's keys, issuer, tenant claim, and not expired (within the issuer's leeway). It need not
// check the client or earlier revocations: revoking again changes nothing.
type TokenVerifier interface {
	VerifyForRevocation(tenant, raw string) (claims *authn.Claims, kid string, err error)
}

// Clients is the read model of the tenant's clients.
type Clients interface {
	Client(tenant, clientID string) (*credentials.Client, bool)
}

// ServiceConfig configures a Service.
type ServiceConfig struct {
	// Writer stores the revocations. Required.
	Writer *Writer
	// Tokens verifies revoked tokens. Required.
	Tokens TokenVerifier
	// Clients is the clients read model. Required.
	Clients Clients
	// Leeway is how far in the future an issued_before time may lie (clock skew); default 30 s.
	Leeway time.Duration
	// ProjectionLagAllowance is added to the time of a CLIENT_KEY revocation to make its not_before:
	// a replica whose clients projection still holds the removed key a moment after its removal can
	// mint with it, and such a token is covered too (as the agent-state reactor does); default
	// DefaultProjectionLagAllowance, at most MaxProjectionLagAllowance.
	ProjectionLagAllowance time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Service runs the admin revocation command (IssuerService.RevokeTokens) without transport or
// authorization: the caller has checked who may revoke in the tenant.
type Service struct {
	writer  *Writer
	tokens  TokenVerifier
	clients Clients
	leeway  time.Duration
	// allowance is ServiceConfig.ProjectionLagAllowance.
	allowance time.Duration
	now       func() time.Time
	logger    *slog.Logger
}

// NewService returns a Service.
func NewService(cfg ServiceConfig) (*Service, error) {
	if cfg.Writer == nil || cfg.Tokens == nil || cfg.Clients == nil {
		return nil, errors.New("revocation: Writer, Tokens and Clients are required")
	}
	if err := CheckProjectionLagAllowance(cfg.ProjectionLagAllowance); err != nil {
		return nil, fmt.Errorf("revocation: %w", err)
	}
	s := &Service{writer: cfg.Writer, tokens: cfg.Tokens, clients: cfg.Clients, leeway: cfg.Leeway, allowance: cfg.ProjectionLagAllowance, now: cfg.Now, logger: cfg.Logger}
	if s.allowance == 0 {
		s.allowance = DefaultProjectionLagAllowance
	}
	if s.leeway <= 0 {
		s.leeway = 30 * time.Second
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.logger == nil {
		s.logger = slog.Default()
	}
	return s, nil
}

// RevokeTokens revokes, in tenant, what req names: one token (its signature is checked; an unknown,
// foreign or expired token changes nothing and returns nil), every token of a client of the tenant
// or of an agent (issued until now), or every token of the tenant issued at or before a time that is
// not in the future. md says who revokes. Idempotent by req.request_id. Errors are pkg/errs kinds.
func (s *Service) RevokeTokens(ctx context.Context, md eventstore.Metadata, tenant string, req *issuerv1.RevokeTokensRequest) (*issuerv1.Revocation, error) {
	ev := &issuerv1.TokensRevoked{
		Tenant: tenant,
		Cause:  issuerv1.RevocationCause_REVOCATION_CAUSE_ADMIN,
		Reason: req.GetReason(),
	}
	now := s.now().UTC()
	requestID := req.GetRequestId()
	switch target := req.GetTarget().(type) {
	case *issuerv1.RevokeTokensRequest_Token:
		claims, kid, err := s.tokens.VerifyForRevocation(tenant, target.Token)
		if err != nil || claims.ID == "" {
			s.logger.InfoContext(ctx, "token to revoke is not an unexpired token of the tenant; nothing revoked", "tenant", tenant,
				"reason", err, "request_id", md.CorrelationID)
			return nil, checkRevocationInput(ev, requestID)
		}
		ev.Target = issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN
		ev.TokenId = claims.ID
		ev.ExpireTime = timestamppb.New(TokenExpireTime(claims.Expiry))
		s.logger.DebugContext(ctx, "revoking token", "tenant", tenant, "jti", claims.ID, "kid", kid)
	case *issuerv1.RevokeTokensRequest_Client:
		t, clientID, err := credentials.ParseClientName("client", target.Client)
		if err != nil {
			return nil, err
		}
		if t != tenant {
			return nil, errs.InvalidArgument("client", "must be a client of "+credentials.TenantName(tenant))
		}
		if _, ok := s.clients.Client(tenant, clientID); !ok {
			return nil, errs.NotFound("CLIENT_NOT_FOUND", fmt.Sprintf("client %q not found", clientID)).
				WithMetadata("client", target.Client)
		}
		ev.Target, ev.ClientId, ev.NotBefore = issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT, clientID, timestamppb.New(now)
	case *issuerv1.RevokeTokensRequest_ClientKey:
		clientID, tp, err := s.clientKey(tenant, target.ClientKey)
		if err != nil {
			return nil, err
		}
		ev.Target, ev.ClientId, ev.ClientKeyThumbprint = issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT_KEY, clientID, tp
		ev.Cause = issuerv1.RevocationCause_REVOCATION_CAUSE_CLIENT_KEY_REMOVED
		// A lagging replica may still mint with the removed key just after now: cover its tokens.
		ev.NotBefore = timestamppb.New(now.Add(s.allowance))
	case *issuerv1.RevokeTokensRequest_Agent:
		if err := checkAgentName(tenant, target.Agent); err != nil {
			return nil, err
		}
		ev.Target, ev.Agent, ev.NotBefore = issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT, target.Agent, timestamppb.New(now)
	case *issuerv1.RevokeTokensRequest_IssuedBefore:
		switch at := target.IssuedBefore; {
		case !at.IsValid():
			return nil, errs.InvalidArgument("issued_before", "is not a valid time")
		case at.AsTime().After(now.Add(s.leeway)):
			return nil, errs.InvalidArgument("issued_before", "must not be in the future")
		}
		ev.Target, ev.NotBefore = issuerv1.RevocationTarget_REVOCATION_TARGET_TENANT, target.IssuedBefore
	default:
		return nil, errs.InvalidArgument("target", "one of token, client, client_key, agent or issued_before is required")
	}
	return s.writer.Revoke(ctx, md, ev, requestID)
}

// checkRevocationInput checks the fields of a request that revokes nothing, so that bad input is
// refused whether or not the token is known.
func checkRevocationInput(ev *issuerv1.TokensRevoked, requestID string) error {
	probe := &issuerv1.TokensRevoked{
		Target: issuerv1.RevocationTarget_REVOCATION_TARGET_TENANT, Tenant: ev.GetTenant(),
		NotBefore: timestamppb.Now(), Cause: ev.GetCause(), Reason: ev.GetReason(),
	}
	if err := Check(probe); err != nil {
		return err
	}
	if requestID != "" {
		return checkText("request_id", requestID, 128)
	}
	return nil
}

// checkAgentName checks that name is tenants/{tenant}/agents/{agent} of tenant.
func checkAgentName(tenant, name string) error {
	parts := strings.Split(name, "/")
	if len(parts) != 4 || parts[0] != "tenants" || parts[2] != "agents" || !authn.ValidTenant(parts[1]) || parts[3] == "" {
		return errs.InvalidArgument("agent", "must be tenants/{tenant}/agents/{agent}")
	}
	if parts[1] != tenant {
		return errs.InvalidArgument("agent", "must be an agent of "+credentials.TenantName(tenant))
	}
	return checkText("agent", name, maxIDBytes)
}
