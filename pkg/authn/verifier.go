package authn

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/tlsx"
)

// Reason codes of authentication failures (google.rpc.ErrorInfo reasons, kind Unauthenticated unless
// noted).
const (
	// ReasonTokenMissing means the request carried no bearer token.
	ReasonTokenMissing = "TOKEN_MISSING"
	// ReasonTokenInvalid means malformed token, disallowed algorithm, bad signature or missing claims.
	ReasonTokenInvalid = "TOKEN_INVALID"
	// ReasonTokenType means the JWT header typ is not at+jwt (not an access token).
	ReasonTokenType = "TOKEN_TYPE"
	// ReasonTokenIssuer means the issuer is not a tenant issuer under the configured base URL.
	ReasonTokenIssuer = "TOKEN_ISSUER"
	// ReasonTokenTenant means the tenant claim does not match the issuer's tenant.
	ReasonTokenTenant = "TOKEN_TENANT"
	// ReasonTokenKeyUnknown means the signing key (kid) is not in the issuer's JWKS.
	ReasonTokenKeyUnknown = "TOKEN_KEY_UNKNOWN"
	// ReasonTokenExpired means exp is in the past (beyond the leeway).
	ReasonTokenExpired = "TOKEN_EXPIRED"
	// ReasonTokenNotYetValid means nbf or iat is in the future (beyond the leeway).
	ReasonTokenNotYetValid = "TOKEN_NOT_YET_VALID"
	// ReasonTokenAudience means aud does not contain this API's audience.
	ReasonTokenAudience = "TOKEN_AUDIENCE"
	// ReasonKeysUnavailable (kind Unavailable) means the issuer's JWKS could not be fetched; retry later.
	ReasonKeysUnavailable = "JWKS_UNAVAILABLE"
	// ReasonTokenRevoked means a revocation covers the token (its jti, client, agent, subject, tenant
	// or signing key); see Denylist.
	ReasonTokenRevoked = "TOKEN_REVOKED"
)

// Verifier checks a raw bearer token and returns its verified claims. Failures are *errs.Error values.
type Verifier interface {
	Verify(ctx context.Context, raw string) (*Claims, error)
}

// VerifierFunc adapts a function to the Verifier interface.
type VerifierFunc func(ctx context.Context, raw string) (*Claims, error)

// Verify calls f.
func (f VerifierFunc) Verify(ctx context.Context, raw string) (*Claims, error) { return f(ctx, raw) }

// Defaults of JWKSVerifierConfig that the issuer's signing-key rotation bounds depend on.
const (
	// DefaultJWKSRefreshInterval is how long a fetched JWKS is used before it is refetched, by default.
	DefaultJWKSRefreshInterval = 5 * time.Minute
	// DefaultLeeway is the clock skew tolerated on exp, nbf and iat, by default.
	DefaultLeeway = 30 * time.Second
)

// JWKSVerifierConfig configures a JWKSVerifier.
type JWKSVerifierConfig struct {
	// IssuerBaseURL is the issuer's public URL, e.g. http://127.0.0.1:8080; tokens are accepted from
	// every tenant issuer {IssuerBaseURL}/t/{tenant}. Required.
	IssuerBaseURL string
	// Audience must be contained in a token's aud; default APIAudience.
	Audience string
	// HTTPClient fetches JWKS documents; default a client with a 10s timeout.
	HTTPClient *http.Client
	// RefreshInterval is how long a fetched JWKS is used before it is refetched; default 5 minutes.
	RefreshInterval time.Duration
	// MinRefreshInterval is the least time between two fetches for one issuer, so that tokens with
	// made-up key ids cannot make the verifier flood the issuer; default 5 seconds.
	MinRefreshInterval time.Duration
	// Leeway tolerates clock skew on exp, nbf and iat; default 30 seconds.
	Leeway time.Duration
	// MaxIssuers bounds how many tenant key sets are cached; default 1024. When the cache is full the
	// least recently used set is evicted, tenants the issuer never confirmed first; a set a
	// verification is using right now is never evicted.
	MaxIssuers int
	// KnownTenant, when set, says whether the verifier may trust tokens of tenant: the keys of any
	// other tenant are never fetched and its tokens are refused (TOKEN_ISSUER). Tenants is a fixed list
	// with the same effect; with both, a tenant either of them knows is known. With neither, a tenant
	// is known once the issuer confirms it by serving its JWKS, and fetches for tenants not yet
	// confirmed are bounded (MaxDiscoveries per MinRefreshInterval), so tokens naming made-up tenants
	// can neither flood the issuer nor push the key sets of real tenants out of the cache.
	KnownTenant func(tenant string) bool
	// Tenants lists the tenants the verifier may trust (see KnownTenant).
	Tenants []string
	// MaxDiscoveries bounds the JWKS fetches for tenants the issuer has not confirmed yet, per
	// MinRefreshInterval, when neither KnownTenant nor Tenants is set; default 16.
	MaxDiscoveries int
	// Now returns the current time; default time.Now.
	Now func() time.Time
	// Revocations, when set, is consulted after the signature and claims are verified (a *Denylist fed
	// by a RevocationFeed); a token it refuses is refused. Nil checks no revocations.
	Revocations RevocationChecker
	// VerifiedCacheSize bounds the cache of verified tokens (keyed by the token's SHA-256), which
	// spares the signature check of a token seen before; exp, nbf, the signing key's presence in the
	// issuer's key set and the Revocations are still checked on every request. 0 means
	// DefaultVerifiedCacheSize; a negative size disables the cache.
	VerifiedCacheSize int
}

