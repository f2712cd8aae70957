package discovery_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/pkg/discovery"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// plantedSecrets are the secrets planted in testdata/tree: none may appear in any output.
var plantedSecrets = []string{
	"AKIAQ3EGVXJ5PLANTD01",
	"wJalrXUtnFEMI/K7MDENG/bPxRfiCYPLANTED001",
	"sk-proj-Pl4nt3dOpenAIkeyAbCdEfGhIjKlMnOpQrStUv12",
	"sk-ant-api03-Pl4nt3dAnthropicKeyAbCdEfGhIjKlMnOpQrStUvWxYz0123",
	"Zx9qR7vT2mK8pL4wN6sB",
	"cs_Pl4ntedClientSecret9876",
	"ghp_Pl4ntedGitHubToken0123456789abcdefABCD",
	"xoxb-1234567890-0987654321-Pl4ntedSlackTok",
	"Pl4ntedWebhookSecret123",
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJnaG9zdC1hZ2VudCIsImNsaWVudF9pZCI6Imdob3N0LWp3dC1jbGllbnQifQ.Q2l0eVNpZ25hdHVyZVBsYW50ZWQxMjM0NQ",
}

// pemSecrets are the body lines of the planted private key.
func pemSecrets(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("testdata/tree/keys/agent.pem")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for l := range strings.SplitSeq(string(b), "\n") {
		if l != "" && !strings.HasPrefix(l, "-----") {
			out = append(out, l[:min(len(l), 16)])
		}
	}
	return out
}

