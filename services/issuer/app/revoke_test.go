package app_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/revocation"
)

func (r *replica) revokeURL(tenant string) string {
	return r.srv.URL + "/t/" + tenant + "/oauth2/revoke"
}

// registerService makes c a client of r without an agent (a service identity) with the given roles.
func (c *testClient) registerService(t testing.TB, r *replica, roles ...string) {
	t.Helper()
	err := r.app.EnsureClient(context.Background(), c.tenant, &issuerv1.Client{
		ClientId: c.id, PublicJwks: c.jwks(t), Scopes: []string{"read"}, Roles: roles,
	})
	if err != nil {
		t.Fatal(err)
	}
}

// accessToken asks r for a token for c and returns it with its claims.
func accessToken(t testing.TB, r *replica, c *testClient) (string, *authn.Claims) {
	t.Helper()
	raw := requestToken(t, r, c).str("access_token")
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	var claims authn.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&claims); err != nil {
		t.Fatal(err)
	}
	return raw, &claims
}

// revoke posts an RFC 7009 revocation request for token to tenant's endpoint, authenticating as
// caller, and returns the status and body.
func revoke(t testing.TB, r *replica, caller *testClient, tenant, token string, extra ...string) (int, string) {
	t.Helper()
	v := url.Values{
		"token":                 {token},
		"client_assertion_type": {assertionType},
		"client_assertion":      {caller.sign(t, caller.claims(r.issuer(tenant)))},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		v.Set(extra[i], extra[i+1])
	}
	resp, err := http.Post(r.revokeURL(tenant), "application/x-www-form-urlencoded", strings.NewReader(v.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func revocationCount(t testing.TB, r *replica) uint64 {
	t.Helper()
	return testkit.StreamMessages(t, r.store.JetStream(), eventstore.StreamRevocations)
}

// active introspects token at r as caller and reports whether it is active.
func active(t testing.TB, r *replica, caller *testClient, token string) bool {
	t.Helper()
	resp := introspect(t, r, caller, caller.tenant, token)
	if resp.status != http.StatusOK {
		t.Fatalf("introspection: %d %v", resp.status, resp.body)
	}
	a, _ := resp.body["active"].(bool)
	return a
}

// eventually polls cond until it holds or testkit.DefaultWait has passed.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testkit.DefaultWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// afterSecondOf waits until the wall clock is in a later second than at, so that a token issued
// next carries an iat after at (iat has a resolution of one second).
func afterSecondOf(t testing.TB, at time.Time) {
	t.Helper()
	eventually(t, "the clock passes "+at.String(), func() bool { return time.Now().Unix() > at.Unix() })
}

// storedRevocation loads the one event of revocation id in tenant.
func storedRevocation(t testing.TB, r *replica, tenant, id string) (eventstore.Event, *issuerv1.TokensRevoked) {
	t.Helper()
	events, _, err := r.store.Load(context.Background(), tenant, eventstore.AggregateRevocation, id)
	if err != nil || len(events) != 1 {
		t.Fatalf("revocation %s/%s: %d events, %v; want one", tenant, id, len(events), err)
	}
	ev, err := eventstore.DecodeAs[*issuerv1.TokensRevoked](events[0])
	if err != nil {
		t.Fatal(err)
	}
	return events[0], ev
}

func TestRevocationEndpointRevokesTheClientsOwnToken(t *testing.T) {
	r := startIssuer(t)
	bot := newTestClient(t, "acme", "bot")
	bot.registerService(t, r)
	token, claims := accessToken(t, r, bot)
	if !active(t, r, bot, token) {
		t.Fatal("a fresh token is inactive")
	}

	status, body := revoke(t, r, bot, "acme", token, "token_type_hint", "access_token")
	if status != http.StatusOK || body != "" {
		t.Fatalf("revoke: %d %q, want 200 and an empty body", status, body)
	}
	ev, stored := storedRevocation(t, r, "acme", revocation.ID("acme", "revoke-token:"+claims.ID))
	if ev.Type != eventstore.TypeTokensRevoked || ev.Stream != eventstore.StreamRevocations || ev.Metadata.Actor.ID != "bot" {
		t.Fatalf("stored %s on %s by %s", ev.Type, ev.Stream, ev.Metadata.Actor.ID)
	}
	if stored.GetTarget() != issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN || stored.GetTokenId() != claims.ID ||
		!stored.GetExpireTime().AsTime().Equal(claims.Expiry) || stored.GetCause() != issuerv1.RevocationCause_REVOCATION_CAUSE_CLIENT_REQUEST {
		t.Fatalf("stored revocation = %v", stored)
	}
	eventually(t, "introspection answers the revoked token inactive", func() bool { return !active(t, r, bot, token) })

	// Revoking it again, with an unknown hint, changes nothing and succeeds.
	if status, _ := revoke(t, r, bot, "acme", token, "token_type_hint", "refresh_token"); status != http.StatusOK {
		t.Fatalf("second revoke: %d", status)
	}
	if n := revocationCount(t, r); n != 1 {
		t.Fatalf("REVOCATIONS holds %d events, want 1", n)
	}
	// Another token of the same client stays active.
	other, _ := accessToken(t, r, bot)
	if !active(t, r, bot, other) {
		t.Fatal("revoking one token deactivated another")
	}
}

func TestRevocationEndpointChangesNothingForTokensItMayNotRevoke(t *testing.T) {
	r := startIssuer(t)
	bot := newTestClient(t, "acme", "bot")
	bot.registerService(t, r)
	thief := newTestClient(t, "acme", "thief")
	thief.registerService(t, r)
	beta := newTestClient(t, "beta", "bot")
	beta.registerService(t, r)
	token, _ := accessToken(t, r, bot)
	betaToken, _ := accessToken(t, r, beta)

	// A token signed like ours but by a key the tenant does not have.
	forged := func() string {
		key, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: thief.key, KeyID: "k-unknown"}},
			(&jose.SignerOptions{}).WithType("at+jwt"))
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		raw, err := jwt.Signed(key).Claims(map[string]any{
			"iss": r.issuer("acme"), "sub": "thief", "client_id": "thief", "tenant": "acme", "jti": uuid.NewString(),
			"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(),
		}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}()
	tests := []struct{ name, token string }{
		{"another client's token", token},
		{"another tenant's token", betaToken},
		{"a token signed by an unknown key", forged},
		{"a malformed token", "not-a-token"},
		{"a client assertion", thief.assertion(t, r)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if status, body := revoke(t, r, thief, "acme", tt.token); status != http.StatusOK || body != "" {
				t.Fatalf("revoke: %d %q, want 200 and an empty body", status, body)
			}
		})
	}
	if n := revocationCount(t, r); n != 0 {
		t.Fatalf("REVOCATIONS holds %d events, want none", n)
	}
	if !active(t, r, bot, token) {
		t.Fatal("another client revoked bot's token")
	}
}

