package app_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// accessTokenClaims are the claims of an access token as a third-party verifier sees them.
type accessTokenClaims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  any      `json:"aud"`
	Expiry    int64    `json:"exp"`
	IssuedAt  int64    `json:"iat"`
	NotBefore int64    `json:"nbf"`
	ID        string   `json:"jti"`
	ClientID  string   `json:"client_id"`
	Scope     string   `json:"scope"`
	Tenant    string   `json:"tenant"`
	Env       string   `json:"env"`
	Agent     string   `json:"agent"`
	Roles     []string `json:"roles"`
}

func TestClientCredentialsTokenVerifiesWithOIDC(t *testing.T) {
	r := startIssuer(t)
	ctx := context.Background()
	c := newTestClient(t, "acme", "agent-1")
	c.register(t, r, "orders.read", "orders.write")

	// A third-party OAuth client: client credentials with a private-key JWT assertion.
	cfg := clientcredentials.Config{
		ClientID:  c.id,
		TokenURL:  r.tokenURL("acme"),
		Scopes:    []string{"orders.read"},
		AuthStyle: oauth2.AuthStyleInParams,
		EndpointParams: url.Values{
			"client_assertion_type": {assertionType},
			"client_assertion":      {c.assertion(t, r)},
		},
	}
	tok, err := cfg.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tok.TokenType != "Bearer" || tok.Expiry.Before(time.Now().Add(9*time.Minute)) || tok.Extra("scope") != "orders.read" {
		t.Fatalf("token = %+v scope %v", tok, tok.Extra("scope"))
	}

	// A third-party verifier: OIDC discovery of the tenant issuer, then JWKS verification.
	provider, err := oidc.NewProvider(ctx, r.issuer("acme"))
	if err != nil {
		t.Fatal(err)
	}
	verified, err := provider.VerifierContext(ctx, &oidc.Config{SkipClientIDCheck: true}).Verify(ctx, tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	// An agent's token is for its registered resource, never the platform API by default.
	if !slices.Equal(verified.Audience, []string{agentResource}) {
		t.Fatalf("aud = %v, want [%s]", verified.Audience, agentResource)
	}
	var claims accessTokenClaims
	if err := verified.Claims(&claims); err != nil {
		t.Fatal(err)
	}
	want := accessTokenClaims{
		Issuer: r.issuer("acme"), Subject: c.id, Audience: agentResource, ClientID: c.id, Scope: "orders.read",
		Tenant: "acme", Env: "prod", Agent: "tenants/acme/agents/agent-1",
	}
	got := claims
	got.Expiry, got.IssuedAt, got.NotBefore, got.ID = 0, 0, 0, ""
	if got.Issuer != want.Issuer || got.Subject != want.Subject || got.Audience != want.Audience || got.ClientID != want.ClientID ||
		got.Scope != want.Scope || got.Tenant != want.Tenant || got.Env != want.Env || got.Agent != want.Agent || len(got.Roles) != 0 {
		t.Fatalf("claims = %+v, want %+v", got, want)
	}
	if claims.Expiry-claims.IssuedAt != 600 || claims.NotBefore != claims.IssuedAt || claims.ID == "" {
		t.Fatalf("times/jti: exp %d iat %d nbf %d jti %q", claims.Expiry, claims.IssuedAt, claims.NotBefore, claims.ID)
	}

	// RFC 9068 header: typ at+jwt, ES256, kid of the tenant's key.
	jws, err := jose.ParseSigned(tok.AccessToken, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	h := jws.Signatures[0].Header
	if h.ExtraHeaders[jose.HeaderType] != "at+jwt" || h.Algorithm != "ES256" || h.KeyID == "" {
		t.Fatalf("header = %+v", h)
	}

	// The platform's own verifier accepts it too, as the resource server of its audience.
	v, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: r.base, Audience: agentResource})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := v.Verify(ctx, tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if p := authn.PrincipalFromClaims(pc); p.Kind != authn.KindAgent || p.Tenant != "acme" || p.ID != c.id {
		t.Fatalf("principal = %+v", p)
	}
}

func TestTokenCarriesAllClientScopesAndResourceAudience(t *testing.T) {
	r := startIssuer(t)
	c := newTestClient(t, "acme", "agent-2")
	c.resources = []string{"https://api.example.com/orders", "https://mcp.example.com/"}
	c.register(t, r, "orders.read", "orders.write")

	resp := requestToken(t, r, c, "resource", "https://api.example.com/orders", "resource", "https://mcp.example.com/")
	if resp.str("scope") != "orders.read orders.write" || resp.str("token_type") != "Bearer" || resp.body["expires_in"] != float64(600) {
		t.Fatalf("response = %v", resp.body)
	}
	if resp.header.Get("Cache-Control") != "no-store" || resp.header.Get("X-Request-Id") == "" {
		t.Fatalf("headers = %v", resp.header)
	}
	in := introspect(t, r, c, "acme", resp.str("access_token"))
	aud, _ := in.body["aud"].([]any)
	if in.body["active"] != true || len(aud) != 2 || aud[0] != "https://api.example.com/orders" || aud[1] != "https://mcp.example.com/" {
		t.Fatalf("introspection = %v", in.body)
	}

	bad := postForm(t, r.tokenURL("acme"), tokenForm(c.assertion(t, r), "resource", "/relative"))
	wantOAuthError(t, bad, http.StatusBadRequest, "invalid_target")
}

func TestEd25519ClientAssertion(t *testing.T) {
	r := startIssuer(t)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c := &testClient{tenant: "acme", id: "ed-agent", key: priv, alg: jose.EdDSA, kid: "ed1"}
	c.register(t, r, "a")
	resp := requestToken(t, r, c)
	if resp.str("scope") != "a" {
		t.Fatalf("response = %v", resp.body)
	}
}

func TestPlatformIdentityWithCredentialFile(t *testing.T) {
	r := startIssuer(t)
	ctx := context.Background()
	cred, err := authn.NewCredential(authn.SystemTenant, "bootstrap-admin", r.issuer(authn.SystemTenant))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := cred.PublicJWKS()
	if err != nil {
		t.Fatal(err)
	}
	admin := &issuerv1.Client{ClientId: "bootstrap-admin", PublicJwks: string(pub), Roles: []string{"platform-admin"}}
	for range 2 { // idempotent
		if err := r.app.EnsureClient(ctx, authn.SystemTenant, admin); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := cred.TokenSource(ctx).Token()
	if err != nil {
		t.Fatal(err)
	}
	v, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: r.base})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(ctx, tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if p := authn.PrincipalFromClaims(claims); !p.IsPlatformAdmin() || p.Kind != authn.KindService {
		t.Fatalf("principal = %+v", p)
	}

	// A different registration for the same client id is refused.
	other := newTestClient(t, authn.SystemTenant, "bootstrap-admin")
	err = r.app.EnsureClient(ctx, authn.SystemTenant, &issuerv1.Client{ClientId: "bootstrap-admin", PublicJwks: other.jwks(t), Roles: []string{"platform-admin"}})
	if err == nil || !strings.Contains(err.Error(), "different registration") {
		t.Fatalf("EnsureClient with other keys = %v, want AlreadyExists", err)
	}
}

func TestDiscoveryAndJWKS(t *testing.T) {
	r := startIssuer(t)
	get := func(path string) (*http.Response, map[string]any) {
		t.Helper()
		resp, err := http.Get(r.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		raw, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("GET %s: %q: %v", path, raw, err)
		}
		return resp, m
	}
	iss := r.issuer("system")
	for _, path := range []string{
		"/t/system/.well-known/openid-configuration",
		"/t/system/.well-known/oauth-authorization-server",
		"/.well-known/oauth-authorization-server/t/system",
	} {
		resp, md := get(path)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s = %d", path, resp.StatusCode)
		}
		want := map[string]any{
			"issuer": iss, "jwks_uri": iss + "/jwks.json", "token_endpoint": iss + "/oauth2/token",
			"introspection_endpoint": iss + "/oauth2/introspect",
		}
		for k, v := range want {
			if md[k] != v {
				t.Errorf("%s: %s = %v, want %v", path, k, md[k], v)
			}
		}
		for k, v := range map[string]string{
			"grant_types_supported":                            "client_credentials",
			"token_endpoint_auth_methods_supported":            "private_key_jwt",
			"token_endpoint_auth_signing_alg_values_supported": "ES256 EdDSA",
			"id_token_signing_alg_values_supported":            "ES256",
			"subject_types_supported":                          "public",
			"response_types_supported":                         "token",
			"introspection_endpoint_auth_methods_supported":    "private_key_jwt",
		} {
			list, _ := md[k].([]any)
			var got []string
			for _, x := range list {
				got = append(got, x.(string))
			}
			if strings.Join(got, " ") != v {
				t.Errorf("%s: %s = %v, want %s", path, k, md[k], v)
			}
		}
	}

	resp, set := get("/t/system/jwks.json")
	keysList, _ := set["keys"].([]any)
	if resp.StatusCode != http.StatusOK || len(keysList) != 1 || !strings.Contains(resp.Header.Get("Cache-Control"), "max-age") {
		t.Fatalf("jwks: %d %v %v", resp.StatusCode, set, resp.Header)
	}
	k := keysList[0].(map[string]any)
	if k["kty"] != "EC" || k["crv"] != "P-256" || k["alg"] != "ES256" || k["use"] != "sig" || k["kid"] == "" || k["d"] != nil {
		t.Fatalf("jwk = %v", k)
	}

	for _, path := range []string{"/t/nobody/jwks.json", "/t/nobody/.well-known/openid-configuration", "/t/NOT_A_TENANT/jwks.json"} {
		resp, body := get(path)
		if resp.StatusCode != http.StatusNotFound || body["error"] == nil {
			t.Errorf("GET %s = %d %v, want 404 JSON", path, resp.StatusCode, body)
		}
	}
	nf := postForm(t, r.tokenURL("nobody"), url.Values{"grant_type": {"client_credentials"}})
	if nf.status != http.StatusNotFound {
		t.Errorf("token endpoint of unknown tenant = %d", nf.status)
	}
}