func scanTree(t *testing.T) ([]*registryv1.Finding, discovery.CodeStats) {
	t.Helper()
	fs, st, err := discovery.ScanCode(t.Context(), "testdata/tree", discovery.CodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return fs, st
}

func TestScanCodeEveryRuleFires(t *testing.T) {
	fs, st := scanTree(t)
	byRule := map[string][]*registryv1.Finding{}
	for _, f := range fs {
		byRule[f.GetRuleId()] = append(byRule[f.GetRuleId()], f)
		if strings.HasPrefix(f.GetFile(), "vendor/") {
			t.Errorf("finding in vendored code: %s", f.GetFile())
		}
		if !f.GetGhost() || f.GetOwnedBy() != "" {
			t.Errorf("%s: unresolved finding should be a ghost", f.GetId())
		}
		if !discovery.CheckID(f) {
			t.Errorf("%s: id does not match its content", f.GetId())
		}
		if f.GetLine() < 1 || f.GetColumn() < 1 {
			t.Errorf("%s: line %d col %d", f.GetId(), f.GetLine(), f.GetColumn())
		}
		if len(f.GetFingerprint()) != 64 {
			t.Errorf("%s: fingerprint %q", f.GetId(), f.GetFingerprint())
		}
	}
	for _, r := range discovery.Rules() {
		if len(byRule[r.ID]) == 0 {
			t.Errorf("rule %s did not fire on testdata/tree", r.ID)
		}
	}
	if st.SkippedDirs != 1 {
		t.Errorf("SkippedDirs = %d, want 1 (vendor)", st.SkippedDirs)
	}
	if want := []struct{ rule, file string }{
		{"credential.aws-access-key", "app/config.py"},
		{"credential.generic-secret", "app/config.py"},
		{"oauth.client-id", "app/.env"},
		{"agent.k8s-workload", "deploy/agent-deployment.yaml"},
	}; true {
		for _, w := range want {
			if fs := byRule[w.rule]; len(fs) != 1 || fs[0].GetFile() != w.file {
				t.Errorf("rule %s: %d findings, want one in %s", w.rule, len(fs), w.file)
			}
		}
	}
	// The generic rule does not report what a specific rule found.
	for _, f := range byRule["credential.generic-secret"] {
		if f.GetLine() != 8 {
			t.Errorf("generic secret at line %d, want only the password at line 8", f.GetLine())
		}
	}
	if c := byRule["oauth.client-id"][0]; c.GetRedactedValue() != "ghost-client-7" || c.GetIdentifier().GetKind() != registryv1.IdentifierKind_IDENTIFIER_KIND_CLIENT_ID {
		t.Errorf("client id finding = %v, want the client id in full as a CLIENT_ID identifier", c)
	}
	if k := byRule["agent.k8s-workload"][0]; k.GetHints()["namespace"] != "finance" || k.GetHints()["name"] != "invoice-agent" {
		t.Errorf("k8s workload hints = %v", k.GetHints())
	}
}

func TestNoSecretInAnyOutput(t *testing.T) {
	fs, st := scanTree(t)
	var table, js, sarif bytes.Buffer
	if err := discovery.WriteTable(&table, fs); err != nil {
		t.Fatal(err)
	}
	if err := discovery.WriteJSON(&js, fs, st); err != nil {
		t.Fatal(err)
	}
	if err := discovery.WriteSARIF(&sarif, fs, "test"); err != nil {
		t.Fatal(err)
	}
	secrets := append(append([]string{}, plantedSecrets...), pemSecrets(t)...)
	for name, out := range map[string]string{"table": table.String(), "json": js.String(), "sarif": sarif.String()} {
		for _, s := range secrets {
			// No 16-character window of a secret may appear (a redacted value shows at most 4).
			for i := 0; i+16 <= len(s); i++ {
				if w := s[i : i+16]; strings.Contains(out, w) {
					t.Errorf("%s output contains %q, part of planted secret %.4s…", name, w, s)
					break
				}
			}
		}
	}
	for _, f := range fs {
		if f.GetKind() == registryv1.FindingKind_FINDING_KIND_STATIC_CREDENTIAL || f.GetRuleId() == "oauth.client-secret" {
			if r := []rune(strings.TrimSuffix(f.GetRedactedValue(), "…")); len(r) > 4 || !strings.HasSuffix(f.GetRedactedValue(), "…") {
				t.Errorf("%s: redacted value %q shows more than 4 characters", f.GetRuleId(), f.GetRedactedValue())
			}
		}
	}
}

// TestNoPrefixOfPeopleChosenSecrets: findings of rules whose values people may choose (the
// generic secret-like assignment, OAuth client secrets) show no character of the value, only
// "…" and the fingerprint; structured credentials keep their short prefix.
func TestNoPrefixOfPeopleChosenSecrets(t *testing.T) {
	fs, _ := scanTree(t)
	seen := map[string]bool{}
	for _, f := range fs {
		switch f.GetRuleId() {
		case "credential.generic-secret", "oauth.client-secret":
			seen[f.GetRuleId()] = true
			if f.GetRedactedValue() != "…" {
				t.Errorf("%s at %s:%d: redacted value %q shows part of the secret", f.GetRuleId(), f.GetFile(), f.GetLine(), f.GetRedactedValue())
			}
			if f.GetIdentifier().GetKind() != registryv1.IdentifierKind_IDENTIFIER_KIND_SECRET_FINGERPRINT || f.GetIdentifier().GetValue() != f.GetFingerprint() {
				t.Errorf("%s: identifier %v, want the secret's fingerprint", f.GetRuleId(), f.GetIdentifier())
			}
		case "credential.aws-access-key":
			seen[f.GetRuleId()] = true
			if f.GetRedactedValue() != "AKIA…" {
				t.Errorf("%s: redacted value %q, want the 4-character prefix", f.GetRuleId(), f.GetRedactedValue())
			}
		}
	}
	if len(seen) != 3 {
		t.Fatalf("rules seen: %v, want generic secret, client secret and AWS access key", seen)
	}
}

func TestPrivateKeyThumbprint(t *testing.T) {
	fs, _ := scanTree(t)
	b, err := os.ReadFile("testdata/tree/keys/agent.pem")
	if err != nil {
		t.Fatal(err)
	}
	p, _ := pem.Decode(b)
	k, err := x509.ParsePKCS8PrivateKey(p.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := (&jose.JSONWebKey{Key: k.(crypto.Signer).Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	want := base64.RawURLEncoding.EncodeToString(tp)
	for _, f := range fs {
		if f.GetRuleId() == "credential.private-key" {
			if id := f.GetIdentifier(); id.GetKind() != registryv1.IdentifierKind_IDENTIFIER_KIND_KEY_THUMBPRINT || id.GetValue() != want {
				t.Errorf("private key identifier = %v, want thumbprint %s", id, want)
			}
			return
		}
	}
	t.Fatal("no private key finding")
}

func TestScanCodeSkips(t *testing.T) {
	dir := t.TempDir()
	secret := "AKIAQ3EGVXJ5SKIPPED1"
	write := func(name string, data []byte) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	big := bytes.Repeat([]byte("x"), discovery.DefaultMaxFileSize)
	write("big.txt", append(big, []byte("\nkey = "+secret+"\n")...))
	write("blob.dat", append([]byte{0x7f, 'E', 'L', 'F', 0}, []byte(" "+secret)...))
	write("logo.png", []byte(secret))
	write(".git/config", []byte("token = "+secret))
	write("node_modules/x/index.js", []byte(secret))
	write("ok.txt", []byte("key = "+secret+"\n"))

	tests := []struct {
		name      string
		opts      discovery.CodeOptions
		wantFiles []string
		wantStats discovery.CodeStats
	}{
		{"defaults", discovery.CodeOptions{}, []string{"ok.txt"},
			discovery.CodeStats{Files: 1, SkippedLarge: 1, SkippedBinary: 2, SkippedDirs: 2}},
		{"vendor and a larger limit", discovery.CodeOptions{IncludeVendor: true, MaxFileSize: 2 << 20, Workers: 1},
			[]string{"big.txt", "node_modules/x/index.js", "ok.txt"},
			discovery.CodeStats{Files: 3, SkippedBinary: 2, SkippedDirs: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, st, err := discovery.ScanCode(t.Context(), dir, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			var files []string
			for _, f := range fs {
				files = append(files, f.GetFile())
			}
			if strings.Join(files, ",") != strings.Join(tt.wantFiles, ",") {
				t.Errorf("findings in %v, want %v", files, tt.wantFiles)
			}
			st.Bytes = 0
			if st != tt.wantStats {
				t.Errorf("stats = %+v, want %+v", st, tt.wantStats)
			}
		})
	}
	if _, _, err := discovery.ScanCode(t.Context(), filepath.Join(dir, "missing"), discovery.CodeOptions{}); err == nil {
		t.Error("scan of a missing directory: want an error")
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"AKIAQ3EGVXJ5PLANTD01", "AKIA…"},
		{"short", "s…"},
		{"abc", "…"},
		{"", "…"},
		{"ééééééééééé", "éé…"},
	}
	for _, tt := range tests {
		if got := discovery.Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestApplyResolutions(t *testing.T) {
	fs, _ := scanTree(t)
	ids := discovery.Identifiers(fs)
	var res []*registryv1.Resolution
	for _, id := range ids {
		r := &registryv1.Resolution{Identifier: id}
		if id.GetKind() == registryv1.IdentifierKind_IDENTIFIER_KIND_CLIENT_ID && id.GetValue() == "ghost-client-7" {
			r.Agent = "tenants/acme/agents/agt_x"
		}
		res = append(res, r)
	}
	discovery.ApplyResolutions(fs, res)
	for _, f := range fs {
		inEnv := f.GetFile() == "app/.env"
		if inEnv == f.GetGhost() {
			t.Errorf("%s in %s: ghost = %v, want %v (the .env's client id is registered)", f.GetRuleId(), f.GetFile(), f.GetGhost(), !inEnv)
		}
		if inEnv && f.GetOwnedBy() != "tenants/acme/agents/agt_x" {
			t.Errorf("%s: owned_by = %q", f.GetRuleId(), f.GetOwnedBy())
		}
	}
}

func TestSARIFStructure(t *testing.T) {
	fs, _ := scanTree(t)
	var buf bytes.Buffer
	if err := discovery.WriteSARIF(&buf, fs, "v1.2.3"); err != nil {
		t.Fatal(err)
	}
	var log map[string]any
	if err := json.Unmarshal(buf.Bytes(), &log); err != nil {
		t.Fatal(err)
	}
	if log["version"] != "2.1.0" || log["$schema"] == nil {
		t.Fatalf("version %v schema %v", log["version"], log["$schema"])
	}
	runs := log["runs"].([]any)
	if len(runs) != 1 {
		t.Fatalf("%d runs", len(runs))
	}
	run := runs[0].(map[string]any)
	driver := run["tool"].(map[string]any)["driver"].(map[string]any)
	if driver["name"] == "" || driver["name"] == nil {
		t.Error("tool.driver.name is required")
	}
	rules := driver["rules"].([]any)
	results := run["results"].([]any)
	if len(results) != len(fs) {
		t.Errorf("%d results, want %d", len(results), len(fs))
	}
	for _, r := range results {
		res := r.(map[string]any)
		idx := int(res["ruleIndex"].(float64))
		if rules[idx].(map[string]any)["id"] != res["ruleId"] {
			t.Errorf("ruleIndex %d names %v, result ruleId %v", idx, rules[idx].(map[string]any)["id"], res["ruleId"])
		}
		if msg, _ := res["message"].(map[string]any)["text"].(string); msg == "" {
			t.Error("result.message.text is required")
		}
		switch res["level"] {
		case "error", "warning", "note":
		default:
			t.Errorf("level %v", res["level"])
		}
		locs := res["locations"].([]any)
		pl := locs[0].(map[string]any)["physicalLocation"].(map[string]any)
		if uri := pl["artifactLocation"].(map[string]any)["uri"].(string); uri == "" || strings.HasPrefix(uri, "/") {
			t.Errorf("artifactLocation.uri %q: want a relative path", uri)
		}
		if line := pl["region"].(map[string]any)["startLine"].(float64); line < 1 {
			t.Errorf("startLine %v", line)
		}
		if fp := res["partialFingerprints"].(map[string]any)["agentidFinding/v1"]; fp == "" {
			t.Error("partialFingerprints missing")
		}
	}
	for _, r := range rules {
		rule := r.(map[string]any)
		if rule["id"] == "" || rule["shortDescription"].(map[string]any)["text"] == "" {
			t.Errorf("rule %v lacks id or description", rule)
		}
	}
}
