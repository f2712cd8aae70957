package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAgentsListFilters(t *testing.T) {
	p := startAACPlatform(t)
	dir := filepath.Join(t.TempDir(), "support")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeManifests(t, dir, map[string]string{
		"key.json": aacKey,
		"a.yaml":   aacManifest("faq-dev", "dev", "internal", "") + "---\n" + aacManifest("faq-staging", "staging", "internal", ""),
		"b.yaml":   aacManifest("triage-dev", "dev", "public", ""),
	})
	if code, out, errOut := run(t, p.configDir, "apply", "-f", dir); code != 0 {
		t.Fatalf("apply: exit %d, stdout %s, stderr %q", code, out, errOut)
	}
	names := func(out string) []string {
		var agents []struct {
			DisplayName string `json:"displayName"`
		}
		if err := json.Unmarshal([]byte(out), &agents); err != nil {
			t.Fatalf("output %q: %v", out, err)
		}
		var n []string
		for _, a := range agents {
			n = append(n, a.DisplayName)
		}
		return n
	}
	tests := []struct {
		name      string
		args      []string
		want      string
		wantTotal string
	}{
		{"environment", []string{"--environment", "dev"}, "faq-dev,triage-dev", ""},
		{"environments, order, total", []string{"--environment", "dev,STAGING", "--order-by", "display_name desc", "--total"}, "triage-dev,faq-staging,faq-dev", "3 agents match"},
		{"sensitivity and selector", []string{"--data-sensitivity", "internal", "-l", "team=support", "-l", "!nothing", "--order-by", "display_name"}, "faq-dev,faq-staging", ""},
		{"state and expiry", []string{"--state", "pending", "--expire-before", "2400h", "--orphaned", "false", "--order-by", "display_name"}, "faq-dev,faq-staging,triage-dev", ""},
		{"nothing expires so soon", []string{"--expire-before", "1h"}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := run(t, p.configDir, append([]string{"agents", "list", "-o", "json"}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			if got := strings.Join(names(out), ","); got != tt.want {
				t.Fatalf("listed %s, want %s", got, tt.want)
			}
			if tt.wantTotal != "" && !strings.Contains(errOut, tt.wantTotal) {
				t.Fatalf("stderr %q does not say %q", errOut, tt.wantTotal)
			}
		})
	}
	bad := []struct {
		args []string
		want string
	}{
		{[]string{"--environment", "moon"}, `--environment "moon": want one of dev, test, staging, prod`},
		{[]string{"--orphaned", "maybe"}, `--orphaned "maybe": want true or false`},
		{[]string{"--inactive-since", "yesterday"}, `--inactive-since "yesterday"`},
		{[]string{"-l", "a=b=c"}, `label_selectors[0]: "a=b=c" is not key=value`},
		{[]string{"--order-by", "owner"}, "order_by"},
	}
	for _, b := range bad {
		code, _, errOut := run(t, p.configDir, append([]string{"agents", "list"}, b.args...)...)
		if code == 0 || !strings.Contains(errOut, b.want) {
			t.Errorf("agents list %v: exit %d, stderr %q, want it to say %q", b.args, code, errOut, b.want)
		}
	}
}
