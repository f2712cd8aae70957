package app_test

import (
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/services/lifecycle/app"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
)

func TestApprovalFlags(t *testing.T) {
	tests := []struct {
		name    string
		flags   app.ApprovalFlags
		want    lifecycle.ApprovalEscalation
		wantErr string // the flag the error names
	}{
		{"none", app.ApprovalFlags{}, lifecycle.ApprovalEscalation{}, ""},
		{"default and tenants", app.ApprovalFlags{Escalation: "remind=12h, escalate=36h", EscalationTenants: []string{"acme:escalate=4h", "globex:remind=1h,escalate=2h"}},
			lifecycle.ApprovalEscalation{Default: lifecycle.ApprovalTiming{RemindEvery: 12 * time.Hour, EscalateAfter: 36 * time.Hour},
				Tenants: map[string]lifecycle.ApprovalTiming{"acme": {EscalateAfter: 4 * time.Hour}, "globex": {RemindEvery: time.Hour, EscalateAfter: 2 * time.Hour}}}, ""},
		{"unknown key", app.ApprovalFlags{Escalation: "owner=4h"}, lifecycle.ApprovalEscalation{}, app.ApprovalEscalationFlag},
		{"bad duration", app.ApprovalFlags{Escalation: "remind=soon"}, lifecycle.ApprovalEscalation{}, app.ApprovalEscalationFlag},
		{"zero duration", app.ApprovalFlags{Escalation: "escalate=0s"}, lifecycle.ApprovalEscalation{}, app.ApprovalEscalationFlag},
		{"twice", app.ApprovalFlags{Escalation: "remind=1h,remind=2h"}, lifecycle.ApprovalEscalation{}, app.ApprovalEscalationFlag},
		{"tenant without colon", app.ApprovalFlags{EscalationTenants: []string{"remind=1h"}}, lifecycle.ApprovalEscalation{}, app.ApprovalEscalationTenantFlag},
		{"bad tenant id", app.ApprovalFlags{EscalationTenants: []string{"Not A Tenant:remind=1h"}}, lifecycle.ApprovalEscalation{}, app.ApprovalEscalationTenantFlag},
		{"tenant twice", app.ApprovalFlags{EscalationTenants: []string{"acme:remind=1h", "acme:escalate=2h"}}, lifecycle.ApprovalEscalation{}, app.ApprovalEscalationTenantFlag},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cfg app.Config
			err := tt.flags.Apply(&cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), "--"+tt.wantErr+" ") {
					t.Fatalf("err = %v, want one naming --%s", err, tt.wantErr)
				}
				if cfg.ApprovalEscalation.Default != (lifecycle.ApprovalTiming{}) || cfg.ApprovalEscalation.Tenants != nil {
					t.Errorf("config changed on an error: %+v", cfg.ApprovalEscalation)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := cfg.ApprovalEscalation
			if got.Default != tt.want.Default || len(got.Tenants) != len(tt.want.Tenants) {
				t.Fatalf("escalation = %+v, want %+v", got, tt.want)
			}
			for k, v := range tt.want.Tenants {
				if got.Tenants[k] != v {
					t.Errorf("tenant %s = %+v, want %+v", k, got.Tenants[k], v)
				}
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestApprovalEscalationFor(t *testing.T) {
	e := lifecycle.ApprovalEscalation{
		Default: lifecycle.ApprovalTiming{RemindEvery: 12 * time.Hour},
		Tenants: map[string]lifecycle.ApprovalTiming{"acme": {EscalateAfter: 4 * time.Hour}},
	}
	if got, want := e.For("acme"), (lifecycle.ApprovalTiming{RemindEvery: 12 * time.Hour, EscalateAfter: 4 * time.Hour}); got != want {
		t.Errorf("For(acme) = %+v, want %+v", got, want)
	}
	if got, want := e.For("globex"), (lifecycle.ApprovalTiming{RemindEvery: 12 * time.Hour}); got != want {
		t.Errorf("For(globex) = %+v, want %+v", got, want)
	}
	for _, bad := range []lifecycle.ApprovalEscalation{
		{Default: lifecycle.ApprovalTiming{RemindEvery: -time.Hour}},
		{Tenants: map[string]lifecycle.ApprovalTiming{"acme": {EscalateAfter: -time.Hour}}},
		{Tenants: map[string]lifecycle.ApprovalTiming{"ACME!": {}}},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", bad)
		}
	}
}