// DefaultVerifiedCacheSize is how many verified tokens a JWKSVerifier remembers by default.
const DefaultVerifiedCacheSize = 10_000

// JWKSVerifier verifies the platform's RFC 9068 access tokens (ES256 or EdDSA, typ at+jwt) against the
// JWKS of the tenant issuer named in the token, caching key sets per issuer.
type JWKSVerifier struct {
	base       string
	audience   string
	client     *http.Client
	refresh    time.Duration
	minRefresh time.Duration
	leeway     time.Duration
	maxIssuers int
	now        func() time.Time
	revoked    RevocationChecker
	verified   *verifiedCache // nil when disabled

	knownTenant func(string) bool
	tenants     map[string]bool
	discover    bool // neither knownTenant nor tenants: tenants are confirmed by the issuer
	discoveries int  // MaxDiscoveries

	mu   sync.Mutex
	sets map[string]*keySet // by tenant
	gens atomic.Uint64      // source of key generations

	discoverMu    sync.Mutex
	discoverStart time.Time // start of the current discovery window
	discoverCount int       // discovery fetches in the window
}

var _ Verifier = (*JWKSVerifier)(nil)

// allowedAlgs are the only signature algorithms accepted; none, HS* and RSA are rejected at parse time.
var allowedAlgs = []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA}

const (
	maxTokenBytes = 16 << 10
	maxJWKSBytes  = 1 << 20
	fetchTimeout  = 10 * time.Second
)

// CheckIssuerURL refuses an http:// URL whose host is not a loopback address: keys, tokens and client
// assertions would travel in plaintext where others can read or change them. https:// URLs and plain
// http:// on loopback (`agentid dev`) pass; the error names the URL.
func CheckIssuerURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("authn: issuer URL %q: %w", raw, err)
	}
	if strings.EqualFold(u.Scheme, "http") && !tlsx.IsLoopbackHost(u.Hostname()) {
		return fmt.Errorf("authn: issuer URL %q is plaintext http:// on a host that is not loopback: use https:// (http:// is only allowed on 127.0.0.1, ::1 or localhost)", raw)
	}
	return nil
}

