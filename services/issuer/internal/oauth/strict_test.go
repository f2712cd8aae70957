package oauth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
	"github.com/agentid/agentid/services/issuer/internal/oauth"
)

// addClient registers another client of tenant acme with the fixture's client key (kid c1).
func (f *coreFixture) addClient(t *testing.T, c *issuerv1.Client) {
	t.Helper()
	pub := jose.JSONWebKey{Key: &f.client.PublicKey, KeyID: f.kid, Algorithm: "ES256", Use: "sig"}
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}})
	c.PublicJwks = string(set)
	norm, _, err := credentials.NormalizeClient(tenant, c, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.creds.Apply(context.Background(), event(t, credentials.EventClientCreated, tenant, c.GetClientId(), &issuerv1.ClientCreated{Client: norm})); err != nil {
		t.Fatal(err)
	}
}

// assertionFor signs an assertion for clientID with the given header typ ("" for none), audience
// (a string, or an array when several) and lifetime.
func (f *coreFixture) assertionFor(t *testing.T, clientID, typ string, aud []string, exp time.Duration) string {
	t.Helper()
	opts := &jose.SignerOptions{}
	if typ != "" {
		opts = opts.WithType(jose.ContentType(typ))
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: f.client, KeyID: f.kid}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	s, err := jwt.Signed(signer).Claims(jwt.Claims{
		Issuer: clientID, Subject: clientID, Audience: jwt.Audience(aud),
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(exp)), ID: rand.Text(),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tokenWith asks for a token with the assertion and extra form fields (pairs).
func (f *coreFixture) tokenWith(assertion string, extra ...string) (*oauth.TokenResponse, *oauth.Error) {
	return f.srv.Token(context.Background(), tenant, oauth.Request{ContentType: oauth.FormContentType,
		Body: strings.NewReader(form(assertion, extra...))})
}

// audienceOf returns the aud of an access token the fixture's server issued.
func audienceOf(t *testing.T, f *coreFixture, raw string) []string {
	t.Helper()
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var c jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		t.Fatal(err)
	}
	return c.Audience
}

func TestAssertionAudMustBeIssuer(t *testing.T) {
	tests := []struct {
		name string
		aud  []string
		ok   bool
	}{
		{name: "issuer identifier", aud: []string{issuer}, ok: true},
		{name: "token endpoint URL", aud: []string{issuer + "/oauth2/token"}},
		{name: "introspection endpoint URL", aud: []string{issuer + "/oauth2/introspect"}},
		{name: "issuer and token endpoint", aud: []string{issuer, issuer + "/oauth2/token"}},
		{name: "issuer twice", aud: []string{issuer, issuer}},
		{name: "issuer with a trailing slash", aud: []string{issuer + "/"}},
		{name: "another tenant's issuer", aud: []string{publicURL + "/t/other"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newCore(t)
			resp, oerr := f.tokenWith(f.assertionFor(t, clientID, "", tt.aud, time.Minute))
			if tt.ok {
				if oerr != nil {
					t.Fatalf("aud %v refused: %v", tt.aud, oerr)
				}
				return
			}
			if oerr == nil || oerr.Code != oauth.ErrInvalidClient || oerr.Reason != "bad_claims" || resp != nil {
				t.Fatalf("aud %v: got %v, %v; want invalid_client (bad_claims)", tt.aud, resp, oerr)
			}
		})
	}
	// The same rule at the introspection and revocation endpoints: their own URLs are refused.
	f := newCore(t)
	for _, endpoint := range []string{"/oauth2/introspect", "/oauth2/revoke"} {
		body := url.Values{"token": {"x"}, "client_assertion_type": {oauth.ClientAssertionTypeJWT},
			"client_assertion": {f.assertionFor(t, clientID, "", []string{issuer + endpoint}, time.Minute)}}.Encode()
		var oerr *oauth.Error
		if endpoint == "/oauth2/introspect" {
			_, oerr = f.srv.Introspect(context.Background(), tenant, oauth.Request{ContentType: oauth.FormContentType, Body: strings.NewReader(body)})
		} else {
			oerr = f.srv.Revoke(context.Background(), tenant, oauth.Request{ContentType: oauth.FormContentType, Body: strings.NewReader(body)})
		}
		if oerr == nil || oerr.Code != oauth.ErrInvalidClient {
			t.Fatalf("%s with aud = its own URL: %v, want invalid_client", endpoint, oerr)
		}
	}
}

func TestAssertionTypRefused(t *testing.T) {
	tests := []struct {
		typ string
		ok  bool
	}{
		{typ: "", ok: true},
		{typ: "JWT", ok: true},
		{typ: "jwt", ok: true},
		{typ: "client-authentication+jwt", ok: true},
		{typ: "application/client-authentication+jwt", ok: true},
		{typ: "at+jwt"},
		{typ: "application/at+jwt"},
		{typ: "dpop+jwt"},
		{typ: "approval+jwt"},
		{typ: "oauth-authz-req+jwt"},
		{typ: "JOSE"},
	}
	for _, tt := range tests {
		t.Run("typ="+tt.typ, func(t *testing.T) {
			f := newCore(t)
			_, oerr := f.tokenWith(f.assertionFor(t, clientID, tt.typ, []string{issuer}, time.Minute))
			if tt.ok {
				if oerr != nil {
					t.Fatalf("typ %q refused: %v", tt.typ, oerr)
				}
				return
			}
			if oerr == nil || oerr.Code != oauth.ErrInvalidClient || oerr.Reason != "wrong_typ" {
				t.Fatalf("typ %q: %v, want invalid_client (wrong_typ)", tt.typ, oerr)
			}
		})
	}
}

func TestInvalidClientDescriptionsIdentical(t *testing.T) {
	f := newCore(t)
	f.addClient(t, &issuerv1.Client{ClientId: "gone", Scopes: []string{"orders.read"}})
	if err := f.creds.Apply(context.Background(), event(t, credentials.EventClientDisabled, tenant, "gone", &issuerv1.ClientDisabled{
		Name: credentials.ClientName(tenant, "gone"), Reason: "test", RevokeTime: timestamppb.Now()})); err != nil {
		t.Fatal(err)
	}
	f.addClient(t, &issuerv1.Client{ClientId: "idle", Agent: "tenants/acme/agents/idle", Environment: "dev", Resources: []string{ordersAPI}})
	f.agents.set("tenants/acme/agents/idle", registryv1.AgentState_AGENT_STATE_RETIRED, nil)

	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signWith := func(key *ecdsa.PrivateKey, kid string) string {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		s, err := jwt.Signed(signer).Claims(jwt.Claims{Issuer: clientID, Subject: clientID, Audience: jwt.Audience{issuer},
			IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute)), ID: rand.Text()}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	replayed := f.assertion(t, issuer, time.Minute)
	if _, oerr := f.tokenWith(replayed); oerr != nil {
		t.Fatal(oerr)
	}
	good := func() string { return f.assertion(t, issuer, time.Minute) }

	tests := []struct {
		name       string
		body       string
		authz      string
		wantReason string
	}{
		{name: "unknown client", body: form(f.assertionFor(t, "nobody", "", []string{issuer}, time.Minute)), wantReason: "unknown_client"},
		{name: "disabled client", body: form(f.assertionFor(t, "gone", "", []string{issuer}, time.Minute)), wantReason: "client_disabled"},
		{name: "unknown kid", body: form(signWith(f.client, "c2")), wantReason: "unknown_kid"},
		{name: "bad signature", body: form(signWith(otherKey, f.kid)), wantReason: "bad_signature"},
		{name: "replayed", body: form(replayed), wantReason: "replayed"},
		{name: "expired", body: form(f.sign(t, issuer, time.Now().Add(-5*time.Minute), time.Minute)), wantReason: "bad_claims"},
		{name: "wrong aud", body: form(f.assertion(t, issuer+"/oauth2/token", time.Minute)), wantReason: "bad_claims"},
		{name: "wrong typ", body: form(f.assertionFor(t, clientID, "at+jwt", []string{issuer}, time.Minute)), wantReason: "wrong_typ"},
		{name: "agent not active", body: form(f.assertionFor(t, "idle", "", []string{issuer}, time.Minute)), wantReason: "agent_not_active"},
		{name: "client_id differs", body: form(good(), "client_id", "someone-else"), wantReason: "client_id_mismatch"},
		{name: "malformed assertion", body: form("a.b.c"), wantReason: "malformed_assertion"},
		{name: "no client authentication", body: url.Values{"grant_type": {"client_credentials"}}.Encode(), wantReason: "no_client_authentication"},
		{name: "wrong assertion type", body: url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {"urn:x"},
			"client_assertion": {good()}}.Encode(), wantReason: "bad_assertion_type"},
		{name: "client_secret_basic", body: form(good()), authz: "Basic Zm9vOmJhcg==", wantReason: "unsupported_method"},
	}
	var first *oauth.Error
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, oerr := f.srv.Token(context.Background(), tenant, oauth.Request{ContentType: oauth.FormContentType,
				Body: strings.NewReader(tt.body), Authorization: tt.authz})
			if oerr == nil || resp != nil {
				t.Fatalf("got %v, %v; want invalid_client", resp, oerr)
			}
			if oerr.Reason != tt.wantReason {
				t.Fatalf("reason %q, want %q (%v)", oerr.Reason, tt.wantReason, oerr)
			}
			if oerr.Code != oauth.ErrInvalidClient || oerr.Description != oauth.ClientAuthFailedDescription || oerr.Status != http.StatusUnauthorized {
				t.Fatalf("%s: %q %q %d, want invalid_client %q 401", tt.name, oerr.Code, oerr.Description, oerr.Status, oauth.ClientAuthFailedDescription)
			}
			if tt.authz != "" {
				return // the challenge names the scheme the client tried (RFC 6749 §5.2)
			}
			if first == nil {
				first = oerr
			}
			if oerr.Challenge != first.Challenge {
				t.Fatalf("challenge %q differs from %q", oerr.Challenge, first.Challenge)
			}
		})
	}
}

