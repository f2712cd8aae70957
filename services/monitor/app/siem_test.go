package app_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentid/agentid/services/monitor/app"
)

func TestSIEMConfigValidation(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "siem.secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef-siem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     app.Config
		wantErr string
	}{
		{name: "nats only by default", cfg: app.Config{}},
		{name: "https webhook", cfg: app.Config{SIEMWebhookURL: "https://siem.example.com/hook", SIEMWebhookSecretFile: secret}},
		{name: "loopback http webhook", cfg: app.Config{SIEMWebhookURL: "http://127.0.0.1:9999/hook", SIEMWebhookSecretFile: secret}},
		{name: "plain http elsewhere", cfg: app.Config{SIEMWebhookURL: "http://siem.example.com/hook", SIEMWebhookSecretFile: secret}, wantErr: "--siem-webhook-url"},
		{name: "no secret", cfg: app.Config{SIEMWebhookURL: "https://siem.example.com/hook"}, wantErr: "--siem-webhook-secret-file"},
		{name: "secret without url", cfg: app.Config{SIEMWebhookSecretFile: secret}, wantErr: "without --siem-webhook-url"},
		{name: "webhook while disabled", cfg: app.Config{SIEMDisabled: true, SIEMWebhookURL: "https://siem.example.com/hook", SIEMWebhookSecretFile: secret}, wantErr: "turned off"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate = %v, want an error with %q", err, tt.wantErr)
			}
		})
	}
}
