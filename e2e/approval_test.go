package e2e_test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentid/agentid/pkg/temporaldev"
	"github.com/agentid/agentid/pkg/testkit"
)

// TestHighRiskAgentWaitsForApprovals registers a production agent touching PII with agentctl: policy
// routes it to ordered approvals (owner, security, compliance), each decided by a person with a staff
// identity and an approval token: the owner step by the agent's owner, security by a
// security-approver, compliance by a compliance-approver through the Temporal UI's path (a signal
// carrying the token agentctl approvals token prints). A self-asserted signal and the registrant's own
// approval are refused and kept in the run's status. The agent stays PENDING with no credential until
// the last approval, and then becomes ACTIVE.
func TestHighRiskAgentWaitsForApprovals(t *testing.T) {
	agentidBin, agentctlBin := buildBinaries(t)
	temporalBin, err := temporaldev.EnsureBinary(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	dataDir, configDir := t.TempDir(), t.TempDir()
	p := startPlatform(t, agentidBin, dataDir)
	cli := func(configDir string, args ...string) string {
		t.Helper()
		out, err := runCLI(t, agentctlBin, configDir, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	cli(configDir, "--server", p.GRPCAddr, "login", "--dev", "--data-dir", dataDir)
	// People of tenant default, each with a staff identity the admin creates and a session of their own.
	session := func(id string, roles string) string {
		t.Helper()
		key := filepath.Join(t.TempDir(), id+".json")
		cli(configDir, "clients", "create", id, "--role", roles, "--key-out", key)
		dir := t.TempDir()
		cli(dir, "--server", p.GRPCAddr, "login", "--credentials", key)
		return dir
	}
	registrant := session("rita", "tenant-admin,security-approver")
	owner := session("olivia", "owner")
	security := session("sam", "security-approver")
	compliance := session("cora", "compliance-approver")

	keyFile := filepath.Join(t.TempDir(), "claims-bot.json")
	var agent struct {
		Name     string `json:"name"`
		AgentID  string `json:"agentId"`
		RiskTier string `json:"riskTier"`
		State    string `json:"state"`
	}
	if err := json.Unmarshal([]byte(cli(registrant, "agents", "register", "--display-name", "Claims bot", "--owner", "olivia", "--sponsor", "alice@corp.example",
		"--purpose", "reads insurance claims", "--environment", "prod", "--sensitivity", "pii",
		"--scope", "claim.read", "--key-out", keyFile, "-o", "json")), &agent); err != nil {
		t.Fatal(err)
	}
	if agent.RiskTier != "RISK_TIER_HIGH" || agent.State != "AGENT_STATE_PENDING" {
		t.Fatalf("registered %+v, want a HIGH risk PENDING agent", agent)
	}
	workflowID := "provision/default/" + agent.AgentID
	temporal := func(args ...string) (string, error) {
		args = append(args, "--address", fmt.Sprintf("127.0.0.1:%d", p.Ports[3]), "--namespace", "agentid", "--workflow-id", workflowID)
		out, err := exec.Command(temporalBin, args...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("temporal %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	// runStatus is the run's answer to query status, as anyone with the Temporal CLI or UI sees it.
	type refusal struct {
		Approver string `json:"approver"`
		Step     string `json:"step"`
		Reason   string `json:"reason"`
	}
	runStatus := func() (refused []refusal, count int) {
		t.Helper()
		out, err := temporal("workflow", "query", "--name", "status", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var res struct {
			QueryResult []struct {
				Refused      []refusal `json:"refused"`
				RefusedCount int       `json:"refused_count"`
			} `json:"queryResult"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.QueryResult) != 1 {
			t.Fatalf("query status: %v\n%s", err, out)
		}
		return res.QueryResult[0].Refused, res.QueryResult[0].RefusedCount
	}

	// waitingFor is what the provisioning run waits for. Right after registration the run may not have
	// started yet: the lifecycle service then answers a queued run, never NotFound.
	waitFor := func(step string) {
		t.Helper()
		want := "approval by " + step
		testkit.Eventually(t, 0, "provisioning to wait for "+want, func() (bool, error) {
			out, err := runCLI(t, agentctlBin, configDir, "agents", "workflows", agent.AgentID, "-o", "json")
			if err != nil {
				return false, err
			}
			var ws []struct {
				WaitingFor   string `json:"waitingFor"`
				ApprovalStep string `json:"approvalStep"`
			}
			if err := json.Unmarshal([]byte(out), &ws); err != nil || len(ws) == 0 {
				return false, fmt.Errorf("workflows: %v %q", err, out)
			}
			return ws[0].WaitingFor == want && ws[0].ApprovalStep == step, fmt.Errorf("waits for %q", ws[0].WaitingFor)
		})
		// No credential exists while approvals are pending.
		if _, err := runCLI(t, agentctlBin, configDir, "token", "--credentials", keyFile); err == nil || !strings.Contains(err.Error(), "invalid_client") {
			t.Fatalf("token before approval: %v, want invalid_client", err)
		}
	}
	refused := func(session string, args ...string) string {
		t.Helper()
		_, err := runCLI(t, agentctlBin, session, args...)
		if err == nil {
			t.Fatalf("agentctl %v succeeded, want refused", args)
		}
		return err.Error()
	}

	waitFor("owner")
	// A self-asserted approval (a raw signal naming the owner, as anyone reaching Temporal could send)
	// is refused and recorded.
	if _, err := temporal("workflow", "signal", "--name", "approval", "--input", `{"approver":"olivia","role":"owner","decision":"approve"}`); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 0, "the self-asserted approval to be refused", func() (bool, error) {
		r, n := runStatus()
		return n == 1 && len(r) == 1 && strings.Contains(r[0].Reason, "no approval token"), fmt.Errorf("refused %d: %+v", n, r)
	})
	var list []struct {
		Agent string `json:"agent"`
		RunID string `json:"runId"`
		Step  string `json:"step"`
	}
	if err := json.Unmarshal([]byte(cli(owner, "approvals", "list", "-o", "json")), &list); err != nil || len(list) != 1 ||
		list[0].Agent != agent.Name || list[0].Step != "owner" || list[0].RunID == "" {
		t.Fatalf("approvals list = %+v, %v; want the agent at the owner step", list, err)
	}
	cli(owner, "approvals", "approve", agent.AgentID, "--comment", "mine, needed")

	waitFor("security")
	// The registrant holds security-approver, yet does not approve its own agent.
	if msg := refused(registrant, "approvals", "approve", agent.AgentID); !strings.Contains(msg, "rita registered the agent and cannot approve it") {
		t.Fatalf("the registrant's approval: %s", msg)
	}
	cli(security, "agents", "approve", agent.AgentID, "--step", "security", "--comment", "scopes reviewed")

	waitFor("compliance")
	// The Temporal UI's path: the approver's token, pasted as the input of signal approval.
	input := strings.TrimSpace(cli(compliance, "approvals", "token", agent.AgentID, "--step", "compliance", "--decision", "approve"))
	if _, err := temporal("workflow", "signal", "--name", "approval", "--input", input); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 0, "the agent to be ACTIVE after three approvals", func() (bool, error) {
		out, err := runCLI(t, agentctlBin, configDir, "agents", "get", agent.AgentID, "-o", "json")
		return err == nil && strings.Contains(out, "AGENT_STATE_ACTIVE"), fmt.Errorf("%v %s", err, out)
	})
	// ACTIVE means the credential works: the first token request succeeds, no retry needed.
	if _, err := runCLI(t, agentctlBin, configDir, "token", "--credentials", keyFile); err != nil {
		t.Fatalf("token of an ACTIVE agent: %v", err)
	}
	if r, n := runStatus(); n != 2 || len(r) != 2 || r[1].Approver != "rita" || r[1].Step != "security" {
		t.Fatalf("refusals in the run's status: %d %+v, want the self-asserted signal and the registrant", n, r)
	}
}
