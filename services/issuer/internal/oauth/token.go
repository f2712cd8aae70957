package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/ratelimit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
	"github.com/agentid/agentid/services/issuer/internal/replay"
)

// TokenResponse is a successful token response (RFC 6749 §5.1).
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope,omitempty"`
	// DPoPNonce, when set, is a fresh server nonce for the DPoP-Nonce response header.
	DPoPNonce string `json:"-"`
}

// Token answers a token request for tenant. Every request of a known tenant, issued or denied,
// produces one telemetry record.
func (s *Server) Token(ctx context.Context, tenant string, r Request) (*TokenResponse, *Error) {
	if !s.KnownTenant(tenant) {
		return nil, ErrUnknownTenant()
	}
	rec := &issuerv1.TokenRequested{
		Tenant:     tenant,
		RequestId:  r.RequestID,
		RemoteAddr: printable(r.RemoteAddr, 128),
	}
	resp, client, oerr := s.token(ctx, tenant, r, rec)
	if oerr != nil {
		rec.Outcome = issuerv1.TokenOutcome_TOKEN_OUTCOME_DENIED
		rec.Error = oerr.Code
		rec.Scopes, rec.Audiences, rec.TokenId, rec.ExpireTime = nil, nil, "", nil
		s.logDenied(ctx, tenant, rec, oerr)
	} else {
		rec.Outcome = issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED
	}
	s.emit(tenant, client, rec)
	return resp, oerr
}

func (s *Server) logDenied(ctx context.Context, tenant string, rec *issuerv1.TokenRequested, oerr *Error) {
	level := slog.LevelInfo
	if oerr.Status >= 500 {
		level = slog.LevelError
	}
	s.logger.Log(ctx, level, "token request denied", "tenant", tenant, "client_id", rec.GetClientId(),
		"error", oerr.Code, "description", oerr.Description, "reason", oerr.Reason, "cause", oerr.Cause,
		"request_id", rec.GetRequestId(), "remote_addr", rec.GetRemoteAddr())
}

func (s *Server) emit(tenant string, client *credentials.Client, rec *issuerv1.TokenRequested) {
	if s.telemetry == nil {
		return
	}
	md := eventstore.Metadata{Tenant: tenant, CorrelationID: headerSafe(rec.GetRequestId())}
	ceSubject := credentials.TenantName(tenant)
	if client != nil {
		ceSubject = client.Proto.GetName()
		kind := eventstore.ActorService
		if client.Proto.GetAgent() != "" {
			kind = eventstore.ActorAgent
		}
		md.Actor = eventstore.Actor{ID: client.ID(), Kind: kind}
	}
	s.telemetry.TokenRequested(ceSubject, md, rec)
}

