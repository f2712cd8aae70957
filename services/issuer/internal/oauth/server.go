package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
	"github.com/agentid/agentid/services/issuer/internal/keys"
	"github.com/agentid/agentid/services/issuer/internal/replay"
)

// DefaultLeeway tolerates clock skew between clients and the issuer.
const DefaultLeeway = 30 * time.Second

// maxAccessTokenBytes bounds a token presented for introspection or as a bearer credential.
const maxAccessTokenBytes = 16 << 10

// accessTokenAlgs are the algorithms of access tokens the issuer signs.
var accessTokenAlgs = []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA}

// Credentials is the read model the authorization server works from (the credentials projection).
type Credentials interface {
	HasTenant(tenant string) bool
	CurrentKey(tenant string) (*keys.SigningKey, bool)
	SigningKey(tenant, kid string) (*keys.SigningKey, bool)
	SigningKeys(tenant string) []*keys.SigningKey
	Client(tenant, clientID string) (*credentials.Client, bool)
}

// ReplayCache records used assertion ids; Use fails with replay.ErrReplayed on reuse.
type ReplayCache interface {
	Use(ctx context.Context, tenant, clientID, jti string) error
}

// Telemetry receives one record per token request; it must not block.
type Telemetry interface {
	TokenRequested(ceSubject string, md eventstore.Metadata, msg *issuerv1.TokenRequested)
}

// Config configures a Server.
type Config struct {
	// PublicURL is the issuer's public base URL; tenant issuers are {PublicURL}/t/{tenant}. Required.
	PublicURL string
	// Credentials is the read model. Required.
	Credentials Credentials
	// Replay records used assertion ids. Required.
	Replay ReplayCache
	// Telemetry, if set, receives token request records.
	Telemetry Telemetry
	// Leeway tolerates clock skew; default DefaultLeeway.
	Leeway time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Server is the authorization server of every tenant. It is safe for concurrent use.
type Server struct {
	base      string
	creds     Credentials
	replay    ReplayCache
	telemetry Telemetry
	leeway    time.Duration
	now       func() time.Time
	logger    *slog.Logger
}

// New returns a Server.
func New(cfg Config) (*Server, error) {
	base := strings.TrimRight(cfg.PublicURL, "/")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("oauth: public URL %q must be an absolute http(s) URL without query or fragment", cfg.PublicURL)
	}
	if cfg.Credentials == nil || cfg.Replay == nil {
		return nil, errors.New("oauth: Credentials and Replay are required")
	}
	s := &Server{base: base, creds: cfg.Credentials, replay: cfg.Replay, telemetry: cfg.Telemetry,
		leeway: cfg.Leeway, now: cfg.Now, logger: cfg.Logger}
	if s.leeway <= 0 {
		s.leeway = DefaultLeeway
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.logger == nil {
		s.logger = slog.Default()
	}
	return s, nil
}

// Issuer is the issuer identifier of tenant.
func (s *Server) Issuer(tenant string) string { return s.base + "/t/" + tenant }

// TokenEndpoint is the token endpoint URL of tenant.
func (s *Server) TokenEndpoint(tenant string) string { return s.Issuer(tenant) + "/oauth2/token" }

// IntrospectionEndpoint is the introspection endpoint URL of tenant.
func (s *Server) IntrospectionEndpoint(tenant string) string {
	return s.Issuer(tenant) + "/oauth2/introspect"
}

// JWKSURI is the JWK Set URL of tenant.
func (s *Server) JWKSURI(tenant string) string { return s.Issuer(tenant) + "/jwks.json" }

// KnownTenant reports whether tenant has an authorization server.
func (s *Server) KnownTenant(tenant string) bool {
	return authn.ValidTenant(tenant) && s.creds.HasTenant(tenant)
}

// Metadata is the authorization server metadata document (RFC 8414, OpenID Connect Discovery).
type Metadata struct {
	Issuer                                     string   `json:"issuer"`
	JWKSURI                                    string   `json:"jwks_uri"`
	TokenEndpoint                              string   `json:"token_endpoint"`
	IntrospectionEndpoint                      string   `json:"introspection_endpoint"`
	GrantTypesSupported                        []string `json:"grant_types_supported"`
	ResponseTypesSupported                     []string `json:"response_types_supported"`
	TokenEndpointAuthMethodsSupported          []string `json:"token_endpoint_auth_methods_supported"`
	TokenEndpointAuthSigningAlgValuesSupported []string `json:"token_endpoint_auth_signing_alg_values_supported"`
	IntrospectionEndpointAuthMethodsSupported  []string `json:"introspection_endpoint_auth_methods_supported"`
	IntrospectionEndpointAuthSigningAlgs       []string `json:"introspection_endpoint_auth_signing_alg_values_supported"`
	IDTokenSigningAlgValuesSupported           []string `json:"id_token_signing_alg_values_supported"`
	SubjectTypesSupported                      []string `json:"subject_types_supported"`
	ClaimsSupported                            []string `json:"claims_supported"`
}

// Metadata returns the metadata document of tenant.
func (s *Server) Metadata(tenant string) (*Metadata, *Error) {
	if !s.KnownTenant(tenant) {
		return nil, ErrUnknownTenant()
	}
	algs := []string{string(jose.ES256), string(jose.EdDSA)}
	return &Metadata{
		Issuer:                            s.Issuer(tenant),
		JWKSURI:                           s.JWKSURI(tenant),
		TokenEndpoint:                     s.TokenEndpoint(tenant),
		IntrospectionEndpoint:             s.IntrospectionEndpoint(tenant),
		GrantTypesSupported:               []string{GrantClientCredentials},
		ResponseTypesSupported:            []string{"token"},
		TokenEndpointAuthMethodsSupported: []string{"private_key_jwt"},
		TokenEndpointAuthSigningAlgValuesSupported: algs,
		IntrospectionEndpointAuthMethodsSupported:  []string{"private_key_jwt"},
		IntrospectionEndpointAuthSigningAlgs:       algs,
		IDTokenSigningAlgValuesSupported:           []string{string(jose.ES256)},
		SubjectTypesSupported:                      []string{"public"},
		ClaimsSupported: []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope",
			"tenant", "env", "agent", "roles"},
	}, nil
}

