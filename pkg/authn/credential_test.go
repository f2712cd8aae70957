package authn_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/authn"
)

func TestCredentialFileRoundTrip(t *testing.T) {
	cred, err := authn.NewCredential("system", "bootstrap-admin", "http://127.0.0.1:8080/t/system/")
	if err != nil {
		t.Fatal(err)
	}
	if cred.TokenURL != "http://127.0.0.1:8080/t/system/oauth2/token" || cred.Issuer != "http://127.0.0.1:8080/t/system" {
		t.Fatalf("issuer/token url = %q %q", cred.Issuer, cred.TokenURL)
	}
	path := filepath.Join(t.TempDir(), "admin.json")
	if err := authn.WriteCredentialFile(path, cred); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %#o, want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}

	var onDisk map[string]any
	data, _ := os.ReadFile(path)
	if err := json.Unmarshal(data, &onDisk); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"tenant", "client_id", "issuer", "token_url", "private_jwk"} {
		if _, ok := onDisk[k]; !ok {
			t.Errorf("file lacks %q: %s", k, data)
		}
	}

	loaded, err := authn.LoadCredentialFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Tenant != cred.Tenant || loaded.ClientID != cred.ClientID || loaded.Issuer != cred.Issuer ||
		loaded.TokenURL != cred.TokenURL || loaded.KeyID() != cred.KeyID() || loaded.Algorithm() != "ES256" {
		t.Fatalf("loaded %v, wrote %v", loaded, cred)
	}
	a, _ := loaded.PublicJWKS()
	b, _ := cred.PublicJWKS()
	if string(a) != string(b) {
		t.Fatalf("public keys differ after round trip")
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := authn.LoadCredentialFile(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("group/world-readable file accepted: %v", err)
	}
}

func TestCredentialNeverPrintsItsKey(t *testing.T) {
	cred, err := authn.NewCredential("system", "svc", "http://127.0.0.1:8080/t/system")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := cred.MarshalFile()
	var f authn.CredentialFile
	_ = json.Unmarshal(data, &f)
	var jwk map[string]any
	_ = json.Unmarshal(f.PrivateJWK, &jwk)
	d, _ := jwk["d"].(string)
	if d == "" {
		t.Fatal("file has no private key")
	}
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "cred", cred)
	for _, out := range []string{fmt.Sprint(cred), fmt.Sprintf("%+v", *cred), fmt.Sprintf("%#v", cred), logged.String()} {
		if strings.Contains(out, d) {
			t.Fatalf("private key printed: %s", out)
		}
	}
}

