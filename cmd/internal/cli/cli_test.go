package cli_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentid/agentid/cmd/internal/cli"
	"github.com/agentid/agentid/pkg/authn"
)

// run executes agentctl with an isolated config directory.
func run(t *testing.T, configDir string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	t.Setenv("AGENTID_CONFIG_DIR", configDir)
	t.Setenv("AGENTID_SERVER", "")
	var out, errOut bytes.Buffer
	code = cli.Execute(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestBadInputIsRefusedWithAClearError(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"unknown output format", []string{"-o", "xml", "agents", "list"}, `-o "xml": want table, json or yaml`},
		{"not logged in", []string{"agents", "list"}, "not logged in: run `agentctl login --dev` first"},
		{"login without a credential", []string{"login"}, "say which credential to use: --dev or --credentials FILE"},
		{"login with both", []string{"login", "--dev", "--credentials", "x.json"}, "--dev and --credentials are exclusive"},
		{"login with a missing file", []string{"login", "--credentials", filepath.Join(dir, "none.json")}, "none.json"},
		{"retire without a reason", []string{"agents", "retire", "agt_x"}, "--reason is required"},
		{"token without credentials", []string{"token"}, "--credentials FILE is required"},
		{"unknown command", []string{"agents", "explode"}, "unknown command"},
		{"unknown approval decision", []string{"agents", "approve", "agt_x", "--decision", "maybe"}, `--decision "maybe": want approve or reject`},
		{"reject without a reason", []string{"agents", "approve", "agt_x", "--decision", "reject"}, "--comment is required when rejecting"},
		{"approvals reject without a reason", []string{"approvals", "reject", "agt_x"}, "--comment is required when rejecting"},
		{"approval token for an unknown decision", []string{"approvals", "token", "agt_x", "--decision", "maybe"}, `--decision "maybe": want approve or reject`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(t, dir, tt.args...)
			if code != 1 {
				t.Fatalf("exit code %d, want 1 (stdout %q, stderr %q)", code, stdout, stderr)
			}
			if !strings.Contains(stderr, tt.wantErr) {
				t.Fatalf("stderr %q does not say %q", stderr, tt.wantErr)
			}
			if stdout != "" {
				t.Fatalf("a failed command printed to stdout: %q", stdout)
			}
		})
	}
}

func TestRegisterValidatesEnumsBeforeCallingTheServer(t *testing.T) {
	dir := t.TempDir()
	writeSession(t, dir)
	code, _, stderr := run(t, dir, "agents", "register", "--environment", "moon", "--key-out", filepath.Join(dir, "k.json"))
	if code != 1 || !strings.Contains(stderr, `--environment "moon": want one of`) || !strings.Contains(stderr, "prod") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = run(t, dir, "agents", "register", "--sensitivity", "secret")
	if code != 1 || !strings.Contains(stderr, `--sensitivity "secret"`) {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "k.json")); err == nil {
		t.Fatal("a refused registration wrote a key file")
	}
}

func TestAgentNamesMustBeWellFormed(t *testing.T) {
	dir := t.TempDir()
	writeSession(t, dir)
	for _, arg := range []string{"tenants/default/agents/", "tenants/default/clients/x", "a/b"} {
		code, _, stderr := run(t, dir, "agents", "get", arg)
		if code != 1 || !strings.Contains(stderr, "want tenants/{tenant}/agents/{agent} or a bare agent id") {
			t.Fatalf("agents get %q: exit %d, stderr %q", arg, code, stderr)
		}
	}
}

// writeSession fakes a completed login against a server that does not exist.
func writeSession(t *testing.T, dir string) {
	t.Helper()
	cred, err := authn.NewCredential("system", "bootstrap-admin", "http://127.0.0.1:1/t/system")
	if err != nil {
		t.Fatal(err)
	}
	credPath := filepath.Join(dir, "admin.json")
	if err := authn.WriteCredentialFile(credPath, cred); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]string{"server": "127.0.0.1:1", "tenant": "default", "credential_file": credPath})
	if err := os.WriteFile(filepath.Join(dir, "session.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}
