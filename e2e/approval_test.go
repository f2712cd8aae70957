package e2e_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestHighRiskAgentWaitsForApprovals registers a production agent touching PII with agentctl: policy
// routes it to ordered approvals (owner, security, compliance), it stays PENDING with no credential
// until the last approval, and then becomes ACTIVE.
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

	waitingFor := func() string {
		var ws []struct {
			WaitingFor string `json:"waitingFor"`
			Stage      string `json:"stage"`
		}
		if err := json.Unmarshal([]byte(cli("agents", "workflows", agent.AgentID, "-o", "json")), &ws); err != nil || len(ws) == 0 {
			t.Fatalf("workflows: %v %+v", err, ws)
		}
		return ws[0].WaitingFor
	}
	for _, role := range []string{"owner", "security", "compliance"} {
		deadline := "approval by " + role
		for range 100 {
			if waitingFor() == deadline {
				break
			}
		}
		if got := waitingFor(); got != deadline {
			t.Fatalf("provisioning waits for %q, want %q", got, deadline)
		}
		// No credential exists while approvals are pending.
		if _, err := runCLI(t, agentctlBin, configDir, "token", "--credentials", keyFile); err == nil || !strings.Contains(err.Error(), "invalid_client") {
			t.Fatalf("token before approval: %v, want invalid_client", err)
		}
		cli("agents", "approve", agent.AgentID, "--comment", role+" ok")
	}
	for range 200 {
		if strings.Contains(cli("agents", "get", agent.AgentID, "-o", "json"), "AGENT_STATE_ACTIVE") {
			break
		}
	}
	if out := cli("agents", "get", agent.AgentID, "-o", "json"); !strings.Contains(out, "AGENT_STATE_ACTIVE") {
		t.Fatalf("after three approvals the agent is %s", out)
	}
	for range 200 {
		if _, err := runCLI(t, agentctlBin, configDir, "token", "--credentials", keyFile); err == nil {
			return
		}
	}
	t.Fatal("no token after approval")
}
