package app_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/app"
)

// rolePrincipals are the callers of the role tests.
var rolePrincipals = map[string]*authn.Claims{
	"platform-admin":  {Subject: "admin", ClientID: "admin", Tenant: authn.SystemTenant, Roles: []string{"platform-admin"}},
	"system-admin":    {Subject: "sam", ClientID: "sam", Tenant: authn.SystemTenant, Roles: []string{"tenant-admin"}},
	"acme-admin":      {Subject: "alice", ClientID: "alice", Tenant: "acme", Roles: []string{"tenant-admin", "approver"}},
	"acme-plat-ish":   {Subject: "mallory", ClientID: "mallory", Tenant: "acme", Roles: []string{"tenant-admin", "platform-admin"}},
	"worker":          {Subject: "lifecycle-worker", ClientID: "lifecycle-worker", Tenant: authn.SystemTenant, Roles: []string{"lifecycle-worker"}},
	"acme-worker":     {Subject: "fake-worker", ClientID: "fake-worker", Tenant: "acme", Roles: []string{"lifecycle-worker"}},
	"delegated-admin": {Subject: "lifecycle-worker", ClientID: "ops-agent", Tenant: authn.SystemTenant, Roles: []string{"lifecycle-worker"}, Act: map[string]any{"sub": "ops-agent"}},
}

// roleAdmin returns an IssuerService client on a gRPC server whose verifier accepts rolePrincipals.
func roleAdmin(t *testing.T, r *replica) issuerv1.IssuerServiceClient {
	t.Helper()
	s := grpcx.NewServer(grpcx.ServerConfig{Logger: testLogger(t), Verifier: testkit.StaticVerifier(rolePrincipals), Registry: prometheus.NewRegistry()})
	r.app.RegisterGRPC(s)
	return issuerv1.NewIssuerServiceClient(testkit.ServeGRPC(t, s))
}

// staffClient is a CreateClientRequest for a client with roles in tenant.
func staffClient(t *testing.T, tenant, id string, ttl int32, roles ...string) *issuerv1.CreateClientRequest {
	return &issuerv1.CreateClientRequest{Parent: "tenants/" + tenant, Client: &issuerv1.Client{
		ClientId: id, PublicJwks: newTestClient(t, tenant, id).jwks(t), Roles: roles, TokenTtlSeconds: ttl,
	}}
}

// agentClientID is a well-formed agent id (and so the id of the agent's client).
func agentClientID(n int) string {
	return "agt_" + strings.Repeat("0", 25) + string(rune('a'+n))
}

// agentClientRequest is the CreateClientRequest a provisioning run sends for agent id.
func agentClientRequest(t *testing.T, tenant, id string) *issuerv1.CreateClientRequest {
	return &issuerv1.CreateClientRequest{Parent: "tenants/" + tenant, Client: &issuerv1.Client{
		ClientId: id, Agent: "tenants/" + tenant + "/agents/" + id, Environment: "prod",
		PublicJwks: newTestClient(t, tenant, id).jwks(t), Resources: []string{agentResource},
	}}
}

// wantRefused checks the gRPC code and, when set, the reason of a refusal.
func wantRefused(t *testing.T, err error, code codes.Code, reason string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want %s", err, code)
	}
	if reason != "" {
		if e := errs.FromStatus(err); e == nil || e.Reason != reason {
			t.Fatalf("got %v, want reason %s", err, reason)
		}
	}
}

// credentialEvents counts the events of tenant's client aggregate id.
func clientVersion(t *testing.T, r *replica, tenant, id string) uint64 {
	t.Helper()
	_, version, err := r.store.Load(context.Background(), tenant, eventstore.AggregateClient, id)
	if err != nil {
		t.Fatal(err)
	}
	return version
}