func TestRevocationEndpointErrors(t *testing.T) {
	r := startIssuer(t)
	bot := newTestClient(t, "acme", "bot")
	bot.registerService(t, r)
	token, _ := accessToken(t, r, bot)
	stranger := newTestClient(t, "acme", "stranger") // never registered

	form := func(assertion string, extra ...string) url.Values {
		v := url.Values{"token": {token}, "client_assertion_type": {assertionType}, "client_assertion": {assertion}}
		for i := 0; i+1 < len(extra); i += 2 {
			v.Set(extra[i], extra[i+1])
		}
		return v
	}
	reused := bot.sign(t, bot.claims(r.issuer("acme")))
	if status, body := revoke(t, r, bot, "acme", "x", "client_assertion", reused); status != http.StatusOK {
		t.Fatalf("first use of the assertion: %d %q", status, body)
	}
	tests := []struct {
		name   string
		send   func() oauthResponse
		status int
		code   string
	}{
		{"no client authentication", func() oauthResponse {
			return postForm(t, r.revokeURL("acme"), url.Values{"token": {token}})
		}, http.StatusUnauthorized, "invalid_client"},
		{"unknown client", func() oauthResponse {
			return postForm(t, r.revokeURL("acme"), form(stranger.assertion(t, r)))
		}, http.StatusUnauthorized, "invalid_client"},
		{"replayed assertion", func() oauthResponse {
			return postForm(t, r.revokeURL("acme"), form(reused))
		}, http.StatusUnauthorized, "invalid_client"},
		{"assertion for another audience", func() oauthResponse {
			return postForm(t, r.revokeURL("acme"), form(bot.sign(t, bot.claims("https://elsewhere.example"))))
		}, http.StatusUnauthorized, "invalid_client"},
		{"basic authentication", func() oauthResponse {
			return postForm(t, r.revokeURL("acme"), url.Values{"token": {token}}, "Authorization", "Basic Ym90OnNlY3JldA==")
		}, http.StatusUnauthorized, "invalid_client"},
		{"missing token", func() oauthResponse {
			return postForm(t, r.revokeURL("acme"), form(bot.assertion(t, r), "token", ""))
		}, http.StatusBadRequest, "invalid_request"},
		{"wrong content type", func() oauthResponse {
			return post(t, r.revokeURL("acme"), "application/json", `{"token":"x"}`)
		}, http.StatusBadRequest, "invalid_request"},
		{"unknown tenant", func() oauthResponse {
			return postForm(t, r.revokeURL("nobody"), form(bot.assertion(t, r)))
		}, http.StatusNotFound, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := tt.send()
			if resp.status != tt.status || resp.str("error") != tt.code {
				t.Fatalf("got %d %v, want %d %s", resp.status, resp.body, tt.status, tt.code)
			}
			if tt.status == http.StatusUnauthorized && resp.header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
	if n := revocationCount(t, r); n != 0 {
		t.Fatalf("REVOCATIONS holds %d events, want none", n)
	}
	if !active(t, r, bot, token) {
		t.Fatal("a refused revocation request deactivated the token")
	}
}

// A revocation that cannot be stored is never answered as a success.
func TestRevocationEndpointStoreFailureIs503(t *testing.T) {
	r := startIssuer(t)
	bot := newTestClient(t, "acme", "bot")
	bot.registerService(t, r)
	token, _ := accessToken(t, r, bot)

	// A sealed stream refuses every append while NATS (and so the assertion replay cache) still works.
	js := r.store.JetStream()
	st, err := js.Stream(t.Context(), eventstore.StreamRevocations)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.Sealed = true
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	v := url.Values{"token": {token}, "client_assertion_type": {assertionType}, "client_assertion": {bot.assertion(t, r)}}
	resp := postForm(t, r.revokeURL("acme"), v)
	if resp.status != http.StatusServiceUnavailable || resp.str("error") != "temporarily_unavailable" {
		t.Fatalf("got %d %v, want 503 temporarily_unavailable", resp.status, resp.body)
	}
	if n := revocationCount(t, r); n != 0 {
		t.Fatalf("REVOCATIONS holds %d events, want none", n)
	}
	if !active(t, r, bot, token) {
		t.Fatal("the token is inactive although its revocation was not stored")
	}
}

func TestDiscoveryAdvertisesTheRevocationEndpoint(t *testing.T) {
	r := startIssuer(t)
	resp, err := http.Get(r.srv.URL + "/t/system/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var md struct {
		Endpoint string   `json:"revocation_endpoint"`
		Methods  []string `json:"revocation_endpoint_auth_methods_supported"`
		Algs     []string `json:"revocation_endpoint_auth_signing_alg_values_supported"`
	}
	if err := json.Unmarshal(raw, &md); err != nil {
		t.Fatal(err)
	}
	if md.Endpoint != r.issuer("system")+"/oauth2/revoke" || strings.Join(md.Methods, ",") != "private_key_jwt" ||
		!strings.Contains(strings.Join(md.Algs, ","), "ES256") {
		t.Fatalf("metadata = %+v", md)
	}
}

func TestRevokeTokensByClientAgentAndTime(t *testing.T) {
	r := startIssuer(t)
	bot := newTestClient(t, "acme", "bot")
	bot.registerService(t, r)
	other := newTestClient(t, "acme", "other")
	other.registerService(t, r)
	agent := newTestClient(t, "acme", "agt_invoices")
	agent.register(t, r, "read")
	adminAPI := r.admin(t)

	tests := []struct {
		name string
		req  func(now time.Time) *issuerv1.RevokeTokensRequest
		// hit is the client whose earlier token the revocation covers; spared keeps its token.
		hit, spared *testClient
		want        issuerv1.RevocationTarget
	}{
		{"client", func(time.Time) *issuerv1.RevokeTokensRequest {
			return &issuerv1.RevokeTokensRequest{Target: &issuerv1.RevokeTokensRequest_Client{Client: "tenants/acme/clients/bot"}}
		}, bot, other, issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT},
		{"agent", func(time.Time) *issuerv1.RevokeTokensRequest {
			return &issuerv1.RevokeTokensRequest{Target: &issuerv1.RevokeTokensRequest_Agent{Agent: "tenants/acme/agents/agt_invoices"}}
		}, agent, bot, issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT},
		{"issued before", func(now time.Time) *issuerv1.RevokeTokensRequest {
			return &issuerv1.RevokeTokensRequest{Target: &issuerv1.RevokeTokensRequest_IssuedBefore{IssuedBefore: timestamppb.New(now)}}
		}, bot, nil, issuerv1.RevocationTarget_REVOCATION_TARGET_TENANT},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := accessToken(t, r, tt.hit)
			var spared string
			if tt.spared != nil {
				spared, _ = accessToken(t, r, tt.spared)
			}
			req := tt.req(time.Now())
			req.Parent, req.Reason, req.RequestId = "tenants/acme", "test "+tt.name, uuid.NewString()
			resp, err := adminAPI.RevokeTokens(as("acme-admin"), req)
			if err != nil {
				t.Fatal(err)
			}
			rev := resp.GetRevocation()
			if rev.GetEvent().GetTarget() != tt.want || rev.GetSequence() == 0 || rev.GetCreateTime() == nil ||
				!strings.HasPrefix(rev.GetName(), "tenants/acme/revocations/") || rev.GetEvent().GetReason() != "test "+tt.name ||
				rev.GetEvent().GetCause() != issuerv1.RevocationCause_REVOCATION_CAUSE_ADMIN {
				t.Fatalf("revocation = %v", rev)
			}
			nb := rev.GetEvent().GetNotBefore().AsTime()
			if want := nb.Add(authn.MaxTokenLifetime + revocation.Leeway); !rev.GetEvent().GetExpireTime().AsTime().Equal(want) {
				t.Fatalf("expire_time = %v, want %v", rev.GetEvent().GetExpireTime().AsTime(), want)
			}
			eventually(t, "the earlier token is inactive", func() bool { return !active(t, r, tt.hit, before) })
			if spared != "" && !active(t, r, tt.spared, spared) {
				t.Fatal("a token the revocation does not cover is inactive")
			}
			afterSecondOf(t, nb)
			after, _ := accessToken(t, r, tt.hit)
			if !active(t, r, tt.hit, after) {
				t.Fatal("a token issued after the revocation is inactive")
			}
		})
	}
}

