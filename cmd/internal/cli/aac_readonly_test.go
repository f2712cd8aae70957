package cli_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentid/agentid/pkg/authn"
)

// auditorSession writes a session of p's server whose identity is a read-only auditor of acme
// (the plan job's credential in examples/agents-as-code/github-actions.yml) and returns its
// config directory.
func auditorSession(t *testing.T, p *aacPlatform) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(p.configDir, "session.json"))
	if err != nil {
		t.Fatal(err)
	}
	var session map[string]string
	if err := json.Unmarshal(b, &session); err != nil {
		t.Fatal(err)
	}
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"auditor-token","token_type":"Bearer","expires_in":300}`))
	}))
	t.Cleanup(tokens.Close)
	dir := t.TempDir()
	cred, err := authn.NewCredential("acme", "ci-plan", tokens.URL+"/t/acme")
	if err != nil {
		t.Fatal(err)
	}
	credPath := filepath.Join(dir, "plan.json")
	if err := authn.WriteCredentialFile(credPath, cred); err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(map[string]string{"server": session["server"], "tenant": "acme", "credential_file": credPath})
	if err := os.WriteFile(filepath.Join(dir, "session.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestAgentsAsCodePlanAsReadOnlyAuditor: the plan job runs with an auditor's credential: it gets
// the registry's validate_only verdicts and the policy's dry run for creations and updates and
// exits 2 on a denial, while apply with the same credential writes nothing.
func TestAgentsAsCodePlanAsReadOnlyAuditor(t *testing.T) {
	p := startAACPlatform(t)
	auditor := auditorSession(t, p)
	dir := filepath.Join(t.TempDir(), "support")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeManifests(t, dir, map[string]string{"key.json": aacKey, "faq.yaml": aacManifest("faq-dev", "dev", "internal", "")})

	code, out, errOut := run(t, auditor, "plan", "-f", dir, "-o", "json")
	if code != 0 {
		t.Fatalf("plan as auditor: exit %d, stderr %q, stdout %s", code, errOut, out)
	}
	plan := parsePlan(t, out)
	if plan.actions() != "faq-dev=create" || plan.Entries[0].Server == nil || !plan.Entries[0].Server.OK ||
		plan.Entries[0].Policy == nil || plan.Entries[0].Policy.Outcome != "allow" {
		t.Fatalf("plan as auditor: %+v", plan)
	}
	if code, _, _ := run(t, auditor, "apply", "-f", dir); code == 0 {
		t.Fatal("apply with the auditor's credential succeeded")
	}
	if p.get(t, "faq-dev") != nil {
		t.Fatal("the auditor's apply registered an agent")
	}

	// The pipeline applies; the auditor plans an update and a denied creation.
	if code, out, errOut := run(t, p.configDir, "apply", "-f", dir); code != 0 {
		t.Fatalf("apply as tenant-admin: exit %d, stdout %s, stderr %q", code, out, errOut)
	}
	denied := strings.NewReplacer("autonomy: assistive", "autonomy: autonomous", "trustBoundary: internal", "trustBoundary: public").
		Replace(aacManifest("claims-bot", "prod", "phi", ""))
	writeManifests(t, dir, map[string]string{"faq.yaml": strings.Replace(aacManifest("faq-dev", "dev", "internal", ""), "Answers questions.", "Answers more questions.", 1)})
	code, out, errOut = run(t, auditor, "plan", "-f", dir, "-o", "json")
	if plan = parsePlan(t, out); code != 0 || plan.actions() != "faq-dev=update" || !plan.Entries[0].Server.OK {
		t.Fatalf("plan of an update as auditor: exit %d, stderr %q, %+v", code, errOut, plan)
	}
	writeManifests(t, dir, map[string]string{"claims.yaml": denied})
	code, out, errOut = run(t, auditor, "plan", "-f", dir)
	if code != 2 || !strings.Contains(out, "policy: deny") {
		t.Fatalf("plan of a denied agent as auditor: exit %d, stdout %s, stderr %q", code, out, errOut)
	}
	if a := p.get(t, "faq-dev"); a == nil || a.GetPurpose() != "Answers questions." || p.get(t, "claims-bot") != nil {
		t.Fatalf("the auditor's plans changed the registry: %v", a)
	}
}
