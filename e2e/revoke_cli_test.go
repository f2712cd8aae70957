package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/natsauth"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// TestAgentctlTokensRevoke drives `agentctl tokens revoke` against `agentid dev`: a token given in a
// file, every token of a client, and every token of a tenant issued before a time are each refused
// by the platform API (TOKEN_REVOKED) and reported inactive by introspection, while tokens the
// revocation does not cover keep working; the command names the revocation it recorded; and a bad
// flag combination fails naming the flags without writing anything.
func TestAgentctlTokensRevoke(t *testing.T) {
	agentidBin, agentctlBin := buildBinaries(t)
	dataDir, configDir, keys := t.TempDir(), t.TempDir(), t.TempDir()
	p := startPlatform(t, agentidBin, dataDir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := runCLI(t, agentctlBin, configDir, "login", "--dev", "--data-dir", dataDir, "--server", p.GRPCAddr); err != nil {
		t.Fatal(err)
	}
	adminTok := adminToken(t, ctx, dataDir)
	cli := func(args ...string) (string, error) { return runCLI(t, agentctlBin, configDir, args...) }

	// Two tenant-admins of tenant default, created with agentctl, each with a working API token.
	_, tokA := cliIdentity(t, ctx, p, agentctlBin, configDir, "default", "ops-a", filepath.Join(keys, "ops-a.json"))
	_, tokB := cliIdentity(t, ctx, p, agentctlBin, configDir, "default", "ops-b", filepath.Join(keys, "ops-b.json"))
	tokFile := filepath.Join(keys, "ops-a.jwt")
	if err := os.WriteFile(tokFile, []byte(tokA+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// A bad flag combination fails, naming the flags, and records nothing.
	stored := revocationsStored(t, ctx, p)
	bad := []struct {
		name string
		args []string
		want string
	}{
		{"nothing to revoke", nil, "exactly one of --token, --token-file, --client, --agent and --issued-before"},
		{"client and agent", []string{"--client", "ops-a", "--agent", "agt_00000000000000000000000000"}, "exactly one of --token, --token-file, --client, --agent and --issued-before"},
		{"token and token file", []string{"--token", tokA, "--token-file", tokFile}, "exactly one of --token, --token-file"},
		{"issued-before not a time", []string{"--issued-before", "yesterday"}, "--issued-before"},
		{"token file missing", []string{"--token-file", filepath.Join(keys, "missing.jwt")}, "--token-file"},
		{"client of another shape", []string{"--client", "tenants/default/agents/ops-a"}, "tenants/{tenant}/clients/{client}"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			out, err := cli(append([]string{"tokens", "revoke"}, b.args...)...)
			if err == nil {
				t.Fatalf("tokens revoke %v succeeded, printing %q", b.args, out)
			}
			if !strings.Contains(err.Error(), b.want) {
				t.Fatalf("tokens revoke %v failed with %v; want it to name %q", b.args, err, b.want)
			}
		})
	}
	if got := revocationsStored(t, ctx, p); got != stored {
		t.Fatalf("refused commands stored revocations: %d before, %d after", stored, got)
	}

	// --token-file: that token only.
	out, err := cli("tokens", "revoke", "--token-file", tokFile, "--reason", "e2e: leaked", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	rev := decodeRevocation(t, out)
	if !strings.HasPrefix(rev.Name, "tenants/default/revocations/") || rev.Event.Target != "REVOCATION_TARGET_TOKEN" ||
		rev.Event.TokenID != unverifiedClaims(t, tokA)["jti"] || rev.Event.Reason != "e2e: leaked" {
		t.Fatalf("tokens revoke --token-file printed %s; want a TOKEN revocation of jti %v named tenants/default/revocations/…", out, unverifiedClaims(t, tokA)["jti"])
	}
	waitRefusedAsRevoked(t, ctx, p, "tenants/default", tokA, "the token revoked with --token-file")
	if introspect(t, ctx, p.issuer("default"), adminTok, tokA) {
		t.Error("introspection reports the revoked token active")
	}
	if err := listAgentsWith(ctx, p, "tenants/default", tokB); err != nil {
		t.Fatalf("ops-b's token refused after ops-a's token was revoked: %v", err)
	}

	// --client: every token of the client, shown as a table naming the revocation.
	out, err = cli("tokens", "revoke", "--client", "ops-b", "--reason", "e2e: key rotated")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "NAME") || !strings.Contains(out, "tenants/default/revocations/") || !strings.Contains(out, "ops-b issued until") {
		t.Fatalf("tokens revoke --client printed %q; want a table naming the revocation and ops-b", out)
	}
	waitRefusedAsRevoked(t, ctx, p, "tenants/default", tokB, "ops-b's token after tokens revoke --client")
	if introspect(t, ctx, p.issuer("default"), adminTok, tokB) {
		t.Error("introspection reports the revoked client's token active")
	}
	if err := listAgentsWith(ctx, p, "tenants/default", adminTok); err != nil {
		t.Fatalf("the platform admin refused after revocations of other clients: %v", err)
	}

	// --issued-before, in tenant acme: its tokens issued until then are refused, later ones work.
	if _, err := cli("tenants", "create", "acme", "--display-name", "Acme"); err != nil {
		t.Fatal(err)
	}
	credC, tokC := cliIdentity(t, ctx, p, agentctlBin, configDir, "acme", "acme-ops", filepath.Join(keys, "acme-ops.json"))
	issuedBefore := time.Unix(int64(unverifiedClaims(t, tokC)["iat"].(float64)), 0).UTC()
	out, err = cli("--tenant", "acme", "tokens", "revoke", "--issued-before", issuedBefore.Format(time.RFC3339), "--reason", "e2e: incident", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	rev = decodeRevocation(t, out)
	if !strings.HasPrefix(rev.Name, "tenants/acme/revocations/") || rev.Event.Target != "REVOCATION_TARGET_TENANT" {
		t.Fatalf("tokens revoke --issued-before printed %s; want a TENANT revocation named tenants/acme/revocations/…", out)
	}
	waitRefusedAsRevoked(t, ctx, p, "tenants/acme", tokC, "acme's token issued before the revocation time")
	var later string
	waitFor(t, ctx, "a token of acme-ops issued after "+issuedBefore.Format(time.RFC3339), func() (bool, error) {
		tok, err := credC.TokenSource(ctx).Token()
		if err != nil {
			return false, err
		}
		later = tok.AccessToken
		iat := unverifiedClaims(t, later)["iat"].(float64)
		return int64(iat) > issuedBefore.Unix(), fmt.Errorf("iat %d", int64(iat))
	})
	if err := listAgentsWith(ctx, p, "tenants/acme", later); err != nil {
		t.Fatalf("acme token issued after the --issued-before time refused: %v", err)
	}
	if err := listAgentsWith(ctx, p, "tenants/default", adminTok); err != nil {
		t.Fatalf("the platform admin refused after acme's tenant revocation: %v", err)
	}
}

// adminToken is a platform API token of the bootstrap platform admin.
func adminToken(t *testing.T, ctx context.Context, dataDir string) string {
	t.Helper()
	cred, key := readCredential(t, filepath.Join(dataDir, "credentials", "bootstrap-admin.json"))
	tok, err := clientCredentials(t, key, cred.ClientID, cred.Issuer).Token(ctx)
	if err != nil {
		t.Fatalf("bootstrap admin token: %v", err)
	}
	return tok.AccessToken
}

// cliIdentity creates a tenant-admin of tenant with `agentctl clients create`, and returns its
// credential and a platform API token that the API accepts.
func cliIdentity(t *testing.T, ctx context.Context, p *platform, agentctl, configDir, tenant, clientID, keyFile string) (*authn.Credential, string) {
	t.Helper()
	if _, err := runCLI(t, agentctl, configDir, "--tenant", tenant, "clients", "create", clientID, "--role", "tenant-admin", "--key-out", keyFile); err != nil {
		t.Fatal(err)
	}
	cred, err := authn.LoadCredentialFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var tok string
	waitFor(t, ctx, clientID+"'s token", func() (bool, error) {
		got, err := cred.TokenSource(ctx).Token()
		if err != nil {
			return false, err
		}
		tok = got.AccessToken
		return true, nil
	})
	if err := listAgentsWith(ctx, p, "tenants/"+tenant, tok); err != nil {
		t.Fatalf("%s's fresh token refused by the API: %v", clientID, err)
	}
	return cred, tok
}

// listAgentsWith lists the agents of parent with token.
func listAgentsWith(ctx context.Context, p *platform, parent, token string) error {
	conn, err := grpc.NewClient(p.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearer{ts: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token})}))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	_, err = registryv1.NewRegistryServiceClient(conn).ListAgents(ctx, &registryv1.ListAgentsRequest{Parent: parent})
	return err
}

