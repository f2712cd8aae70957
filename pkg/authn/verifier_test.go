package authn_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
)

// fakeIssuer serves {base}/t/{tenant}/jwks.json for the tenants it knows and counts fetches.
type fakeIssuer struct {
	srv *httptest.Server

	mu      sync.Mutex
	keys    map[string][]jose.JSONWebKey // tenant -> public keys
	fetches map[string]int
}

func newFakeIssuer(t testing.TB) *fakeIssuer {
	t.Helper()
	fi := &fakeIssuer{keys: map[string][]jose.JSONWebKey{}, fetches: map[string]int{}}
	fi.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant, ok := strings.CutPrefix(r.URL.Path, "/t/")
		tenant, ok2 := strings.CutSuffix(tenant, "/jwks.json")
		fi.mu.Lock()
		keys, known := fi.keys[tenant]
		if ok && ok2 {
			fi.fetches[tenant]++
		}
		fi.mu.Unlock()
		if !ok || !ok2 || !known {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: keys})
	}))
	t.Cleanup(fi.srv.Close)
	return fi
}

func (fi *fakeIssuer) issuer(tenant string) string { return fi.srv.URL + "/t/" + tenant }

func (fi *fakeIssuer) publish(tenant string, k signingKey) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.keys[tenant] = append(fi.keys[tenant], k.public())
}

func (fi *fakeIssuer) fetchCount(tenant string) int {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	return fi.fetches[tenant]
}

type signingKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv any
}

func newES256(t testing.TB, kid string) signingKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid: kid, alg: jose.ES256, priv: priv}
}

func newEd25519(t testing.TB, kid string) signingKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid: kid, alg: jose.EdDSA, priv: priv}
}