func TestNewTenantGetsSigningKey(t *testing.T) {
	n := testkit.StartNATS(t)
	r := startReplica(t, n, "")
	ctx := context.Background()
	if _, err := r.store.Append(ctx, eventstore.Append{
		Tenant: "globex", AggregateType: eventstore.AggregateTenant, AggregateID: "globex", ExpectedVersion: 0,
		IdempotencyKey: "create-globex", Type: "tenant.created", Subject: "tenants/globex",
		Data:     &registryv1.TenantCreated{Tenant: &registryv1.Tenant{Name: "tenants/globex", TenantId: "globex", CreateTime: timestamppb.Now()}},
		Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "admin", Kind: eventstore.ActorHuman}},
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(testkit.DefaultWait)
	for {
		resp, err := http.Get(r.srv.URL + "/t/globex/jwks.json")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tenant globex has no JWKS after 10s (last status %d)", resp.StatusCode)
		}
		time.Sleep(50 * time.Millisecond)
	}
	keys, err := r.admin(t).ListSigningKeys(as("platform-admin"), &issuerv1.ListSigningKeysRequest{Parent: "tenants/globex"})
	if err != nil || len(keys.GetKeys()) != 1 || keys.GetKeys()[0].GetAlgorithm() != "ES256" {
		t.Fatalf("ListSigningKeys = %v, %v", keys, err)
	}
}

