package authn

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/sync/singleflight"

	"github.com/agentid/agentid/pkg/errs"
)

// Reason codes of the introspecting verifier.
const (
	// ReasonTokenInactive means the issuer's introspection endpoint answered active=false: the token
	// is unknown, expired, revoked or not meant for the tenant.
	ReasonTokenInactive = "TOKEN_INACTIVE"
	// ReasonIntrospectionUnavailable (kind Unavailable) means the introspection endpoint could not be
	// asked or did not answer usably; the token is refused (fail closed).
	ReasonIntrospectionUnavailable = "INTROSPECTION_UNAVAILABLE"
)

// MaxIntrospectionCacheTTL bounds how long an IntrospectionVerifier reuses a positive answer.
const MaxIntrospectionCacheTTL = 30 * time.Second

// IntrospectionInactiveTTL is how long an IntrospectionVerifier reuses an active=false answer (in the
// same bounded cache), so that one token presented again and again costs the issuer one call.
const IntrospectionInactiveTTL = 5 * time.Second

const maxIntrospectionBytes = 64 << 10

// IntrospectionVerifierConfig configures an IntrospectionVerifier.
type IntrospectionVerifierConfig struct {
	// Credential is the resource server's own client credential in the tenant whose tokens it
	// accepts, holding the tenant's introspector role (the issuer answers a client without it only
	// about its own tokens); each call authenticates with a fresh private_key_jwt assertion. Required.
	Credential *Credential
	// Endpoint is the RFC 7662 endpoint; default {Credential.Issuer}/oauth2/introspect. It must be
	// https:// unless its host is a loopback address (CheckIssuerURL).
	Endpoint string
	// Audience must be in an active token's aud: the resource server's URL. Required.
	Audience string
	// CacheTTL is how long a positive answer is reused (never past the token's exp); 0 disables the
	// cache, at most MaxIntrospectionCacheTTL. A token revoked meanwhile is accepted until its entry
	// expires.
	CacheTTL time.Duration
	// CacheSize bounds the cached answers; default 10000.
	CacheSize int
	// HTTPClient calls the endpoint; default a client with a 10 second timeout.
	HTTPClient *http.Client
	// Leeway tolerates clock skew on exp and nbf; default 30 seconds.
	Leeway time.Duration
	// Now returns the current time; default time.Now.
	Now func() time.Time
}

// IntrospectionVerifier verifies tokens by asking the issuer's introspection endpoint (RFC 7662):
// the fallback for resource servers that cannot subscribe to the revocation stream. It fails closed:
// when the issuer cannot be asked, the token is refused with Unavailable.
type IntrospectionVerifier struct {
	cred     *Credential
	endpoint string
	audience string
	ttl      time.Duration
	size     int
	client   *http.Client
	leeway   time.Duration
	now      func() time.Time

	flight singleflight.Group
	mu     sync.Mutex
	cache  map[[sha256.Size]byte]cachedClaims
}

type cachedClaims struct {
	claims *Claims // nil: the token is inactive
	until  time.Time
}

var _ Verifier = (*IntrospectionVerifier)(nil)