func TestParseCredentialRejects(t *testing.T) {
	cred, _ := authn.NewCredential("acme", "svc", "http://x/t/acme")
	pubJWKS, _ := cred.PublicJWKS()
	var set jose.JSONWebKeySet
	_ = json.Unmarshal(pubJWKS, &set)
	pubOnly, _ := json.Marshal(set.Keys[0])
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaJWK, _ := json.Marshal(jose.JSONWebKey{Key: rsaKey, KeyID: "r"})
	octJWK, _ := json.Marshal(jose.JSONWebKey{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "h"})
	good, _ := cred.MarshalFile()
	var f authn.CredentialFile
	_ = json.Unmarshal(good, &f)

	file := func(mut func(*authn.CredentialFile)) []byte {
		g := f
		mut(&g)
		b, _ := json.Marshal(g)
		return b
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"not json", []byte("{")},
		{"public key only", file(func(g *authn.CredentialFile) { g.PrivateJWK = pubOnly })},
		{"rsa key", file(func(g *authn.CredentialFile) { g.PrivateJWK = rsaJWK })},
		{"symmetric key", file(func(g *authn.CredentialFile) { g.PrivateJWK = octJWK })},
		{"no key", file(func(g *authn.CredentialFile) { g.PrivateJWK = nil })},
		{"bad tenant", file(func(g *authn.CredentialFile) { g.Tenant = "Acme Corp" })},
		{"no client id", file(func(g *authn.CredentialFile) { g.ClientID = "" })},
		{"no issuer", file(func(g *authn.CredentialFile) { g.Issuer, g.TokenURL = "", "" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := authn.ParseCredential(tt.data); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if _, err := authn.ParseCredential(good); err != nil {
		t.Fatalf("good file rejected: %v", err)
	}
}

func ed25519CredentialJSON(t *testing.T) []byte {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwk, _ := json.Marshal(jose.JSONWebKey{Key: priv})
	b, _ := json.Marshal(authn.CredentialFile{Tenant: "acme", ClientID: "edge", Issuer: "http://x/t/acme", PrivateJWK: jwk})
	return b
}

func TestAssertionVerifiesWithPublicJWKS(t *testing.T) {
	es, err := authn.NewCredential("acme", "svc-es", "http://127.0.0.1:8080/t/acme")
	if err != nil {
		t.Fatal(err)
	}
	ed, err := authn.ParseCredential(ed25519CredentialJSON(t))
	if err != nil {
		t.Fatal(err)
	}
	if ed.KeyID() == "" || ed.TokenURL != "http://x/t/acme/oauth2/token" {
		t.Fatalf("kid/token url defaults not applied: %q %q", ed.KeyID(), ed.TokenURL)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, cred := range []*authn.Credential{es, ed} {
		t.Run(cred.Algorithm(), func(t *testing.T) {
			raw, err := cred.Assertion(cred.Issuer, now)
			if err != nil {
				t.Fatal(err)
			}
			var set jose.JSONWebKeySet
			pub, _ := cred.PublicJWKS()
			if err := json.Unmarshal(pub, &set); err != nil {
				t.Fatal(err)
			}
			if len(set.Keys) != 1 || !set.Keys[0].IsPublic() {
				t.Fatalf("PublicJWKS = %s", pub)
			}
			tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(cred.Algorithm())})
			if err != nil {
				t.Fatal(err)
			}
			if tok.Headers[0].KeyID != cred.KeyID() {
				t.Fatalf("kid = %q, want %q", tok.Headers[0].KeyID, cred.KeyID())
			}
			if typ := tok.Headers[0].ExtraHeaders[jose.HeaderType]; typ != authn.ClientAssertionJWTType {
				t.Fatalf("typ = %v, want %s", typ, authn.ClientAssertionJWTType)
			}
			keys := set.Key(tok.Headers[0].KeyID)
			if len(keys) != 1 {
				t.Fatal("kid not in JWKS")
			}
			var c jwt.Claims
			if err := tok.Claims(keys[0].Key, &c); err != nil {
				t.Fatalf("signature: %v", err)
			}
			err = c.ValidateWithLeeway(jwt.Expected{Issuer: cred.ClientID, Subject: cred.ClientID,
				AnyAudience: jwt.Audience{cred.Issuer}, Time: now}, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Audience) != 1 {
				t.Fatalf("aud = %v, want the issuer as the only value", c.Audience)
			}
			if c.Expiry.Time().Sub(c.IssuedAt.Time()) != authn.AssertionLifetime || c.ID == "" {
				t.Fatalf("exp-iat = %v, jti = %q", c.Expiry.Time().Sub(c.IssuedAt.Time()), c.ID)
			}
		})
	}
}

// tokenEndpoint is an RFC 7523 token endpoint that verifies client assertions and rejects replays.
type tokenEndpoint struct {
	srv       *httptest.Server
	issuer    string
	keys      jose.JSONWebKeySet
	expiresIn int

	mu        sync.Mutex
	seenJTIs  map[string]bool
	requests  int
	scopes    []string
	resources []string
	reject    bool
}

func newTokenEndpoint(t *testing.T, cred *authn.Credential, expiresIn int) *tokenEndpoint {
	t.Helper()
	te := &tokenEndpoint{seenJTIs: map[string]bool{}, expiresIn: expiresIn}
	te.srv = httptest.NewServer(http.HandlerFunc(te.serve))
	t.Cleanup(te.srv.Close)
	te.issuer = te.srv.URL + "/t/" + cred.Tenant
	pub, _ := cred.PublicJWKS()
	if err := json.Unmarshal(pub, &te.keys); err != nil {
		t.Fatal(err)
	}
	return te
}

func (te *tokenEndpoint) fail(w http.ResponseWriter, code int, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_client", "error_description": desc})
}

func (te *tokenEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	te.mu.Lock()
	defer te.mu.Unlock()
	te.requests++
	if te.reject {
		te.fail(w, http.StatusUnauthorized, "client disabled")
		return
	}
	if r.URL.Path != "/t/acme/oauth2/token" || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		te.fail(w, http.StatusBadRequest, err.Error())
		return
	}
	if r.PostForm.Get("grant_type") != "client_credentials" ||
		r.PostForm.Get("client_assertion_type") != authn.ClientAssertionType {
		te.fail(w, http.StatusBadRequest, "bad grant or assertion type")
		return
	}
	if _, _, ok := r.BasicAuth(); ok {
		te.fail(w, http.StatusBadRequest, "unexpected basic auth")
		return
	}
	tok, err := jwt.ParseSigned(r.PostForm.Get("client_assertion"), []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA})
	if err != nil {
		te.fail(w, http.StatusUnauthorized, err.Error())
		return
	}
	keys := te.keys.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		te.fail(w, http.StatusUnauthorized, "unknown kid")
		return
	}
	var c jwt.Claims
	if err := tok.Claims(keys[0].Key, &c); err != nil {
		te.fail(w, http.StatusUnauthorized, err.Error())
		return
	}
	clientID := r.PostForm.Get("client_id")
	if err := c.Validate(jwt.Expected{Issuer: clientID, Subject: clientID, AnyAudience: jwt.Audience{te.issuer}}); err != nil {
		te.fail(w, http.StatusUnauthorized, err.Error())
		return
	}
	if c.ID == "" || te.seenJTIs[c.ID] {
		te.fail(w, http.StatusUnauthorized, "assertion replayed")
		return
	}
	te.seenJTIs[c.ID] = true
	te.scopes = strings.Fields(r.PostForm.Get("scope"))
	te.resources = r.PostForm["resource"]
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": fmt.Sprintf("at-%d", te.requests), "token_type": "Bearer", "expires_in": te.expiresIn,
	})
}