func (s *Server) token(ctx context.Context, tenant string, r Request, rec *issuerv1.TokenRequested) (*TokenResponse, *credentials.Client, *Error) {
	body, oerr := ReadBody(r.Body)
	if oerr != nil {
		return nil, nil, oerr
	}
	req, oerr := ParseTokenRequest(r.ContentType, body)
	if req != nil {
		rec.GrantType = printable(req.GrantType, 64)
		rec.ClientId = printable(req.Client.ClientID, 128)
	}
	if oerr != nil {
		return nil, nil, oerr
	}
	req.Client.HeaderScheme, _ = authScheme(r.Authorization)
	proof, oerr := s.checkDPoPProof(tenant, r)
	if oerr != nil {
		return nil, nil, oerr
	}
	client, kid, oerr := s.authenticateKey(ctx, tenant, r.RemoteAddr, req.Client, rec)
	if client != nil {
		rec.ClientId = client.ID()
		rec.Agent = client.Proto.GetAgent()
		rec.Environment = client.Proto.GetEnvironment()
	}
	if oerr != nil {
		return nil, client, oerr
	}
	if oerr := s.checkAgent(ctx, s.Issuer(tenant), req.Client.HeaderScheme, client); oerr != nil {
		return nil, client, oerr
	}
	scopes, oerr := s.grantAgentScopes(client, req.Scope)
	if oerr != nil {
		return nil, client, oerr
	}
	aud, permissions, oerr := s.temporalGrant(tenant, client, req.Resources)
	if oerr == nil && aud == nil {
		aud, oerr = grantAudiences(client, req.Resources)
	}
	if oerr != nil {
		return nil, client, oerr
	}
	cnf, oerr := s.bindDPoP(ctx, tenant, client, proof)
	if oerr != nil {
		return nil, client, oerr
	}
	key, ok := s.creds.CurrentKey(tenant)
	if !ok {
		return nil, client, unavailable(fmt.Errorf("tenant %s has no signing key", tenant))
	}
	now := s.now().UTC().Truncate(time.Second)
	expiry := now.Add(client.TokenTTL)
	if exp, ok := s.agentExpiry(client); ok && exp.Before(expiry) {
		// No token outlives its agent's expire time (checkAgent refused one already past it).
		expiry = exp.UTC().Truncate(time.Second)
		if !expiry.After(now) {
			return nil, client, invalidClient(s.Issuer(tenant), req.Client.HeaderScheme, "agent_expired", fmt.Errorf("agent %s expires at %s", client.Proto.GetAgent(), exp.Format(time.RFC3339)))
		}
	}
	// The token names the key that authenticated it (ckt), by which a rotation that removes the key
	// revokes its tokens: a token that could not name it is not issued.
	ckt := client.ClientKeyThumbprint(kid)
	if ckt == "" {
		return nil, client, serverError(fmt.Errorf("no thumbprint for key %q of client %s", printable(kid, 128), client.ID()))
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, client, serverError(err)
	}
	claims := authn.Claims{
		Issuer:       s.Issuer(tenant),
		Subject:      client.ID(),
		Audience:     aud,
		Expiry:       expiry,
		IssuedAt:     now,
		NotBefore:    now,
		ID:           id.String(),
		ClientID:     client.ID(),
		Scope:        strings.Join(scopes, " "),
		Tenant:       tenant,
		Environment:  client.Proto.GetEnvironment(),
		Agent:        client.Proto.GetAgent(),
		Roles:        client.Proto.GetRoles(),
		Confirmation: cnf,
		Permissions:  permissions,

		ClientKeyThumbprint: ckt,
	}
	if oerr := s.checkNotRevoked(tenant, &claims, key.KeyID); oerr != nil {
		return nil, client, oerr
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return nil, client, serverError(err)
	}
	signed, err := key.Sign(payload)
	if err != nil {
		return nil, client, serverError(err)
	}
	rec.Scopes, rec.Audiences, rec.TokenId = scopes, aud, claims.ID
	rec.ExpireTime = timestamppb.New(claims.Expiry)
	resp := &TokenResponse{
		AccessToken: signed,
		TokenType:   "Bearer",
		ExpiresIn:   int64(expiry.Sub(now) / time.Second),
		Scope:       claims.Scope,
	}
	if cnf != nil {
		resp.TokenType = authn.DPoPTokenType
		if !s.dpop.nonceOptional {
			resp.DPoPNonce = s.dpop.nonce(tenant, s.now())
		}
	}
	return resp, client, nil
}

// authenticate authenticates a client of tenant with private_key_jwt: the assertion must be signed by
// one of the client's registered keys, typed as a client assertion, addressed to the issuer
// identifier alone, fresh, and used once. Every failure is the same invalid_client; Reason and Cause
// say what went wrong. Before the signature is verified an attempt is charged to the client id from
// the caller's source address (remoteAddr), after it to the client id itself.
func (s *Server) authenticate(ctx context.Context, tenant, remoteAddr string, auth ClientAuth, rec *issuerv1.TokenRequested) (*credentials.Client, *Error) {
	client, _, oerr := s.authenticateKey(ctx, tenant, remoteAddr, auth, rec)
	return client, oerr
}