func TestRevokeTokensByToken(t *testing.T) {
	r := startIssuer(t)
	bot := newTestClient(t, "acme", "bot")
	bot.registerService(t, r)
	beta := newTestClient(t, "beta", "bot")
	beta.registerService(t, r)
	adminAPI := r.admin(t)
	token, claims := accessToken(t, r, bot)
	betaToken, _ := accessToken(t, r, beta)

	for name, tok := range map[string]string{"another tenant's token": betaToken, "garbage": "x.y.z"} {
		resp, err := adminAPI.RevokeTokens(as("acme-admin"), &issuerv1.RevokeTokensRequest{
			Parent: "tenants/acme", Target: &issuerv1.RevokeTokensRequest_Token{Token: tok},
		})
		if err != nil || resp.GetRevocation() != nil {
			t.Fatalf("%s: %v, %v; want an empty response", name, resp, err)
		}
	}
	if n := revocationCount(t, r); n != 0 {
		t.Fatalf("REVOCATIONS holds %d events, want none", n)
	}
	resp, err := adminAPI.RevokeTokens(as("platform-admin"), &issuerv1.RevokeTokensRequest{
		Parent: "tenants/acme", Target: &issuerv1.RevokeTokensRequest_Token{Token: token},
	})
	if err != nil {
		t.Fatal(err)
	}
	if ev := resp.GetRevocation().GetEvent(); ev.GetTokenId() != claims.ID || !ev.GetExpireTime().AsTime().Equal(claims.Expiry) {
		t.Fatalf("revocation = %v", resp.GetRevocation())
	}
	eventually(t, "the token is inactive", func() bool { return !active(t, r, bot, token) })
	if !active(t, r, beta, betaToken) {
		t.Fatal("another tenant's token is inactive")
	}
}