// waitRefusedAsRevoked polls the API with token until it is refused as TOKEN_REVOKED; any other
// refusal fails the test at once.
func waitRefusedAsRevoked(t *testing.T, ctx context.Context, p *platform, parent, token, what string) {
	t.Helper()
	testkit.Eventually(t, 0, what+" refused as TOKEN_REVOKED", func() (bool, error) {
		err := listAgentsWith(ctx, p, parent, token)
		if err == nil {
			return false, nil
		}
		if !isRevokedStatus(err) {
			t.Fatalf("%s: refused with %v, want Unauthenticated TOKEN_REVOKED", what, err)
		}
		return true, nil
	})
}

// printedRevocation is the part of a Revocation that agentctl prints as JSON and the test reads.
type printedRevocation struct {
	Name  string `json:"name"`
	Event struct {
		Target  string `json:"target"`
		TokenID string `json:"tokenId"`
		Reason  string `json:"reason"`
	} `json:"event"`
}

// decodeRevocation reads the revocation agentctl printed as JSON.
func decodeRevocation(t *testing.T, out string) printedRevocation {
	t.Helper()
	var r printedRevocation
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("agentctl printed %q, want a revocation as JSON: %v", out, err)
	}
	return r
}

// revocationsStored is the number of events on the REVOCATIONS stream, read from the platform's NATS.
func revocationsStored(t *testing.T, ctx context.Context, p *platform) uint64 {
	t.Helper()
	nc, err := nats.Connect(p.NATSURL, append(natsOptions(t, p.NATSURL, natsauth.Verifier), nats.Name("e2e revocations"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, eventstore.StreamRevocations)
	if err != nil {
		t.Fatalf("stream %s: %v", eventstore.StreamRevocations, err)
	}
	return s.CachedInfo().State.Msgs
}
