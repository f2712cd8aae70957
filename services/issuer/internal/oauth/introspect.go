package oauth

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentid/agentid/pkg/authn"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
)

// Introspection is an RFC 7662 introspection response. A DPoP-bound token has token_type DPoP and
// its cnf (RFC 9449 §6.2); a delegated token its act (RFC 8693 §4.1).
type Introspection struct {
	Active      bool         `json:"active"`
	Scope       string       `json:"scope,omitempty"`
	ClientID    string       `json:"client_id,omitempty"`
	Subject     string       `json:"sub,omitempty"`
	Audience    jwt.Audience `json:"aud,omitempty"`
	Issuer      string       `json:"iss,omitempty"`
	Expiry      int64        `json:"exp,omitempty"`
	IssuedAt    int64        `json:"iat,omitempty"`
	NotBefore   int64        `json:"nbf,omitempty"`
	ID          string       `json:"jti,omitempty"`
	TokenType   string       `json:"token_type,omitempty"`
	Tenant      string       `json:"tenant,omitempty"`
	Environment string       `json:"env,omitempty"`
	Agent       string       `json:"agent,omitempty"`
	Roles       []string     `json:"roles,omitempty"`
	// Act is the actor of a delegated token.
	Act map[string]any `json:"act,omitempty"`
	// Cnf is the key the token is bound to (jkt for DPoP, x5t#S256 for a client certificate).
	Cnf *authn.Confirmation `json:"cnf,omitempty"`
}

// Introspect answers an introspection request for tenant. The caller authenticates with
// private_key_jwt as an active client of the tenant (aud the issuer identifier alone), or with a
// bearer access token of a platform-admin (tenant system) or of a tenant-admin or introspector of
// tenant (authn.Principal.Authorize: in tenant system a tenant-admin counts for nothing). A client
// without the introspector role learns only about its own tokens: any other token is answered
// active:false, as an unknown one is (RFC 7662 §2.2), so a client cannot probe the tokens of its
// peers, even those meant for a resource it may request too.
func (s *Server) Introspect(ctx context.Context, tenant string, r Request) (*Introspection, *Error) {
	if !s.KnownTenant(tenant) {
		return nil, ErrUnknownTenant()
	}
	body, oerr := ReadBody(r.Body)
	if oerr != nil {
		return nil, oerr
	}
	req, oerr := ParseIntrospectionRequest(r.ContentType, body)
	if oerr != nil {
		return nil, oerr
	}
	scheme, cred := authScheme(r.Authorization)
	var caller *credentials.Client // nil: a bearer caller that may see every token of the tenant
	if strings.EqualFold(scheme, "Bearer") {
		if req.Client.Assertion != "" || req.Client.AssertionType != "" {
			return nil, invalidRequest("use one client authentication method")
		}
		if oerr := s.authorizeBearer(tenant, cred); oerr != nil {
			return nil, oerr
		}
	} else {
		req.Client.HeaderScheme = scheme
		client, oerr := s.authenticate(ctx, tenant, r.RemoteAddr, req.Client, nil)
		if oerr != nil {
			if oerr.Status < 500 && oerr.Code == ErrInvalidClient {
				s.logger.InfoContext(ctx, "introspection caller not authenticated", "tenant", tenant,
					"reason", oerr.Reason, "cause", oerr.Cause, "request_id", r.RequestID)
			}
			return nil, oerr
		}
		if !slices.Contains(client.Proto.GetRoles(), string(authn.RoleIntrospector)) {
			caller = client
		}
	}
	if req.Token == "" {
		return nil, invalidRequest("missing token")
	}
	claims, _, err := s.verifyAccessToken(tenant, req.Token, 0)
	if err != nil {
		s.logger.DebugContext(ctx, "introspected token is inactive", "tenant", tenant, "reason", err, "request_id", r.RequestID)
		return &Introspection{Active: false}, nil
	}
	if caller != nil && claims.ClientID != caller.ID() {
		s.logger.InfoContext(ctx, "introspected token is not the caller's and the caller is no introspector; answered inactive",
			"tenant", tenant, "client_id", caller.ID(), "token_client_id", claims.ClientID, "jti", claims.ID, "request_id", r.RequestID)
		return &Introspection{Active: false}, nil
	}
	tokenType := "Bearer"
	if claims.Confirmation != nil && claims.Confirmation.JKT != "" {
		tokenType = authn.DPoPTokenType
	}
	return &Introspection{
		Active:      true,
		Scope:       claims.Scope,
		ClientID:    claims.ClientID,
		Subject:     claims.Subject,
		Audience:    jwt.Audience(claims.Audience),
		Issuer:      claims.Issuer,
		Expiry:      claims.Expiry.Unix(),
		IssuedAt:    claims.IssuedAt.Unix(),
		NotBefore:   unixOrZero(claims.NotBefore),
		ID:          claims.ID,
		TokenType:   tokenType,
		Tenant:      claims.Tenant,
		Environment: claims.Environment,
		Agent:       claims.Agent,
		Roles:       claims.Roles,
		Act:         claims.Act,
		Cnf:         claims.Confirmation,
	}, nil
}

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// authorizeBearer checks a bearer caller of tenant's introspection endpoint: a valid platform API
// token of a platform-admin of the system tenant, or of a tenant-admin or introspector of tenant as
// authn.Principal.Authorize counts them (system-only rules: a tenant-admin of system is refused).
func (s *Server) authorizeBearer(tenant, raw string) *Error {
	realm := s.Issuer(tenant)
	claims, err := s.VerifyAPIToken(raw)
	if err != nil {
		return &Error{Code: ErrInvalidToken, Status: http.StatusUnauthorized, Description: "the access token is invalid",
			Challenge: fmt.Sprintf(`Bearer realm=%q, error="invalid_token"`, realm), Cause: err}
	}
	p := authn.PrincipalFromClaims(claims)
	if p.Authorize(tenant, authn.RoleTenantAdmin, authn.RoleIntrospector) == nil {
		return nil
	}
	return &Error{Code: ErrInsufficientScope, Status: http.StatusForbidden,
		Description: "introspection requires a platform-admin, or a tenant-admin or introspector of this tenant",
		Challenge:   fmt.Sprintf(`Bearer realm=%q, error="insufficient_scope"`, realm)}
}