func TestRevokeTokensAuthorizationAndInput(t *testing.T) {
	r := startIssuer(t)
	bot := newTestClient(t, "acme", "bot")
	bot.registerService(t, r)
	adminAPI := r.admin(t)
	byClient := func(parent, client string) *issuerv1.RevokeTokensRequest {
		return &issuerv1.RevokeTokensRequest{Parent: parent, Target: &issuerv1.RevokeTokensRequest_Client{Client: client}}
	}
	tests := []struct {
		name      string
		caller    string
		req       *issuerv1.RevokeTokensRequest
		wantCode  codes.Code
		wantField string
	}{
		{"no credentials", "", byClient("tenants/acme", "tenants/acme/clients/bot"), codes.Unauthenticated, ""},
		{"tenant-admin of another tenant", "beta-admin", byClient("tenants/acme", "tenants/acme/clients/bot"), codes.NotFound, ""},
		{"auditor", "acme-auditor", byClient("tenants/acme", "tenants/acme/clients/bot"), codes.PermissionDenied, ""},
		{"agent", "acme-agent", byClient("tenants/acme", "tenants/acme/clients/bot"), codes.PermissionDenied, ""},
		{"bad parent", "acme-admin", byClient("acme", "tenants/acme/clients/bot"), codes.InvalidArgument, "parent"},
		{"client of another tenant", "acme-admin", byClient("tenants/acme", "tenants/beta/clients/bot"), codes.InvalidArgument, "client"},
		{"unknown client", "acme-admin", byClient("tenants/acme", "tenants/acme/clients/nobody"), codes.NotFound, ""},
		{"no target", "acme-admin", &issuerv1.RevokeTokensRequest{Parent: "tenants/acme"}, codes.InvalidArgument, "target"},
		{"agent of another tenant", "acme-admin", &issuerv1.RevokeTokensRequest{Parent: "tenants/acme",
			Target: &issuerv1.RevokeTokensRequest_Agent{Agent: "tenants/beta/agents/a"}}, codes.InvalidArgument, "agent"},
		{"malformed agent", "acme-admin", &issuerv1.RevokeTokensRequest{Parent: "tenants/acme",
			Target: &issuerv1.RevokeTokensRequest_Agent{Agent: "agents/a"}}, codes.InvalidArgument, "agent"},
		{"issued in the future", "acme-admin", &issuerv1.RevokeTokensRequest{Parent: "tenants/acme",
			Target: &issuerv1.RevokeTokensRequest_IssuedBefore{IssuedBefore: timestamppb.New(time.Now().Add(time.Hour))}}, codes.InvalidArgument, "issued_before"},
		{"reason too long", "acme-admin", &issuerv1.RevokeTokensRequest{Parent: "tenants/acme", Reason: strings.Repeat("x", 513),
			Target: &issuerv1.RevokeTokensRequest_Client{Client: "tenants/acme/clients/bot"}}, codes.InvalidArgument, "reason"},
		{"reason too long with an unknown token", "acme-admin", &issuerv1.RevokeTokensRequest{Parent: "tenants/acme", Reason: strings.Repeat("x", 513),
			Target: &issuerv1.RevokeTokensRequest_Token{Token: "x"}}, codes.InvalidArgument, "reason"},
		{"bad request id", "acme-admin", &issuerv1.RevokeTokensRequest{Parent: "tenants/acme", RequestId: "a b",
			Target: &issuerv1.RevokeTokensRequest_Client{Client: "tenants/acme/clients/bot"}}, codes.InvalidArgument, "request_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := adminAPI.RevokeTokens(as(tt.caller), tt.req)
			if status.Code(err) != tt.wantCode {
				t.Fatalf("err = %v, want %s", err, tt.wantCode)
			}
			if got := errs.FromStatus(err).Field; got != tt.wantField {
				t.Fatalf("err = %v names field %q, want %q", err, got, tt.wantField)
			}
		})
	}
	if n := revocationCount(t, r); n != 0 {
		t.Fatalf("REVOCATIONS holds %d events after refused requests, want none", n)
	}

	// A repeated request id revokes once and answers the same revocation.
	req := byClient("tenants/acme", "tenants/acme/clients/bot")
	req.RequestId = "revoke-bot-1"
	first, err := adminAPI.RevokeTokens(as("acme-admin"), req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := adminAPI.RevokeTokens(as("platform-admin"), req)
	if err != nil {
		t.Fatal(err)
	}
	if first.GetRevocation().GetName() != again.GetRevocation().GetName() || first.GetRevocation().GetSequence() != again.GetRevocation().GetSequence() {
		t.Fatalf("retry = %v, want %v", again.GetRevocation(), first.GetRevocation())
	}
	agentReq := &issuerv1.RevokeTokensRequest{Parent: "tenants/acme", RequestId: "revoke-bot-1",
		Target: &issuerv1.RevokeTokensRequest_Agent{Agent: "tenants/acme/agents/bot"}}
	if _, err := adminAPI.RevokeTokens(as("acme-admin"), agentReq); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("request id reused for another target: %v, want InvalidArgument", err)
	}
	if n := revocationCount(t, r); n != 1 {
		t.Fatalf("REVOCATIONS holds %d events, want 1", n)
	}
}

