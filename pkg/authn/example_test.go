package authn_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentid/agentid/pkg/authn"
)

// A resource server protects its routes with Middleware and RequireScopes, verifying tokens against
// the issuer's JWKS with a Denylist for push revocation, and records every decision.
func Example_middleware() {
	// A stand-in for the issuer: one tenant's JWKS. In production IssuerBaseURL is the issuer's URL,
	// and a RevocationFeed keeps the Denylist current from the REVOCATIONS stream.
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwk := jose.JSONWebKey{Key: priv, KeyID: "k1", Algorithm: "ES256", Use: "sig"}
	issuer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk.Public()}})
	}))
	defer issuer.Close()

	deny := authn.NewDenylist(authn.DenylistConfig{})
	verifier, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{
		IssuerBaseURL: issuer.URL, Audience: "https://files.example", Revocations: deny,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	record := authn.AccessRecorderFunc(func(ev authn.AccessEvent) {
		fmt.Printf("access %s %s allowed=%v reason=%q\n", ev.Action, ev.Resource, ev.Allowed, ev.Reason)
	})
	mux := http.NewServeMux()
	mux.Handle("GET /files/{name}", authn.RequireScopes("files.read")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := authn.PrincipalFrom(r.Context())
		fmt.Fprintf(w, "%s for %s", r.PathValue("name"), p.ID)
	})))
	h := authn.Middleware(verifier, authn.WithAllowedTenants("acme"), authn.WithAccessRecorder(record))(mux)

	// A token as the issuer would mint it for an agent.
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jwk}, (&jose.SignerOptions{}).WithType("at+jwt"))
	now := time.Now()
	token, _ := jwt.Signed(signer).Claims(authn.Claims{
		Issuer: issuer.URL + "/t/acme", Tenant: "acme", Subject: "report-agent", ClientID: "report-agent",
		Audience: []string{"https://files.example"}, Scope: "files.read", ID: "t1",
		IssuedAt: now, Expiry: now.Add(5 * time.Minute),
	}).Serialize()

	for _, auth := range []string{"Bearer " + token, ""} {
		req := httptest.NewRequest(http.MethodGet, "https://files.example/files/q3.csv", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		fmt.Println(rec.Code, rec.Header().Get("WWW-Authenticate"), rec.Body.String())
	}
	// Output:
	// access GET /files/q3.csv allowed=true reason=""
	// 200  q3.csv for report-agent
	// access GET /files/q3.csv allowed=false reason="TOKEN_MISSING"
	// 401 Bearer {"error":"unauthorized"}
}
