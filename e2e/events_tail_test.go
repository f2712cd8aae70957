package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAgentctlEventsTail drives `agentctl events tail` against `agentid dev` as a client holding only
// the subscriber role: it sees its tenant's events and never another tenant's, filters by type and
// aggregate, prints CloudEvents JSON without the sealed signing key, resumes exactly after the
// position saved in --cursor-file, and an analyst is refused.
func TestAgentctlEventsTail(t *testing.T) {
	agentidBin, agentctlBin := buildBinaries(t)
	dataDir, adminDir, keys := t.TempDir(), t.TempDir(), t.TempDir()
	p := startPlatform(t, agentidBin, dataDir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	admin := func(args ...string) string {
		t.Helper()
		out, err := runCLI(t, agentctlBin, adminDir, append([]string{"--server", p.GRPCAddr}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	admin("login", "--dev", "--data-dir", dataDir)
	admin("tenants", "create", "beta", "--display-name", "Beta")
	register := func(tenant, name string) string {
		t.Helper()
		var a struct {
			Name string `json:"name"`
		}
		out := admin("--tenant", tenant, "agents", "register", "--display-name", name, "--owner", "team:e2e", "--sponsor", "alice@corp.example",
			"--purpose", "events tail e2e", "--environment", "dev", "--sensitivity", "internal",
			"--scope", "files.read", "--key-out", filepath.Join(keys, tenant+"-"+name+".json"), "-o", "json")
		if err := json.Unmarshal([]byte(out), &a); err != nil || a.Name == "" {
			t.Fatalf("register %s in %s: %v: %s", name, tenant, err, out)
		}
		return a.Name
	}
	betaAgent := register("beta", "beta-bot")
	first := register("default", "first-bot")

	// Identities of tenant default: a subscriber and an analyst, each with its own agentctl session.
	session := func(clientID, role string) string {
		t.Helper()
		keyFile := filepath.Join(keys, clientID+".json")
		admin("--tenant", "default", "clients", "create", clientID, "--role", role, "--key-out", keyFile)
		dir := t.TempDir()
		waitFor(t, ctx, clientID+"'s session", func() (bool, error) {
			_, err := runCLI(t, agentctlBin, dir, "--server", p.GRPCAddr, "login", "--credentials", keyFile)
			return err == nil, err
		})
		return dir
	}
	subDir := session("siem", "subscriber")
	analystDir := session("analyst", "analyst")

	// tail runs `agentctl events tail` with a deadline and returns its CloudEvents, one per line.
	tail := func(dir string, args ...string) ([]map[string]any, string, error) {
		t.Helper()
		tctx, tcancel := context.WithTimeout(ctx, 2*time.Minute)
		defer tcancel()
		cmd := exec.CommandContext(tctx, agentctlBin, append([]string{"--server", p.GRPCAddr, "events", "tail"}, args...)...)
		cmd.Env = append(os.Environ(), "AGENTID_CONFIG_DIR="+dir)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, string(out), fmt.Errorf("events tail %v: %w: %s", args, err, stderr.String())
		}
		var events []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			var ce map[string]any
			if err := json.Unmarshal([]byte(line), &ce); err != nil {
				t.Fatalf("events tail printed a line that is not JSON: %q", line)
			}
			events = append(events, ce)
		}
		return events, string(out), nil
	}

	// Every agent.registered of default, from the start: only default's agent, never beta's.
	events, out, err := tail(subDir, "--from-start", "--type", "agent.registered", "--limit", "1")
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0]["subject"] != first || events[0]["tenant"] != "default" || events[0]["type"] != "agent.registered" {
		t.Fatalf("first agent.registered of default: %s", out)
	}
	for _, attr := range []string{"id", "source", "type", "specversion", "time", "subject", "datacontenttype"} {
		if v, _ := events[0][attr].(string); v == "" {
			t.Errorf("CloudEvents attribute %q missing: %s", attr, out)
		}
	}
	if strings.Contains(out, betaAgent) {
		t.Fatalf("a subscriber of default saw beta's agent: %s", out)
	}

	// The tenant's signing key event: the public key, never the sealed private key.
	_, out, err = tail(subDir, "--from-start", "--aggregate-type", "signingkey", "--limit", "1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"signingkey.created"`) || !strings.Contains(out, "publicJwk") || strings.Contains(out, "sealed") {
		t.Fatalf("signingkey.created as printed: %s", out)
	}

	// Resume: the first run saves its position; the second prints exactly the next registration.
	cursorFile := filepath.Join(t.TempDir(), "cursor")
	events, out, err = tail(subDir, "--from-start", "--type", "agent.registered", "--cursor-file", cursorFile, "--limit", "1")
	if err != nil || len(events) != 1 || events[0]["subject"] != first {
		t.Fatalf("first run: %v: %s", err, out)
	}
	second := register("default", "second-bot")
	register("beta", "beta-bot-2")
	events, out, err = tail(subDir, "--from-start", "--type", "agent.registered", "--cursor-file", cursorFile, "--limit", "1")
	if err != nil || len(events) != 1 || events[0]["subject"] != second {
		t.Fatalf("resumed run: %v: %s; want only %s", err, out, second)
	}

	// An analyst may not subscribe.
	if _, out, err := tail(analystDir, "--limit", "1"); err == nil || !strings.Contains(err.Error(), "PermissionDenied") && !strings.Contains(err.Error(), "subscriber") {
		t.Fatalf("analyst: %v %s, want a refusal naming the roles", err, out)
	}
}
