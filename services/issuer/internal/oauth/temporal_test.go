package oauth_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
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

// systemFixture is an authorization server with tenant system and one platform identity per role
// under test, each with its own key.
type systemFixture struct {
	srv  *oauth.Server
	keys map[string]*ecdsa.PrivateKey
}

func newSystemFixture(t *testing.T, namespace string, roles map[string][]string) *systemFixture {
	t.Helper()
	const sys = authn.SystemTenant
	sealer, err := keys.NewSealer("k", bytes.Repeat([]byte{9}, keys.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	state := credentials.NewState(nil, sealer)
	k, priv, err := keys.Generate(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := sealer.Seal(priv, keys.SealAAD(sys, k.KeyID))
	if err != nil {
		t.Fatal(err)
	}
	if err := state.Apply(context.Background(), event(t, credentials.EventSigningKeyCreated, sys, sys, &issuerv1.SigningKeyCreated{
		Key:              &issuerv1.SigningKey{KeyId: k.KeyID, Algorithm: "ES256", CreateTime: timestamppb.Now()},
		SealedPrivateJwk: sealed, KekId: "k",
	})); err != nil {
		t.Fatal(err)
	}
	f := &systemFixture{keys: map[string]*ecdsa.PrivateKey{}}
	for id, rs := range roles {
		cpriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &cpriv.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
		c, _, err := credentials.NormalizeClient(sys, &issuerv1.Client{ClientId: id, PublicJwks: string(set), Roles: rs}, 0, time.Now())
		if err != nil {
			t.Fatalf("client %s with roles %v: %v", id, rs, err)
		}
		if err := state.Apply(context.Background(), event(t, credentials.EventClientCreated, sys, id, &issuerv1.ClientCreated{Client: c})); err != nil {
			t.Fatal(err)
		}
		f.keys[id] = cpriv
	}
	f.srv, err = oauth.New(oauth.Config{PublicURL: publicURL, Credentials: state, Replay: &memReplay{seen: map[string]bool{}},
		TemporalNamespace: namespace, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// token asks for a token as client id with the given resources.
func (f *systemFixture) token(t *testing.T, id string, resources ...string) (*oauth.TokenResponse, *oauth.Error) {
	t.Helper()
	iss := publicURL + "/t/" + authn.SystemTenant
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: f.keys[id], KeyID: "k1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	assertion, err := jwt.Signed(signer).Claims(jwt.Claims{Issuer: id, Subject: id, Audience: jwt.Audience{iss},
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute)), ID: rand.Text()}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	var extra []string
	for _, r := range resources {
		extra = append(extra, "resource", r)
	}
	return f.srv.Token(context.Background(), authn.SystemTenant, oauth.Request{ContentType: oauth.FormContentType,
		Body: strings.NewReader(form(assertion, extra...))})
}

// tokenClaims decodes an issued token's payload (the server signed it; this test reads what it says).
func tokenClaims(t *testing.T, token string) authn.Claims {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a JWS", token)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c authn.Claims
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTemporalPermissionsClaim(t *testing.T) {
	f := newSystemFixture(t, "", map[string][]string{
		"lifecycle-worker": {string(authn.RoleLifecycleWorker)},
		"bootstrap-admin":  {string(authn.RolePlatformAdmin)},
		"auditor":          {string(authn.RoleAuditor)},
	})
	tests := []struct {
		name      string
		client    string
		resources []string
		wantPerms []string
		wantErr   string
	}{
		{name: "lifecycle worker writes the namespace", client: "lifecycle-worker", resources: []string{authn.TemporalAudience},
			wantPerms: []string{"agentid:write"}},
		{name: "platform admin administers the namespace, not the cluster", client: "bootstrap-admin", resources: []string{authn.TemporalAudience},
			wantPerms: []string{"agentid:admin"}},
		{name: "other role refused", client: "auditor", resources: []string{authn.TemporalAudience}, wantErr: oauth.ErrInvalidTarget},
		{name: "never with another audience", client: "lifecycle-worker", resources: []string{authn.TemporalAudience, authn.APIAudience},
			wantErr: oauth.ErrInvalidTarget},
		{name: "platform API token has no permissions", client: "lifecycle-worker", wantPerms: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, oerr := f.token(t, tt.client, tt.resources...)
			if tt.wantErr != "" {
				if oerr == nil || oerr.Code != tt.wantErr {
					t.Fatalf("token = %+v, %v; want %s", resp, oerr, tt.wantErr)
				}
				return
			}
			if oerr != nil {
				t.Fatal(oerr)
			}
			c := tokenClaims(t, resp.AccessToken)
			if !slices.Equal(c.Permissions, tt.wantPerms) {
				t.Fatalf("permissions = %q, want %q", c.Permissions, tt.wantPerms)
			}
			if len(tt.resources) > 0 && !slices.Equal(c.Audience, []string{authn.TemporalAudience}) {
				t.Fatalf("aud = %q, want only %s", c.Audience, authn.TemporalAudience)
			}
			if len(tt.resources) == 0 && slices.Contains(c.Audience, authn.TemporalAudience) {
				t.Fatalf("aud = %q without asking for the Temporal audience", c.Audience)
			}
		})
	}

	// An agent never gets the Temporal audience, nor permissions in its own tokens.
	agent := newCore(t)
	ask := func(resources ...string) (*oauth.TokenResponse, *oauth.Error) {
		var extra []string
		for _, r := range resources {
			extra = append(extra, "resource", r)
		}
		return agent.srv.Token(context.Background(), tenant, oauth.Request{ContentType: oauth.FormContentType,
			Body: strings.NewReader(form(agent.assertion(t, issuer, time.Minute), extra...))})
	}
	if resp, oerr := ask(authn.TemporalAudience); oerr == nil || oerr.Code != oauth.ErrInvalidTarget {
		t.Fatalf("agent asking for %s: %+v, %v; want invalid_target", authn.TemporalAudience, resp, oerr)
	}
	resp, oerr := ask(ordersAPI)
	if oerr != nil {
		t.Fatal(oerr)
	}
	if c := tokenClaims(t, resp.AccessToken); len(c.Permissions) != 0 {
		t.Fatalf("agent token carries permissions %q", c.Permissions)
	}
}

func TestTemporalPermissionsNamespace(t *testing.T) {
	f := newSystemFixture(t, "prod-agentid", map[string][]string{"lifecycle-worker": {string(authn.RoleLifecycleWorker)}})
	resp, oerr := f.token(t, "lifecycle-worker", authn.TemporalAudience)
	if oerr != nil {
		t.Fatal(oerr)
	}
	if got := tokenClaims(t, resp.AccessToken).Permissions; !slices.Equal(got, []string{"prod-agentid:write"}) {
		t.Fatalf("permissions = %q, want [prod-agentid:write]", got)
	}
	sealer, err := keys.NewSealer("k", bytes.Repeat([]byte{9}, keys.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"a:b", "with space", "a/b", strings.Repeat("n", 256)} {
		_, err := oauth.New(oauth.Config{PublicURL: publicURL, Credentials: credentials.NewState(nil, sealer), Replay: &memReplay{},
			TemporalNamespace: bad})
		if err == nil || !strings.Contains(err.Error(), "temporal namespace") {
			t.Errorf("namespace %q: err = %v, want one naming the temporal namespace", bad, err)
		}
	}
}

func TestTemporalPermissions(t *testing.T) {
	tests := []struct {
		roles []string
		want  []string
	}{
		{roles: []string{"lifecycle-worker"}, want: []string{"ns:write"}},
		{roles: []string{"platform-admin"}, want: []string{"ns:admin"}},
		{roles: []string{"lifecycle-worker", "platform-admin"}, want: []string{"ns:admin"}},
		{roles: []string{"tenant-admin", "approver", "auditor", "subscriber"}, want: nil},
		{roles: nil, want: nil},
	}
	for _, tt := range tests {
		if got := oauth.TemporalPermissions("ns", tt.roles); !slices.Equal(got, tt.want) {
			t.Errorf("TemporalPermissions(%v) = %q, want %q", tt.roles, got, tt.want)
		}
	}
}
