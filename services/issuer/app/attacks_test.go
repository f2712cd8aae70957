package app_test

import (
	"context"
	"crypto/ecdsa"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// attackFixture is an issuer with one registered agent client in tenant acme.
func attackFixture(t *testing.T) (*replica, *testClient) {
	t.Helper()
	r := startIssuer(t)
	c := newTestClient(t, "acme", "agent-a")
	c.register(t, r, "orders.read", "orders.write")
	return r, c
}

func TestTokenRejectsReplayedJTI(t *testing.T) {
	r, c := attackFixture(t)
	assertion := c.assertion(t, r)
	if first := postForm(t, r.tokenURL("acme"), tokenForm(assertion)); first.status != http.StatusOK {
		t.Fatalf("first use: %d %v", first.status, first.body)
	}
	again := postForm(t, r.tokenURL("acme"), tokenForm(assertion))
	wantOAuthError(t, again, http.StatusUnauthorized, "invalid_client")
	if again.str("error_description") != "client authentication failed" {
		t.Fatalf("description = %q", again.str("error_description"))
	}
}

func TestTokenRejectsAssertionForAnotherAudience(t *testing.T) {
	r, c := attackFixture(t)
	for _, aud := range []any{
		"https://other-as.example/token",
		r.issuer("beta"),
		r.issuer("acme") + "/",
		r.issuer("acme") + "/oauth2/introspect",
		r.issuer("acme") + "/oauth2/token", // rfc7523bis: not even the token endpoint's own URL
		[]string{r.issuer("acme"), "https://other-as.example"},
		[]string{r.issuer("acme"), r.issuer("acme") + "/oauth2/token"},
	} {
		claims := c.claims("")
		claims["aud"] = aud
		resp := postForm(t, r.tokenURL("acme"), tokenForm(c.sign(t, claims)))
		wantOAuthError(t, resp, http.StatusUnauthorized, "invalid_client")
	}
	// The issuer identifier alone is the accepted audience.
	if resp := postForm(t, r.tokenURL("acme"), tokenForm(c.sign(t, c.claims(r.issuer("acme"))))); resp.status != http.StatusOK {
		t.Fatalf("issuer audience: %d %v", resp.status, resp.body)
	}
}

func TestTokenRejectsExpiredAssertion(t *testing.T) {
	r, c := attackFixture(t)
	claims := c.claims(r.issuer("acme"))
	claims["iat"] = time.Now().Add(-10 * time.Minute).Unix()
	claims["exp"] = time.Now().Add(-2 * time.Minute).Unix()
	resp := postForm(t, r.tokenURL("acme"), tokenForm(c.sign(t, claims)))
	wantOAuthError(t, resp, http.StatusUnauthorized, "invalid_client")
	if resp.str("error_description") != "client authentication failed" {
		t.Fatalf("description = %q", resp.str("error_description"))
	}
}

func TestTokenRejectsLongLivedAssertion(t *testing.T) {
	r, c := attackFixture(t)
	claims := c.claims(r.issuer("acme"))
	claims["exp"] = time.Now().Add(time.Hour).Unix()
	wantOAuthError(t, postForm(t, r.tokenURL("acme"), tokenForm(c.sign(t, claims))), http.StatusUnauthorized, "invalid_client")
	delete(claims, "exp")
	wantOAuthError(t, postForm(t, r.tokenURL("acme"), tokenForm(c.sign(t, claims))), http.StatusUnauthorized, "invalid_client")
}

func TestTokenRejectsAlgNone(t *testing.T) {
	r, c := attackFixture(t)
	signed := strings.Split(c.assertion(t, r), ".")
	none := b64(`{"alg":"none","kid":"`+c.kid+`","typ":"JWT"}`) + "." + signed[1] + "."
	resp := postForm(t, r.tokenURL("acme"), tokenForm(none))
	wantOAuthError(t, resp, http.StatusUnauthorized, "invalid_client")
}

func TestTokenRejectsHS256SignedWithThePublicKey(t *testing.T) {
	r, c := attackFixture(t)
	// The classic key-confusion attack: HMAC keyed with the client's public key material.
	point, err := c.key.Public().(*ecdsa.PublicKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range [][]byte{[]byte(c.jwks(t)), point} {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: secret},
			(&jose.SignerOptions{}).WithHeader(jose.HeaderKey("kid"), c.kid))
		if err != nil {
			t.Fatal(err)
		}
		jws, err := signer.Sign(mustJSON(t, c.claims(r.issuer("acme"))))
		if err != nil {
			t.Fatal(err)
		}
		forged, _ := jws.CompactSerialize()
		wantOAuthError(t, postForm(t, r.tokenURL("acme"), tokenForm(forged)), http.StatusUnauthorized, "invalid_client")
	}
}