// The platform-token check (VerifyAPIToken: here a bearer caller of introspection) refuses a revoked
// token like introspection does.
func TestRevokedPlatformTokenIsRefused(t *testing.T) {
	r := startIssuer(t)
	alice := newTestClient(t, "acme", "alice")
	alice.registerService(t, r, "tenant-admin")
	bot := newTestClient(t, "acme", "bot")
	bot.registerService(t, r)
	adminToken, _ := accessToken(t, r, alice)
	botToken, _ := accessToken(t, r, bot)
	asBearer := func() oauthResponse {
		return postForm(t, r.introspectURL("acme"), url.Values{"token": {botToken}}, "Authorization", "Bearer "+adminToken)
	}
	if resp := asBearer(); resp.status != http.StatusOK || resp.body["active"] != true {
		t.Fatalf("bearer introspection before the revocation: %d %v", resp.status, resp.body)
	}
	if status, body := revoke(t, r, alice, "acme", adminToken); status != http.StatusOK {
		t.Fatalf("revoke: %d %q", status, body)
	}
	eventually(t, "the revoked admin token is refused", func() bool { return asBearer().status == http.StatusUnauthorized })
	wantOAuthError(t, asBearer(), http.StatusUnauthorized, "invalid_token")
}

// A replica is not ready before its denylist holds the revocations already stored: its first answer
// after start calls a revoked token inactive.
func TestReplicaReadsRevocationsBeforeItIsReady(t *testing.T) {
	n := testkit.StartNATS(t)
	r1 := startReplica(t, n, "")
	bot := newTestClient(t, "acme", "bot")
	bot.registerService(t, r1)
	token, _ := accessToken(t, r1, bot)
	if _, err := r1.admin(t).RevokeTokens(as("acme-admin"), &issuerv1.RevokeTokensRequest{
		Parent: "tenants/acme", Target: &issuerv1.RevokeTokensRequest_Client{Client: "tenants/acme/clients/bot"},
	}); err != nil {
		t.Fatal(err)
	}
	r2 := startReplica(t, n, r1.base)
	if active(t, r2, bot, token) {
		t.Fatal("a replica that just became ready calls a revoked token active")
	}
}