func credentialFor(t *testing.T, te *tokenEndpoint, cred *authn.Credential) *authn.Credential {
	t.Helper()
	data, _ := cred.MarshalFile()
	var f authn.CredentialFile
	_ = json.Unmarshal(data, &f)
	f.Issuer, f.TokenURL = te.issuer, te.issuer+"/oauth2/token"
	b, _ := json.Marshal(f)
	c, err := authn.ParseCredential(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTokenSourceSendsFreshAssertions(t *testing.T) {
	base, _ := authn.NewCredential("acme", "svc-monitor", "http://placeholder/t/acme")
	// expires_in 1s is inside oauth2's expiry margin, so every Token() call fetches anew.
	te := newTokenEndpoint(t, base, 1)
	cred := credentialFor(t, te, base)
	ts := cred.TokenSource(context.Background(), "agents:read", "agents:write")
	seen := map[string]bool{}
	for range 3 {
		tok, err := ts.Token()
		if err != nil {
			t.Fatalf("Token: %v", err)
		}
		if seen[tok.AccessToken] {
			t.Fatalf("token %q reused although expired", tok.AccessToken)
		}
		seen[tok.AccessToken] = true
	}
	te.mu.Lock()
	defer te.mu.Unlock()
	if te.requests != 3 || len(te.seenJTIs) != 3 {
		t.Fatalf("requests = %d, distinct jtis = %d, want 3 and 3", te.requests, len(te.seenJTIs))
	}
	if strings.Join(te.scopes, " ") != "agents:read agents:write" {
		t.Fatalf("scopes = %v", te.scopes)
	}
}

func TestTokenSourceForSendsResources(t *testing.T) {
	base, _ := authn.NewCredential("acme", "svc-monitor", "http://placeholder/t/acme")
	te := newTokenEndpoint(t, base, 3600)
	cred := credentialFor(t, te, base)
	for _, tc := range []struct {
		name string
		req  authn.TokenRequest
		want []string
	}{
		{name: "none", req: authn.TokenRequest{Scopes: []string{"files.read"}}, want: nil},
		{name: "one", req: authn.TokenRequest{Resources: []string{"https://files.example"}}, want: []string{"https://files.example"}},
		{name: "two", req: authn.TokenRequest{Resources: []string{"https://a.example", "https://b.example"}}, want: []string{"https://a.example", "https://b.example"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := cred.TokenSourceFor(context.Background(), tc.req).Token(); err != nil {
				t.Fatal(err)
			}
			te.mu.Lock()
			defer te.mu.Unlock()
			if !slices.Equal(te.resources, tc.want) {
				t.Fatalf("resource parameters = %q, want %q", te.resources, tc.want)
			}
		})
	}
}

func TestTokenSourceReusesValidToken(t *testing.T) {
	base, _ := authn.NewCredential("acme", "svc-monitor", "http://placeholder/t/acme")
	te := newTokenEndpoint(t, base, 3600)
	ts := credentialFor(t, te, base).TokenSource(context.Background())
	for range 3 {
		if _, err := ts.Token(); err != nil {
			t.Fatal(err)
		}
	}
	te.mu.Lock()
	defer te.mu.Unlock()
	if te.requests != 1 {
		t.Fatalf("requests = %d, want 1", te.requests)
	}
}

func TestPerRPCCredentials(t *testing.T) {
	base, _ := authn.NewCredential("acme", "svc-monitor", "http://placeholder/t/acme")
	te := newTokenEndpoint(t, base, 3600)
	cred := credentialFor(t, te, base)

	pc := authn.PerRPCCredentials(cred.TokenSource(context.Background()), false)
	md, err := pc.GetRequestMetadata(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if md["authorization"] != "Bearer at-1" || pc.RequireTransportSecurity() {
		t.Fatalf("metadata = %v", md)
	}

	te.mu.Lock()
	te.reject = true
	te.mu.Unlock()
	rejected := authn.PerRPCCredentials(cred.TokenSource(context.Background()), false)
	if _, err := rejected.GetRequestMetadata(context.Background()); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("rejected client: got %v, want Unauthenticated", err)
	}

	te.srv.Close()
	down := authn.PerRPCCredentials(cred.TokenSource(context.Background()), false)
	if _, err := down.GetRequestMetadata(context.Background()); status.Code(err) != codes.Unavailable {
		t.Fatalf("token endpoint down: got %v, want Unavailable", err)
	}

	tls := authn.PerRPCCredentials(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "x"}), true)
	if !tls.RequireTransportSecurity() {
		t.Fatal("RequireTransportSecurity = false")
	}
	if _, err := tls.GetRequestMetadata(context.Background()); err == nil {
		t.Fatal("token sent without transport security")
	}
}