func TestResourceMustBeRegistered(t *testing.T) {
	f := newCore(t)
	f.addClient(t, &issuerv1.Client{ClientId: "svc", Scopes: []string{"orders.read"}, Resources: []string{"https://a.example", "https://b.example"}})
	tests := []struct {
		name      string
		client    string
		resources []string
		wantAud   []string
		wantCode  string
	}{
		{name: "registered", client: clientID, resources: []string{ordersAPI}, wantAud: []string{ordersAPI}},
		{name: "unregistered", client: clientID, resources: []string{"https://evil.example"}, wantCode: oauth.ErrInvalidTarget},
		{name: "registered and unregistered", client: clientID, resources: []string{ordersAPI, "https://evil.example"}, wantCode: oauth.ErrInvalidTarget},
		{name: "prefix of a registered one", client: clientID, resources: []string{"https://orders.example/x"}, wantCode: oauth.ErrInvalidTarget},
		{name: "malformed", client: clientID, resources: []string{"relative"}, wantCode: oauth.ErrInvalidTarget},
		{name: "two registered", client: "svc", resources: []string{"https://a.example", "https://b.example"}, wantAud: []string{"https://a.example", "https://b.example"}},
		{name: "service unregistered", client: "svc", resources: []string{ordersAPI}, wantCode: oauth.ErrInvalidTarget},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var extra []string
			for _, r := range tt.resources {
				extra = append(extra, "resource", r)
			}
			resp, oerr := f.tokenWith(f.assertionFor(t, tt.client, "", []string{issuer}, time.Minute), extra...)
			if tt.wantCode != "" {
				if oerr == nil || oerr.Code != tt.wantCode || oerr.Status != http.StatusBadRequest {
					t.Fatalf("got %v, %v; want %s", resp, oerr, tt.wantCode)
				}
				return
			}
			if oerr != nil {
				t.Fatal(oerr)
			}
			if got := audienceOf(t, f, resp.AccessToken); !slices.Equal(got, tt.wantAud) {
				t.Fatalf("aud %v, want %v", got, tt.wantAud)
			}
		})
	}
}

