package e2e_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentid/agentid/pkg/testkit"
)

// TestHighRiskAgentWaitsForApprovals registers a production agent touching PII with agentctl: policy
// routes it to ordered approvals (owner, security, compliance) by three different approvers, it stays
// PENDING with no credential until the last approval, and then becomes ACTIVE.
func TestHighRiskAgentWaitsForApprovals(t *testing.T) {
	agentidBin, agentctlBin := buildBinaries(t)
	dataDir, configDir := t.TempDir(), t.TempDir()
	p := startPlatform(t, agentidBin, dataDir)
	cli := func(args ...string) string {
		t.Helper()
		out, err := runCLI(t, agentctlBin, configDir, append([]string{"--server", p.GRPCAddr}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	cli("login", "--dev", "--data-dir", dataDir)
	keyFile := filepath.Join(t.TempDir(), "claims-bot.json")
	var agent struct {
		Name     string `json:"name"`
		AgentID  string `json:"agentId"`
		RiskTier string `json:"riskTier"`
		State    string `json:"state"`
	}
	if err := json.Unmarshal([]byte(cli("agents", "register", "--display-name", "Claims bot", "--owner", "team:claims",
		"--purpose", "reads insurance claims", "--environment", "prod", "--sensitivity", "pii",
		"--scope", "claim.read", "--key-out", keyFile, "-o", "json")), &agent); err != nil {
		t.Fatal(err)
	}
	if agent.RiskTier != "RISK_TIER_HIGH" || agent.State != "AGENT_STATE_PENDING" {
		t.Fatalf("registered %+v, want a HIGH risk PENDING agent", agent)
	}

	var lastApprover string
	// waitingFor is what the provisioning run waits for. Right after registration the run may not have
	// started yet: the lifecycle service then answers a queued run, never NotFound.
	waitingFor := func() (string, error) {
		out, err := runCLI(t, agentctlBin, configDir, "--server", p.GRPCAddr, "agents", "workflows", agent.AgentID, "-o", "json")
		if err != nil {
			return "", err
		}
		var ws []struct {
			WaitingFor string `json:"waitingFor"`
			Stage      string `json:"stage"`
		}
		if err := json.Unmarshal([]byte(out), &ws); err != nil || len(ws) == 0 {
			return "", fmt.Errorf("workflows: %v %q", err, out)
		}
		return ws[0].WaitingFor, nil
	}
	// Each step needs a different approver (separation of duties): the platform admin creates three
	// approver identities of tenant default, and each approves one step with its own session.
	for i, role := range []string{"owner", "security", "compliance"} {
		step := "approval by " + role
		testkit.Eventually(t, 0, "provisioning to wait for "+step, func() (bool, error) {
			got, err := waitingFor()
			if err != nil {
				return false, err
			}
			return got == step, fmt.Errorf("waits for %q", got)
		})
		// No credential exists while approvals are pending.
		if _, err := runCLI(t, agentctlBin, configDir, "token", "--credentials", keyFile); err == nil || !strings.Contains(err.Error(), "invalid_client") {
			t.Fatalf("token before approval: %v, want invalid_client", err)
		}
		approverKey := filepath.Join(t.TempDir(), "approver.json")
		approverConfig := t.TempDir()
		cli("clients", "create", fmt.Sprintf("approver-%d", i), "--role", "approver", "--key-out", approverKey)
		if _, err := runCLI(t, agentctlBin, approverConfig, "--server", p.GRPCAddr, "login", "--credentials", approverKey); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			// The first approver cannot approve a second step.
			if _, err := runCLI(t, agentctlBin, lastApprover, "agents", "approve", agent.AgentID, "--comment", "me again"); err == nil ||
				!strings.Contains(err.Error(), "already approved") {
				t.Fatalf("a second approval by the same approver: %v, want refused", err)
			}
		}
		if _, err := runCLI(t, agentctlBin, approverConfig, "agents", "approve", agent.AgentID, "--comment", role+" ok"); err != nil {
			t.Fatal(err)
		}
		lastApprover = approverConfig
	}
	testkit.Eventually(t, 0, "the agent to be ACTIVE after three approvals", func() (bool, error) {
		out, err := runCLI(t, agentctlBin, configDir, "--server", p.GRPCAddr, "agents", "get", agent.AgentID, "-o", "json")
		return err == nil && strings.Contains(out, "AGENT_STATE_ACTIVE"), fmt.Errorf("%v %s", err, out)
	})
	// ACTIVE means the credential works: the first token request succeeds, no retry needed.
	if _, err := runCLI(t, agentctlBin, configDir, "token", "--credentials", keyFile); err != nil {
		t.Fatalf("token of an ACTIVE agent: %v", err)
	}
}
