package e2e_test

import (
	"context"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// TestRevocationReachesThePlatformAPI checks push revocation through the running platform: a
// tenant-admin's token works against the gRPC API until a platform admin disables that client, then
// the same (unexpired) token is refused with TOKEN_REVOKED, as soon as the revocation has reached the
// API's denylist; a token revoked through RevokeTokens likewise; other identities are unaffected;
// and after a restart the API still refuses both tokens, before it reports ready.
func TestRevocationReachesThePlatformAPI(t *testing.T) {
	agentidBin, _ := buildBinaries(t)
	dataDir := t.TempDir()
	ports := freePorts(t, 5)
	p := startPlatformOn(t, agentidBin, dataDir, ports)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	adminCred, adminKey := readCredential(t, dataDir+"/credentials/bootstrap-admin.json")
	adminTok, err := clientCredentials(t, adminKey, adminCred.ClientID, adminCred.Issuer).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	adminConn := p.dial(t, adminTok.AccessToken)
	if _, err := registryv1.NewRegistryServiceClient(adminConn).CreateTenant(ctx, &registryv1.CreateTenantRequest{
		TenantId: "acme", DisplayName: "Acme", RequestId: "e2e-revocation-acme",
	}); err != nil {
		t.Fatal(err)
	}
	issuer := issuerv1.NewIssuerServiceClient(adminConn)

	// Two tenant-admin clients of acme, each with a token that works against the API.
	tenantAdmin := func(id string) string {
		key := newAgentKey(t)
		var tok string
		waitFor(t, ctx, id+" token", func() (bool, error) {
			_, err := issuer.CreateClient(ctx, &issuerv1.CreateClientRequest{
				Parent: "tenants/acme", RequestId: "e2e-revocation-" + id,
				Client: &issuerv1.Client{ClientId: id, PublicJwks: key.publicJWKS(t), Roles: []string{"tenant-admin"}},
			})
			if err != nil {
				return false, err
			}
			got, err := clientCredentials(t, key.private, id, p.issuer("acme")).Token(ctx)
			if err == nil {
				tok = got.AccessToken
			}
			return err == nil, err
		})
		if err := listAcme(ctx, p, tok); err != nil {
			t.Fatalf("%s's fresh token refused: %v", id, err)
		}
		return tok
	}
	disabledTok := tenantAdmin("acme-admin")
	revokedTok := tenantAdmin("acme-ops")

	// Disabling the client revokes its tokens (the issuer's reactor turns client.disabled into
	// tokens.revoked); the API refuses the token as soon as its denylist has the revocation.
	disabled := time.Now()
	if _, err := issuer.DisableClient(ctx, &issuerv1.DisableClientRequest{
		Name: "tenants/acme/clients/acme-admin", Reason: "e2e: revoke everywhere", RequestId: "e2e-revocation-disable",
	}); err != nil {
		t.Fatal(err)
	}
	refused := waitRevoked(t, ctx, p, disabledTok, "the disabled client's token")
	t.Logf("disabled client's token refused by the API %s after DisableClient returned", refused.Sub(disabled).Round(time.Millisecond))

	// RevokeTokens by token: only that token.
	revokedAt := time.Now()
	res, err := issuer.RevokeTokens(ctx, &issuerv1.RevokeTokensRequest{
		Parent: "tenants/acme", Target: &issuerv1.RevokeTokensRequest_Token{Token: revokedTok},
		Reason: "e2e: leaked", RequestId: "e2e-revocation-token",
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetRevocation().GetEvent().GetTarget() != issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN {
		t.Fatalf("RevokeTokens returned %v, want a TOKEN revocation", res.GetRevocation())
	}
	refused = waitRevoked(t, ctx, p, revokedTok, "the revoked token")
	t.Logf("revoked token refused by the API %s after RevokeTokens returned", refused.Sub(revokedAt).Round(time.Millisecond))

	// Other identities are unaffected.
	if err := listAcme(ctx, p, adminTok.AccessToken); err != nil {
		t.Fatalf("platform admin refused after revocations of acme clients: %v", err)
	}

	// A restart forgets nothing: once ready again, the API still refuses both tokens.
	p.Stop(t)
	if !p.ExitedCleanly() {
		t.Fatalf("agentid dev did not exit cleanly:\n%s", p.Output())
	}
	p2 := startPlatformOn(t, agentidBin, dataDir, ports)
	for _, tok := range []string{disabledTok, revokedTok} {
		if err := listAcme(ctx, p2, tok); !isRevokedStatus(err) {
			t.Fatalf("after restart: revoked token answered %v, want Unauthenticated TOKEN_REVOKED", err)
		}
	}
	adminTok, err = clientCredentials(t, adminKey, adminCred.ClientID, adminCred.Issuer).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := listAcme(ctx, p2, adminTok.AccessToken); err != nil {
		t.Fatalf("platform admin refused after restart: %v", err)
	}
}

// listAcme lists acme's agents with token.
func listAcme(ctx context.Context, p *platform, token string) error {
	conn, err := grpc.NewClient(p.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearer{ts: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token})}))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	_, err = registryv1.NewRegistryServiceClient(conn).ListAgents(ctx, &registryv1.ListAgentsRequest{Parent: "tenants/acme"})
	return err
}

// waitRevoked polls the API with token until it is refused as revoked and returns when; any other
// refusal fails the test at once.
func waitRevoked(t *testing.T, ctx context.Context, p *platform, token, what string) time.Time {
	t.Helper()
	conn := p.dial(t, token)
	client := registryv1.NewRegistryServiceClient(conn)
	var at time.Time
	testkit.Eventually(t, 0, what+" refused as TOKEN_REVOKED", func() (bool, error) {
		_, err := client.ListAgents(ctx, &registryv1.ListAgentsRequest{Parent: "tenants/acme"})
		if err == nil {
			return false, nil
		}
		if !isRevokedStatus(err) {
			t.Fatalf("%s: refused with %v, want Unauthenticated TOKEN_REVOKED", what, err)
		}
		at = time.Now()
		return true, nil
	})
	return at
}

// isRevokedStatus reports whether err is Unauthenticated with reason TOKEN_REVOKED.
func isRevokedStatus(err error) bool {
	st := status.Convert(err)
	if err == nil || st.Code() != codes.Unauthenticated {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == "TOKEN_REVOKED" {
			return true
		}
	}
	return false
}