func TestTenantAdminOfSystemCannotMintPlatformAdmin(t *testing.T) {
	r := startIssuer(t)
	admin := roleAdmin(t, r)
	if err := r.app.EnsureSigningKey(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		as     string
		req    *issuerv1.CreateClientRequest
		code   codes.Code
		reason string
	}{
		{"tenant-admin of system mints platform-admin", "system-admin", staffClient(t, authn.SystemTenant, "minted-root", 0, "platform-admin"), codes.PermissionDenied, "MISSING_ROLE"},
		{"tenant-admin of system mints tenant-admin", "system-admin", staffClient(t, authn.SystemTenant, "minted-admin", 0, "tenant-admin"), codes.PermissionDenied, "MISSING_ROLE"},
		{"tenant-admin of system mints the lifecycle role", "system-admin", staffClient(t, authn.SystemTenant, "minted-worker", 0, "lifecycle-worker"), codes.PermissionDenied, "MISSING_ROLE"},
		{"tenant-admin of system elsewhere", "system-admin", staffClient(t, "acme", "minted-acme", 0, "tenant-admin"), codes.NotFound, "TENANT_NOT_FOUND"},
		{"tenant-admin mints platform-admin in its tenant", "acme-admin", staffClient(t, "acme", "acme-root", 0, "platform-admin"), codes.PermissionDenied, "ROLE_NOT_HELD"},
		{"platform-admin role of acme mints platform-admin", "acme-plat-ish", staffClient(t, "acme", "acme-root-2", 0, "platform-admin"), codes.PermissionDenied, "ROLE_NOT_HELD"},
		{"platform-admin creates a tenant-admin in system", "platform-admin", staffClient(t, authn.SystemTenant, "sys-admin", 0, "tenant-admin"), codes.InvalidArgument, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := admin.CreateClient(testkit.WithBearer(t.Context(), tt.as), tt.req)
			wantRefused(t, err, tt.code, tt.reason)
			tenant := strings.TrimPrefix(tt.req.GetParent(), "tenants/")
			if v := clientVersion(t, r, tenant, tt.req.GetClient().GetClientId()); v != 0 {
				t.Fatalf("a refused create wrote %d events", v)
			}
		})
	}
	// A tenant-admin of system reads and disables nothing there either.
	_, err := admin.GetClient(testkit.WithBearer(t.Context(), "system-admin"), &issuerv1.GetClientRequest{Name: "tenants/system/clients/admin"})
	wantRefused(t, err, codes.PermissionDenied, "MISSING_ROLE")
	_, err = admin.DisableClient(testkit.WithBearer(t.Context(), "system-admin"), &issuerv1.DisableClientRequest{Name: "tenants/system/clients/admin"})
	wantRefused(t, err, codes.PermissionDenied, "MISSING_ROLE")

	// The platform-admin may.
	if _, err := admin.CreateClient(testkit.WithBearer(t.Context(), "platform-admin"), staffClient(t, authn.SystemTenant, "second-root", 0, "platform-admin")); err != nil {
		t.Fatalf("platform-admin creates a platform-admin: %v", err)
	}
}

func TestCallerGrantsOnlyRolesItHolds(t *testing.T) {
	r := startIssuer(t)
	admin := roleAdmin(t, r)
	if err := r.app.EnsureSigningKey(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		as     string
		roles  []string
		code   codes.Code
		reason string
	}{
		{"a role it holds", "acme-admin", []string{"approver"}, codes.OK, ""},
		{"all roles it holds", "acme-admin", []string{"tenant-admin", "approver"}, codes.OK, ""},
		{"a role it lacks", "acme-admin", []string{"auditor"}, codes.PermissionDenied, "ROLE_NOT_HELD"},
		{"one held, one lacking", "acme-admin", []string{"approver", "analyst"}, codes.PermissionDenied, "ROLE_NOT_HELD"},
		{"the lifecycle role", "acme-admin", []string{"lifecycle-worker"}, codes.PermissionDenied, "ROLE_NOT_HELD"},
		{"platform-admin grants what it does not hold", "platform-admin", []string{"auditor", "resource-server"}, codes.OK, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "staff-" + string(rune('a'+i))
			_, err := admin.CreateClient(testkit.WithBearer(t.Context(), tt.as), staffClient(t, "acme", id, 0, tt.roles...))
			if tt.code == codes.OK {
				if err != nil {
					t.Fatalf("CreateClient: %v", err)
				}
				return
			}
			wantRefused(t, err, tt.code, tt.reason)
			if e := errs.FromStatus(err); !strings.Contains(e.Message, "holds") {
				t.Fatalf("message %q does not say why", e.Message)
			}
			if v := clientVersion(t, r, "acme", id); v != 0 {
				t.Fatalf("a refused create wrote %d events", v)
			}
		})
	}
}