func TestSigningKeyIsSealedAtRest(t *testing.T) {
	r := startIssuer(t)
	events, _, err := r.store.Load(context.Background(), "system", eventstore.AggregateSigningKey, "system")
	if err != nil || len(events) != 1 {
		t.Fatalf("signing key events = %d, %v", len(events), err)
	}
	ev, err := eventstore.DecodeAs[*issuerv1.SigningKeyCreated](events[0])
	if err != nil {
		t.Fatal(err)
	}
	if json.Valid(ev.GetSealedPrivateJwk()) || strings.Contains(string(events[0].Data), `"d"`) {
		t.Fatal("the private key is stored in clear")
	}
	var pub map[string]any
	if err := json.Unmarshal([]byte(ev.GetKey().GetPublicJwk()), &pub); err != nil || pub["d"] != nil || pub["kid"] != ev.GetKey().GetKeyId() {
		t.Fatalf("public_jwk = %v (%v)", pub, err)
	}
	if ev.GetKekId() == "" {
		t.Fatal("kek_id not recorded")
	}
}

func TestTelemetryForIssuedAndDeniedRequests(t *testing.T) {
	n := testkit.StartNATS(t)
	r := startReplica(t, n, "")
	c := newTestClient(t, "acme", "agent-t")
	c.register(t, r, "orders.read")

	ok := postForm(t, r.tokenURL("acme"), tokenForm(c.assertion(t, r)), "X-Request-Id", "req-issued-1")
	if ok.status != http.StatusOK {
		t.Fatalf("token: %v", ok.body)
	}
	denied := postForm(t, r.tokenURL("acme"), tokenForm(c.assertion(t, r), "scope", "orders.delete"), "X-Request-Id", "req-denied-1")
	wantOAuthError(t, denied, http.StatusBadRequest, "invalid_scope")

	js := n.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), testkit.DefaultWait)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, eventstore.StreamTelemetry, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"telemetry.acme.token.requested"}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*issuerv1.TokenRequested{}
	for len(got) < 2 {
		msg, err := cons.Next(jetstream.FetchMaxWait(testkit.DefaultWait))
		if err != nil {
			t.Fatalf("telemetry after %d records: %v", len(got), err)
		}
		ev, err := eventstore.EventFromMsg(msg)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != "token.requested.batch" || ev.Metadata.Tenant != "acme" || ev.Subject != "tenants/acme" {
			t.Fatalf("event = %+v", ev)
		}
		b, err := eventstore.DecodeAs[*issuerv1.TokenRequestedBatch](ev)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range b.GetRequests() {
			if m.GetTime() == nil || m.GetTenant() != "acme" {
				t.Fatalf("record without its time or tenant: %v", m)
			}
			got[m.GetRequestId()] = m
		}
	}
	issued, deniedRec := got["req-issued-1"], got["req-denied-1"]
	if issued.GetOutcome() != issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED || issued.GetClientId() != c.id ||
		issued.GetAgent() != "tenants/acme/agents/agent-t" || issued.GetEnvironment() != "prod" ||
		issued.GetGrantType() != "client_credentials" || issued.GetTokenId() == "" || issued.GetExpireTime() == nil ||
		!slices.Equal(issued.GetScopes(), []string{"orders.read"}) || !slices.Equal(issued.GetAudiences(), []string{agentResource}) ||
		!strings.HasPrefix(issued.GetRemoteAddr(), "127.0.0.1:") {
		t.Fatalf("issued record = %v", issued)
	}
	if deniedRec.GetOutcome() != issuerv1.TokenOutcome_TOKEN_OUTCOME_DENIED || deniedRec.GetError() != "invalid_scope" ||
		deniedRec.GetClientId() != c.id || deniedRec.GetTokenId() != "" {
		t.Fatalf("denied record = %v", deniedRec)
	}
	if r.app.TelemetryDropped() != 0 {
		t.Fatalf("dropped %d events", r.app.TelemetryDropped())
	}
}