func (k signingKey) public() jose.JSONWebKey {
	jwk := jose.JSONWebKey{Key: k.priv, KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
	return jwk.Public()
}

// mint signs claims with k; typ "" omits the typ header.
func mint(t testing.TB, k signingKey, typ string, claims any) string {
	t.Helper()
	opts := &jose.SignerOptions{}
	if typ != "" {
		opts = opts.WithType(jose.ContentType(typ))
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

var baseTime = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func validClaims(fi *fakeIssuer, tenant string) authn.Claims {
	return authn.Claims{
		Issuer:    fi.issuer(tenant),
		Subject:   "svc-lifecycle",
		Audience:  []string{authn.APIAudience},
		Expiry:    baseTime.Add(5 * time.Minute),
		IssuedAt:  baseTime.Add(-time.Minute),
		NotBefore: baseTime.Add(-time.Minute),
		ID:        "jti-1",
		ClientID:  "svc-lifecycle",
		Scope:     "agents:read agents:write",
		Tenant:    tenant,
		Roles:     []string{"tenant-admin"},
	}
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newVerifier(t *testing.T, fi *fakeIssuer, clk *clock) *authn.JWKSVerifier {
	t.Helper()
	v, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{
		IssuerBaseURL:      fi.srv.URL,
		HTTPClient:         fi.srv.Client(),
		MinRefreshInterval: 10 * time.Second,
		RefreshInterval:    5 * time.Minute,
		Now:                clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestJWKSVerifierVerify(t *testing.T) {
	fi := newFakeIssuer(t)
	acmeKey := newES256(t, "acme-1")
	edKey := newEd25519(t, "edge-1")
	globexKey := newES256(t, "globex-1")
	fi.publish("acme", acmeKey)
	fi.publish("edge", edKey)
	fi.publish("globex", globexKey)
	impostor := newES256(t, "acme-1") // same kid, different key
	confused := newEd25519(t, "globex-1")

	// An HS256 token whose secret is the issuer's public key: the classic algorithm-confusion attack.
	hsToken := func() string {
		pubJSON, _ := json.Marshal(acmeKey.public())
		signingInput := b64(map[string]string{"alg": "HS256", "typ": "at+jwt", "kid": "acme-1"}) + "." +
			b64(validClaims(fi, "acme"))
		mac := hmac.New(sha256.New, pubJSON)
		mac.Write([]byte(signingInput))
		return signingInput + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	}()
	noneToken := b64(map[string]string{"alg": "none", "typ": "at+jwt", "kid": "acme-1"}) + "." + b64(validClaims(fi, "acme")) + "."

	with := func(tenant string, mut func(*authn.Claims)) authn.Claims {
		c := validClaims(fi, tenant)
		mut(&c)
		return c
	}

	tests := []struct {
		name       string
		token      string
		wantReason string // "" means valid
		wantKind   errs.Kind
	}{
		{name: "valid ES256", token: mint(t, acmeKey, "at+jwt", validClaims(fi, "acme"))},
		{name: "valid EdDSA", token: mint(t, edKey, "at+jwt", validClaims(fi, "edge"))},
		{name: "typ application/at+jwt any case", token: mint(t, acmeKey, "Application/AT+JWT", validClaims(fi, "acme"))},
		{name: "expired within leeway", token: mint(t, acmeKey, "at+jwt", with("acme", func(c *authn.Claims) { c.Expiry = baseTime.Add(-10 * time.Second) }))},
		{name: "audience among several", token: mint(t, acmeKey, "at+jwt", with("acme", func(c *authn.Claims) { c.Audience = []string{"https://mcp.example", authn.APIAudience} }))},
		{name: "empty", token: "", wantReason: authn.ReasonTokenMissing},
		{name: "garbage", token: "not.a.jwt", wantReason: authn.ReasonTokenInvalid},
		{name: "expired", token: mint(t, acmeKey, "at+jwt", with("acme", func(c *authn.Claims) { c.Expiry = baseTime.Add(-time.Minute) })), wantReason: authn.ReasonTokenExpired},
		{name: "not yet valid", token: mint(t, acmeKey, "at+jwt", with("acme", func(c *authn.Claims) { c.NotBefore = baseTime.Add(time.Minute) })), wantReason: authn.ReasonTokenNotYetValid},
		{name: "issued in the future", token: mint(t, acmeKey, "at+jwt", with("acme", func(c *authn.Claims) { c.IssuedAt = baseTime.Add(time.Hour) })), wantReason: authn.ReasonTokenNotYetValid},
		{name: "no exp", token: mint(t, acmeKey, "at+jwt", with("acme", func(c *authn.Claims) { c.Expiry = time.Time{} })), wantReason: authn.ReasonTokenInvalid},
		{name: "no sub", token: mint(t, acmeKey, "at+jwt", with("acme", func(c *authn.Claims) { c.Subject = "" })), wantReason: authn.ReasonTokenInvalid},
		{name: "wrong audience", token: mint(t, acmeKey, "at+jwt", with("acme", func(c *authn.Claims) { c.Audience = []string{"https://other.example"} })), wantReason: authn.ReasonTokenAudience},
		{name: "typ JWT (not an access token)", token: mint(t, acmeKey, "JWT", validClaims(fi, "acme")), wantReason: authn.ReasonTokenType},
		{name: "no typ", token: mint(t, acmeKey, "", validClaims(fi, "acme")), wantReason: authn.ReasonTokenType},
		{name: "alg none", token: noneToken, wantReason: authn.ReasonTokenInvalid},
		{name: "HS256 with the public key as secret", token: hsToken, wantReason: authn.ReasonTokenInvalid},
		{name: "unknown kid", token: mint(t, newES256(t, "acme-404"), "at+jwt", validClaims(fi, "acme")), wantReason: authn.ReasonTokenKeyUnknown},
		{name: "signed by another key with a known kid", token: mint(t, impostor, "at+jwt", validClaims(fi, "acme")), wantReason: authn.ReasonTokenInvalid},
		{name: "EdDSA signature against an ES256 key", token: mint(t, confused, "at+jwt", validClaims(fi, "globex")), wantReason: authn.ReasonTokenInvalid},
		{name: "issuer outside base", token: mint(t, acmeKey, "at+jwt", with("acme", func(c *authn.Claims) { c.Issuer = "https://evil.example/t/acme" })), wantReason: authn.ReasonTokenIssuer},
		{name: "issuer with a path below the tenant", token: mint(t, acmeKey, "at+jwt", with("acme", func(c *authn.Claims) { c.Issuer = fi.issuer("acme") + "/x" })), wantReason: authn.ReasonTokenIssuer},
		{name: "issuer with invalid tenant", token: mint(t, acmeKey, "at+jwt", with("acme", func(c *authn.Claims) { c.Issuer = fi.issuer("ACME") })), wantReason: authn.ReasonTokenIssuer},
		{name: "issuer of an unknown tenant", token: mint(t, acmeKey, "at+jwt", with("nobody", func(*authn.Claims) {})), wantReason: authn.ReasonTokenIssuer},
		{name: "tenant claim differs from issuer", token: mint(t, acmeKey, "at+jwt", with("acme", func(c *authn.Claims) { c.Tenant = "globex" })), wantReason: authn.ReasonTokenTenant},
		{name: "acme key presented as globex issuer", token: mint(t, acmeKey, "at+jwt", validClaims(fi, "globex")), wantReason: authn.ReasonTokenKeyUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerifier(t, fi, &clock{now: baseTime})
			claims, err := v.Verify(context.Background(), tt.token)
			if tt.wantReason == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if claims.Subject != "svc-lifecycle" || claims.Tenant == "" || claims.Scope != "agents:read agents:write" {
					t.Fatalf("unexpected claims %+v", claims)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify accepted the token, want %s", tt.wantReason)
			}
			e := errs.FromStatus(err)
			if e.Kind != errs.KindUnauthenticated || e.Reason != tt.wantReason {
				t.Fatalf("got %v/%s (%v), want Unauthenticated/%s", e.Kind, e.Reason, err, tt.wantReason)
			}
			st := errs.ToStatus(err)
			for _, leak := range []string{"go-jose", "kid", "acme-", fi.srv.URL, "jwks"} {
				if strings.Contains(st.Message(), leak) {
					t.Fatalf("message %q leaks %q", st.Message(), leak)
				}
			}
		})
	}
}

func TestJWKSVerifierKeyRefreshIsRateLimited(t *testing.T) {
	fi := newFakeIssuer(t)
	k1 := newES256(t, "k1")
	fi.publish("acme", k1)
	clk := &clock{now: baseTime}
	v := newVerifier(t, fi, clk)
	ctx := context.Background()
	claimsAt := func() authn.Claims {
		c := validClaims(fi, "acme")
		c.IssuedAt, c.NotBefore, c.Expiry = clk.Now(), clk.Now(), clk.Now().Add(time.Hour)
		return c
	}

	if _, err := v.Verify(ctx, mint(t, k1, "at+jwt", claimsAt())); err != nil {
		t.Fatal(err)
	}
	if got := fi.fetchCount("acme"); got != 1 {
		t.Fatalf("fetches after first token = %d, want 1", got)
	}

	// A flood of made-up kids costs at most one fetch per MinRefreshInterval.
	for i := range 20 {
		_, err := v.Verify(ctx, mint(t, newES256(t, "bogus-"+string(rune('a'+i))), "at+jwt", claimsAt()))
		if !errs.Is(err, errs.KindUnauthenticated) {
			t.Fatalf("bogus kid accepted or wrong error: %v", err)
		}
	}
	if got := fi.fetchCount("acme"); got != 1 {
		t.Fatalf("fetches during kid flood = %d, want 1 (rate limited)", got)
	}

	// Rotation: the issuer publishes k2; once the minimum interval has passed, a token signed with it
	// triggers one refetch and verifies.
	k2 := newES256(t, "k2")
	fi.publish("acme", k2)
	clk.Advance(11 * time.Second)
	if _, err := v.Verify(ctx, mint(t, k2, "at+jwt", claimsAt())); err != nil {
		t.Fatalf("rotated key: %v", err)
	}
	if got := fi.fetchCount("acme"); got != 2 {
		t.Fatalf("fetches after rotation = %d, want 2", got)
	}

	// Known keys are served from the cache until RefreshInterval.
	for range 5 {
		if _, err := v.Verify(ctx, mint(t, k1, "at+jwt", claimsAt())); err != nil {
			t.Fatal(err)
		}
	}
	if got := fi.fetchCount("acme"); got != 2 {
		t.Fatalf("fetches for cached keys = %d, want 2", got)
	}
	clk.Advance(6 * time.Minute)
	if _, err := v.Verify(ctx, mint(t, k1, "at+jwt", claimsAt())); err != nil {
		t.Fatal(err)
	}
	if got := fi.fetchCount("acme"); got != 3 {
		t.Fatalf("fetches after RefreshInterval = %d, want 3", got)
	}
}

func TestJWKSVerifierUnknownIssuerIsNegativelyCached(t *testing.T) {
	fi := newFakeIssuer(t)
	clk := &clock{now: baseTime}
	v := newVerifier(t, fi, clk)
	tok := mint(t, newES256(t, "x"), "at+jwt", validClaims(fi, "ghost"))
	for range 5 {
		_, err := v.Verify(context.Background(), tok)
		if e := errs.FromStatus(err); e.Reason != authn.ReasonTokenIssuer {
			t.Fatalf("got %v, want %s", err, authn.ReasonTokenIssuer)
		}
	}
	if got := fi.fetchCount("ghost"); got != 1 {
		t.Fatalf("fetches for unknown tenant = %d, want 1", got)
	}
}

func TestJWKSVerifierIssuerDownIsUnavailable(t *testing.T) {
	fi := newFakeIssuer(t)
	k := newES256(t, "k1")
	fi.publish("acme", k)
	tok := mint(t, k, "at+jwt", validClaims(fi, "acme"))
	v := newVerifier(t, fi, &clock{now: baseTime})
	fi.srv.Close()
	_, err := v.Verify(context.Background(), tok)
	if !errs.Is(err, errs.KindUnavailable) || !errs.Retryable(err) {
		t.Fatalf("issuer down: got %v, want retryable Unavailable", err)
	}
	if msg := errs.ToStatus(err).Message(); strings.Contains(msg, "127.0.0.1") {
		t.Fatalf("message leaks the issuer address: %q", msg)
	}
}

func TestJWKSVerifierConcurrentColdCacheFetchesOnce(t *testing.T) {
	fi := newFakeIssuer(t)
	k := newES256(t, "k1")
	fi.publish("acme", k)
	tok := mint(t, k, "at+jwt", validClaims(fi, "acme"))
	v := newVerifier(t, fi, &clock{now: baseTime})

	var wg sync.WaitGroup
	var failures atomic.Int32
	for range 32 {
		wg.Go(func() {
			if _, err := v.Verify(context.Background(), tok); err != nil {
				failures.Add(1)
			}
		})
	}
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d concurrent verifications failed", failures.Load())
	}
	if got := fi.fetchCount("acme"); got != 1 {
		t.Fatalf("fetches = %d, want 1", got)
	}
}

func TestNewJWKSVerifierRejectsBadBase(t *testing.T) {
	for _, base := range []string{"", "127.0.0.1:8080", "ftp://x", "http://x/?q=1"} {
		if _, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: base}); err == nil {
			t.Errorf("base %q accepted", base)
		}
	}
}

func TestClaimsJSON(t *testing.T) {
	in := []byte(`{"iss":"http://x/t/acme","sub":"a","aud":"urn:agentid:api","exp":1772366400,"iat":1772366100,
		"jti":"j","client_id":"a","scope":"s1 s2","tenant":"acme","env":"prod","agent":"tenants/acme/agents/a1",
		"roles":["owner"],"act":{"sub":"alice"}}`)
	var c authn.Claims
	if err := json.Unmarshal(in, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Audience) != 1 || c.Audience[0] != authn.APIAudience {
		t.Fatalf("aud = %v", c.Audience)
	}
	if !c.Expiry.Equal(time.Unix(1772366400, 0)) || !c.NotBefore.IsZero() {
		t.Fatalf("exp = %v nbf = %v", c.Expiry, c.NotBefore)
	}
	if c.Environment != "prod" || c.Agent != "tenants/acme/agents/a1" || c.Act["sub"] != "alice" {
		t.Fatalf("claims = %+v", c)
	}
	out, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(out, &m)
	if m["exp"] != float64(1772366400) || m["aud"] != authn.APIAudience || m["env"] != "prod" {
		t.Fatalf("marshalled = %s", out)
	}
	if _, ok := m["nbf"]; ok {
		t.Fatalf("zero nbf must be omitted: %s", out)
	}
}