func TestLifecycleRoleCannotCreateStaffClient(t *testing.T) {
	r := startIssuer(t)
	admin := roleAdmin(t, r)
	if err := r.app.EnsureSigningKey(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	staff, err := admin.CreateClient(testkit.WithBearer(t.Context(), "platform-admin"), staffClient(t, "acme", "ops", 0, "tenant-admin"))
	if err != nil {
		t.Fatal(err)
	}
	agentReq := agentClientRequest(t, "acme", agentClientID(0))
	wrongAgent := agentClientRequest(t, "acme", agentClientID(1))
	wrongAgent.Client.Agent = "tenants/acme/agents/" + agentClientID(2)
	notAnAgentID := agentClientRequest(t, "acme", "helper")

	refused := []struct {
		name string
		as   string
		call func(ctx context.Context) error
		code codes.Code
	}{
		{"a staff client", "worker", func(ctx context.Context) error {
			_, err := admin.CreateClient(ctx, staffClient(t, "acme", "worker-made", 0, "tenant-admin"))
			return err
		}, codes.PermissionDenied},
		{"a client with its own role", "worker", func(ctx context.Context) error {
			_, err := admin.CreateClient(ctx, staffClient(t, "acme", "worker-made-2", 0, "lifecycle-worker"))
			return err
		}, codes.PermissionDenied},
		{"an agent client under another id", "worker", func(ctx context.Context) error {
			_, err := admin.CreateClient(ctx, wrongAgent)
			return err
		}, codes.InvalidArgument},
		{"an agent client under a non-agent id", "worker", func(ctx context.Context) error {
			_, err := admin.CreateClient(ctx, notAnAgentID)
			return err
		}, codes.PermissionDenied},
		{"a client in tenant system", "worker", func(ctx context.Context) error {
			_, err := admin.CreateClient(ctx, agentClientRequest(t, authn.SystemTenant, agentClientID(3)))
			return err
		}, codes.PermissionDenied},
		{"read a staff client", "worker", func(ctx context.Context) error {
			_, err := admin.GetClient(ctx, &issuerv1.GetClientRequest{Name: staff.GetClient().GetName()})
			return err
		}, codes.PermissionDenied},
		{"disable a staff client", "worker", func(ctx context.Context) error {
			_, err := admin.DisableClient(ctx, &issuerv1.DisableClientRequest{Name: staff.GetClient().GetName()})
			return err
		}, codes.PermissionDenied},
		{"revoke tokens", "worker", func(ctx context.Context) error {
			_, err := admin.RevokeTokens(ctx, &issuerv1.RevokeTokensRequest{Parent: "tenants/acme", Target: &issuerv1.RevokeTokensRequest_Client{Client: staff.GetClient().GetName()}})
			return err
		}, codes.NotFound},
		{"revoke every token of the tenant", "worker", func(ctx context.Context) error {
			_, err := admin.RevokeTokens(ctx, &issuerv1.RevokeTokensRequest{Parent: "tenants/acme", Target: &issuerv1.RevokeTokensRequest_IssuedBefore{IssuedBefore: timestamppb.Now()}})
			return err
		}, codes.NotFound},
		{"the role held outside system", "acme-worker", func(ctx context.Context) error {
			_, err := admin.CreateClient(ctx, agentClientRequest(t, "acme", agentClientID(4)))
			return err
		}, codes.PermissionDenied},
		{"the role delegated", "delegated-admin", func(ctx context.Context) error {
			_, err := admin.CreateClient(ctx, agentClientRequest(t, "acme", agentClientID(5)))
			return err
		}, codes.NotFound},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			wantRefused(t, tt.call(testkit.WithBearer(t.Context(), tt.as)), tt.code, "")
		})
	}
	for _, id := range []string{"worker-made", "worker-made-2", agentClientID(1), "helper", agentClientID(4), agentClientID(5)} {
		if v := clientVersion(t, r, "acme", id); v != 0 {
			t.Fatalf("a refused call wrote %d events on client %s", v, id)
		}
	}
	if got, err := admin.GetClient(testkit.WithBearer(t.Context(), "platform-admin"), &issuerv1.GetClientRequest{Name: staff.GetClient().GetName()}); err != nil || got.GetClient().GetState() != issuerv1.ClientState_CLIENT_STATE_ACTIVE {
		t.Fatalf("the staff client after the refusals: %v, %v", got, err)
	}

	// What provisioning and deprovisioning do, it may do: create an agent's client, read it,
	// disable it, and tombstone an agent's client id before its client exists.
	ctx := testkit.WithBearer(t.Context(), "worker")
	created, err := admin.CreateClient(ctx, agentReq)
	if err != nil || created.GetClient().GetAgent() != agentReq.GetClient().GetAgent() || len(created.GetClient().GetRoles()) != 0 {
		t.Fatalf("worker creates the agent's client: %v, %v", created, err)
	}
	if _, err := admin.GetClient(ctx, &issuerv1.GetClientRequest{Name: created.GetClient().GetName()}); err != nil {
		t.Fatalf("worker reads the agent's client: %v", err)
	}
	if d, err := admin.DisableClient(ctx, &issuerv1.DisableClientRequest{Name: created.GetClient().GetName(), Reason: "retired"}); err != nil || d.GetClient().GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED {
		t.Fatalf("worker disables the agent's client: %v, %v", d, err)
	}
	// An incident's suspension and deprovisioning revoke every token of the agent.
	if _, err := admin.RevokeTokens(ctx, &issuerv1.RevokeTokensRequest{Parent: "tenants/acme", Target: &issuerv1.RevokeTokensRequest_Agent{Agent: agentReq.GetClient().GetAgent()},
		Reason: "incident", RequestId: "worker-revoke-agent"}); err != nil {
		t.Fatalf("worker revokes every token of the agent: %v", err)
	}
	if d, err := admin.DisableClient(ctx, &issuerv1.DisableClientRequest{Name: "tenants/acme/clients/" + agentClientID(6), Reason: "never provisioned"}); err != nil || !d.GetClient().GetTombstone() {
		t.Fatalf("worker tombstones an agent's client id: %v, %v", d, err)
	}
}

