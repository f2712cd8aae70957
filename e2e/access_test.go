package e2e_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/authn"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// TestAccessControl checks the platform's own API through the running platform: no anonymous
// access, tenant scoping from the verified token, roles, field-naming validation errors, and that no
// refused request writes anything.
func TestAccessControl(t *testing.T) {
	agentidBin, agentctlBin := buildBinaries(t)
	dataDir, configDir := t.TempDir(), t.TempDir()
	p := startPlatform(t, agentidBin, dataDir)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// A platform admin creates tenant acme (with agentctl) and a tenant-admin identity in it.
	if _, err := runCLI(t, agentctlBin, configDir, "login", "--dev", "--data-dir", dataDir, "--server", p.GRPCAddr); err != nil {
		t.Fatal(err)
	}
	if out, err := runCLI(t, agentctlBin, configDir, "tenants", "create", "acme", "--display-name", "Acme", "-o", "json"); err != nil {
		t.Fatal(err)
	} else if !strings.Contains(out, `"tenantId": "acme"`) {
		t.Fatalf("tenants create printed %s", out)
	}
	adminCred, adminKey := readCredential(t, filepath.Join(dataDir, "credentials", "bootstrap-admin.json"))
	adminTok, err := clientCredentials(t, adminKey, adminCred.ClientID, adminCred.Issuer).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	adminConn := p.dial(t, adminTok.AccessToken)
	acmeKey := newAgentKey(t)
	var acmeTok string
	waitFor(t, ctx, "acme tenant-admin client", func() (bool, error) {
		_, err := issuerv1.NewIssuerServiceClient(adminConn).CreateClient(ctx, &issuerv1.CreateClientRequest{
			Parent: "tenants/acme", RequestId: "e2e-acme-admin",
			Client: &issuerv1.Client{ClientId: "acme-admin", PublicJwks: acmeKey.publicJWKS(t), Roles: []string{"tenant-admin"}},
		})
		if err != nil {
			return false, err
		}
		tok, err := clientCredentials(t, acmeKey.private, "acme-admin", p.issuer("acme")).Token(ctx)
		if err == nil {
			acmeTok = tok.AccessToken
		}
		return err == nil, err
	})

	// An agent of tenant default (no platform roles).
	agentKey := newAgentKey(t)
	admin := registryv1.NewRegistryServiceClient(adminConn)
	reg, err := admin.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{Parent: "tenants/default", RequestId: "e2e-access-agent",
		Agent: validAgent(agentKey.publicJWKS(t))})
	if err != nil {
		t.Fatal(err)
	}
	var agentTok string
	waitFor(t, ctx, "agent token", func() (bool, error) {
		tok, err := clientCredentials(t, agentKey.private, reg.GetAgent().GetAgentId(), p.issuer("default")).Token(ctx)
		if err == nil {
			agentTok = tok.AccessToken
		}
		return err == nil, err
	})
	// An agent is never given the platform API audience, even when it asks for it.
	apiReq := clientCredentials(t, agentKey.private, reg.GetAgent().GetAgentId(), p.issuer("default"))
	apiReq.EndpointParams["resource"] = []string{authn.APIAudience}
	var rerr *oauth2.RetrieveError
	if _, err := apiReq.Token(ctx); !errors.As(err, &rerr) || rerr.ErrorCode != "invalid_target" {
		t.Fatalf("agent asking for %s: %v, want invalid_target", authn.APIAudience, err)
	}
	before := countAgents(t, ctx, admin, "tenants/default")

	bad := validAgent(agentKey.publicJWKS(t))
	bad.Scopes = []string{"payments.admin"}
	tests := []struct {
		name      string
		conn      *grpc.ClientConn
		call      func(registryv1.RegistryServiceClient) error
		wantCode  codes.Code
		wantField string
	}{
		{"no token", anonymous(t, p), listDefault, codes.Unauthenticated, ""},
		{"forged token", p.dial(t, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."), listDefault, codes.Unauthenticated, ""},
		{"agent token is not for the platform API", p.dial(t, agentTok), listDefault, codes.Unauthenticated, ""},
		{"other tenant is not found", p.dial(t, acmeTok), listDefault, codes.NotFound, ""},
		{"tenant-admin may not create tenants", p.dial(t, acmeTok), func(c registryv1.RegistryServiceClient) error {
			_, err := c.CreateTenant(ctx, &registryv1.CreateTenantRequest{TenantId: "evil"})
			return err
		}, codes.PermissionDenied, ""},
		{"unknown tenant", adminConn, func(c registryv1.RegistryServiceClient) error {
			_, err := c.ListAgents(ctx, &registryv1.ListAgentsRequest{Parent: "tenants/nope"})
			return err
		}, codes.NotFound, ""},
		{"unknown agent", adminConn, func(c registryv1.RegistryServiceClient) error {
			_, err := c.GetAgent(ctx, &registryv1.GetAgentRequest{Name: "tenants/default/agents/agt_00000000000000000000000000"})
			return err
		}, codes.NotFound, ""},
		{"admin-style scope refused", adminConn, func(c registryv1.RegistryServiceClient) error {
			_, err := c.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{Parent: "tenants/default", Agent: bad})
			return err
		}, codes.InvalidArgument, "agent.scopes"},
		{"malformed parent", adminConn, func(c registryv1.RegistryServiceClient) error {
			_, err := c.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{Parent: "default", Agent: validAgent(agentKey.publicJWKS(t))})
			return err
		}, codes.InvalidArgument, "parent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(registryv1.NewRegistryServiceClient(tt.conn))
			st := status.Convert(err)
			if st.Code() != tt.wantCode {
				t.Fatalf("got %v, want %v", err, tt.wantCode)
			}
			if tt.wantField != "" && !hasFieldViolation(st, tt.wantField) {
				t.Fatalf("%v does not name the field %s", err, tt.wantField)
			}
		})
	}
	if after := countAgents(t, ctx, admin, "tenants/default"); after != before {
		t.Fatalf("refused requests changed the registry: %d agents before, %d after", before, after)
	}
}

func listDefault(c registryv1.RegistryServiceClient) error {
	_, err := c.ListAgents(context.Background(), &registryv1.ListAgentsRequest{Parent: "tenants/default"})
	return err
}

func validAgent(jwks string) *registryv1.Agent {
	return &registryv1.Agent{
		DisplayName: "Search helper", Owner: "team:search", Sponsor: "alice@corp.example", Purpose: "searches the docs",
		Environment: registryv1.Environment_ENVIRONMENT_DEV, Autonomy: registryv1.Autonomy_AUTONOMY_ASSISTIVE,
		IdentityModel: registryv1.IdentityModel_IDENTITY_MODEL_AUTONOMOUS, TrustBoundary: registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL,
		DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_PUBLIC, Scopes: []string{"docs.search"}, PublicJwks: jwks,
	}
}

func countAgents(t *testing.T, ctx context.Context, c registryv1.RegistryServiceClient, parent string) int {
	t.Helper()
	res, err := c.ListAgents(ctx, &registryv1.ListAgentsRequest{Parent: parent, PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(res.GetAgents())
}

func hasFieldViolation(st *status.Status, field string) bool {
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				if v.GetField() == field {
					return true
				}
			}
		}
	}
	return false
}

// anonymous dials without any credentials.
func anonymous(t *testing.T, p *platform) *grpc.ClientConn {
	t.Helper()
	return p.dialWith(t)
}
