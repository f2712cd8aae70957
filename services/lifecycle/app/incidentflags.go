package app

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
	"github.com/agentid/agentid/workflows"
)

// Names and usages of the incident response flags, shared by the lifecycle binary and `agentid dev`.
const (
	IncidentWebhookURLFlag  = "incident-webhook-url"
	IncidentWebhookURLUsage = "webhook receiving incident notifications as signed JSON POSTs (https, or http to loopback; docs/incidents.md); empty sends none"

	IncidentWebhookSecretFileFlag  = "incident-webhook-secret-file"
	IncidentWebhookSecretFileUsage = "file holding the --incident-webhook-url HMAC-SHA256 secret (at least 16 bytes)"

	IncidentEscalationFlag  = "incident-escalation"
	IncidentEscalationUsage = "how long the owner and then the sponsor may take to decide an incident before it escalates, e.g. owner=4h,sponsor=4h (default 4h each); security-remind=D sets how often security is then reminded (default 24h, at least 1h)"

	IncidentEscalationTenantFlag  = "incident-escalation-tenant"
	IncidentEscalationTenantUsage = "escalation of one tenant, TENANT:owner=D,sponsor=D (repeat for several tenants; unset durations use --incident-escalation)"

	IncidentPolicyFlag  = "incident-policy"
	IncidentPolicyUsage = "override of the incident action table for one tenant and severity, TENANT:SEVERITY=ACTION+ACTION, actions record, notify, suspend (repeat; a critical row must suspend)"
)

// IncidentFlags are the incident response settings as given on a command line.
type IncidentFlags struct {
	// WebhookURL is --incident-webhook-url.
	WebhookURL string
	// WebhookSecretFile is --incident-webhook-secret-file.
	WebhookSecretFile string
	// Escalation is --incident-escalation.
	Escalation string
	// EscalationTenants are the --incident-escalation-tenant values.
	EscalationTenants []string
	// Policy are the --incident-policy values.
	Policy []string
}

// Apply checks the flags and sets the incident fields of cfg; every error names its flag. Nothing of
// cfg changes on an error.
func (f IncidentFlags) Apply(cfg *Config) error {
	out := *cfg
	switch {
	case f.WebhookURL == "" && f.WebhookSecretFile != "":
		return fmt.Errorf("--%s is set without --%s", IncidentWebhookSecretFileFlag, IncidentWebhookURLFlag)
	case f.WebhookURL != "" && f.WebhookSecretFile == "":
		return fmt.Errorf("--%s needs --%s (the HMAC secret the notifications are signed with)", IncidentWebhookURLFlag, IncidentWebhookSecretFileFlag)
	case f.WebhookURL != "":
		if err := checkWebhookURL(f.WebhookURL); err != nil {
			return fmt.Errorf("--%s: %w", IncidentWebhookURLFlag, err)
		}
		raw, err := os.ReadFile(f.WebhookSecretFile)
		if err != nil {
			return fmt.Errorf("--%s: %w", IncidentWebhookSecretFileFlag, err)
		}
		secret := strings.TrimSpace(string(raw))
		if len(secret) < 16 {
			return fmt.Errorf("--%s %s: the secret has %d bytes, want at least 16", IncidentWebhookSecretFileFlag, f.WebhookSecretFile, len(secret))
		}
		out.IncidentWebhookURL, out.IncidentWebhookSecret = f.WebhookURL, secret
	}
	if f.Escalation != "" {
		e, err := parseEscalation(f.Escalation)
		if err != nil {
			return fmt.Errorf("--%s %q: %w", IncidentEscalationFlag, f.Escalation, err)
		}
		out.IncidentEscalation = e
	}
	for _, v := range f.EscalationTenants {
		tenant, spec, ok := strings.Cut(v, ":")
		if !ok || !authn.ValidTenant(tenant) {
			return fmt.Errorf("--%s %q: want TENANT:owner=D,sponsor=D with a valid tenant id", IncidentEscalationTenantFlag, v)
		}
		e, err := parseEscalation(spec)
		if err != nil {
			return fmt.Errorf("--%s %q: %w", IncidentEscalationTenantFlag, v, err)
		}
		if _, dup := out.IncidentEscalationTenants[tenant]; dup {
			return fmt.Errorf("--%s %q: tenant %s is given twice", IncidentEscalationTenantFlag, v, tenant)
		}
		if out.IncidentEscalationTenants == nil {
			out.IncidentEscalationTenants = map[string]lifecycle.Escalation{}
		}
		out.IncidentEscalationTenants[tenant] = e
	}
	if len(f.Policy) > 0 {
		p := &workflows.IncidentPolicy{Tenants: map[string]map[string][]string{}}
		if out.IncidentPolicy != nil {
			p.SuspendTiers = out.IncidentPolicy.SuspendTiers
			for t, rows := range out.IncidentPolicy.Tenants {
				p.Tenants[t] = cloneRows(rows)
			}
		}
		for _, v := range f.Policy {
			tenant, row, ok := strings.Cut(v, ":")
			sev, actions, ok2 := strings.Cut(row, "=")
			if !ok || !ok2 || !authn.ValidTenant(tenant) || actions == "" {
				return fmt.Errorf("--%s %q: want TENANT:SEVERITY=ACTION+ACTION, e.g. acme:medium=suspend+notify", IncidentPolicyFlag, v)
			}
			sev = strings.ToLower(strings.TrimSpace(sev))
			if _, dup := p.Tenants[tenant][sev]; dup {
				return fmt.Errorf("--%s %q: severity %s of tenant %s is given twice", IncidentPolicyFlag, v, sev, tenant)
			}
			if p.Tenants[tenant] == nil {
				p.Tenants[tenant] = map[string][]string{}
			}
			p.Tenants[tenant][sev] = strings.Split(strings.ToLower(actions), "+")
		}
		if err := p.Validate(); err != nil {
			return fmt.Errorf("--%s: %w", IncidentPolicyFlag, err)
		}
		out.IncidentPolicy = p
	}
	*cfg = out
	return nil
}

