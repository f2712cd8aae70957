package cli_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentid/agentid/pkg/authn"
)

// TestAgentctlRefusesPlaintextToRemote: agentctl never sends a token (or a client assertion for
// one) in plaintext beyond loopback, and says how to connect instead.
func TestAgentctlRefusesPlaintextToRemote(t *testing.T) {
	dir := t.TempDir()
	writeSession(t, dir)
	remoteCred, err := authn.NewCredential("system", "bootstrap-admin", "http://issuer.example:8080/t/system")
	if err != nil {
		t.Fatal(err)
	}
	remoteCredPath := filepath.Join(dir, "remote.json")
	if err := authn.WriteCredentialFile(remoteCredPath, remoteCred); err != nil {
		t.Fatal(err)
	}
	fresh := t.TempDir()
	tests := []struct {
		name    string
		config  string
		args    []string
		wantErr []string
	}{
		{"command to a remote server", dir, []string{"--server", "agentid.example:7070", "agents", "get", "agt_x"},
			[]string{"refusing to send a token in plaintext to agentid.example:7070", "--ca FILE", "--tls"}},
		{"login to a remote server", fresh, []string{"login", "--credentials", filepath.Join(dir, "admin.json"), "--server", "10.1.2.3:7070"},
			[]string{"refusing to send a token in plaintext to 10.1.2.3:7070", "--ca FILE"}},
		{"token endpoint in plaintext off loopback", fresh, []string{"token", "--credentials", remoteCredPath},
			[]string{"token_url", "http://issuer.example:8080/t/system/oauth2/token", "https://"}},
		{"missing CA file", dir, []string{"--ca", filepath.Join(dir, "none.pem"), "agents", "get", "agt_x"},
			[]string{"--ca: CA file", "none.pem"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(t, tt.config, tt.args...)
			if code != 1 || stdout != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want a failure", code, stdout, stderr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not say %q", stderr, w)
				}
			}
		})
	}
	if code, _, stderr := run(t, fresh, "agents", "list"); code != 1 || !strings.Contains(stderr, "not logged in") {
		t.Fatalf("a refused login saved a session: exit %d, stderr %q", code, stderr)
	}
}