// JWKS returns the public keys of tenant (every non-retired signing key).
func (s *Server) JWKS(tenant string) (*jose.JSONWebKeySet, *Error) {
	if !s.KnownTenant(tenant) {
		return nil, ErrUnknownTenant()
	}
	ks := s.creds.SigningKeys(tenant)
	set := &jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(ks))}
	for _, k := range ks {
		set.Keys = append(set.Keys, k.Public())
	}
	return set, nil
}

// TokenResponse is a successful token response (RFC 6749 §5.1).
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope,omitempty"`
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
		"error", oerr.Code, "description", oerr.Description, "cause", oerr.Cause,
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
	client, oerr := s.authenticate(ctx, tenant, req.Client, []string{s.Issuer(tenant), s.TokenEndpoint(tenant)}, rec)
	if client != nil {
		rec.ClientId = client.ID()
		rec.Agent = client.Proto.GetAgent()
		rec.Environment = client.Proto.GetEnvironment()
	}
	if oerr != nil {
		return nil, client, oerr
	}
	scopes, oerr := grantScopes(client, req.Scope)
	if oerr != nil {
		return nil, client, oerr
	}
	aud, oerr := audiences(req.Resources)
	if oerr != nil {
		return nil, client, oerr
	}
	key, ok := s.creds.CurrentKey(tenant)
	if !ok {
		return nil, client, unavailable(fmt.Errorf("tenant %s has no signing key", tenant))
	}
	now := s.now().UTC().Truncate(time.Second)
	id, err := uuid.NewV7()
	if err != nil {
		return nil, client, serverError(err)
	}
	claims := authn.Claims{
		Issuer:      s.Issuer(tenant),
		Subject:     client.ID(),
		Audience:    aud,
		Expiry:      now.Add(client.TokenTTL),
		IssuedAt:    now,
		NotBefore:   now,
		ID:          id.String(),
		ClientID:    client.ID(),
		Scope:       strings.Join(scopes, " "),
		Tenant:      tenant,
		Environment: client.Proto.GetEnvironment(),
		Agent:       client.Proto.GetAgent(),
		Roles:       client.Proto.GetRoles(),
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
	return &TokenResponse{
		AccessToken: signed,
		TokenType:   "Bearer",
		ExpiresIn:   int64(client.TokenTTL / time.Second),
		Scope:       claims.Scope,
	}, client, nil
}

