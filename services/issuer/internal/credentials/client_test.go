package credentials_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
)

func jwks(t *testing.T, keys ...jose.JSONWebKey) string {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func ecKey(t *testing.T, kid string, curve elliptic.Curve) (jose.JSONWebKey, jose.JSONWebKey) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k := jose.JSONWebKey{Key: priv, KeyID: kid}
	return k, k.Public()
}

func TestNormalizeClient(t *testing.T) {
	_, p256 := ecKey(t, "k1", elliptic.P256())
	p256Priv, _ := ecKey(t, "k2", elliptic.P256())
	_, p384 := ecKey(t, "k3", elliptic.P384())
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	ed := jose.JSONWebKey{Key: edPub, KeyID: "ed"}
	rsaPriv, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaPub := jose.JSONWebKey{Key: &rsaPriv.PublicKey, KeyID: "rsa"}
	noKid := p256
	noKid.KeyID = ""

	good := func() *issuerv1.Client {
		return &issuerv1.Client{
			ClientId:    "agent-1",
			Agent:       "tenants/acme/agents/agent-1",
			PublicJwks:  jwks(t, p256, ed),
			Scopes:      []string{"orders.read", "orders.write", "orders.read"},
			Environment: "prod",
			State:       issuerv1.ClientState_CLIENT_STATE_DISABLED, // output only: ignored
		}
	}
	tests := []struct {
		name      string
		tenant    string
		edit      func(c *issuerv1.Client)
		wantField string
	}{
		{name: "valid agent client", tenant: "acme"},
		{name: "valid platform identity", tenant: "system", edit: func(c *issuerv1.Client) {
			c.Agent, c.Environment, c.Roles = "", "", []string{"platform-admin"}
		}},
		{name: "valid resource server", tenant: "acme", edit: func(c *issuerv1.Client) {
			c.Agent, c.Environment, c.Roles = "", "", []string{"resource-server"}
		}},
		{name: "valid event subscriber", tenant: "acme", edit: func(c *issuerv1.Client) {
			c.Agent, c.Environment, c.Roles = "", "", []string{"subscriber"}
		}},
		{name: "valid security approver", tenant: "acme", edit: func(c *issuerv1.Client) {
			c.Agent, c.Environment, c.Roles = "", "", []string{"security-approver"}
		}},
		{name: "valid compliance approver", tenant: "acme", edit: func(c *issuerv1.Client) {
			c.Agent, c.Environment, c.Roles = "", "", []string{"compliance-approver"}
		}},
		{name: "valid DPoP-bound client", tenant: "acme", edit: func(c *issuerv1.Client) { c.DpopBound = true }},
		{name: "valid resources", tenant: "acme", edit: func(c *issuerv1.Client) {
			c.Resources = []string{"https://files.example", "https://files.example", "urn:agentid:api"}
		}},
		{name: "valid introspector", tenant: "acme", edit: func(c *issuerv1.Client) { c.Agent, c.Roles = "", []string{"introspector"} }},
		{name: "relative resource", tenant: "acme", edit: func(c *issuerv1.Client) { c.Resources = []string{"files"} }, wantField: "client.resources"},
		{name: "resource with fragment", tenant: "acme", edit: func(c *issuerv1.Client) { c.Resources = []string{"https://a.example/#x"} }, wantField: "client.resources"},
		{name: "resource with space", tenant: "acme", edit: func(c *issuerv1.Client) { c.Resources = []string{"https://a.example/a b"} }, wantField: "client.resources"},
		{name: "resource too long", tenant: "acme", edit: func(c *issuerv1.Client) {
			c.Resources = []string{"https://a.example/" + strings.Repeat("x", credentials.MaxResourceLen)}
		}, wantField: "client.resources"},
		{name: "too many resources", tenant: "acme", edit: func(c *issuerv1.Client) {
			for i := range credentials.MaxResources + 1 {
				c.Resources = append(c.Resources, fmt.Sprintf("https://r%d.example", i))
			}
		}, wantField: "client.resources"},
		{name: "missing client_id", tenant: "acme", edit: func(c *issuerv1.Client) { c.ClientId = "" }, wantField: "client.client_id"},
		{name: "client_id with a dot", tenant: "acme", edit: func(c *issuerv1.Client) { c.ClientId = "a.b" }, wantField: "client.client_id"},
		{name: "client_id too long", tenant: "acme", edit: func(c *issuerv1.Client) { c.ClientId = strings.Repeat("a", 129) }, wantField: "client.client_id"},
		{name: "other tenant", tenant: "acme", edit: func(c *issuerv1.Client) { c.Tenant = "beta" }, wantField: "client.tenant"},
		{name: "agent of another tenant", tenant: "acme", edit: func(c *issuerv1.Client) { c.Agent = "tenants/beta/agents/x" }, wantField: "client.agent"},
		{name: "no keys", tenant: "acme", edit: func(c *issuerv1.Client) { c.PublicJwks = "" }, wantField: "client.public_jwks"},
		{name: "not JSON", tenant: "acme", edit: func(c *issuerv1.Client) { c.PublicJwks = "{" }, wantField: "client.public_jwks"},
		{name: "private key", tenant: "acme", edit: func(c *issuerv1.Client) { c.PublicJwks = jwks(t, p256Priv) }, wantField: "client.public_jwks"},
		{name: "P-384 key", tenant: "acme", edit: func(c *issuerv1.Client) { c.PublicJwks = jwks(t, p384) }, wantField: "client.public_jwks"},
		{name: "RSA key", tenant: "acme", edit: func(c *issuerv1.Client) { c.PublicJwks = jwks(t, rsaPub) }, wantField: "client.public_jwks"},
		{name: "key without kid", tenant: "acme", edit: func(c *issuerv1.Client) { c.PublicJwks = jwks(t, noKid) }, wantField: "client.public_jwks"},
		{name: "duplicate kid", tenant: "acme", edit: func(c *issuerv1.Client) { c.PublicJwks = jwks(t, p256, p256) }, wantField: "client.public_jwks"},
		{name: "scope with space", tenant: "acme", edit: func(c *issuerv1.Client) { c.Scopes = []string{"a b"} }, wantField: "client.scopes"},
		{name: "scope with quote", tenant: "acme", edit: func(c *issuerv1.Client) { c.Scopes = []string{`a"b`} }, wantField: "client.scopes"},
		{name: "unknown role", tenant: "system", edit: func(c *issuerv1.Client) { c.Agent, c.Environment, c.Roles = "", "", []string{"root"} }, wantField: "client.roles"},
		{name: "platform-admin outside system", tenant: "acme", edit: func(c *issuerv1.Client) { c.Agent, c.Roles = "", []string{"platform-admin"} }, wantField: "client.roles"},
		{name: "agent with roles", tenant: "acme", edit: func(c *issuerv1.Client) { c.Roles = []string{"tenant-admin"} }, wantField: "client.roles"},
		{name: "bad environment", tenant: "acme", edit: func(c *issuerv1.Client) { c.Environment = "production" }, wantField: "client.environment"},
		{name: "agent without environment", tenant: "acme", edit: func(c *issuerv1.Client) { c.Environment = "" }, wantField: "client.environment"},
		{name: "negative ttl", tenant: "acme", edit: func(c *issuerv1.Client) { c.TokenTtlSeconds = -1 }, wantField: "client.token_ttl_seconds"},
		{name: "ttl above a day", tenant: "acme", edit: func(c *issuerv1.Client) { c.TokenTtlSeconds = 86401 }, wantField: "client.token_ttl_seconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := good()
			if tt.edit != nil {
				tt.edit(in)
			}
			out, keys, err := credentials.NormalizeClient(tt.tenant, in, 0, time.Unix(100, 0))
			if tt.wantField != "" {
				e, ok := err.(*errs.Error)
				if !ok || e.Kind != errs.KindInvalidArgument || e.Field != tt.wantField {
					t.Fatalf("err = %v, want InvalidArgument on %s", err, tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out.GetName() != "tenants/"+tt.tenant+"/clients/"+in.GetClientId() || out.GetTenant() != tt.tenant {
				t.Errorf("name/tenant = %q/%q", out.GetName(), out.GetTenant())
			}
			if out.GetState() != issuerv1.ClientState_CLIENT_STATE_ACTIVE || out.GetTokenTtlSeconds() != 600 {
				t.Errorf("state %v ttl %d, want ACTIVE 600", out.GetState(), out.GetTokenTtlSeconds())
			}
			if out.GetDpopBound() != in.GetDpopBound() {
				t.Errorf("dpop_bound = %v, want %v", out.GetDpopBound(), in.GetDpopBound())
			}
			if out.GetCreateTime().AsTime().Unix() != 100 {
				t.Errorf("create_time = %v", out.GetCreateTime())
			}
			if len(keys) == 0 {
				t.Error("no keys parsed")
			}
			if tt.tenant == "acme" && !slices.Equal(out.GetScopes(), []string{"orders.read", "orders.write"}) {
				t.Errorf("scopes = %v, want deduplicated in order", out.GetScopes())
			}
			if want := slices.Compact(slices.Clone(in.GetResources())); !slices.Equal(out.GetResources(), want) {
				t.Errorf("resources = %v, want %v", out.GetResources(), want)
			}
		})
	}
}

func TestParseNames(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		wantTenant string
		wantClient string
		wantErr    bool
	}{
		{name: "ok", in: "tenants/acme/clients/c-1", wantTenant: "acme", wantClient: "c-1"},
		{name: "missing client", in: "tenants/acme/clients/", wantErr: true},
		{name: "bad tenant", in: "tenants/A/clients/c", wantErr: true},
		{name: "wrong collection", in: "tenants/acme/agents/c", wantErr: true},
		{name: "extra segment", in: "tenants/acme/clients/c/x", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tenant, client, err := credentials.ParseClientName("name", tt.in)
			if (err != nil) != tt.wantErr || tenant != tt.wantTenant || client != tt.wantClient {
				t.Fatalf("ParseClientName(%q) = %q, %q, %v", tt.in, tenant, client, err)
			}
			if err != nil && errs.KindOf(err) != errs.KindInvalidArgument {
				t.Fatalf("kind = %v", errs.KindOf(err))
			}
		})
	}
}