func TestTokenRejectsUnknownKid(t *testing.T) {
	r, c := attackFixture(t)
	resp := postForm(t, r.tokenURL("acme"), tokenForm(c.signWithKid(t, c.claims(r.issuer("acme")), "not-registered")))
	wantOAuthError(t, resp, http.StatusUnauthorized, "invalid_client")
}

func TestTokenRejectsForeignKeyWithRegisteredKid(t *testing.T) {
	r, c := attackFixture(t)
	attacker := newTestClient(t, "acme", c.id)
	attacker.kid = c.kid // claims the victim's kid, signs with its own key
	resp := postForm(t, r.tokenURL("acme"), tokenForm(attacker.assertion(t, r)))
	wantOAuthError(t, resp, http.StatusUnauthorized, "invalid_client")
	if resp.str("error_description") != "client authentication failed" {
		t.Fatalf("description = %q", resp.str("error_description"))
	}
}

func TestTokenRejectsUnknownClient(t *testing.T) {
	r, _ := attackFixture(t)
	stranger := newTestClient(t, "acme", "stranger")
	resp := postForm(t, r.tokenURL("acme"), tokenForm(stranger.assertion(t, r)))
	wantOAuthError(t, resp, http.StatusUnauthorized, "invalid_client")
}

func TestTokenRejectsClientOfAnotherTenant(t *testing.T) {
	r, c := attackFixture(t)
	if err := r.app.EnsureSigningKey(t.Context(), "beta"); err != nil {
		t.Fatal(err)
	}
	claims := c.claims(r.issuer("beta"))
	resp := postForm(t, r.tokenURL("beta"), tokenForm(c.sign(t, claims)))
	wantOAuthError(t, resp, http.StatusUnauthorized, "invalid_client")
}

func TestTokenRejectsMismatchedClientID(t *testing.T) {
	r, c := attackFixture(t)
	other := newTestClient(t, "acme", "agent-b")
	other.register(t, r, "orders.read")
	resp := postForm(t, r.tokenURL("acme"), tokenForm(c.assertion(t, r), "client_id", other.id))
	wantOAuthError(t, resp, http.StatusUnauthorized, "invalid_client")
	claims := c.claims(r.issuer("acme"))
	claims["sub"] = other.id
	wantOAuthError(t, postForm(t, r.tokenURL("acme"), tokenForm(c.sign(t, claims))), http.StatusUnauthorized, "invalid_client")
}

func TestTokenRejectsDisabledClient(t *testing.T) {
	r, c := attackFixture(t)
	caller := newTestClient(t, "acme", "gateway")
	if err := r.app.EnsureClient(context.Background(), "acme", &issuerv1.Client{
		ClientId: caller.id, PublicJwks: caller.jwks(t), Roles: []string{"introspector"},
	}); err != nil {
		t.Fatal(err)
	}
	earlier := requestToken(t, r, c).str("access_token")
	if in := introspect(t, r, caller, "acme", earlier); in.body["active"] != true {
		t.Fatalf("before disabling: %v", in.body)
	}

	if _, err := r.admin(t).DisableClient(as("acme-admin"), &issuerv1.DisableClientRequest{
		Name: "tenants/acme/clients/" + c.id, Reason: "compromised", RequestId: "disable-1",
	}); err != nil {
		t.Fatal(err)
	}
	resp := postForm(t, r.tokenURL("acme"), tokenForm(c.assertion(t, r)))
	wantOAuthError(t, resp, http.StatusUnauthorized, "invalid_client")
	in := introspect(t, r, caller, "acme", earlier)
	if in.status != http.StatusOK || in.body["active"] != false || len(in.body) != 1 {
		t.Fatalf("introspection of a token of a disabled client = %d %v, want {active:false}", in.status, in.body)
	}
}

