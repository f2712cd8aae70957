package e2e_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// TestRestartKeepsState stops `agentid dev` with an interrupt and starts it again on the same data
// directory: the agent, its credentials, the tenant signing keys and the workflows survive.
func TestRestartKeepsState(t *testing.T) {
	agentidBin, _ := buildBinaries(t)
	dataDir := t.TempDir()
	ports := freePorts(t, 5)
	p := startPlatformOn(t, agentidBin, dataDir, ports)
	t.Logf("cold start to ready: %s", p.Ready)
	logRSS(t, "idle after cold start", p.Pid())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	adminCred, adminKey := readCredential(t, dataDir+"/credentials/bootstrap-admin.json")
	adminTok, err := clientCredentials(t, adminKey, adminCred.ClientID, adminCred.Issuer).Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	registry := registryv1.NewRegistryServiceClient(p.dial(t, adminTok.AccessToken))
	key := newAgentKey(t)
	reg, err := registry.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{
		Parent: "tenants/default",
		Agent: &registryv1.Agent{
			DisplayName: "Report reader", Owner: "team:finance", Sponsor: "alice@corp.example", Purpose: "reads monthly reports",
			Environment: registryv1.Environment_ENVIRONMENT_TEST, Autonomy: registryv1.Autonomy_AUTONOMY_ASSISTIVE,
			IdentityModel: registryv1.IdentityModel_IDENTITY_MODEL_AUTONOMOUS, TrustBoundary: registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL,
			DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL, Scopes: []string{"report.read"},
			PublicJwks: key.publicJWKS(t),
		},
		RequestId: "e2e-restart-report-reader",
	})
	if err != nil {
		t.Fatal(err)
	}
	name := reg.GetAgent().GetName()
	waitFor(t, ctx, "agent ACTIVE", func() (bool, error) {
		got, err := registry.GetAgent(ctx, &registryv1.GetAgentRequest{Name: name})
		return err == nil && got.GetAgent().GetState() == registryv1.AgentState_AGENT_STATE_ACTIVE, err
	})
	issuer := p.issuer("default")
	var before string
	waitFor(t, ctx, "token before restart", func() (bool, error) {
		tok, err := clientCredentials(t, key.private, reg.GetAgent().GetAgentId(), issuer).Token(ctx)
		if err == nil {
			before = tok.AccessToken
		}
		return err == nil, err
	})

	p.Stop(t)
	if !p.ExitedCleanly() {
		t.Fatalf("agentid dev did not exit cleanly:\n%s", p.Output())
	}

	p2 := startPlatformOn(t, agentidBin, dataDir, ports)
	t.Logf("warm restart to ready: %s", p2.Ready)
	logRSS(t, "idle after warm restart", p2.Pid())
	adminTok, err = clientCredentials(t, adminKey, adminCred.ClientID, adminCred.Issuer).Token(ctx)
	if err != nil {
		t.Fatalf("bootstrap admin token after restart: %v", err)
	}
	registry = registryv1.NewRegistryServiceClient(p2.dial(t, adminTok.AccessToken))
	got, err := registry.GetAgent(ctx, &registryv1.GetAgentRequest{Name: name})
	if err != nil {
		t.Fatalf("agent after restart: %v", err)
	}
	if got.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_ACTIVE || got.GetAgent().GetOwner() != "team:finance" {
		t.Fatalf("agent after restart: %v", got.GetAgent())
	}
	// The agent's client and the tenant's signing key survived: a new token is issued, and the token
	// from before the restart still verifies against the JWKS now served.
	if _, err := clientCredentials(t, key.private, reg.GetAgent().GetAgentId(), issuer).Token(ctx); err != nil {
		t.Fatalf("token after restart: %v", err)
	}
	provider, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := provider.VerifierContext(ctx, &oidc.Config{SkipClientIDCheck: true}).Verify(ctx, before); err != nil {
		t.Fatalf("token from before the restart no longer verifies: %v", err)
	}
	res, err := registry.ListAgents(ctx, &registryv1.ListAgentsRequest{Parent: "tenants/default"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(res.GetAgents()); n != 1 {
		t.Fatalf("%d agents after restart, want exactly the 1 registered (replay must not duplicate)", n)
	}
}

// logRSS reports the resident memory of pid and its direct children (the Temporal dev server).
func logRSS(t *testing.T, when string, pid int) {
	t.Helper()
	total := rssKiB(pid)
	msg := []string{"agentid " + strconv.Itoa(total/1024) + " MiB"}
	for _, cpid := range childrenOf(pid) {
		kib := rssKiB(cpid)
		total += kib
		msg = append(msg, "child "+strconv.Itoa(cpid)+" "+strconv.Itoa(kib/1024)+" MiB")
	}
	t.Logf("RSS %s: %s; total %d MiB", when, strings.Join(msg, ", "), total/1024)
}

func rssKiB(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		cpid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name is in parentheses and may hold spaces; the parent pid is the second field after it.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		if f := strings.Fields(rest); len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, cpid)
		}
	}
	return out
}