// authenticateKey is authenticate that also returns the key id (kid) of the client key that signed
// the accepted assertion ("" on every error): the token's `ckt` claim comes from it, by which a key
// rotation revokes the tokens of the key it removes and no others.
func (s *Server) authenticateKey(ctx context.Context, tenant, remoteAddr string, auth ClientAuth, rec *issuerv1.TokenRequested) (*credentials.Client, string, *Error) {
	realm := s.Issuer(tenant)
	fail := func(reason string, cause error) *Error {
		return invalidClient(realm, auth.HeaderScheme, reason, cause)
	}
	switch {
	case auth.HeaderScheme != "":
		return nil, "", fail("unsupported_method", fmt.Errorf("client authentication by %q; only private_key_jwt is supported", printable(auth.HeaderScheme, 32)))
	case auth.AssertionType == "" && auth.Assertion == "":
		return nil, "", fail("no_client_authentication", errors.New("no client assertion"))
	case auth.AssertionType != ClientAssertionTypeJWT:
		return nil, "", fail("bad_assertion_type", fmt.Errorf("client_assertion_type %q", printable(auth.AssertionType, 128)))
	case auth.Assertion == "":
		return nil, "", fail("no_client_assertion", errors.New("missing client_assertion"))
	}
	a, err := ParseAssertion(auth.Assertion)
	if err != nil {
		reason := "malformed_assertion"
		if errors.Is(err, ErrAssertionType) {
			reason = "wrong_typ"
		}
		return nil, "", fail(reason, err)
	}
	if rec != nil && rec.GetClientId() == "" {
		rec.ClientId = printable(a.Issuer, 128)
	}
	if a.Issuer == "" || a.Issuer != a.Subject {
		return nil, "", fail("iss_sub_mismatch", errors.New("assertion iss and sub must both be the client_id"))
	}
	if auth.ClientID != "" && auth.ClientID != a.Issuer {
		return nil, "", fail("client_id_mismatch", errors.New("client_id does not match the client assertion"))
	}
	if s.attempts != nil {
		if ok, wait := s.attempts.Allow(tenant + " " + a.Issuer + " " + ratelimit.SourceKey(remoteAddr)); !ok {
			return nil, "", SlowDown(wait)
		}
	}
	client, ok := s.creds.Client(tenant, a.Issuer)
	if !ok {
		return nil, "", fail("unknown_client", fmt.Errorf("unknown client %q", printable(a.Issuer, 128)))
	}
	if !client.Active() {
		return client, "", fail("client_disabled", errors.New("client is disabled"))
	}
	jwk, ok := client.Keys[a.KeyID]
	if !ok {
		return client, "", fail("unknown_kid", fmt.Errorf("kid %q is not a registered key of the client", printable(a.KeyID, 128)))
	}
	key, err := a.VerificationKey(jwk)
	if err != nil {
		return client, "", fail("key_alg_mismatch", err)
	}
	claims, err := a.Verify(key)
	if err != nil {
		return client, "", fail("bad_signature", err)
	}
	if s.limiter != nil {
		if ok, wait := s.limiter.Allow(tenant + " " + client.ID()); !ok {
			return client, "", SlowDown(wait)
		}
	}
	if err := CheckAssertionClaims(claims, client.ID(), s.Issuer(tenant), s.now(), s.leeway); err != nil {
		return client, "", fail("bad_claims", err)
	}
	switch err := s.useAssertionID(ctx, tenant, client.ID(), claims); {
	case errors.Is(err, replay.ErrReplayed):
		return client, "", fail("replayed", err)
	case err != nil:
		return client, "", unavailable(err)
	}
	return client, a.KeyID, nil
}

// grantScopes returns the scopes to grant: every scope of the client when none is requested, else the
// requested ones, each of which the client must hold.
func grantScopes(client *credentials.Client, requested string) ([]string, *Error) {
	allowed := client.Scopes()
	if strings.TrimSpace(requested) == "" {
		return slices.Clone(allowed), nil
	}
	var out []string
	for _, sc := range strings.Split(requested, " ") {
		if sc == "" {
			continue
		}
		if !credentials.ValidScopeToken(sc) {
			return nil, newError(ErrInvalidScope, http.StatusBadRequest, "malformed scope")
		}
		if !slices.Contains(allowed, sc) {
			return nil, newError(ErrInvalidScope, http.StatusBadRequest, "scope %s is not allowed for this client", SafeDescription(sc))
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	return out, nil
}

// grantAudiences returns the token audience (RFC 8707). Every requested resource must be registered
// for the client; the platform API audience (urn:agentid:api) may also be asked for by a client of no
// agent (a platform service or staff identity) without registering it, and never together with
// another audience. With no resource requested, a client of an agent gets its only registered
// resource (several, or none: "resource required"), any other client the platform API.
func grantAudiences(client *credentials.Client, requested []string) ([]string, *Error) {
	registered := client.Resources()
	agent := client.Proto.GetAgent() != ""
	if len(requested) == 0 {
		switch {
		case !agent:
			return []string{authn.APIAudience}, nil
		case len(registered) == 1:
			return slices.Clone(registered), nil
		}
		return nil, newError(ErrInvalidTarget, http.StatusBadRequest, "resource required: name the resource the token is for")
	}
	out := make([]string, 0, len(requested))
	for _, r := range requested {
		if !credentials.ValidResource(r) {
			return nil, newError(ErrInvalidTarget, http.StatusBadRequest, "resource must be an absolute URI without a fragment")
		}
		if !slices.Contains(registered, r) && (r != authn.APIAudience || agent) {
			return nil, newError(ErrInvalidTarget, http.StatusBadRequest, "resource %s is not registered for this client", SafeDescription(r))
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	if len(out) > 1 && slices.Contains(out, authn.APIAudience) {
		return nil, newError(ErrInvalidTarget, http.StatusBadRequest, "the platform API audience %s cannot share a token with another resource", authn.APIAudience)
	}
	return out, nil
}
