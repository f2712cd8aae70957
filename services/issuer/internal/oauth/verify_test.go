package oauth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
	"github.com/agentid/agentid/services/issuer/internal/keys"
	"github.com/agentid/agentid/services/issuer/internal/oauth"
)

// withDenylist replaces the fixture's server by one over the same projection that checks d.
func (f *coreFixture) withDenylist(t *testing.T, d *authn.Denylist) {
	t.Helper()
	srv, err := oauth.New(oauth.Config{PublicURL: publicURL, Credentials: f.creds, Replay: &memReplay{seen: map[string]bool{}},
		Agents: &f.agents, Denylist: d, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
}

// addTenant gives the fixture's projection tenant name with a signing key.
func (f *coreFixture) addTenant(t *testing.T, name string) {
	t.Helper()
	sealer, err := keys.NewSealer("k", bytes.Repeat([]byte{9}, keys.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	k, priv, err := keys.Generate(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := sealer.Seal(priv, keys.SealAAD(name, k.KeyID))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.creds.Apply(context.Background(), event(t, credentials.EventSigningKeyCreated, name, name, &issuerv1.SigningKeyCreated{
		Key:              &issuerv1.SigningKey{KeyId: k.KeyID, Algorithm: "ES256", CreateTime: timestamppb.Now()},
		SealedPrivateJwk: sealed, KekId: "k",
	})); err != nil {
		t.Fatal(err)
	}
}

// platformToken registers a client of tenant with roles (the fixture's key) and returns a platform
// API token the server issues to it.
func (f *coreFixture) platformToken(t *testing.T, tenant, id string, roles ...string) string {
	t.Helper()
	norm, _, err := credentials.NormalizeClient(tenant, &issuerv1.Client{ClientId: id, PublicJwks: f.publicJWKS(t), Roles: roles}, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.creds.Apply(context.Background(), event(t, credentials.EventClientCreated, tenant, id, &issuerv1.ClientCreated{Client: norm})); err != nil {
		t.Fatal(err)
	}
	iss := publicURL + "/t/" + tenant
	resp, oerr := f.srv.Token(context.Background(), tenant, oauth.Request{ContentType: oauth.FormContentType,
		Body: strings.NewReader(form(f.assertionFor(t, id, "", []string{iss}, time.Minute)))})
	if oerr != nil {
		t.Fatalf("token for %s/%s: %v", tenant, id, oerr)
	}
	return resp.AccessToken
}

// withRoles re-signs a token the server issued in tenant with another roles claim, as a token of a
// client registered before the rules of today would have been.
func (f *coreFixture) withRoles(t *testing.T, tenant, raw string, roles ...string) string {
	t.Helper()
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	var c authn.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		t.Fatal(err)
	}
	c.Roles = roles
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	key, ok := f.creds.CurrentKey(tenant)
	if !ok {
		t.Fatalf("tenant %s has no signing key", tenant)
	}
	signed, err := key.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func (f *coreFixture) publicJWKS(t *testing.T) string {
	t.Helper()
	c, ok := f.creds.Client(tenant, clientID)
	if !ok {
		t.Fatal("the fixture's client is missing")
	}
	return c.Proto.GetPublicJwks()
}

// A revocation the denylist holds but the projection has not seen yet (the reactor revokes a disabled
// client before client.disabled reaches a lagging replica) stops the token endpoint from issuing a
// token it covers: such a token would be dead on arrival.
func TestTokenEndpointRefusesWhatTheDenylistCovers(t *testing.T) {
	now := time.Now()
	revocation := func(target issuerv1.RevocationTarget, notBefore time.Time, set func(*issuerv1.TokensRevoked)) *issuerv1.TokensRevoked {
		ev := &issuerv1.TokensRevoked{Tenant: tenant, Target: target, NotBefore: timestamppb.New(notBefore),
			ExpireTime: timestamppb.New(now.Add(time.Hour))}
		set(ev)
		return ev
	}
	client := func(ev *issuerv1.TokensRevoked) { ev.ClientId = clientID }
	tests := []struct {
		name       string
		revoke     *issuerv1.TokensRevoked
		wantCode   string
		wantStatus int
	}{
		{name: "client revoked until after now",
			revoke:   revocation(issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT, now.Add(30*time.Second), client),
			wantCode: oauth.ErrInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "agent revoked until after now",
			revoke: revocation(issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT, now.Add(30*time.Second),
				func(ev *issuerv1.TokensRevoked) { ev.Agent = "tenants/acme/agents/" + clientID }),
			wantCode: oauth.ErrInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "tenant revoked until after now",
			revoke:   revocation(issuerv1.RevocationTarget_REVOCATION_TARGET_TENANT, now.Add(30*time.Second), func(*issuerv1.TokensRevoked) {}),
			wantCode: oauth.ErrInvalidClient, wantStatus: http.StatusUnauthorized},
		{name: "signing key revoked", revoke: nil, wantCode: oauth.ErrTemporarilyUnavailable, wantStatus: http.StatusServiceUnavailable},
		{name: "client's earlier tokens revoked",
			revoke: revocation(issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT, now.Add(-time.Hour), client)},
		{name: "another client revoked",
			revoke: revocation(issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT, now.Add(time.Hour),
				func(ev *issuerv1.TokensRevoked) { ev.ClientId = "someone-else" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newCore(t)
			d := authn.NewDenylist(authn.DenylistConfig{})
			ev := tt.revoke
			if ev == nil {
				key, ok := f.creds.CurrentKey(tenant)
				if !ok {
					t.Fatal("no signing key")
				}
				ev = &issuerv1.TokensRevoked{Tenant: tenant, Target: issuerv1.RevocationTarget_REVOCATION_TARGET_KEY,
					KeyId: key.KeyID, ExpireTime: timestamppb.New(now.Add(time.Hour))}
			}
			if err := d.Apply(ev, 1); err != nil {
				t.Fatal(err)
			}
			f.withDenylist(t, d)
			resp, oerr := f.tokenWith(f.assertion(t, issuer, time.Minute))
			if tt.wantCode == "" {
				if oerr != nil {
					t.Fatalf("token refused: %v", oerr)
				}
				return
			}
			if oerr == nil || oerr.Code != tt.wantCode || oerr.Status != tt.wantStatus || resp != nil {
				t.Fatalf("got %+v, %+v; want %s (%d)", resp, oerr, tt.wantCode, tt.wantStatus)
			}
			if oerr.Code == oauth.ErrInvalidClient && oerr.Description != oauth.ClientAuthFailedDescription {
				t.Fatalf("description %q, want the uniform %q", oerr.Description, oauth.ClientAuthFailedDescription)
			}
		})
	}
}

// A DPoP-bound token is no platform API token for a bearer caller: its key is never proven.
func TestVerifyAPITokenRefusesDPoPBoundTokens(t *testing.T) {
	f := newDPoPFixture(t, oauth.DPoPConfig{})
	p := newTestProver(t)
	bound, oerr := f.token(t, f.assertion(t, dpopBoundClient), f.proof(t, p, http.MethodPost, tokenEndpoint, f.nonce(t, p)))
	if oerr != nil {
		t.Fatal(oerr)
	}
	if _, err := f.srv.VerifyAPIToken(bound.AccessToken); err == nil {
		t.Fatal("VerifyAPIToken accepted a DPoP-bound token")
	}
	bearer, oerr := f.token(t, f.assertion(t, dpopBearerClient))
	if oerr != nil {
		t.Fatal(oerr)
	}
	if _, err := f.srv.VerifyAPIToken(bearer.AccessToken); err != nil {
		t.Fatalf("VerifyAPIToken refused an unbound API token: %v", err)
	}
}

// Bearer callers of introspection follow the role rules of the platform API: in tenant system a
// tenant-admin is nobody, so it cannot read the tokens of the platform's own identities.
func TestBearerIntrospectionInTheSystemTenant(t *testing.T) {
	f := newCore(t)
	f.addTenant(t, authn.SystemTenant)
	target := f.platformToken(t, authn.SystemTenant, "svc-registry", "platform-admin")
	tests := []struct {
		name       string
		bearer     string
		wantStatus int
	}{
		{name: "platform-admin", bearer: f.platformToken(t, authn.SystemTenant, "ops", "platform-admin"), wantStatus: http.StatusOK},
		{name: "introspector of system", bearer: f.platformToken(t, authn.SystemTenant, "gw", "introspector"), wantStatus: http.StatusOK},
		// Clients of system can no longer be given tenant-admin; one registered before that rule can.
		{name: "tenant-admin of system", bearer: f.withRoles(t, authn.SystemTenant, f.platformToken(t, authn.SystemTenant, "sysadmin"), "tenant-admin"),
			wantStatus: http.StatusForbidden},
		{name: "tenant-admin of acme", bearer: f.platformToken(t, tenant, "acme-admin", "tenant-admin"), wantStatus: http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, oerr := f.srv.Introspect(context.Background(), authn.SystemTenant, oauth.Request{ContentType: oauth.FormContentType,
				Authorization: "Bearer " + tt.bearer, Body: strings.NewReader(url.Values{"token": {target}}.Encode())})
			if tt.wantStatus == http.StatusOK {
				if oerr != nil || !in.Active || in.ClientID != "svc-registry" {
					t.Fatalf("got %+v, %v; want the token active", in, oerr)
				}
				return
			}
			if oerr == nil || oerr.Status != tt.wantStatus || oerr.Code != oauth.ErrInsufficientScope || in != nil {
				t.Fatalf("got %+v, %+v; want %d insufficient_scope", in, oerr, tt.wantStatus)
			}
		})
	}
}