// cloneRows copies one tenant's rows of an incident policy.
func cloneRows(rows map[string][]string) map[string][]string {
	out := make(map[string][]string, len(rows))
	for k, v := range rows {
		out[k] = slices.Clone(v)
	}
	return out
}

// parseEscalation parses owner=D,sponsor=D,security-remind=D (any may be left out: the default applies).
func parseEscalation(s string) (lifecycle.Escalation, error) {
	var e lifecycle.Escalation
	seen := map[string]bool{}
	for part := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return lifecycle.Escalation{}, fmt.Errorf("%q is not owner=DURATION or sponsor=DURATION", part)
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if seen[k] {
			return lifecycle.Escalation{}, fmt.Errorf("%s is given twice", k)
		}
		seen[k] = true
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d <= 0 {
			return lifecycle.Escalation{}, fmt.Errorf("%s=%s: want a positive duration such as 4h or 30m", k, v)
		}
		switch k {
		case workflows.StepOwner:
			e.OwnerFor = d
		case workflows.StepSponsor:
			e.SponsorFor = d
		case "security-remind":
			if d < workflows.MinIncidentSecurityRemindEvery {
				return lifecycle.Escalation{}, fmt.Errorf("%s=%s: security is reminded at most every %s", k, v, workflows.MinIncidentSecurityRemindEvery)
			}
			e.SecurityRemindEvery = d
		default:
			return lifecycle.Escalation{}, fmt.Errorf("%q: the deciders with a deadline are owner and sponsor (security has none)", k)
		}
	}
	return e, nil
}

// checkWebhookURL accepts an absolute https URL, or http to a loopback address, without user info.
func checkWebhookURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return err
	case u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		return fmt.Errorf("%q: want an absolute https:// URL", u.Redacted())
	case u.User != nil:
		return fmt.Errorf("%q: user info is not allowed (the requests are signed with the secret)", u.Redacted())
	case u.Scheme == "http" && !isLoopbackHost(u.Hostname()):
		return fmt.Errorf("%q: http is allowed to loopback addresses only; use https", u.Redacted())
	}
	return nil
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