func TestTokenRejectsScopeOutsideTheClientScopes(t *testing.T) {
	r, c := attackFixture(t)
	for _, scope := range []string{"orders.delete", "orders.read admin", `bad"scope`} {
		resp := postForm(t, r.tokenURL("acme"), tokenForm(c.assertion(t, r), "scope", scope))
		wantOAuthError(t, resp, http.StatusBadRequest, "invalid_scope")
	}
	if resp := requestToken(t, r, c, "scope", "orders.write orders.write"); resp.str("scope") != "orders.write" {
		t.Fatalf("scope = %q", resp.str("scope"))
	}
}

func TestTokenRejectsUnsupportedGrantType(t *testing.T) {
	r, c := attackFixture(t)
	for _, grant := range []string{"password", "authorization_code", "urn:ietf:params:oauth:grant-type:jwt-bearer"} {
		v := tokenForm(c.assertion(t, r))
		v.Set("grant_type", grant)
		wantOAuthError(t, postForm(t, r.tokenURL("acme"), v), http.StatusBadRequest, "unsupported_grant_type")
	}
	v := tokenForm(c.assertion(t, r))
	v.Del("grant_type")
	wantOAuthError(t, postForm(t, r.tokenURL("acme"), v), http.StatusBadRequest, "invalid_request")
}

func TestTokenRejectsWrongContentType(t *testing.T) {
	r, c := attackFixture(t)
	body := tokenForm(c.assertion(t, r)).Encode()
	for _, ct := range []string{"application/json", "text/plain", "multipart/form-data; boundary=x", ""} {
		wantOAuthError(t, post(t, r.tokenURL("acme"), ct, body), http.StatusBadRequest, "invalid_request")
	}
	resp, err := http.Get(r.tokenURL("acme"))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET token endpoint = %d", resp.StatusCode)
	}
}

func TestTokenRejectsMissingClientAssertion(t *testing.T) {
	r, c := attackFixture(t)
	cases := map[string]url.Values{
		"no authentication": {"grant_type": {"client_credentials"}, "client_id": {c.id}},
		"no assertion":      {"grant_type": {"client_credentials"}, "client_assertion_type": {assertionType}},
		"wrong type":        {"grant_type": {"client_credentials"}, "client_assertion_type": {"urn:x"}, "client_assertion": {c.assertion(t, r)}},
		"garbage":           {"grant_type": {"client_credentials"}, "client_assertion_type": {assertionType}, "client_assertion": {"abc"}},
	}
	for name, v := range cases {
		t.Run(name, func(t *testing.T) {
			wantOAuthError(t, postForm(t, r.tokenURL("acme"), v), http.StatusUnauthorized, "invalid_client")
		})
	}
	basic := postForm(t, r.tokenURL("acme"), tokenForm(c.assertion(t, r)), "Authorization", "Basic "+b64(c.id+":secret"))
	wantOAuthError(t, basic, http.StatusUnauthorized, "invalid_client")
	if !strings.HasPrefix(basic.header.Get("WWW-Authenticate"), "Basic ") {
		t.Fatalf("WWW-Authenticate = %q", basic.header.Get("WWW-Authenticate"))
	}
}

func TestTokenRejectsDuplicateParametersAndHugeBodies(t *testing.T) {
	r, c := attackFixture(t)
	dup := tokenForm(c.assertion(t, r))
	dup.Add("scope", "orders.read")
	dup.Add("scope", "orders.write")
	wantOAuthError(t, postForm(t, r.tokenURL("acme"), dup), http.StatusBadRequest, "invalid_request")
	huge := tokenForm(c.assertion(t, r), "padding", strings.Repeat("x", 70<<10))
	wantOAuthError(t, postForm(t, r.tokenURL("acme"), huge), http.StatusBadRequest, "invalid_request")
}

func TestIntrospectionOfAnotherTenantsTokenIsInactive(t *testing.T) {
	r, c := attackFixture(t)
	betaCaller := newTestClient(t, "beta", "beta-rs")
	betaCaller.register(t, r)
	token := requestToken(t, r, c).str("access_token")
	in := introspect(t, r, betaCaller, "beta", token)
	if in.status != http.StatusOK || in.body["active"] != false || len(in.body) != 1 {
		t.Fatalf("tenant beta introspecting an acme token = %d %v, want {active:false}", in.status, in.body)
	}
	// The same caller cannot introspect at acme: it is not a client there.
	wantOAuthError(t, introspect(t, r, betaCaller, "acme", token), http.StatusUnauthorized, "invalid_client")
}