// NewIntrospectionVerifier validates cfg and returns the verifier.
func NewIntrospectionVerifier(cfg IntrospectionVerifierConfig) (*IntrospectionVerifier, error) {
	switch {
	case cfg.Credential == nil:
		return nil, errors.New("authn: introspection verifier needs the resource server's credential")
	case cfg.Audience == "":
		return nil, errors.New("authn: introspection verifier needs the audience to require (the resource server's URL)")
	case cfg.CacheTTL < 0 || cfg.CacheTTL > MaxIntrospectionCacheTTL:
		return nil, fmt.Errorf("authn: introspection cache TTL %s must be between 0 (off) and %s", cfg.CacheTTL, MaxIntrospectionCacheTTL)
	}
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = strings.TrimRight(cfg.Credential.Issuer, "/") + "/oauth2/introspect"
	}
	if u, err := url.Parse(endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("authn: introspection endpoint %q must be an absolute http(s) URL", endpoint)
	}
	if err := CheckIssuerURL(endpoint); err != nil {
		return nil, fmt.Errorf("authn: introspection endpoint: %w", err)
	}
	v := &IntrospectionVerifier{
		cred: cfg.Credential, endpoint: endpoint, audience: cfg.Audience, ttl: cfg.CacheTTL,
		size: orDefault(cfg.CacheSize, 10000), client: cfg.HTTPClient, leeway: orDefault(cfg.Leeway, 30*time.Second),
		now: cfg.Now, cache: make(map[[sha256.Size]byte]cachedClaims),
	}
	if v.client == nil {
		v.client = &http.Client{Timeout: 10 * time.Second}
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

// introspection is the part of an RFC 7662 response the verifier uses.
type introspection struct {
	Active      bool           `json:"active"`
	Scope       string         `json:"scope"`
	ClientID    string         `json:"client_id"`
	Subject     string         `json:"sub"`
	Audience    jwt.Audience   `json:"aud"`
	Issuer      string         `json:"iss"`
	Expiry      int64          `json:"exp"`
	IssuedAt    int64          `json:"iat"`
	NotBefore   int64          `json:"nbf"`
	ID          string         `json:"jti"`
	TokenType   string         `json:"token_type"`
	Tenant      string         `json:"tenant"`
	Environment string         `json:"env"`
	Agent       string         `json:"agent"`
	Roles       []string       `json:"roles"`
	Act         map[string]any `json:"act"`
	Cnf         *Confirmation  `json:"cnf"`
}

// Verify asks the introspection endpoint about raw (or reuses a recent positive answer) and checks
// that the token is active, of the credential's tenant, meant for the audience and not expired.
func (v *IntrospectionVerifier) Verify(ctx context.Context, raw string) (*Claims, error) {
	if raw == "" {
		return nil, invalid(ReasonTokenMissing, "missing bearer token", nil)
	}
	if len(raw) > maxTokenBytes {
		return nil, invalid(ReasonTokenInvalid, "access token is invalid", errors.New("token too large"))
	}
	if err := v.precheck(raw); err != nil {
		return nil, err
	}
	key := sha256.Sum256([]byte(raw))
	if c, ok := v.cached(key); ok {
		if c == nil {
			return nil, invalid(ReasonTokenInactive, "access token is not active", errors.New("cached active=false answer"))
		}
		return c, nil
	}
	// Concurrent requests with one token share one call, which outlives a cancelled caller.
	ch := v.flight.DoChan(string(key[:]), func() (any, error) {
		return v.introspect(context.WithoutCancel(ctx), raw)
	})
	var res singleflight.Result
	select {
	case res = <-ch:
	case <-ctx.Done():
		return nil, errs.Unavailable(ReasonIntrospectionUnavailable, "cannot verify the access token right now, retry later", ctx.Err())
	}
	if res.Err != nil {
		return nil, res.Err
	}
	in := res.Val.(*introspection)
	claims, err := v.check(in)
	if err != nil {
		if !in.Active {
			v.put(key, cachedClaims{until: v.now().Add(IntrospectionInactiveTTL)})
		}
		return nil, err
	}
	v.store(key, claims.clone())
	return claims, nil
}

// precheck refuses, without asking the issuer, what cannot be one of its access tokens: anything but
// a compact JWS typed at+jwt whose iss is the credential's issuer. Nothing is verified here; the
// issuer's answer decides.
func (v *IntrospectionVerifier) precheck(raw string) error {
	bad := func(reason string, cause error) error { return invalid(reason, "access token is invalid", cause) }
	parts := strings.Split(raw, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return bad(ReasonTokenInvalid, errors.New("not a compact JWS"))
	}
	var header struct {
		Typ string `json:"typ"`
	}
	var payload struct {
		Iss string `json:"iss"`
	}
	if b, err := base64.RawURLEncoding.DecodeString(parts[0]); err != nil || json.Unmarshal(b, &header) != nil {
		return bad(ReasonTokenInvalid, errors.New("malformed JWS header"))
	}
	if !strings.EqualFold(header.Typ, "at+jwt") && !strings.EqualFold(header.Typ, "application/at+jwt") {
		return bad(ReasonTokenInvalid, fmt.Errorf("typ %.40q, want at+jwt", header.Typ))
	}
	if b, err := base64.RawURLEncoding.DecodeString(parts[1]); err != nil || json.Unmarshal(b, &payload) != nil {
		return bad(ReasonTokenInvalid, errors.New("malformed JWS payload"))
	}
	if strings.TrimRight(payload.Iss, "/") != strings.TrimRight(v.cred.Issuer, "/") {
		return bad(ReasonTokenTenant, fmt.Errorf("iss %.200q, want %s", payload.Iss, v.cred.Issuer))
	}
	return nil
}

// cached returns a remembered answer: claims, or nil for an inactive token.
func (v *IntrospectionVerifier) cached(key [sha256.Size]byte) (*Claims, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.cache[key]
	if !ok {
		return nil, false
	}
	if !v.now().Before(e.until) {
		delete(v.cache, key)
		return nil, false
	}
	if e.claims == nil {
		return nil, true
	}
	return e.claims.clone(), true
}

func (v *IntrospectionVerifier) store(key [sha256.Size]byte, c *Claims) {
	if v.ttl <= 0 {
		return
	}
	until := v.now().Add(v.ttl)
	if c.Expiry.Before(until) {
		until = c.Expiry
	}
	v.put(key, cachedClaims{claims: c, until: until})
}

// put remembers an answer, within CacheSize: when full, expired answers are forgotten first, and if
// none is, the answer is not remembered.
func (v *IntrospectionVerifier) put(key [sha256.Size]byte, e cachedClaims) {
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.cache) >= v.size {
		for k, old := range v.cache {
			if !now.Before(old.until) {
				delete(v.cache, k)
			}
		}
		if len(v.cache) >= v.size {
			return
		}
	}
	v.cache[key] = e
}

