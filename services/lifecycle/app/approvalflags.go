package app

import (
	"fmt"
	"strings"
	"time"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
)

// Names and usages of the provisioning approval escalation flags, shared by the lifecycle binary and
// `agentid dev`.
const (
	ApprovalEscalationFlag  = "approval-escalation"
	ApprovalEscalationUsage = "how often the holder of a waiting provisioning approval is reminded and after how long the step is handed to the next approver in line, e.g. remind=24h,escalate=48h (the defaults)"

	ApprovalEscalationTenantFlag  = "approval-escalation-tenant"
	ApprovalEscalationTenantUsage = "approval escalation of one tenant, TENANT:remind=D,escalate=D (repeat for several tenants; unset durations use --approval-escalation)"
)

// ApprovalFlags are the provisioning approval escalation settings as given on a command line.
type ApprovalFlags struct {
	// Escalation is --approval-escalation.
	Escalation string
	// EscalationTenants are the --approval-escalation-tenant values.
	EscalationTenants []string
}

// Apply checks the flags and sets cfg.ApprovalEscalation; every error names its flag. Nothing of cfg
// changes on an error.
func (f ApprovalFlags) Apply(cfg *Config) error {
	out := cfg.ApprovalEscalation
	if f.Escalation != "" {
		t, err := parseApprovalTiming(f.Escalation)
		if err != nil {
			return fmt.Errorf("--%s %q: %w", ApprovalEscalationFlag, f.Escalation, err)
		}
		out.Default = t
	}
	tenants := map[string]lifecycle.ApprovalTiming{}
	for k, v := range out.Tenants {
		tenants[k] = v
	}
	for _, v := range f.EscalationTenants {
		tenant, spec, ok := strings.Cut(v, ":")
		if !ok || !authn.ValidTenant(tenant) {
			return fmt.Errorf("--%s %q: want TENANT:remind=D,escalate=D with a valid tenant id", ApprovalEscalationTenantFlag, v)
		}
		t, err := parseApprovalTiming(spec)
		if err != nil {
			return fmt.Errorf("--%s %q: %w", ApprovalEscalationTenantFlag, v, err)
		}
		if _, dup := tenants[tenant]; dup {
			return fmt.Errorf("--%s %q: tenant %s is given twice", ApprovalEscalationTenantFlag, v, tenant)
		}
		tenants[tenant] = t
	}
	if len(tenants) > 0 {
		out.Tenants = tenants
	}
	cfg.ApprovalEscalation = out
	return nil
}

// parseApprovalTiming parses remind=D,escalate=D (either may be left out: the default applies).
func parseApprovalTiming(s string) (lifecycle.ApprovalTiming, error) {
	var t lifecycle.ApprovalTiming
	seen := map[string]bool{}
	for part := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return lifecycle.ApprovalTiming{}, fmt.Errorf("%q is not remind=DURATION or escalate=DURATION", part)
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if seen[k] {
			return lifecycle.ApprovalTiming{}, fmt.Errorf("%s is given twice", k)
		}
		seen[k] = true
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d <= 0 {
			return lifecycle.ApprovalTiming{}, fmt.Errorf("%s=%s: want a positive duration such as 24h or 30m", k, v)
		}
		switch k {
		case "remind":
			t.RemindEvery = d
		case "escalate":
			t.EscalateAfter = d
		default:
			return lifecycle.ApprovalTiming{}, fmt.Errorf("%q: the settings are remind and escalate", k)
		}
	}
	return t, nil
}
