package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTokensRevokeRefusesBadInputBeforeCallingTheServer(t *testing.T) {
	dir := t.TempDir()
	writeSession(t, dir)
	empty := filepath.Join(dir, "empty.jwt")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge.jwt")
	if err := os.WriteFile(huge, []byte(strings.Repeat("a", 17<<10)), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no target", nil, "exactly one of --token, --token-file, --client, --agent and --issued-before"},
		{"two targets", []string{"--client", "bot", "--agent", "bot"}, "exactly one of"},
		{"issued-before not RFC 3339", []string{"--issued-before", "yesterday"}, `--issued-before "yesterday": want an RFC 3339 time`},
		{"missing token file", []string{"--token-file", filepath.Join(dir, "none.jwt")}, "none.jwt"},
		{"empty token file", []string{"--token-file", empty}, "is empty"},
		{"huge token file", []string{"--token-file", huge}, "not an access token"},
		{"malformed client", []string{"--client", "tenants/default/agents/x"}, "want tenants/{tenant}/clients/{client} or a bare client id"},
		{"malformed agent", []string{"--agent", "a/b"}, "want tenants/{tenant}/agents/{agent} or a bare agent id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(t, dir, append([]string{"tokens", "revoke"}, tt.args...)...)
			if code != 1 || !strings.Contains(stderr, tt.wantErr) || stdout != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want 1 and %q", code, stdout, stderr, tt.wantErr)
			}
		})
	}
}

// When the server cannot be reached the outcome is unknown: the error names the request id to retry with.
func TestTokensRevokeNamesTheRequestIDWhenTheOutcomeIsUnknown(t *testing.T) {
	dir := t.TempDir()
	writeSession(t, dir)
	code, stdout, stderr := run(t, dir, "tokens", "revoke", "--client", "bot", "--request-id", "revoke-bot-7")
	if code != 1 || stdout != "" || !strings.Contains(stderr, "--request-id revoke-bot-7") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, _, stderr = run(t, dir, "tokens", "revoke", "--issued-before", "2026-11-30T12:00:00Z")
	if code != 1 || !strings.Contains(stderr, "--request-id revoke-") {
		t.Fatalf("without --request-id: exit %d, stderr %q; want a generated request id", code, stderr)
	}
}