// introspect calls the endpoint; every failure to get an answer is Unavailable.
func (v *IntrospectionVerifier) introspect(ctx context.Context, raw string) (*introspection, error) {
	unavailable := func(cause error) error {
		return errs.Unavailable(ReasonIntrospectionUnavailable, "cannot verify the access token right now, retry later",
			fmt.Errorf("introspect at %s: %w", v.endpoint, cause))
	}
	assertion, err := v.cred.Assertion(v.cred.Issuer, v.now())
	if err != nil {
		return nil, unavailable(err)
	}
	form := url.Values{
		"token":                 {raw},
		"token_type_hint":       {"access_token"},
		"client_id":             {v.cred.ClientID},
		"client_assertion_type": {ClientAssertionType},
		"client_assertion":      {assertion},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, v.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, unavailable(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, unavailable(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIntrospectionBytes+1))
	if err != nil {
		return nil, unavailable(err)
	}
	if resp.StatusCode != http.StatusOK {
		// 401 means the issuer refused this server's own credential: nothing is known about the token.
		return nil, unavailable(fmt.Errorf("status %s: %.200s", resp.Status, body))
	}
	if len(body) > maxIntrospectionBytes {
		return nil, unavailable(errors.New("response larger than 64 KiB"))
	}
	var in introspection
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, unavailable(fmt.Errorf("parse response: %w", err))
	}
	return &in, nil
}

// check turns an introspection answer into claims, refusing inactive, foreign, expired tokens and
// tokens for another audience. A DPoP-bound token keeps its cnf, so that Middleware requires its
// proof; token_type DPoP without cnf.jkt is refused, since the key to check the proof with is unknown.
func (v *IntrospectionVerifier) check(in *introspection) (*Claims, error) {
	if !in.Active {
		return nil, invalid(ReasonTokenInactive, "access token is not active", nil)
	}
	now := v.now()
	c := &Claims{
		Issuer: in.Issuer, Subject: in.Subject, Audience: []string(in.Audience), ID: in.ID,
		Expiry: unixTime(in.Expiry), IssuedAt: unixTime(in.IssuedAt), NotBefore: unixTime(in.NotBefore),
		ClientID: in.ClientID, Scope: in.Scope, Tenant: in.Tenant, Environment: in.Environment,
		Agent: in.Agent, Roles: in.Roles, Act: in.Act, Confirmation: in.Cnf,
	}
	switch {
	case c.Tenant != v.cred.Tenant || (c.Issuer != "" && c.Issuer != v.cred.Issuer):
		return nil, invalid(ReasonTokenTenant, "access token tenant is not served here",
			fmt.Errorf("tenant %q issuer %q, want tenant %q", c.Tenant, c.Issuer, v.cred.Tenant))
	case c.Subject == "" || c.Expiry.IsZero():
		return nil, invalid(ReasonTokenInvalid, "access token is invalid", errors.New("introspection answer lacks sub or exp"))
	case !now.Before(c.Expiry.Add(v.leeway)):
		return nil, invalid(ReasonTokenExpired, "access token has expired", fmt.Errorf("exp %s", c.Expiry))
	case !c.NotBefore.IsZero() && now.Add(v.leeway).Before(c.NotBefore):
		return nil, invalid(ReasonTokenNotYetValid, "access token is not valid yet", fmt.Errorf("nbf %s", c.NotBefore))
	case !slices.Contains(c.Audience, v.audience):
		return nil, invalid(ReasonTokenAudience, "access token is not meant for this API", fmt.Errorf("aud %v", c.Audience))
	case strings.EqualFold(in.TokenType, DPoPTokenType) && (c.Confirmation == nil || c.Confirmation.JKT == ""):
		return nil, invalid(ReasonTokenInvalid, "access token is invalid", errors.New("introspection answer has token_type DPoP without cnf.jkt"))
	}
	return c, nil
}

func unixTime(sec int64) time.Time {
	if sec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0).UTC()
}