func TestIntrospectionCallers(t *testing.T) {
	r := startIssuer(t)
	ctx := context.Background()
	agent := newTestClient(t, "acme", "agent-i")
	agent.register(t, r, "orders.read")
	token := requestToken(t, r, agent).str("access_token")

	// Platform identities that call with bearer tokens minted by this issuer.
	bearer := func(tenant, id string, roles ...string) string {
		t.Helper()
		cred, err := authn.NewCredential(tenant, id, r.issuer(tenant))
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := cred.PublicJWKS()
		if err := r.app.EnsureClient(ctx, tenant, &issuerv1.Client{ClientId: id, PublicJwks: string(pub), Roles: roles}); err != nil {
			t.Fatal(err)
		}
		tok, err := cred.TokenSource(ctx).Token()
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken
	}
	platformAdmin := bearer("system", "ops", "platform-admin")
	acmeAdmin := bearer("acme", "acme-admin", "tenant-admin")
	acmeAuditor := bearer("acme", "acme-auditor", "auditor")
	betaAdmin := bearer("beta", "beta-admin", "tenant-admin")
	acmeIntrospector := bearer("acme", "acme-gateway", "introspector")

	form := url.Values{"token": {token}}
	tests := []struct {
		name       string
		authz      string
		wantStatus int
		wantError  string
	}{
		{name: "platform-admin of system", authz: "Bearer " + platformAdmin, wantStatus: http.StatusOK},
		{name: "tenant-admin of the tenant", authz: "Bearer " + acmeAdmin, wantStatus: http.StatusOK},
		{name: "auditor of the tenant", authz: "Bearer " + acmeAuditor, wantStatus: http.StatusForbidden, wantError: "insufficient_scope"},
		{name: "tenant-admin of another tenant", authz: "Bearer " + betaAdmin, wantStatus: http.StatusForbidden, wantError: "insufficient_scope"},
		{name: "introspector of the tenant", authz: "Bearer " + acmeIntrospector, wantStatus: http.StatusOK},
		{name: "agent token as bearer (not an API token)", authz: "Bearer " + token, wantStatus: http.StatusUnauthorized, wantError: "invalid_token"},
		{name: "garbage bearer", authz: "Bearer abc.def.ghi", wantStatus: http.StatusUnauthorized, wantError: "invalid_token"},
		{name: "basic auth", authz: "Basic " + b64("agent-i:secret"), wantStatus: http.StatusUnauthorized, wantError: "invalid_client"},
		{name: "unauthenticated", wantStatus: http.StatusUnauthorized, wantError: "invalid_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hdr []string
			if tt.authz != "" {
				hdr = []string{"Authorization", tt.authz}
			}
			resp := postForm(t, r.introspectURL("acme"), form, hdr...)
			if tt.wantError != "" {
				wantOAuthError(t, resp, tt.wantStatus, tt.wantError)
				return
			}
			if resp.status != tt.wantStatus || resp.body["active"] != true || resp.str("client_id") != agent.id ||
				resp.str("token_type") != "Bearer" || resp.str("tenant") != "acme" || resp.str("iss") != r.issuer("acme") ||
				resp.str("scope") != "orders.read" || resp.str("jti") == "" || resp.body["exp"] == nil {
				t.Fatalf("introspection = %d %v", resp.status, resp.body)
			}
		})
	}

	// A client of the tenant may introspect with private_key_jwt; garbage tokens are inactive.
	if resp := introspect(t, r, agent, "acme", "not-a-token"); resp.status != http.StatusOK || resp.body["active"] != false || len(resp.body) != 1 {
		t.Fatalf("garbage token introspection = %d %v", resp.status, resp.body)
	}
	missing := postForm(t, r.introspectURL("acme"), url.Values{
		"client_assertion_type": {assertionType}, "client_assertion": {agent.sign(t, agent.claims(r.issuer("acme")))},
	})
	wantOAuthError(t, missing, http.StatusBadRequest, "invalid_request")
}

