// Package e2e_test drives a running `agentid dev` only through its public interfaces: gRPC, the OAuth
// endpoints with third-party OAuth/OIDC clients, and the agentctl binary.
package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// TestThinSlice walks one agent from registration to retirement across all five services.
func TestThinSlice(t *testing.T) {
	agentidBin, agentctlBin := buildBinaries(t)
	dataDir := t.TempDir()
	configDir := t.TempDir()
	p := startPlatform(t, agentidBin, dataDir)
	t.Logf("agentid dev ready in %s", p.Ready)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// The bootstrap admin credential is a private key of a platform service identity; agentctl uses it.
	out, err := runCLI(t, agentctlBin, configDir, "login", "--dev", "--data-dir", dataDir, "--server", p.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "logged in") {
		t.Fatalf("agentctl login --dev printed %q", out)
	}
	adminCred, adminKey := readCredential(t, filepath.Join(dataDir, "credentials", "bootstrap-admin.json"))
	adminTok, err := clientCredentials(t, adminKey, adminCred.ClientID, adminCred.Issuer).Token(ctx)
	if err != nil {
		t.Fatalf("bootstrap admin token: %v", err)
	}
	conn := p.dial(t, adminTok.AccessToken)
	registry := registryv1.NewRegistryServiceClient(conn)

	// 1. Register a low-risk agent.
	key := newAgentKey(t)
	registered := time.Now()
	reg, err := registry.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{
		Parent: "tenants/default",
		Agent: &registryv1.Agent{
			DisplayName:     "FAQ bot",
			Owner:           "team:support",
			Sponsor:         "alice@corp.example",
			Purpose:         "answers questions from the public FAQ",
			Environment:     registryv1.Environment_ENVIRONMENT_DEV,
			Autonomy:        registryv1.Autonomy_AUTONOMY_ASSISTIVE,
			IdentityModel:   registryv1.IdentityModel_IDENTITY_MODEL_AUTONOMOUS,
			TrustBoundary:   registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL,
			DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL,
			Scopes:          []string{"faq.read", "ticket.read"},
			PublicJwks:      key.publicJWKS(t),
		},
		RequestId: "e2e-register-faq-bot",
	})
	if err != nil {
		t.Fatalf("RegisterAgent: %v", err)
	}
	agent := reg.GetAgent()
	if agent.GetState() != registryv1.AgentState_AGENT_STATE_PENDING || agent.GetRiskTier() != registryv1.RiskTier_RISK_TIER_LOW {
		t.Fatalf("registered agent: state %s, risk %s; want PENDING, LOW", agent.GetState(), agent.GetRiskTier())
	}

	// 2. The provisioning workflow asks policy, which auto-approves; the agent becomes active.
	active := waitFor(t, ctx, "agent ACTIVE", func() (bool, error) {
		got, err := registry.GetAgent(ctx, &registryv1.GetAgentRequest{Name: agent.GetName()})
		if err != nil {
			return false, err
		}
		return got.GetAgent().GetState() == registryv1.AgentState_AGENT_STATE_ACTIVE, nil
	})
	t.Logf("register → active: %s", active.Sub(registered))

	// 3. The agent's key is registered with the issuer: a standard client gets an ES256 JWT.
	issuer := p.issuer("default")
	var tok *oauth2.Token
	tokenAt := time.Now()
	waitFor(t, ctx, "first token", func() (bool, error) {
		tok, err = clientCredentials(t, key.private, agent.GetAgentId(), issuer, "faq.read").Token(ctx)
		return err == nil, nil
	})
	t.Logf("active → first token: %s", time.Since(tokenAt))
	start := time.Now()
	tok, err = clientCredentials(t, key.private, agent.GetAgentId(), issuer, "faq.read").Token(ctx)
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	t.Logf("token request latency: %s", time.Since(start))

	// 4. The token verifies with go-oidc against our discovery document and JWKS.
	provider, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	verifier := provider.VerifierContext(ctx, &oidc.Config{SkipClientIDCheck: true, SupportedSigningAlgs: []string{oidc.ES256}})
	idt, err := verifier.Verify(ctx, tok.AccessToken)
	if err != nil {
		t.Fatalf("verify access token: %v", err)
	}
	var claims struct {
		Tenant   string `json:"tenant"`
		Env      string `json:"env"`
		Agent    string `json:"agent"`
		Scope    string `json:"scope"`
		ClientID string `json:"client_id"`
	}
	if err := idt.Claims(&claims); err != nil {
		t.Fatal(err)
	}
	if idt.Subject != agent.GetAgentId() || claims.Tenant != "default" || claims.Env != "dev" ||
		claims.Agent != agent.GetName() || claims.Scope != "faq.read" || claims.ClientID != agent.GetAgentId() {
		t.Fatalf("claims: sub=%s %+v", idt.Subject, claims)
	}

	// 5. The issuance shows up in monitor's telemetry store.
	monitor := monitorv1.NewMonitorServiceClient(conn)
	waitFor(t, ctx, "token telemetry", func() (bool, error) {
		res, err := monitor.ListTelemetryEvents(ctx, &monitorv1.ListTelemetryEventsRequest{
			Parent: "tenants/default", Agent: agent.GetName(), Kind: "token.requested",
		})
		if err != nil {
			return false, err
		}
		for _, e := range res.GetEvents() {
			if e.GetOutcome() == "issued" && slices.Contains(e.GetScopes(), "faq.read") {
				return true, nil
			}
		}
		return false, nil
	})

	// 6. agentctl retires the agent; the deprovisioning workflow runs to completion.
	if out, err := runCLI(t, agentctlBin, configDir, "--server", p.GRPCAddr, "agents", "retire", agent.GetName(),
		"--reason", "project finished", "--wait", "-o", "json"); err != nil {
		t.Fatal(err)
	} else if !strings.Contains(out, "AGENT_STATE_RETIRED") {
		t.Fatalf("agentctl agents retire --wait printed %s", out)
	}

	// 7. The next token request fails with invalid_client, and introspection reports the old token inactive.
	_, err = clientCredentials(t, key.private, agent.GetAgentId(), issuer, "faq.read").Token(ctx)
	var rerr *oauth2.RetrieveError
	if !errors.As(err, &rerr) || rerr.ErrorCode != "invalid_client" {
		t.Fatalf("token after retirement: got %v, want invalid_client", err)
	}
	if active := introspect(t, ctx, issuer, adminTok.AccessToken, tok.AccessToken); active {
		t.Fatal("introspection reports the retired agent's token active")
	}
}

// introspect asks the RFC 7662 endpoint about token, authenticated as the platform admin.
func introspect(t *testing.T, ctx context.Context, issuer, bearerToken, token string) bool {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, issuer+"/oauth2/introspect",
		strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+bearerToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("introspection: HTTP %d", res.StatusCode)
	}
	var body struct {
		Active bool `json:"active"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Active
}

// waitFor polls cond until it holds, failing the test at ctx's deadline; it returns when cond first held.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() (bool, error)) time.Time {
	t.Helper()
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return time.Now()
		}
		lastErr = err
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s (last error: %v)", what, lastErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