func TestAPIAudienceNeverMixed(t *testing.T) {
	f := newCore(t)
	f.addClient(t, &issuerv1.Client{ClientId: "svc", Scopes: []string{"orders.read"}, Resources: []string{ordersAPI}})
	f.addClient(t, &issuerv1.Client{ClientId: "mixed", Agent: "tenants/acme/agents/mixed", Environment: "dev",
		Resources: []string{authn.APIAudience, ordersAPI}})
	for _, tt := range []struct {
		client    string
		resources []string
	}{
		{client: "svc", resources: []string{authn.APIAudience, ordersAPI}},
		{client: "svc", resources: []string{ordersAPI, authn.APIAudience}},
		{client: "mixed", resources: []string{authn.APIAudience, ordersAPI}},
	} {
		extra := []string{}
		for _, r := range tt.resources {
			extra = append(extra, "resource", r)
		}
		resp, oerr := f.tokenWith(f.assertionFor(t, tt.client, "", []string{issuer}, time.Minute), extra...)
		if oerr == nil || oerr.Code != oauth.ErrInvalidTarget {
			t.Fatalf("%s asking for %v: %v, %v; want invalid_target", tt.client, tt.resources, resp, oerr)
		}
	}
	// Each alone is fine: the service gets the API by default and its resource when it asks.
	for _, tt := range []struct {
		client  string
		extra   []string
		wantAud string
	}{
		{client: "svc", wantAud: authn.APIAudience},
		{client: "svc", extra: []string{"resource", authn.APIAudience}, wantAud: authn.APIAudience},
		{client: "svc", extra: []string{"resource", ordersAPI}, wantAud: ordersAPI},
		{client: "mixed", extra: []string{"resource", authn.APIAudience}, wantAud: authn.APIAudience},
	} {
		resp, oerr := f.tokenWith(f.assertionFor(t, tt.client, "", []string{issuer}, time.Minute), tt.extra...)
		if oerr != nil {
			t.Fatalf("%s %v: %v", tt.client, tt.extra, oerr)
		}
		if got := audienceOf(t, f, resp.AccessToken); !slices.Equal(got, []string{tt.wantAud}) {
			t.Fatalf("%s %v: aud %v, want %s", tt.client, tt.extra, got, tt.wantAud)
		}
	}
}

