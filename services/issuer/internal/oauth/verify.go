package oauth

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentid/agentid/pkg/authn"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
	"github.com/agentid/agentid/services/issuer/internal/keys"
)

// VerifyAPIToken verifies an access token for the platform API issued by any tenant of this issuer:
// signature by the tenant's key, typ at+jwt, issuer, tenant, times (with leeway), audience
// urn:agentid:api, an active, unrevoked client, and no DPoP binding (cnf.jkt): its callers present
// the token as a bearer token, with no proof of the key it is bound to.
func (s *Server) VerifyAPIToken(raw string) (*authn.Claims, error) {
	tok, err := parseAccessToken(raw)
	if err != nil {
		return nil, err
	}
	var unverified struct {
		Issuer string `json:"iss"`
	}
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, err
	}
	tenant, ok := strings.CutPrefix(unverified.Issuer, s.base+"/t/")
	if !ok || !authn.ValidTenant(tenant) {
		return nil, fmt.Errorf("issuer %q is not a tenant of this issuer", unverified.Issuer)
	}
	claims, _, err := s.verifyParsed(tenant, tok, s.leeway)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(claims.Audience, authn.APIAudience) {
		return nil, errors.New("token is not meant for the platform API")
	}
	if claims.Confirmation != nil && claims.Confirmation.JKT != "" {
		return nil, errors.New("token is DPoP-bound and was presented without a proof")
	}
	return claims, nil
}

// checkNotRevoked refuses to issue a token the process's denylist already covers, which would be dead
// on arrival: one whose client, agent, subject or tenant was revoked at or after its issue time
// (a revocation the credentials projection has not seen yet) is refused as invalid_client, one to be
// signed by a revoked key as temporarily unavailable.
func (s *Server) checkNotRevoked(tenant string, claims *authn.Claims, kid string) *Error {
	if s.denylist == nil {
		return nil
	}
	if err := s.denylist.Check(claims, ""); err != nil {
		return invalidClient(s.Issuer(tenant), "", "revoked", err)
	}
	if err := s.denylist.Check(claims, kid); err != nil {
		return unavailable(fmt.Errorf("the current signing key %s of tenant %s is revoked: %w", kid, tenant, err))
	}
	return nil
}

func parseAccessToken(raw string) (*jwt.JSONWebToken, error) {
	if raw == "" {
		return nil, errors.New("empty token")
	}
	if len(raw) > maxAccessTokenBytes {
		return nil, errors.New("token too large")
	}
	tok, err := jwt.ParseSigned(raw, accessTokenAlgs)
	if err != nil {
		return nil, err
	}
	if len(tok.Headers) != 1 {
		return nil, errors.New("want exactly one signature")
	}
	typ, _ := tok.Headers[0].ExtraHeaders[jose.HeaderType].(string)
	if !strings.EqualFold(typ, keys.AccessTokenType) && !strings.EqualFold(typ, "application/"+keys.AccessTokenType) {
		return nil, fmt.Errorf("typ %q is not an access token", typ)
	}
	if tok.Headers[0].KeyID == "" {
		return nil, errors.New("no kid")
	}
	return tok, nil
}

// verifyAccessToken verifies a token issued by tenant's authorization server.
func (s *Server) verifyAccessToken(tenant, raw string, expLeeway time.Duration) (*authn.Claims, *credentials.Client, error) {
	tok, err := parseAccessToken(raw)
	if err != nil {
		return nil, nil, err
	}
	return s.verifyParsed(tenant, tok, expLeeway)
}

// VerifyForRevocation verifies a token presented for revocation: issued by tenant (signature by one
// of its keys, issuer, tenant claim) and not expired, allowing the leeway verifiers allow. It does not
// look at the client or at earlier revocations: revoking again changes nothing.
func (s *Server) VerifyForRevocation(tenant, raw string) (*authn.Claims, string, error) {
	tok, err := parseAccessToken(raw)
	if err != nil {
		return nil, "", err
	}
	claims, err := s.verifySigned(tenant, tok, s.leeway)
	if err != nil {
		return nil, "", err
	}
	return claims, tok.Headers[0].KeyID, nil
}

// verifyParsed verifies a token of tenant: signature, claims and times, an active client whose
// tokens were not revoked by disabling it, and the denylist.
func (s *Server) verifyParsed(tenant string, tok *jwt.JSONWebToken, expLeeway time.Duration) (*authn.Claims, *credentials.Client, error) {
	claims, err := s.verifySigned(tenant, tok, expLeeway)
	if err != nil {
		return nil, nil, err
	}
	client, ok := s.creds.Client(tenant, claims.ClientID)
	switch {
	case !ok:
		return nil, nil, fmt.Errorf("unknown client %q", claims.ClientID)
	case !client.Active():
		return nil, nil, fmt.Errorf("client %q is disabled", claims.ClientID)
	case !client.RevokeTime.IsZero() && !claims.IssuedAt.After(client.RevokeTime):
		return nil, nil, fmt.Errorf("client %q tokens revoked", claims.ClientID)
	}
	if s.denylist != nil {
		if err := s.denylist.Check(claims, tok.Headers[0].KeyID); err != nil {
			return nil, nil, fmt.Errorf("token revoked: %w", err)
		}
	}
	return claims, client, nil
}

// verifySigned checks a token's signature by a key of tenant, its issuer and tenant claims and its
// times (exp with expLeeway).
func (s *Server) verifySigned(tenant string, tok *jwt.JSONWebToken, expLeeway time.Duration) (*authn.Claims, error) {
	h := tok.Headers[0]
	key, ok := s.creds.SigningKey(tenant, h.KeyID)
	if !ok {
		return nil, fmt.Errorf("kid %q is not a signing key of tenant %s", h.KeyID, tenant)
	}
	if string(key.Algorithm) != h.Algorithm {
		return nil, fmt.Errorf("alg %s does not match key %s (%s)", h.Algorithm, key.KeyID, key.Algorithm)
	}
	var claims authn.Claims
	if err := tok.Claims(key.Public().Key, &claims); err != nil {
		return nil, err
	}
	now := s.now()
	switch {
	case claims.Issuer != s.Issuer(tenant):
		return nil, fmt.Errorf("iss %q is not %s", claims.Issuer, s.Issuer(tenant))
	case claims.Tenant != tenant:
		return nil, fmt.Errorf("tenant claim %q is not %s", claims.Tenant, tenant)
	case claims.Subject == "" || claims.ClientID == "":
		return nil, errors.New("missing sub or client_id")
	case claims.Expiry.IsZero() || claims.IssuedAt.IsZero():
		return nil, errors.New("missing exp or iat")
	case !now.Before(claims.Expiry.Add(expLeeway)):
		return nil, errors.New("expired")
	case !claims.NotBefore.IsZero() && claims.NotBefore.After(now.Add(s.leeway)):
		return nil, errors.New("not valid yet")
	case claims.IssuedAt.After(now.Add(s.leeway)):
		return nil, errors.New("issued in the future")
	}
	return &claims, nil
}