func TestAdminClientLifecycle(t *testing.T) {
	r := startIssuer(t)
	admin := r.admin(t)
	ctx := as("platform-admin")
	c := newTestClient(t, "acme", "agent-l")
	req := &issuerv1.CreateClientRequest{
		Parent:    "tenants/acme",
		Client:    &issuerv1.Client{ClientId: c.id, Agent: "tenants/acme/agents/agent-l", Environment: "test", PublicJwks: c.jwks(t), Scopes: []string{"x"}, TokenTtlSeconds: 120, Resources: []string{agentResource}},
		RequestId: "create-agent-l",
	}
	first, err := admin.CreateClient(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	got := first.GetClient()
	if got.GetName() != "tenants/acme/clients/agent-l" || got.GetState() != issuerv1.ClientState_CLIENT_STATE_ACTIVE ||
		got.GetTokenTtlSeconds() != 120 || got.GetCreateTime() == nil {
		t.Fatalf("created = %v", got)
	}
	// Same request id: the same client; another request id: AlreadyExists.
	again, err := admin.CreateClient(ctx, req)
	if err != nil || again.GetClient().GetCreateTime().AsTime() != got.GetCreateTime().AsTime() {
		t.Fatalf("repeat = %v, %v", again, err)
	}
	req.RequestId = "create-agent-l-2"
	if _, err := admin.CreateClient(ctx, req); codeOf(err) != "AlreadyExists" {
		t.Fatalf("second create = %v, want AlreadyExists", err)
	}
	// Token lifetime from the client (once its agent is ACTIVE).
	c.activate(t, r)
	if resp := requestToken(t, r, c); resp.body["expires_in"] != float64(120) {
		t.Fatalf("expires_in = %v", resp.body["expires_in"])
	}
	fetched, err := admin.GetClient(ctx, &issuerv1.GetClientRequest{Name: "tenants/acme/clients/agent-l"})
	if err != nil || fetched.GetClient().GetPublicJwks() != c.jwks(t) {
		t.Fatalf("GetClient = %v, %v", fetched, err)
	}
	for range 2 { // idempotent
		dis, err := admin.DisableClient(ctx, &issuerv1.DisableClientRequest{Name: "tenants/acme/clients/agent-l", Reason: "retired"})
		if err != nil || dis.GetClient().GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED || dis.GetClient().GetDisableTime() == nil {
			t.Fatalf("DisableClient = %v, %v", dis, err)
		}
	}
	events, _, err := r.store.Load(context.Background(), "acme", eventstore.AggregateClient, c.id)
	if err != nil || len(events) != 2 || events[1].Type != "client.disabled" || events[1].Metadata.Actor.ID != "admin" {
		t.Fatalf("events = %v, %v", events, err)
	}
	if _, err := admin.GetClient(ctx, &issuerv1.GetClientRequest{Name: "tenants/acme/clients/nobody"}); codeOf(err) != "NotFound" {
		t.Fatalf("GetClient of unknown = %v", err)
	}
	// Disabling an unknown client tombstones it (see tombstone_test.go).
	if dis, err := admin.DisableClient(ctx, &issuerv1.DisableClientRequest{Name: "tenants/acme/clients/nobody"}); err != nil || !dis.GetClient().GetTombstone() {
		t.Fatalf("DisableClient of unknown = %v, %v, want a tombstone", dis, err)
	}
	if _, err := admin.CreateClient(ctx, &issuerv1.CreateClientRequest{Parent: "tenants/acme", Client: &issuerv1.Client{ClientId: "x"}}); codeOf(err) != "InvalidArgument" {
		t.Fatalf("create without keys = %v", err)
	}
}

func TestEnsureClientRejectsBadInput(t *testing.T) {
	r := startIssuer(t)
	err := r.app.EnsureClient(context.Background(), "acme", &issuerv1.Client{ClientId: "bad.id"})
	if err == nil || !strings.Contains(err.Error(), "client.client_id") {
		t.Fatalf("EnsureClient = %v", err)
	}
	if err := r.app.EnsureSigningKey(context.Background(), "Not-A-Tenant"); errs.KindOf(err) != errs.KindInvalidArgument {
		t.Fatalf("EnsureSigningKey of an invalid tenant = %v, want InvalidArgument", err)
	}
	if errs.KindOf(err) != errs.KindInvalidArgument {
		t.Fatalf("EnsureClient kind = %v", errs.KindOf(err))
	}
}
