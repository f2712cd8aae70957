package tokenclient_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentid/agentid/loadtest/internal/tokenclient"
	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/tlsx"
	"github.com/agentid/agentid/pkg/tlsx/tlsxtest"
)

// fakeIssuer is a token endpoint that verifies private_key_jwt assertions like a real one would:
// signature against the registered JWKS, iss = sub = client_id, audience, expiry and a single-use jti.
type fakeIssuer struct {
	t        *testing.T
	audience string
	keys     jose.JSONWebKeySet
	clientID string
	mu       sync.Mutex
	seen     map[string]bool
	reply    func(w http.ResponseWriter) bool // optional override; true when it answered
}

func (f *fakeIssuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.reply != nil && f.reply(w) {
		return
	}
	fail := func(code string, status int) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": "fake says " + code})
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" ||
		r.PostForm.Get("client_assertion_type") != authn.ClientAssertionType {
		fail("invalid_request", http.StatusBadRequest)
		return
	}
	tok, err := jwt.ParseSigned(r.PostForm.Get("client_assertion"), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil || len(tok.Headers) != 1 {
		fail("invalid_client", http.StatusUnauthorized)
		return
	}
	keys := f.keys.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		fail("invalid_client", http.StatusUnauthorized)
		return
	}
	var c jwt.Claims
	if err := tok.Claims(keys[0].Key, &c); err != nil {
		fail("invalid_client", http.StatusUnauthorized)
		return
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: f.clientID, Subject: f.clientID,
		AnyAudience: jwt.Audience{f.audience}, Time: time.Now()}, 0); err != nil ||
		r.PostForm.Get("client_id") != f.clientID || c.ID == "" || c.Expiry == nil {
		fail("invalid_client", http.StatusUnauthorized)
		return
	}
	f.mu.Lock()
	replay := f.seen[c.ID]
	f.seen[c.ID] = true
	f.mu.Unlock()
	if replay {
		fail("invalid_client", http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at-" + c.ID, "token_type": "Bearer",
		"expires_in": 600, "scope": r.PostForm.Get("scope")})
}

func setup(t *testing.T) (*tokenclient.Client, *tokenclient.Identity, *fakeIssuer) {
	t.Helper()
	id, err := tokenclient.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	id.ClientID = "agt_test"
	jwks, err := id.PublicJWKS()
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeIssuer{t: t, clientID: id.ClientID, seen: map[string]bool{}}
	if err := json.Unmarshal([]byte(jwks), &f.keys); err != nil {
		t.Fatal(err)
	}
	if len(f.keys.Keys) != 1 || !f.keys.Keys[0].IsPublic() || f.keys.Keys[0].KeyID != id.KeyID() {
		t.Fatalf("PublicJWKS = %s, want exactly the public key with kid %s", jwks, id.KeyID())
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	f.audience = srv.URL + "/t/default"
	c := &tokenclient.Client{HTTP: tokenclient.NewHTTPClient(4, 5*time.Second), TokenURL: f.audience + "/oauth2/token",
		Audience: f.audience, Scope: "faq.read"}
	return c, id, f
}

func TestRequestSendsFreshVerifiableAssertions(t *testing.T) {
	c, id, f := setup(t)
	for range 20 {
		tok, err := c.Request(context.Background(), id)
		if err != nil {
			t.Fatalf("Request: %v", err)
		}
		if tok.TokenType != "Bearer" || tok.Scope != "faq.read" || tok.ExpiresIn != 600 {
			t.Fatalf("token = %+v", tok)
		}
	}
	if len(f.seen) != 20 {
		t.Errorf("issuer saw %d distinct jti in 20 requests, want 20", len(f.seen))
	}
}

func TestRequestErrorCodes(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		body       string
		wantCode   string
		wantStatus int
	}{
		{"oauth error", 401, `{"error":"invalid_client","error_description":"unknown client"}`, "invalid_client", 401},
		{"throttled", 503, `{"error":"temporarily_unavailable"}`, "temporarily_unavailable", 503},
		{"not oauth", 502, `<html>bad gateway</html>`, "http_502", 502},
		{"200 without token", 200, `{"token_type":"Bearer"}`, tokenclient.CodeInvalidResponse, 200},
		{"200 wrong type", 200, `{"access_token":"x","token_type":"mac"}`, tokenclient.CodeInvalidResponse, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, id, f := setup(t)
			f.reply = func(w http.ResponseWriter) bool {
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
				return true
			}
			_, err := c.Request(context.Background(), id)
			var e *tokenclient.Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *tokenclient.Error", err)
			}
			if e.Code != tc.wantCode || e.Status != tc.wantStatus || tokenclient.Code(err) != tc.wantCode {
				t.Errorf("err = %+v, want code %s status %d", e, tc.wantCode, tc.wantStatus)
			}
		})
	}
}

