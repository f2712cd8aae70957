package workflowstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/pkg/authn"
)

// TestRunID is the run id of workflows in Temporal's test workflow environment.
const TestRunID = "default-test-run-id"

// ApprovalIssuer mints approval tokens with a real ES256 key, serves the key as the JWKS of every
// tenant issuer under its URL, and verifies them with a real authn.JWKSVerifier.
type ApprovalIssuer struct {
	// Verifier verifies the tokens (workflows.Activities.ApprovalTokens).
	Verifier *authn.JWKSVerifier
	// URL is the base URL of the tenant issuers.
	URL    string
	signer jose.Signer
	key    jose.JSONWebKey
}

// NewApprovalIssuer starts an ApprovalIssuer, stopped when t ends.
func NewApprovalIssuer(t testing.TB) *ApprovalIssuer {
	t.Helper()
	i, stop, err := StartApprovalIssuer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return i
}

// StartApprovalIssuer starts an ApprovalIssuer; stop stops its JWKS server.
func StartApprovalIssuer() (i *ApprovalIssuer, stop func(), err error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	i = &ApprovalIssuer{key: jose.JSONWebKey{Key: &priv.PublicKey, KeyID: "approval-test-key", Algorithm: string(jose.ES256), Use: "sig"}}
	i.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: priv, KeyID: i.key.KeyID}},
		(&jose.SignerOptions{}).WithType(authn.ApprovalTokenType))
	if err != nil {
		return nil, nil, err
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{i.key}})
	}))
	i.URL = srv.URL
	i.Verifier, err = authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: srv.URL})
	if err != nil {
		srv.Close()
		return nil, nil, err
	}
	return i, srv.Close, nil
}

// Token mints an approval token with c's claims; the issuer, audience, times, jti and (from the
// agent's name) tenant are filled in when empty.
func (i *ApprovalIssuer) Token(t testing.TB, c authn.ApprovalClaims) string {
	t.Helper()
	if c.Tenant == "" {
		if tenant, _, ok := splitAgent(c.Agent); ok {
			c.Tenant = tenant
		}
	}
	if c.Issuer == "" {
		c.Issuer = i.URL + "/t/" + c.Tenant
	}
	if c.Audience == "" {
		c.Audience = authn.ApprovalAudience
	}
	if c.IssuedAt == 0 {
		c.IssuedAt = time.Now().Unix()
	}
	if c.Expiry == 0 {
		c.Expiry = c.IssuedAt + int64(authn.MaxApprovalTokenLifetime/time.Second)
	}
	if c.ID == "" {
		var b [12]byte
		_, _ = rand.Read(b[:])
		c.ID = base64.RawURLEncoding.EncodeToString(b[:])
	}
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := i.signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func splitAgent(name string) (tenant, id string, ok bool) {
	const prefix = "tenants/"
	if len(name) <= len(prefix) || name[:len(prefix)] != prefix {
		return "", "", false
	}
	rest := name[len(prefix):]
	for j := 0; j < len(rest); j++ {
		if rest[j] == '/' {
			return rest[:j], rest[j+1:], true
		}
	}
	return "", "", false
}