// tokenLifetime returns exp - iat of an access token and its expires_in.
func tokenLifetime(t *testing.T, resp oauthResponse) (time.Duration, time.Duration) {
	t.Helper()
	parts := strings.Split(resp.str("access_token"), ".")
	if len(parts) != 3 {
		t.Fatalf("access token %q is not a JWS", resp.str("access_token"))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c accessTokenClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	in, _ := resp.body["expires_in"].(float64)
	return time.Duration(c.Expiry-c.IssuedAt) * time.Second, time.Duration(in) * time.Second
}

func TestRoleTokensAtMost15Minutes(t *testing.T) {
	// An issuer whose default lifetime is an hour: clients without roles get it, clients with roles
	// get at most 15 minutes.
	r := launchReplicaWith(t, testkit.StartNATS(t), "", func(c *app.Config) { c.DefaultTokenTTL = time.Hour })
	r.waitReady(t)
	admin := roleAdmin(t, r)
	ctx := testkit.WithBearer(t.Context(), "platform-admin")
	if err := r.app.EnsureSigningKey(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}

	// Asking for more is refused, naming the field; nothing is written.
	_, err := admin.CreateClient(ctx, staffClient(t, "acme", "long-lived", 3600, "auditor"))
	wantRefused(t, err, codes.InvalidArgument, "")
	if e := errs.FromStatus(err); e.Field != "client.token_ttl_seconds" {
		t.Fatalf("field = %q, want client.token_ttl_seconds", e.Field)
	}
	if v := clientVersion(t, r, "acme", "long-lived"); v != 0 {
		t.Fatalf("a refused create wrote %d events", v)
	}
	if err := r.app.EnsureClient(context.Background(), authn.SystemTenant, &issuerv1.Client{
		ClientId: "root-2", PublicJwks: newTestClient(t, authn.SystemTenant, "root-2").jwks(t), Roles: []string{"platform-admin"}, TokenTtlSeconds: 901,
	}); !errs.Is(err, errs.KindInvalidArgument) {
		t.Fatalf("EnsureClient of a platform-admin with 901s: %v, want InvalidArgument", err)
	}

	tests := []struct {
		name  string
		setup func(t *testing.T, c *testClient)
		want  time.Duration
	}{
		{"role client with the default lifetime", func(t *testing.T, c *testClient) {
			if err := r.app.EnsureClient(context.Background(), c.tenant, &issuerv1.Client{ClientId: c.id, PublicJwks: c.jwks(t), Roles: []string{"auditor"}}); err != nil {
				t.Fatal(err)
			}
		}, 15 * time.Minute},
		{"role client at the limit", func(t *testing.T, c *testClient) {
			if _, err := admin.CreateClient(ctx, &issuerv1.CreateClientRequest{Parent: "tenants/acme", Client: &issuerv1.Client{
				ClientId: c.id, PublicJwks: c.jwks(t), Roles: []string{"tenant-admin"}, TokenTtlSeconds: 900}}); err != nil {
				t.Fatal(err)
			}
		}, 15 * time.Minute},
		{"role client asking for less", func(t *testing.T, c *testClient) {
			if _, err := admin.CreateClient(ctx, &issuerv1.CreateClientRequest{Parent: "tenants/acme", Client: &issuerv1.Client{
				ClientId: c.id, PublicJwks: c.jwks(t), Roles: []string{"analyst"}, TokenTtlSeconds: 300}}); err != nil {
				t.Fatal(err)
			}
		}, 5 * time.Minute},
		{"role client registered before the limit", func(t *testing.T, c *testClient) {
			// A registration from an older version (or written around the commands) with a day.
			name := "tenants/acme/clients/" + c.id
			_, err := r.store.Append(context.Background(), eventstore.Append{
				Tenant: "acme", AggregateType: eventstore.AggregateClient, AggregateID: c.id, IdempotencyKey: uuid.NewString(),
				Type: "client.created", Subject: name,
				Data: &issuerv1.ClientCreated{Client: &issuerv1.Client{
					Name: name, ClientId: c.id, Tenant: "acme", PublicJwks: c.jwks(t), Roles: []string{"auditor"},
					TokenTtlSeconds: 86400, State: issuerv1.ClientState_CLIENT_STATE_ACTIVE,
				}},
				Metadata: eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "issuer", Kind: eventstore.ActorService}},
			})
			if err != nil {
				t.Fatal(err)
			}
			waitForClient(t, r, "acme", c.id)
		}, 15 * time.Minute},
		{"agent client keeps the default", func(t *testing.T, c *testClient) { c.register(t, r, "x") }, time.Hour},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestClient(t, "acme", "ttl-"+string(rune('a'+i)))
			tt.setup(t, c)
			lifetime, expiresIn := tokenLifetime(t, requestToken(t, r, c))
			if lifetime != tt.want || expiresIn != tt.want {
				t.Fatalf("token lives %s (expires_in %s), want %s", lifetime, expiresIn, tt.want)
			}
		})
	}
}
