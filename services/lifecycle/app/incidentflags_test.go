package app_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/services/lifecycle/app"
)

func TestIncidentFlags(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("too-short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		flags   app.IncidentFlags
		wantErr string // names the flag
		check   func(t *testing.T, c app.Config)
	}{
		{name: "none: defaults", check: func(t *testing.T, c app.Config) {
			if c.IncidentWebhookURL != "" || c.IncidentEscalation.OwnerFor != 0 || c.IncidentPolicy != nil || c.IncidentEscalationTenants != nil {
				t.Fatalf("config = %+v, want the defaults", c)
			}
		}},
		{name: "webhook with its secret", flags: app.IncidentFlags{WebhookURL: "https://hooks.example/incidents", WebhookSecretFile: secret},
			check: func(t *testing.T, c app.Config) {
				if c.IncidentWebhookURL != "https://hooks.example/incidents" || c.IncidentWebhookSecret != "0123456789abcdef0123" {
					t.Fatalf("webhook = %q secret %q, want the URL and the trimmed secret", c.IncidentWebhookURL, c.IncidentWebhookSecret)
				}
				if err := c.Validate(); err != nil {
					t.Fatalf("Validate: %v", err)
				}
			}},
		{name: "http to loopback", flags: app.IncidentFlags{WebhookURL: "http://127.0.0.1:9000/hook", WebhookSecretFile: secret}},
		{name: "webhook without secret", flags: app.IncidentFlags{WebhookURL: "https://hooks.example/x"}, wantErr: "--incident-webhook-url needs --incident-webhook-secret-file"},
		{name: "secret without webhook", flags: app.IncidentFlags{WebhookSecretFile: secret}, wantErr: "--incident-webhook-secret-file is set without --incident-webhook-url"},
		{name: "plaintext webhook off loopback", flags: app.IncidentFlags{WebhookURL: "http://hooks.example/x", WebhookSecretFile: secret}, wantErr: "--incident-webhook-url: \"http://hooks.example/x\": http is allowed to loopback addresses only"},
		{name: "webhook not a URL", flags: app.IncidentFlags{WebhookURL: "hooks.example", WebhookSecretFile: secret}, wantErr: "--incident-webhook-url"},
		{name: "webhook with user info", flags: app.IncidentFlags{WebhookURL: "https://u:p@hooks.example/x", WebhookSecretFile: secret}, wantErr: "user info is not allowed"},
		{name: "missing secret file", flags: app.IncidentFlags{WebhookURL: "https://hooks.example/x", WebhookSecretFile: filepath.Join(dir, "nope")}, wantErr: "--incident-webhook-secret-file"},
		{name: "short secret", flags: app.IncidentFlags{WebhookURL: "https://hooks.example/x", WebhookSecretFile: short}, wantErr: "--incident-webhook-secret-file " + short + ": the secret has 9 bytes, want at least 16"},
		{name: "escalation", flags: app.IncidentFlags{Escalation: "owner=30m, sponsor=2h"}, check: func(t *testing.T, c app.Config) {
			if c.IncidentEscalation.OwnerFor != 30*time.Minute || c.IncidentEscalation.SponsorFor != 2*time.Hour {
				t.Fatalf("escalation = %+v", c.IncidentEscalation)
			}
		}},
		{name: "escalation of the owner only", flags: app.IncidentFlags{Escalation: "owner=1h"}, check: func(t *testing.T, c app.Config) {
			if c.IncidentEscalation.OwnerFor != time.Hour || c.IncidentEscalation.SponsorFor != 0 {
				t.Fatalf("escalation = %+v, want the sponsor's default kept", c.IncidentEscalation)
			}
		}},
		{name: "security reminders", flags: app.IncidentFlags{Escalation: "security-remind=6h"}, check: func(t *testing.T, c app.Config) {
			if c.IncidentEscalation.SecurityRemindEvery != 6*time.Hour || c.IncidentEscalation.OwnerFor != 0 {
				t.Fatalf("escalation = %+v, want security reminded every 6h", c.IncidentEscalation)
			}
		}},
		{name: "security reminders too often", flags: app.IncidentFlags{Escalation: "security-remind=10m"}, wantErr: "security-remind=10m: security is reminded at most every 1h0m0s"},
		{name: "escalation zero", flags: app.IncidentFlags{Escalation: "owner=0s"}, wantErr: "--incident-escalation \"owner=0s\": owner=0s: want a positive duration"},
		{name: "escalation of security", flags: app.IncidentFlags{Escalation: "security=1h"}, wantErr: "--incident-escalation \"security=1h\": \"security\": the deciders with a deadline are owner and sponsor"},
		{name: "escalation twice", flags: app.IncidentFlags{Escalation: "owner=1h,owner=2h"}, wantErr: "owner is given twice"},
		{name: "escalation malformed", flags: app.IncidentFlags{Escalation: "4h"}, wantErr: "--incident-escalation \"4h\""},
		{name: "tenant escalation", flags: app.IncidentFlags{EscalationTenants: []string{"acme:owner=15m,sponsor=15m", "beta:sponsor=1h"}},
			check: func(t *testing.T, c app.Config) {
				if len(c.IncidentEscalationTenants) != 2 || c.IncidentEscalationTenants["acme"].OwnerFor != 15*time.Minute ||
					c.IncidentEscalationTenants["beta"].SponsorFor != time.Hour || c.IncidentEscalationTenants["beta"].OwnerFor != 0 {
					t.Fatalf("tenants = %+v", c.IncidentEscalationTenants)
				}
			}},
		{name: "tenant escalation without tenant", flags: app.IncidentFlags{EscalationTenants: []string{"owner=15m"}}, wantErr: "--incident-escalation-tenant \"owner=15m\": want TENANT:owner=D,sponsor=D"},
		{name: "tenant escalation twice", flags: app.IncidentFlags{EscalationTenants: []string{"acme:owner=1m", "acme:owner=2m"}}, wantErr: "tenant acme is given twice"},
		{name: "tenant escalation bad duration", flags: app.IncidentFlags{EscalationTenants: []string{"acme:owner=soon"}}, wantErr: "--incident-escalation-tenant \"acme:owner=soon\""},
		{name: "policy override", flags: app.IncidentFlags{Policy: []string{"strict:medium=suspend+notify", "strict:low=notify", "calm:high=notify"}},
			check: func(t *testing.T, c app.Config) {
				p := c.IncidentPolicy
				if got := p.Actions("strict", "medium", "low"); !slices.Equal(got, []string{"suspend", "notify"}) {
					t.Fatalf("strict medium = %v", got)
				}
				if got := p.Actions("calm", "high", "critical"); !slices.Equal(got, []string{"notify"}) {
					t.Fatalf("calm high = %v", got)
				}
				if got := p.Actions("other", "high", "critical"); !slices.Equal(got, []string{"suspend", "notify"}) {
					t.Fatalf("another tenant's high on a critical agent = %v, want the built-in row", got)
				}
			}},
		{name: "policy: critical must suspend", flags: app.IncidentFlags{Policy: []string{"lax:critical=notify"}}, wantErr: "--incident-policy: incident policy of tenant lax: critical alerts must suspend"},
		{name: "policy: unknown action", flags: app.IncidentFlags{Policy: []string{"acme:low=page"}}, wantErr: "--incident-policy: incident policy of tenant acme, severity low: action \"page\""},
		{name: "policy: unknown severity", flags: app.IncidentFlags{Policy: []string{"acme:severe=notify"}}, wantErr: "severity \"severe\""},
		{name: "policy: malformed", flags: app.IncidentFlags{Policy: []string{"acme=notify"}}, wantErr: "--incident-policy \"acme=notify\": want TENANT:SEVERITY=ACTION+ACTION"},
		{name: "policy: row twice", flags: app.IncidentFlags{Policy: []string{"acme:low=notify", "acme:low=record"}}, wantErr: "severity low of tenant acme is given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := app.Config{RegistryAddr: "r:1", IssuerAddr: "i:1", PolicyAddr: "p:1"}
			err := tt.flags.Apply(&cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Apply: %v, want an error saying %q", err, tt.wantErr)
				}
				if cfg.IncidentWebhookURL != "" || cfg.IncidentPolicy != nil || cfg.IncidentEscalationTenants != nil || cfg.IncidentEscalation.OwnerFor != 0 {
					t.Fatalf("a refused flag changed the configuration: %+v", cfg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if tt.check != nil {
				tt.check(t, cfg)
			}
		})
	}
}
