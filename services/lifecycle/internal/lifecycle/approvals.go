package lifecycle

import (
	"fmt"
	"time"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/workflows"
)

// ApprovalTiming is how the approval steps of provisioning runs are reminded and escalated; a zero
// duration takes the default.
type ApprovalTiming struct {
	// RemindEvery is how often the holder of a waiting step is reminded (default
	// workflows.DefaultRemindEvery).
	RemindEvery time.Duration
	// EscalateAfter is how long a step may wait with one holder before it is handed to the next
	// approver in line (workflows.EscalationChain; default workflows.DefaultEscalateAfter).
	EscalateAfter time.Duration
}

// ApprovalEscalation configures the reminders and escalation of the provisioning runs the service
// starts: Default for every tenant, Tenants per tenant (a zero duration there takes Default's).
type ApprovalEscalation struct {
	// Default applies to every tenant.
	Default ApprovalTiming
	// Tenants overrides Default per tenant.
	Tenants map[string]ApprovalTiming
}

// Validate checks the configuration: no negative durations, valid tenant ids.
func (e ApprovalEscalation) Validate() error {
	check := func(what string, t ApprovalTiming) error {
		if t.RemindEvery < 0 || t.EscalateAfter < 0 {
			return fmt.Errorf("lifecycle: approval escalation of %s: durations must not be negative", what)
		}
		return nil
	}
	if err := check("every tenant", e.Default); err != nil {
		return err
	}
	for tenant, t := range e.Tenants {
		if !authn.ValidTenant(tenant) {
			return fmt.Errorf("lifecycle: approval escalation: %q is not a valid tenant id", tenant)
		}
		if err := check("tenant "+tenant, t); err != nil {
			return err
		}
	}
	return nil
}

// For is tenant's timing: its override, else the default (zero durations: the workflow defaults).
func (e ApprovalEscalation) For(tenant string) ApprovalTiming {
	t := e.Default
	if o, ok := e.Tenants[tenant]; ok {
		if o.RemindEvery > 0 {
			t.RemindEvery = o.RemindEvery
		}
		if o.EscalateAfter > 0 {
			t.EscalateAfter = o.EscalateAfter
		}
	}
	return t
}

// apply sets a provisioning run's reminder and escalation durations for its tenant.
func (e ApprovalEscalation) apply(in workflows.ProvisionInput) workflows.ProvisionInput {
	t := e.For(in.Tenant)
	in.RemindEvery, in.EscalateAfter = t.RemindEvery, t.EscalateAfter
	return in
}