// authenticate authenticates a client of tenant with private_key_jwt: the assertion must be signed by
// one of the client's registered keys, addressed to one of audiences, fresh, and used once.
func (s *Server) authenticate(ctx context.Context, tenant string, auth ClientAuth, audiences []string, rec *issuerv1.TokenRequested) (*credentials.Client, *Error) {
	realm := s.Issuer(tenant)
	fail := func(format string, args ...any) *Error {
		return invalidClient(realm, auth.HeaderScheme, format, args...)
	}
	switch {
	case auth.HeaderScheme != "":
		return nil, fail("client authentication by %s is not supported; use private_key_jwt", SafeDescription(auth.HeaderScheme))
	case auth.AssertionType == "" && auth.Assertion == "":
		return nil, fail("client authentication required (private_key_jwt)")
	case auth.AssertionType != ClientAssertionTypeJWT:
		return nil, fail("client_assertion_type must be %s", ClientAssertionTypeJWT)
	case auth.Assertion == "":
		return nil, fail("missing client_assertion")
	}
	a, err := ParseAssertion(auth.Assertion)
	if err != nil {
		e := fail("malformed client assertion")
		e.Cause = err
		return nil, e
	}
	if rec != nil && rec.GetClientId() == "" {
		rec.ClientId = printable(a.Issuer, 128)
	}
	if a.Issuer == "" || a.Issuer != a.Subject {
		return nil, fail("assertion iss and sub must both be the client_id")
	}
	if auth.ClientID != "" && auth.ClientID != a.Issuer {
		return nil, fail("client_id does not match the client assertion")
	}
	client, ok := s.creds.Client(tenant, a.Issuer)
	if !ok {
		return nil, fail("unknown client")
	}
	if !client.Active() {
		return client, fail("client is disabled")
	}
	jwk, ok := client.Keys[a.KeyID]
	if !ok {
		return client, fail("assertion kid is not a registered key of the client")
	}
	key, err := a.VerificationKey(jwk)
	if err != nil {
		e := fail("assertion algorithm does not match the registered key")
		e.Cause = err
		return client, e
	}
	claims, err := a.Verify(key)
	if err != nil {
		e := fail("assertion signature is invalid")
		e.Cause = err
		return client, e
	}
	if err := CheckAssertionClaims(claims, client.ID(), audiences, s.now(), s.leeway); err != nil {
		return client, fail("%s", err.Error())
	}
	switch err := s.replay.Use(ctx, tenant, client.ID(), claims.ID); {
	case errors.Is(err, replay.ErrReplayed):
		return client, fail("assertion replayed")
	case err != nil:
		return client, unavailable(err)
	}
	return client, nil
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

// audiences returns the token audience: the RFC 8707 resources, or the platform API when none.
func audiences(resources []string) ([]string, *Error) {
	if len(resources) == 0 {
		return []string{authn.APIAudience}, nil
	}
	out := make([]string, 0, len(resources))
	for _, r := range resources {
		u, err := url.Parse(r)
		if len(r) > maxResourceLen || err != nil || !u.IsAbs() || strings.Contains(r, "#") || !printableASCII(r) {
			return nil, newError(ErrInvalidTarget, http.StatusBadRequest, "resource must be an absolute URI without a fragment")
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out, nil
}

// Introspection is an RFC 7662 introspection response.
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
}

// Introspect answers an introspection request for tenant. The caller authenticates with
// private_key_jwt as any active client of the tenant, or with a bearer access token of a
// platform-admin (tenant system) or a tenant-admin of tenant.
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
	if strings.EqualFold(scheme, "Bearer") {
		if req.Client.Assertion != "" || req.Client.AssertionType != "" {
			return nil, invalidRequest("use one client authentication method")
		}
		if oerr := s.authorizeBearer(tenant, cred); oerr != nil {
			return nil, oerr
		}
	} else {
		req.Client.HeaderScheme = scheme
		audiences := []string{s.Issuer(tenant), s.TokenEndpoint(tenant), s.IntrospectionEndpoint(tenant)}
		if _, oerr := s.authenticate(ctx, tenant, req.Client, audiences, nil); oerr != nil {
			if oerr.Status < 500 && oerr.Code == ErrInvalidClient {
				s.logger.InfoContext(ctx, "introspection caller not authenticated", "tenant", tenant,
					"description", oerr.Description, "cause", oerr.Cause, "request_id", r.RequestID)
			}
			return nil, oerr
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
		TokenType:   "Bearer",
		Tenant:      claims.Tenant,
		Environment: claims.Environment,
		Agent:       claims.Agent,
		Roles:       claims.Roles,
	}, nil
}

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// authorizeBearer checks a bearer caller of tenant's introspection endpoint: a valid platform API
// token of a platform-admin of the system tenant or a tenant-admin of tenant.
func (s *Server) authorizeBearer(tenant, raw string) *Error {
	realm := s.Issuer(tenant)
	claims, err := s.VerifyAPIToken(raw)
	if err != nil {
		return &Error{Code: ErrInvalidToken, Status: http.StatusUnauthorized, Description: "the access token is invalid",
			Challenge: fmt.Sprintf(`Bearer realm=%q, error="invalid_token"`, realm), Cause: err}
	}
	p := authn.PrincipalFromClaims(claims)
	if p.IsPlatformAdmin() || (p.Tenant == tenant && p.HasRole(authn.RoleTenantAdmin)) {
		return nil
	}
	return &Error{Code: ErrInsufficientScope, Status: http.StatusForbidden,
		Description: "introspection requires a platform-admin or a tenant-admin of this tenant",
		Challenge:   fmt.Sprintf(`Bearer realm=%q, error="insufficient_scope"`, realm)}
}

// VerifyAPIToken verifies an access token for the platform API issued by any tenant of this issuer:
// signature by the tenant's key, typ at+jwt, issuer, tenant, times (with leeway), audience
// urn:agentid:api, and an active, unrevoked client.
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
	return claims, nil
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

func (s *Server) verifyParsed(tenant string, tok *jwt.JSONWebToken, expLeeway time.Duration) (*authn.Claims, *credentials.Client, error) {
	h := tok.Headers[0]
	key, ok := s.creds.SigningKey(tenant, h.KeyID)
	if !ok {
		return nil, nil, fmt.Errorf("kid %q is not a signing key of tenant %s", h.KeyID, tenant)
	}
	if string(key.Algorithm) != h.Algorithm {
		return nil, nil, fmt.Errorf("alg %s does not match key %s (%s)", h.Algorithm, key.KeyID, key.Algorithm)
	}
	var claims authn.Claims
	if err := tok.Claims(key.Public().Key, &claims); err != nil {
		return nil, nil, err
	}
	now := s.now()
	switch {
	case claims.Issuer != s.Issuer(tenant):
		return nil, nil, fmt.Errorf("iss %q is not %s", claims.Issuer, s.Issuer(tenant))
	case claims.Tenant != tenant:
		return nil, nil, fmt.Errorf("tenant claim %q is not %s", claims.Tenant, tenant)
	case claims.Subject == "" || claims.ClientID == "":
		return nil, nil, errors.New("missing sub or client_id")
	case claims.Expiry.IsZero() || claims.IssuedAt.IsZero():
		return nil, nil, errors.New("missing exp or iat")
	case !now.Before(claims.Expiry.Add(expLeeway)):
		return nil, nil, errors.New("expired")
	case !claims.NotBefore.IsZero() && claims.NotBefore.After(now.Add(s.leeway)):
		return nil, nil, errors.New("not valid yet")
	case claims.IssuedAt.After(now.Add(s.leeway)):
		return nil, nil, errors.New("issued in the future")
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
	return &claims, client, nil
}

// printable returns s if it is valid UTF-8 of at most n bytes without control characters, else a
// cleaned, truncated copy: for values echoed into telemetry.
func printable(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// headerSafe returns s if it can travel in a NATS header, else "".
func headerSafe(s string) string {
	if strings.ContainsAny(s, "\r\n") {
		return ""
	}
	return s
}