func TestAgentsNotGivenAPIAudienceByDefault(t *testing.T) {
	f := newCore(t)
	f.addClient(t, &issuerv1.Client{ClientId: "bare", Agent: "tenants/acme/agents/bare", Environment: "dev"})
	f.addClient(t, &issuerv1.Client{ClientId: "two", Agent: "tenants/acme/agents/two", Environment: "dev",
		Resources: []string{"https://a.example", "https://b.example"}})

	// One registered resource: it is the default audience, never the platform API.
	resp, oerr := f.tokenWith(f.assertion(t, issuer, time.Minute))
	if oerr != nil {
		t.Fatal(oerr)
	}
	if got := audienceOf(t, f, resp.AccessToken); !slices.Equal(got, []string{ordersAPI}) {
		t.Fatalf("aud %v, want [%s]", got, ordersAPI)
	}
	if _, err := f.srv.VerifyAPIToken(resp.AccessToken); err == nil {
		t.Fatal("an agent's default token is accepted by the platform API")
	}
	for _, tt := range []struct {
		name, client string
		extra        []string
	}{
		{name: "no resource registered", client: "bare"},
		{name: "several registered, none asked", client: "two"},
		{name: "asks for the API unregistered", client: clientID, extra: []string{"resource", authn.APIAudience}},
		{name: "bare asks for the API", client: "bare", extra: []string{"resource", authn.APIAudience}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, oerr := f.tokenWith(f.assertionFor(t, tt.client, "", []string{issuer}, time.Minute), tt.extra...)
			if oerr == nil || oerr.Code != oauth.ErrInvalidTarget || resp != nil {
				t.Fatalf("got %v, %v; want invalid_target", resp, oerr)
			}
		})
	}
}

func TestIntrospectionLimitedToCallersOwnTokens(t *testing.T) {
	f := newCore(t)
	// rs-orders serves ordersAPI without the introspector role; gateway holds it; colleague is an agent
	// that may request ordersAPI too (as every dev agent may request https://files.example).
	f.addClient(t, &issuerv1.Client{ClientId: "rs-orders", Resources: []string{ordersAPI}})
	f.addClient(t, &issuerv1.Client{ClientId: "rs-other", Resources: []string{"https://other.example"}})
	f.addClient(t, &issuerv1.Client{ClientId: "gateway", Roles: []string{string(authn.RoleIntrospector)}})
	f.addClient(t, &issuerv1.Client{ClientId: "peer", Agent: "tenants/acme/agents/peer", Environment: "dev", Resources: []string{"https://other.example"}})
	f.addClient(t, &issuerv1.Client{ClientId: "colleague", Agent: "tenants/acme/agents/colleague", Environment: "dev", Resources: []string{ordersAPI}})

	agentTok, oerr := f.tokenWith(f.assertion(t, issuer, time.Minute)) // aud ordersAPI
	if oerr != nil {
		t.Fatal(oerr)
	}
	introspect := func(caller, token string) *oauth.Introspection {
		t.Helper()
		in, oerr := f.srv.Introspect(context.Background(), tenant, oauth.Request{ContentType: oauth.FormContentType,
			Body: strings.NewReader(url.Values{"token": {token}, "client_assertion_type": {oauth.ClientAssertionTypeJWT},
				"client_assertion": {f.assertionFor(t, caller, "", []string{issuer}, time.Minute)}}.Encode())})
		if oerr != nil {
			t.Fatalf("introspection by %s: %v", caller, oerr)
		}
		return in
	}
	tests := []struct {
		caller     string
		wantActive bool
	}{
		{caller: clientID, wantActive: true},     // the caller's own token
		{caller: "gateway", wantActive: true},    // introspector role
		{caller: "rs-orders", wantActive: false}, // meant for its resource, but no introspector role
		{caller: "colleague", wantActive: false}, // an agent that may request the same resource
		{caller: "rs-other", wantActive: false},  // meant for someone else
		{caller: "peer", wantActive: false},      // another agent probing
	}
	for _, tt := range tests {
		t.Run(tt.caller, func(t *testing.T) {
			in := introspect(tt.caller, agentTok.AccessToken)
			if in.Active != tt.wantActive {
				t.Fatalf("active = %v, want %v", in.Active, tt.wantActive)
			}
			if !in.Active && (in.ClientID != "" || in.Scope != "" || len(in.Audience) != 0) {
				t.Fatalf("an inactive answer says more than active:false: %+v", in)
			}
		})
	}
}
