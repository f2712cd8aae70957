package oauth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/services/issuer/internal/credentials"
)

// ClientCheck is what the token endpoint and introspection would answer for a client now.
type ClientCheck struct {
	// TokenRefused is true when a token request of the client would be refused.
	TokenRefused bool
	// TokenError is the OAuth error of a refused request (invalid_client, invalid_scope, ...).
	TokenError string
	// TokenReason says why the request would be refused (unknown_client, client_disabled, ...).
	TokenReason string
	// TokenActive is true when introspection would answer active for a token issued to the client at
	// the checked time (and with the checked id).
	TokenActive bool
	// TokenInactiveReason says why such a token is inactive.
	TokenInactiveReason string
	// Scopes, Resources and Roles are what a token of the client would carry now (empty when refused).
	Scopes, Resources, Roles []string
}

// ErrCheckUnavailable is returned by CheckClient when a gate cannot decide now (the agent projection
// could not catch up, a dependency is down): the caller retries; nothing is concluded.
var ErrCheckUnavailable = errors.New("the check cannot be decided now")

// CheckClient runs the token endpoint's gates for clientID of tenant without a client assertion
// (every gate except the assertion's signature, freshness and replay, which only the holder of the
// private key can pass, and the rate limits, which are not charged) and introspection's gates for a
// token issued to the client at issuedAt (now when zero) with id tokenID (optional). An error wraps
// ErrCheckUnavailable when a gate cannot decide; an unknown tenant is an ordinary refusal.
func (s *Server) CheckClient(ctx context.Context, tenant, clientID, tokenID string, issuedAt time.Time) (ClientCheck, error) {
	now := s.now().UTC()
	if issuedAt.IsZero() || issuedAt.After(now) {
		issuedAt = now
	}
	var out ClientCheck
	refuse := func(oerr *Error) (ClientCheck, error) {
		if oerr.Status >= 500 {
			return ClientCheck{}, fmt.Errorf("%w: %v", ErrCheckUnavailable, oerr)
		}
		out.TokenRefused, out.TokenError, out.TokenReason = true, oerr.Code, oerr.Reason
		if out.TokenReason == "" {
			out.TokenReason = oerr.Description
		}
		return out, nil
	}
	if !s.KnownTenant(tenant) {
		out.TokenInactiveReason = "unknown_tenant"
		return refuse(&Error{Code: ErrInvalidClient, Status: 401, Reason: "unknown_tenant"})
	}
	client, ok := s.creds.Client(tenant, clientID)
	out.TokenActive, out.TokenInactiveReason = s.tokenActive(tenant, client, ok, clientID, tokenID, issuedAt)
	realm := s.Issuer(tenant)
	switch {
	case !ok:
		return refuse(invalidClient(realm, "", "unknown_client", fmt.Errorf("unknown client %q", clientID)))
	case !client.Active():
		return refuse(invalidClient(realm, "", "client_disabled", errors.New("client is disabled")))
	}
	if oerr := s.checkAgent(ctx, realm, "", client); oerr != nil {
		return refuse(oerr)
	}
	scopes, oerr := s.grantAgentScopes(client, "")
	if oerr != nil {
		return refuse(oerr)
	}
	claims := authn.Claims{
		Issuer: realm, Subject: client.ID(), ClientID: client.ID(), Tenant: tenant, Agent: client.Proto.GetAgent(),
		Environment: client.Proto.GetEnvironment(), Roles: client.Proto.GetRoles(), Scope: strings.Join(scopes, " "),
		IssuedAt: now.Truncate(time.Second), NotBefore: now.Truncate(time.Second), Expiry: now.Add(client.TokenTTL),
		Audience: client.Resources(),
	}
	key, ok := s.creds.CurrentKey(tenant)
	if !ok {
		return ClientCheck{}, fmt.Errorf("%w: tenant %s has no signing key", ErrCheckUnavailable, tenant)
	}
	if oerr := s.checkNotRevoked(tenant, &claims, key.KeyID); oerr != nil {
		return refuse(oerr)
	}
	out.Scopes, out.Resources, out.Roles = scopes, slices.Clone(client.Resources()), slices.Clone(client.Proto.GetRoles())
	return out, nil
}

// tokenActive is introspection's answer, past the signature, for a token issued to the client at
// issuedAt: an unknown or disabled client, a revocation by disabling, or the denylist make it inactive.
func (s *Server) tokenActive(tenant string, client *credentials.Client, ok bool, clientID, tokenID string, issuedAt time.Time) (bool, string) {
	switch {
	case !ok:
		return false, "unknown_client"
	case !client.Active():
		return false, "client_disabled"
	case !client.RevokeTime.IsZero() && !issuedAt.After(client.RevokeTime):
		return false, "tokens_revoked"
	}
	if s.denylist != nil {
		claims := &authn.Claims{
			Issuer: s.Issuer(tenant), Subject: clientID, ClientID: clientID, Tenant: tenant, Agent: client.Proto.GetAgent(),
			ID: tokenID, IssuedAt: issuedAt.Truncate(time.Second), Expiry: issuedAt.Add(client.TokenTTL),
		}
		if err := s.denylist.Check(claims, ""); err != nil {
			return false, "denylisted"
		}
	}
	return true, ""
}