func TestRequestTransportErrorAndCancel(t *testing.T) {
	c, id, _ := setup(t)
	c.TokenURL = "http://127.0.0.1:1/oauth2/token" // nothing listens on port 1
	_, err := c.Request(context.Background(), id)
	if got := tokenclient.Code(err); got != tokenclient.CodeTransport {
		t.Errorf("code = %q (%v), want %s", got, err, tokenclient.CodeTransport)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = c.Request(ctx, id)
	if !errors.Is(err, context.Canceled) || tokenclient.Code(err) != "canceled" {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestUnregisteredIdentityIsRejected(t *testing.T) {
	c, _, _ := setup(t)
	other, err := tokenclient.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	other.ClientID = "agt_test" // same client id, different key: the signature must not verify
	if _, err := c.Request(context.Background(), other); tokenclient.Code(err) != "invalid_client" {
		t.Errorf("err = %v, want invalid_client", err)
	}
}

// BenchmarkAssertion is the client-side cost of one token request's signed assertion.
func BenchmarkAssertion(b *testing.B) {
	id, err := tokenclient.NewIdentity()
	if err != nil {
		b.Fatal(err)
	}
	id.ClientID = "agt_bench"
	now := time.Now()
	for b.Loop() {
		if _, err := id.Assertion("http://127.0.0.1:8080/t/default", now); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTLSHTTPClientVerifiesTheCA gets a token over https from a server whose certificate one CA
// issued: a client trusting that CA succeeds, one trusting another CA fails with a transport error.
func TestTLSHTTPClientVerifiesTheCA(t *testing.T) {
	c, id, f := setup(t)
	dir := t.TempDir()
	ca := tlsxtest.NewCA(t, "platform CA")
	certPEM, keyPEM := ca.Issue(t, "127.0.0.1", "127.0.0.1")
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(f)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	f.audience = srv.URL + "/t/default"
	c.Audience, c.TokenURL = f.audience, f.audience+"/oauth2/token"

	clientFor := func(caFile string) *http.Client {
		cfg, err := tlsx.NewClientConfig(tlsx.ClientOptions{CAFile: caFile})
		if err != nil {
			t.Fatal(err)
		}
		return tokenclient.NewTLSHTTPClient(2, 5*time.Second, cfg)
	}
	c.HTTP = clientFor(ca.WriteCA(t, dir, "ca.pem"))
	if tok, err := c.Request(context.Background(), id); err != nil || tok.AccessToken == "" {
		t.Fatalf("Request over TLS with the server's CA = %+v, %v; want a token", tok, err)
	}

	c.HTTP = clientFor(tlsxtest.NewCA(t, "other CA").WriteCA(t, dir, "other.pem"))
	_, err = c.Request(context.Background(), id)
	if tokenclient.Code(err) != tokenclient.CodeTransport || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Request with another CA = %v, want a transport error about the certificate", err)
	}
	c.HTTP = tokenclient.NewHTTPClient(2, 5*time.Second) // system roots do not know the test CA
	if _, err := c.Request(context.Background(), id); tokenclient.Code(err) != tokenclient.CodeTransport {
		t.Errorf("Request with the system roots = %v, want a transport error", err)
	}
	if len(f.seen) != 1 {
		t.Errorf("issuer saw %d requests, want only the one over a verified connection", len(f.seen))
	}
}