// NewJWKSVerifier returns a verifier for tokens of the tenant issuers under cfg.IssuerBaseURL, which
// must be https:// unless its host is a loopback address (CheckIssuerURL).
func NewJWKSVerifier(cfg JWKSVerifierConfig) (*JWKSVerifier, error) {
	base := strings.TrimRight(cfg.IssuerBaseURL, "/")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("authn: issuer base URL %q must be an absolute http(s) URL", cfg.IssuerBaseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("authn: issuer base URL %q must not have a query or fragment", cfg.IssuerBaseURL)
	}
	if err := CheckIssuerURL(base); err != nil {
		return nil, err
	}
	v := &JWKSVerifier{
		base:       base,
		audience:   cfg.Audience,
		client:     cfg.HTTPClient,
		refresh:    cfg.RefreshInterval,
		minRefresh: cfg.MinRefreshInterval,
		leeway:     cfg.Leeway,
		maxIssuers: cfg.MaxIssuers,
		now:        cfg.Now,
		revoked:    cfg.Revocations,
		sets:       make(map[string]*keySet),

		knownTenant: cfg.KnownTenant,
		discoveries: cfg.MaxDiscoveries,
	}
	if len(cfg.Tenants) > 0 {
		v.tenants = make(map[string]bool, len(cfg.Tenants))
		for _, t := range cfg.Tenants {
			if !ValidTenant(t) {
				return nil, fmt.Errorf("authn: verifier tenant %q is not a valid tenant id", t)
			}
			v.tenants[t] = true
		}
	}
	v.discover = v.knownTenant == nil && v.tenants == nil
	if v.discoveries <= 0 {
		v.discoveries = 16
	}
	switch {
	case cfg.VerifiedCacheSize == 0:
		v.verified = newVerifiedCache(DefaultVerifiedCacheSize)
	case cfg.VerifiedCacheSize > 0:
		v.verified = newVerifiedCache(cfg.VerifiedCacheSize)
	}
	if v.audience == "" {
		v.audience = APIAudience
	}
	if v.client == nil {
		v.client = &http.Client{Timeout: 10 * time.Second}
	}
	if v.refresh <= 0 {
		v.refresh = DefaultJWKSRefreshInterval
	}
	if v.minRefresh <= 0 {
		v.minRefresh = 5 * time.Second
	}
	if v.leeway <= 0 {
		v.leeway = DefaultLeeway
	}
	if v.maxIssuers <= 0 {
		v.maxIssuers = 1024
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

func invalid(reason, msg string, cause error) error {
	return errs.Unauthenticated(reason, msg).WithCause(cause)
}

// Verify parses and verifies raw: algorithm, typ, issuer and tenant, signature against the issuer's
// JWKS, exp/nbf/iat with leeway, the audience, and then the configured Revocations. It returns the
// verified claims (the caller's own copy) or an Unauthenticated *errs.Error (Unavailable when the
// issuer's keys cannot be fetched). A token verified before is answered from the verified-token cache
// after its times, its signing key and the Revocations are checked again.
func (v *JWKSVerifier) Verify(ctx context.Context, raw string) (*Claims, error) {
	if raw == "" {
		return nil, invalid(ReasonTokenMissing, "missing bearer token", nil)
	}
	if len(raw) > maxTokenBytes {
		return nil, invalid(ReasonTokenInvalid, "access token is invalid", errors.New("token too large"))
	}
	if v.verified == nil {
		claims, _, err := v.verify(ctx, raw)
		return claims, err
	}
	sum := sha256.Sum256([]byte(raw))
	if claims, hit, err := v.cachedVerify(ctx, sum); hit {
		return claims, err
	}
	claims, e, err := v.verify(ctx, raw)
	if err != nil {
		return nil, err
	}
	v.verified.put(sum, e, v.now())
	return claims, nil
}

// cachedVerify answers from the verified-token cache. hit is false when raw must be verified in full:
// not cached, outside its validity window, or its signing key is no longer the one in the issuer's key
// set (rotated, removed or unavailable).
func (v *JWKSVerifier) cachedVerify(ctx context.Context, sum [sha256.Size]byte) (claims *Claims, hit bool, err error) {
	e, ok := v.verified.get(sum)
	if !ok {
		return nil, false, nil
	}
	if now := v.now(); !e.validAt(now) {
		v.verified.remove(sum, e)
		return nil, false, nil
	}
	if _, gen, err := v.key(ctx, e.tenant, e.kid, e.alg); err != nil || gen != e.gen {
		v.verified.remove(sum, e)
		return nil, false, nil
	}
	c := e.claims.clone()
	if v.revoked != nil {
		if err := v.revoked.Check(c, e.kid); err != nil {
			return nil, true, err
		}
	}
	return c, true, nil
}

// verify verifies raw in full and returns its claims and, when they are valid, the cache entry that
// remembers them.
func (v *JWKSVerifier) verify(ctx context.Context, raw string) (*Claims, *verifiedEntry, error) {
	tok, err := jwt.ParseSigned(raw, allowedAlgs)
	if err != nil {
		return nil, nil, invalid(ReasonTokenInvalid, "access token is invalid", err)
	}
	if len(tok.Headers) != 1 {
		return nil, nil, invalid(ReasonTokenInvalid, "access token is invalid", errors.New("want exactly one signature"))
	}
	h := tok.Headers[0]
	typ, _ := h.ExtraHeaders[jose.HeaderType].(string)
	if !strings.EqualFold(typ, "at+jwt") && !strings.EqualFold(typ, "application/at+jwt") {
		return nil, nil, invalid(ReasonTokenType, "not an access token", fmt.Errorf("typ %q", typ))
	}
	if h.KeyID == "" {
		return nil, nil, invalid(ReasonTokenInvalid, "access token is invalid", errors.New("no kid in header"))
	}

	// The issuer is read before the signature is checked only to choose whose keys to check it with.
	var unverified Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, nil, invalid(ReasonTokenInvalid, "access token is invalid", err)
	}
	tenant, ok := v.tenantOf(unverified.Issuer)
	if !ok {
		return nil, nil, invalid(ReasonTokenIssuer, "access token issuer is not trusted", fmt.Errorf("iss %q", unverified.Issuer))
	}
	alg := jose.SignatureAlgorithm(h.Algorithm)
	key, gen, err := v.key(ctx, tenant, h.KeyID, alg)
	if err != nil {
		return nil, nil, err
	}
	var claims Claims
	if err := tok.Claims(key, &claims); err != nil {
		return nil, nil, invalid(ReasonTokenInvalid, "access token is invalid", err)
	}
	if claims.Tenant != tenant {
		return nil, nil, invalid(ReasonTokenTenant, "access token tenant does not match its issuer",
			fmt.Errorf("tenant claim %q, issuer tenant %q", claims.Tenant, tenant))
	}
	if claims.Subject == "" || claims.Expiry.IsZero() || claims.IssuedAt.IsZero() {
		return nil, nil, invalid(ReasonTokenInvalid, "access token is invalid", errors.New("missing sub, exp or iat"))
	}
	expected := jwt.Expected{AnyAudience: jwt.Audience{v.audience}, Time: v.now()}
	switch err := claims.registered().ValidateWithLeeway(expected, v.leeway); {
	case err == nil:
	case errors.Is(err, jwt.ErrExpired):
		return nil, nil, invalid(ReasonTokenExpired, "access token has expired", err)
	case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
		return nil, nil, invalid(ReasonTokenNotYetValid, "access token is not valid yet", err)
	case errors.Is(err, jwt.ErrInvalidAudience):
		return nil, nil, invalid(ReasonTokenAudience, "access token is not meant for this API", err)
	default:
		return nil, nil, invalid(ReasonTokenInvalid, "access token is invalid", err)
	}
	if v.revoked != nil {
		if err := v.revoked.Check(&claims, h.KeyID); err != nil {
			return nil, nil, err
		}
	}
	var e *verifiedEntry
	if v.verified != nil {
		e = newVerifiedEntry(claims.clone(), tenant, h.KeyID, alg, gen, v.leeway)
	}
	return &claims, e, nil
}

// CachedTokens returns how many verified tokens the verifier remembers (0 when the cache is disabled).
func (v *JWKSVerifier) CachedTokens() int {
	if v.verified == nil {
		return 0
	}
	return v.verified.len()
}

// tenantOf returns the tenant of a tenant issuer identifier under the base URL.
func (v *JWKSVerifier) tenantOf(iss string) (string, bool) {
	tenant, ok := strings.CutPrefix(iss, v.base+"/t/")
	if !ok || !ValidTenant(tenant) {
		return "", false
	}
	return tenant, true
}

// key returns the verification key kid of the tenant's issuer, fetching its JWKS when needed, and
// the key's generation: it changes when the issuer's key set no longer holds this key under kid. A
// tenant the verifier does not know is refused without a fetch.
func (v *JWKSVerifier) key(ctx context.Context, tenant, kid string, alg jose.SignatureAlgorithm) (any, uint64, error) {
	if !v.known(tenant) {
		return nil, 0, invalid(ReasonTokenIssuer, "access token issuer is not trusted", fmt.Errorf("tenant %q is not known to this verifier", tenant))
	}
	ks, err := v.acquire(tenant)
	if err != nil {
		return nil, 0, err
	}
	defer ks.inUse.Add(-1)
	vk, err := ks.lookup(ctx, v, kid)
	if err != nil {
		return nil, 0, err
	}
	k := vk.jwk
	if k.Algorithm != "" && k.Algorithm != string(alg) {
		return nil, 0, invalid(ReasonTokenInvalid, "access token is invalid", fmt.Errorf("kid %q is for %s, token uses %s", kid, k.Algorithm, alg))
	}
	switch pub := k.Key.(type) {
	case *ecdsa.PublicKey:
		if alg == jose.ES256 && pub.Curve == elliptic.P256() {
			return pub, vk.gen, nil
		}
	case ed25519.PublicKey:
		if alg == jose.EdDSA {
			return pub, vk.gen, nil
		}
	}
	return nil, 0, invalid(ReasonTokenInvalid, "access token is invalid", fmt.Errorf("kid %q (%T) cannot verify %s", kid, k.Key, alg))
}

// known reports whether the verifier may fetch the keys of tenant: one KnownTenant or Tenants
// names, or, with neither configured, any tenant (the issuer confirms it by serving its JWKS).
func (v *JWKSVerifier) known(tenant string) bool {
	if v.discover || v.tenants[tenant] {
		return true
	}
	return v.knownTenant != nil && v.knownTenant(tenant)
}

// acquire returns the cached key set of the tenant's issuer marked in use (the caller releases it
// with inUse.Add(-1)), making room when the cache is full by evicting the least recently used set
// that is not in use, one the issuer never confirmed before any it did. With every set in use the
// token cannot be checked now (Unavailable).
func (v *JWKSVerifier) acquire(tenant string) (*keySet, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	ks, ok := v.sets[tenant]
	if !ok {
		if len(v.sets) >= v.maxIssuers && !v.evictLocked() {
			return nil, errs.Unavailable(ReasonKeysUnavailable, "cannot verify the access token right now, retry later",
				fmt.Errorf("all %d cached issuer key sets are in use", len(v.sets)))
		}
		ks = &keySet{jwksURL: v.base + "/t/" + tenant + "/jwks.json"}
		v.sets[tenant] = ks
	}
	ks.inUse.Add(1)
	ks.lastUsed.Store(v.now().UnixNano())
	return ks, nil
}

// evictLocked evicts the least recently used key set that is not in use, preferring sets the issuer
// never confirmed; it reports whether it evicted one.
func (v *JWKSVerifier) evictLocked() bool {
	var victim string
	var victimConfirmed bool
	var oldest int64
	for tenant, ks := range v.sets {
		if ks.inUse.Load() > 0 {
			continue
		}
		confirmed, used := ks.confirmed.Load(), ks.lastUsed.Load()
		better := victim == "" ||
			(!confirmed && victimConfirmed) ||
			(confirmed == victimConfirmed && used < oldest)
		if better {
			victim, victimConfirmed, oldest = tenant, confirmed, used
		}
	}
	if victim == "" {
		return false
	}
	delete(v.sets, victim)
	return true
}

// allowDiscovery reports whether a JWKS fetch for a tenant the issuer has not confirmed may go out
// now: at most MaxDiscoveries per MinRefreshInterval.
func (v *JWKSVerifier) allowDiscovery(now time.Time) bool {
	v.discoverMu.Lock()
	defer v.discoverMu.Unlock()
	if now.Sub(v.discoverStart) >= v.minRefresh || now.Before(v.discoverStart) {
		v.discoverStart, v.discoverCount = now, 0
	}
	if v.discoverCount >= v.discoveries {
		return false
	}
	v.discoverCount++
	return true
}

// keySet caches one issuer's JWKS.
type keySet struct {
	jwksURL   string
	lastUsed  atomic.Int64
	inUse     atomic.Int32 // verifications using the set right now
	confirmed atomic.Bool  // the issuer served the tenant's JWKS at least once

	fetchMu sync.Mutex // serialises fetches

	mu        sync.RWMutex
	keys      map[string]verifierKey
	fetchedAt time.Time // last successful fetch
	triedAt   time.Time // last fetch attempt, successful or not
	lastErr   error     // error of the last attempt, nil when it succeeded
}

// verifierKey is a public key of an issuer's JWKS and its generation, a number that stays the same
// across refetches for as long as the set holds the same key under the same kid.
type verifierKey struct {
	jwk jose.JSONWebKey
	gen uint64
}

type keyState struct {
	key       verifierKey
	found     bool
	fetchedAt time.Time
	triedAt   time.Time
	lastErr   error
}

func (ks *keySet) state(kid string) keyState {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	k, found := ks.keys[kid]
	return keyState{key: k, found: found, fetchedAt: ks.fetchedAt, triedAt: ks.triedAt, lastErr: ks.lastErr}
}

// result answers from cached state without fetching: the key, or why there is none.
func (s keyState) result(kid string) (verifierKey, error) {
	switch {
	case s.found:
		return s.key, nil
	case s.lastErr != nil:
		return verifierKey{}, s.lastErr
	default:
		return verifierKey{}, unknownKey(kid)
	}
}

// lookup returns key kid. It refetches the JWKS when the cached copy is older than the refresh
// interval or does not know kid, but never twice within the minimum refresh interval; between
// fetches it answers from the cache, including the last failure. A stale key is used when a refetch
// fails.
func (ks *keySet) lookup(ctx context.Context, v *JWKSVerifier, kid string) (verifierKey, error) {
	st := ks.state(kid)
	now := v.now()
	if st.found && now.Sub(st.fetchedAt) < v.refresh {
		return st.key, nil
	}
	if !st.triedAt.IsZero() && now.Sub(st.triedAt) < v.minRefresh {
		return st.result(kid)
	}

	ks.fetchMu.Lock()
	defer ks.fetchMu.Unlock()
	if again := ks.state(kid); !again.triedAt.Equal(st.triedAt) {
		// Another request fetched while this one waited.
		return again.result(kid)
	}

	if v.discover && !ks.confirmed.Load() && !v.allowDiscovery(now) {
		return verifierKey{}, errs.Unavailable(ReasonKeysUnavailable, "cannot verify the access token right now, retry later",
			fmt.Errorf("too many key fetches for tenants the issuer has not confirmed; %s not fetched", ks.jwksURL))
	}
	// The fetch outlives a cancelled caller so that waiting requests are not failed by it.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
	defer cancel()
	fetched, err := v.fetch(fctx, ks.jwksURL)
	ks.mu.Lock()
	ks.triedAt, ks.lastErr = v.now(), err
	if err == nil {
		keys := make(map[string]verifierKey, len(fetched))
		for kid, k := range fetched {
			gen := uint64(0)
			if old, ok := ks.keys[kid]; ok && sameKey(old.jwk, k) {
				gen = old.gen
			} else {
				gen = v.gens.Add(1)
			}
			keys[kid] = verifierKey{jwk: k, gen: gen}
		}
		ks.keys, ks.fetchedAt = keys, ks.triedAt
		ks.confirmed.Store(true)
	}
	ks.mu.Unlock()
	if err != nil && st.found {
		return st.key, nil
	}
	return ks.state(kid).result(kid)
}

// sameKey reports whether two JWKs hold the same public key for the same algorithm.
func sameKey(a, b jose.JSONWebKey) bool {
	if a.Algorithm != b.Algorithm {
		return false
	}
	pa, ok := a.Key.(interface{ Equal(crypto.PublicKey) bool })
	return ok && pa.Equal(b.Key)
}

func unknownKey(kid string) error {
	return invalid(ReasonTokenKeyUnknown, "access token signing key is unknown", fmt.Errorf("kid %q not in JWKS", kid))
}

// fetch downloads and parses a JWKS, keeping the public EC P-256 and Ed25519 signing keys.
func (v *JWKSVerifier) fetch(ctx context.Context, jwksURL string) (map[string]jose.JSONWebKey, error) {
	unavailable := func(cause error) error {
		return errs.Unavailable(ReasonKeysUnavailable, "cannot verify the access token right now, retry later",
			fmt.Errorf("fetch %s: %w", jwksURL, cause))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, jwksURL, nil)
	if err != nil {
		return nil, unavailable(err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, unavailable(err)
	}
	defer func() { _ = resp.Body.Close() }()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, invalid(ReasonTokenIssuer, "access token issuer is not trusted", fmt.Errorf("GET %s: %s", jwksURL, resp.Status))
	case resp.StatusCode != http.StatusOK:
		return nil, unavailable(fmt.Errorf("GET: %s", resp.Status))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, unavailable(err)
	}
	if len(body) > maxJWKSBytes {
		return nil, unavailable(errors.New("JWKS larger than 1 MiB"))
	}
	return parseJWKS(body)
}

// parseJWKS keeps the usable signing keys of a JWK Set, skipping entries it cannot use.
func parseJWKS(body []byte) (map[string]jose.JSONWebKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, errs.Unavailable(ReasonKeysUnavailable, "cannot verify the access token right now, retry later",
			fmt.Errorf("parse JWKS: %w", err))
	}
	keys := make(map[string]jose.JSONWebKey, len(set.Keys))
	for _, raw := range set.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil || k.KeyID == "" || (k.Use != "" && k.Use != "sig") {
			continue
		}
		switch pub := k.Public().Key.(type) {
		case *ecdsa.PublicKey:
			if pub.Curve != elliptic.P256() {
				continue
			}
		case ed25519.PublicKey:
		default:
			continue
		}
		keys[k.KeyID] = k.Public()
	}
	return keys, nil
}
